"""The worker's models on disk, so a restart resumes instead of learning from zero.

One file, ``<state-dir>/analytics-state.pickle``: a pickled dict

    {"format": 1, "saved_at": <unix time>,
     "series": {(workflow, env, signal): {"detector": <pickled detector, bytes>,
                                          "kind": "<module>.<class> of the detector",
                                          "last_t": <time of the last point learned>,
                                          "score": <last score>, "value": <last value>,
                                          "learned": <points the detector has learned>}},
     "models": {"findings": <pickled analytics.findings.Findings, bytes>}}

The run-level models (failure predictor, forecaster, pattern finder) are
pickled as one object under ``models``; one that no longer loads is logged
and relearned, as a detector is.

Each detector is pickled on its own, so one that no longer loads (its class
was renamed) costs that series only. The file is written to a temporary
file beside it, flushed to disk and renamed over the old one, so a crash
leaves the old state or the new, never half of one. A file that cannot be
read is logged and ignored: the worker starts from zero.

Unpickling runs code named in the file: the state directory must be writable
by the worker only, like any other data directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analytics.source import SeriesKey

__all__ = ["FORMAT", "SavedSeries", "StateFile"]

log = logging.getLogger("flowprobe.analytics.state")

FORMAT = 1
FILENAME = "analytics-state.pickle"


@dataclass
class SavedSeries:
    detector: Any
    kind: str
    last_t: float
    score: float | None
    value: float | None
    learned: int | None = None  # None in a file saved before it was counted


def kind_of(detector: object) -> str:
    return f"{type(detector).__module__}.{type(detector).__qualname__}"


class StateFile:
    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILENAME
        self.models: dict[str, Any] = {}  # what the last load() found under "models"

    def load(self) -> dict[SeriesKey, SavedSeries]:
        """The saved series; {} when there is no file or it cannot be read (logged)."""
        try:
            with self.path.open("rb") as file:
                data = pickle.load(file)
        except FileNotFoundError:
            return {}
        except Exception as exc:  # a truncated or foreign file: any unpickling error at all
            log.warning("ignoring the unreadable analytics state %s: %s: %s", self.path, type(exc).__name__, exc)
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("series"), dict):
            log.warning("ignoring the analytics state %s: not format %d", self.path, FORMAT)
            return {}
        self.models = {}
        for name, blob in (data.get("models") or {}).items():
            try:
                self.models[name] = pickle.loads(blob)
            except Exception as exc:
                log.warning("ignoring the saved %s model: %s: %s", name, type(exc).__name__, exc)
        loaded: dict[SeriesKey, SavedSeries] = {}
        for key, entry in data["series"].items():
            try:
                loaded[tuple(key)] = SavedSeries(  # type: ignore[index]
                    pickle.loads(entry["detector"]), entry["kind"], float(entry["last_t"]), entry.get("score"), entry.get("value"),
                    entry.get("learned"),
                )
            except Exception as exc:
                log.warning("ignoring the saved model of %s: %s: %s", "/".join(map(str, key)), type(exc).__name__, exc)
        return loaded

    def save(self, series: Mapping[SeriesKey, SavedSeries], models: Mapping[str, Any] | None = None) -> None:
        """Write atomically (temporary file, fsync, rename); raises OSError or PicklingError."""
        payload = {
            "models": {name: pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL) for name, model in (models or {}).items()},
            "format": FORMAT,
            "saved_at": time.time(),
            "series": {
                key: {
                    "detector": pickle.dumps(s.detector, protocol=pickle.HIGHEST_PROTOCOL),
                    "kind": s.kind,
                    "last_t": s.last_t,
                    "score": s.score,
                    "value": s.value,
                    "learned": s.learned,
                }
                for key, s in series.items()
            },
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{FILENAME}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                pickle.dump(payload, file, protocol=pickle.HIGHEST_PROTOCOL)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        # The rename itself survives a power cut once the directory is synced too.
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

