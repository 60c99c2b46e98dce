"""The worker's run-level models: failure prediction, latency forecasts, incidents and their root causes.

The anomaly detectors (analytics/scorers) see one signal's points at a time.
These models see whole runs (`analytics.source.Run`, from the history or
from Prometheus), one (workflow, env) at a time or all pairs together:

- `analytics.predict.FailurePredictor`: the probability that a pair fails
  within its next K runs, fed each run with the anomaly score of its
  latency (the score of that very run, so nothing later leaks in);
- `analytics.forecast.LatencyForecaster`: run latency at a few horizons;
- `analytics.patterns.PatternFinder`: incidents (simultaneous failures
  grouped), their ranked root causes, recurring failures, correlations and
  cascades, given the workflows' `depends_on` topology when known.

`Findings` feeds them in the order runs arrive and answers the API and the
exposition. Runs are learned on the worker's thread while the API reads on
the event loop, so every model is used under one lock, taken per run: a
long backfill does not hold up a scrape for more than one run.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from analytics.forecast import LatencyForecaster
from analytics.guarded import Guarded
from analytics.patterns import PatternFinder, Topology
from analytics.predict import ALERT_THRESHOLD, FailurePredictor
from analytics.source import Run

__all__ = ["FAILURE_ALERT", "Findings"]

log = logging.getLogger("flowprobe.analytics.findings")

# flowprobe_failure_probability at which a prediction counts as a warning: the predictor's alert threshold,
# that of the generated FlowprobeFailurePredicted alert (collector.rules.FAILURE_PROBABILITY_ALERT, kept equal
# by a test) and of bench/prediction_eval.py's precision and recall.
FAILURE_ALERT = ALERT_THRESHOLD

Pair = tuple[str, str]


class Findings(Guarded):
    """The predictor, the forecaster and the pattern finder, fed together; each may be left out (None)."""

    def __init__(
        self,
        predictor: FailurePredictor | None = None,
        forecaster: LatencyForecaster | None = None,
        patterns: PatternFinder | None = None,
        *,
        alert_at: float = FAILURE_ALERT,
    ) -> None:
        self.predictor = predictor
        self.forecaster = forecaster
        self.patterns = patterns
        self.alert_at = alert_at
        self.last_t: dict[Pair, float] = {}  # time of the last run learned, per pair
        self.runs_total = 0
        Guarded.__init__(self)

    @classmethod
    def default(cls) -> Findings:
        return cls(FailurePredictor(), LatencyForecaster(), PatternFinder())

    def locked(self) -> threading.RLock:
        """Hold it to read or pickle the models while nothing learns (``with findings.locked(): ...``)."""
        return self._lock

    # ------------------------------------------------------------ learning

    def set_topology(self, topology: Topology | None) -> None:
        if self.patterns is not None and topology is not None:
            with self._lock:
                self.patterns.topology = topology

    def observe(
        self,
        runs: Iterable[Run],
        anomaly_at: Mapping[tuple[str, str, float], float] | None = None,
        on_run: Callable[[Run, float | None, dict[str, float] | None], None] | None = None,
    ) -> int:
        """Learn `runs` (time order within each pair); runs at or before a pair's last one are skipped. Returns runs learned.

        `on_run` gets each run learned with the pair's probability and forecast right after it (the worker's InfluxDB points).
        """
        anomaly_at = anomaly_at or {}
        fresh: list[Run] = []
        for run in runs:
            if not math.isfinite(run.t) or run.t <= self.last_t.get(run.pair, -math.inf):
                continue
            with self._lock:
                self.last_t[run.pair] = run.t
                probability = forecast = None
                if self.predictor is not None:
                    probability = self.predictor.observe(run, anomaly_at.get((run.workflow, run.env, run.t)))
                if self.forecaster is not None:
                    forecast = self.forecaster.observe(run)
            if on_run is not None:
                on_run(run, probability, forecast)
            fresh.append(run)
        if fresh and self.patterns is not None:
            with self._lock:
                self.patterns.observe(fresh)
        self.runs_total += len(fresh)
        return len(fresh)

    def forget_stale(self, oldest: float) -> None:
        """Drop the per-pair state of pairs without a run since `oldest` (their workflow went away)."""
        with self._lock:
            for pair in [p for p, t in self.last_t.items() if t < oldest]:
                del self.last_t[pair]
                for model in (self.predictor, self.forecaster):
                    if model is not None:
                        model.forget(pair)

    # ------------------------------------------------------------ reading

    def _read(self, what: Callable[[], Any]) -> Any:
        with self._lock:
            return what()

    def predictions(self) -> list[dict[str, Any]]:
        """Per pair: the failure probability (None while the model has learned too little) and the latency forecast."""

        def read() -> list[dict[str, Any]]:
            items = []
            for pair in sorted(self.last_t):
                probability = self.predictor.probability(pair) if self.predictor is not None else None
                forecast = self.forecaster.forecast(pair) if self.forecaster is not None else None
                items.append({
                    "workflow": pair[0],
                    "env": pair[1],
                    "failure_probability": probability,
                    "warning": probability is not None and probability >= self.alert_at,
                    "horizon_runs": self.predictor.horizon_runs if self.predictor is not None else None,
                    "features": self.predictor.features(pair) if self.predictor is not None else None,
                    "latency_forecast_seconds": forecast,
                    "last_run": self.last_t[pair],
                })
            items.sort(key=lambda item: -(item["failure_probability"] or 0.0))
            return items

        return self._read(read)

    def incidents(self, *, open_only: bool = False) -> dict[str, Any]:
        """Incidents (open first, then recently resolved) with their ranked causes, and the patterns across them."""
        if self.patterns is None:
            return {"items": [], "recurring": [], "correlations": [], "cascades": []}
        patterns = self.patterns
        return self._read(lambda: {
            "items": patterns.incidents(open_only=open_only),
            "recurring": patterns.recurring(),
            "correlations": patterns.correlations(),
            "cascades": patterns.cascades(),
        })

    def root_causes(self) -> list[dict[str, str]]:
        """Rows of flowprobe_root_cause_info: one per failing member of each open incident, with its top cause."""
        return self._read(self.patterns.root_cause_info) if self.patterns is not None else []
