"""Latency forecast: how long a (workflow, env)'s runs will take a few minutes from now.

The value behind ``flowprobe_latency_forecast_seconds{workflow,env,horizon}``.
Each pair has its own damped Holt model (double exponential smoothing with
a damped trend) over the durations of its runs that passed: a level, and a
trend that fades out over the horizon instead of running away, so a latency
ramp shows ahead of time and a single slow run does not. A failed run's
duration is not learned: a refused request takes 5 ms and a timeout the
whole timeout, neither of which is the latency of the service. Skipped runs
are not runs.

The parameters (alpha 0.3, beta 0.1, phi 0.8) and the model were chosen on
bench/prediction_eval.py, runs of the demo target under chaos: it beats the
naive forecast (the last duration) at 5 minutes, 15 minutes and an hour;
river's HoltWinters without seasonality and less damped trends did worse
than naive at 15 minutes and an hour, because degradations end (in an
outage or a fix) and a trend followed too far overshoots. The price of the
damping: on a ramp that never ends the forecast trails the line by a
constant, while moving with it.

Horizons are durations (``5m``, ``15m``, ``1h``, the label values), turned
into a number of runs with the pair's own run interval: the median gap
between its last runs. A forecast is never negative. A NaN, infinite or
negative duration is not learned. The forecaster pickles whole.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from analytics.source import Run
from collector.config import parse_duration

__all__ = ["DEFAULT_HORIZONS", "Holt", "LatencyForecaster", "horizon_seconds"]

Pair = tuple[str, str]

DEFAULT_HORIZONS = ("5m", "15m", "1h")
_GAPS = 20  # run intervals kept per pair for the median


def horizon_seconds(label: str) -> float:
    """``5m`` -> 300.0; a horizon must be a positive duration."""
    seconds = parse_duration(label)
    if seconds <= 0:
        raise ValueError(f"a forecast horizon must be longer than zero, got {label!r}")
    return seconds


@dataclass
class Holt:
    """Damped Holt smoothing of one series: ``forecast(h) = level + (phi + ... + phi^h) * trend``."""

    alpha: float = 0.3  # how fast the level follows the data
    beta: float = 0.1  # how fast the trend does
    phi: float = 0.8  # how fast the trend fades over the horizon: at most phi / (1 - phi) trends ahead
    level: float | None = None
    trend: float = 0.0

    def learn_one(self, x: float) -> None:
        if self.level is None:
            self.level = x
            return
        previous = self.level
        self.level = self.alpha * x + (1 - self.alpha) * (previous + self.phi * self.trend)
        self.trend = self.beta * (self.level - previous) + (1 - self.beta) * self.phi * self.trend

    def forecast(self, steps: float) -> float | None:
        if self.level is None:
            return None
        damped = self.phi * (1 - self.phi**steps) / (1 - self.phi) if self.phi < 1 else steps
        return self.level + damped * self.trend


@dataclass
class _PairState:
    model: Holt
    last_t: float = -math.inf
    gaps: deque[float] = field(default_factory=lambda: deque(maxlen=_GAPS))

    def interval(self) -> float | None:
        return statistics.median(self.gaps) if self.gaps else None


class LatencyForecaster:
    """One damped Holt model per pair; `forecast` gives seconds per horizon label."""

    def __init__(self, horizons: Iterable[str] = DEFAULT_HORIZONS, *, alpha: float = 0.3, beta: float = 0.1, phi: float = 0.8) -> None:
        self.horizons = {label: horizon_seconds(label) for label in horizons}
        if not self.horizons:
            raise ValueError("at least one forecast horizon is needed")
        if not (0 < alpha <= 1 and 0 <= beta <= 1 and 0 < phi <= 1):
            raise ValueError("expected 0 < alpha <= 1, 0 <= beta <= 1 and 0 < phi <= 1")
        self.alpha, self.beta, self.phi = alpha, beta, phi
        self._pairs: dict[Pair, _PairState] = {}

    def observe(self, run: Run) -> dict[str, float] | None:
        """Learn `run`'s duration (if it passed, is a duration, and is new); the pair's new forecast."""
        state = self._pairs.get(run.pair)
        if state is None:
            state = self._pairs[run.pair] = _PairState(Holt(self.alpha, self.beta, self.phi))
        duration = float(run.duration)
        if run.outcome == "success" and run.t > state.last_t and math.isfinite(duration) and duration >= 0:
            if math.isfinite(state.last_t):
                state.gaps.append(run.t - state.last_t)
            state.last_t = run.t
            state.model.learn_one(duration)
        return self.forecast(run.pair)

    def forecast(self, pair: Pair) -> dict[str, float] | None:
        """Seconds per horizon label; None until the pair has two runs (one gives no interval)."""
        state = self._pairs.get(pair)
        interval = None if state is None else state.interval()
        if state is None or interval is None or interval <= 0:
            return None
        out: dict[str, float] = {}
        for label, seconds in self.horizons.items():
            value = state.model.forecast(max(1.0, round(seconds / interval)))
            out[label] = max(0.0, value) if value is not None else 0.0
        return out

    def pairs(self) -> list[Pair]:
        return list(self._pairs)

    def forget(self, pair: Pair) -> None:
        self._pairs.pop(pair, None)
