"""Anomaly detectors, all behind one small contract (as river's are).

Every detector learns from one value at a time and scores one value at a
time; a higher score means more anomalous, in [0, 1]. Scores are causal: a
score uses only what was learned before it, exactly as live. The contract is
tested once for every detector in DETECTORS (tests/analytics/test_scorers.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from analytics.scorers.compiled import select

__all__ = ["COMPILED", "COMPILED_WHY", "DETECTORS", "Detector", "attune", "default_detector", "how_they_run"]

# Whether the detectors' per-point code runs compiled (setup.py, Cython) or as its .py files, and why: chosen before
# any of those modules is imported (analytics/scorers/compiled.py). The scores are the same either way.
COMPILED, COMPILED_WHY = select()


def how_they_run() -> str:
    """The choice above in words, for the worker's start line and the demo's banner: "compiled (...)" or "pure Python (...)"."""
    return f"{'compiled' if COMPILED else 'pure Python'} ({COMPILED_WHY})"


@runtime_checkable
class Detector(Protocol):
    def learn_one(self, x: float, t: float | None = None) -> None:
        """Learn value `x` observed at unix time `t` (seasonal detectors need `t`)."""

    def score_one(self, x: float, t: float | None = None) -> float:
        """How anomalous `x` at time `t` is, in [0, 1], from what was learned so far."""


# name -> factory; each factory returns a fresh detector with the one shipped configuration.
DETECTORS: dict[str, Callable[[], Detector]] = {}


def default_detector() -> Detector:
    """The shipped detector: the one configuration that serves every series."""
    from analytics.scorers.registry import DEFAULT

    return DETECTORS[DEFAULT]()


def attune(detector: Detector, threshold: float) -> Detector:
    """Tell a detector that acts on its own alarms (the ensemble's echo) the threshold it is alarmed at.

    Optional to the contract: a detector with `set_alarm_level(threshold)` gets
    it; any other is returned as it is. The worker attunes every detector it
    makes or restores to its `--threshold`, and the benchmarks do the same at
    the threshold they report.
    """
    set_level = getattr(detector, "set_alarm_level", None)
    if set_level is not None:
        set_level(threshold)
    return detector


# Importing the package registers every detector, so DETECTORS is complete for any caller.
from analytics.scorers import registry as _registry  # noqa: E402,F401  (registers; after DETECTORS exists)
