"""A base for models read by the API while the worker's thread learns: a lock that pickling leaves behind.

The worker pickles its models to disk (analytics/state.py); a lock cannot be
pickled and would mean nothing in another process, so it is dropped when
pickled and made anew when loaded.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["Guarded"]


class Guarded:
    """Subclasses call `Guarded.__init__` and hold ``self._lock`` (a re-entrant lock) around reads and writes."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
