"""Prometheus metrics: a custom Collector over the collector's state.

No global metric objects (STYLE habit 4): `State` holds plain counters and
histograms, updated on the event loop after each run, and `StateCollector`
turns them into metric families at each scrape, on whatever registry it is
given. Series are kept few: per-run detail goes to the history, Prometheus
gets what PromQL needs, with chosen buckets and no ``_created`` series.
METRICS.md documents every name here; they are a user contract.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from collector.engine import PHASES
from collector.result import OUTCOMES, RunResult

__all__ = ["STEP_BUCKETS", "WORKFLOW_BUCKETS", "State", "StateCollector", "MetricsRenderer", "new_registry"]

VERSION = "0.1.0"

# Chosen for synthetic checks: loopback steps take milliseconds, real ones up to seconds.
WORKFLOW_BUCKETS = (0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STEP_BUCKETS = (0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
LATENESS_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0)


class Histogram:
    """Cumulative-on-read bucket counts; cheap to observe on the event loop."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), list(self.counts)):
            running += count
            out.append(("+Inf" if bound == float("inf") else _float(bound), running))
        return out


def _float(value: float) -> str:
    return repr(float(value))


@dataclass
class StepState:
    duration: Histogram = field(default_factory=lambda: Histogram(STEP_BUCKETS))
    phases: dict[str, float] = field(default_factory=dict)
    success: int | None = None
    failures: dict[str, int] = field(default_factory=dict)


@dataclass
class PairState:
    labels: Mapping[str, str] = field(default_factory=dict)
    success: int | None = None
    last_run: float | None = None
    last_result: RunResult | None = None
    runs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    duration: Histogram = field(default_factory=lambda: Histogram(WORKFLOW_BUCKETS))
    retries: int = 0
    flaky: int = 0
    missed: int = 0
    cert_not_after: float | None = None
    steps: dict[str, StepState] = field(default_factory=dict)


class State:
    """Everything the metrics and the API report; written by the event loop only."""

    def __init__(self) -> None:
        self.pairs: dict[tuple[str, str], PairState] = {}
        self.reload_successful = 1
        self.reload_success_time = time.time()
        self.lateness = Histogram(LATENESS_BUCKETS)
        self.internal_errors: Callable[[], int] = lambda: 0
        self.circuits: Callable[[], Mapping[str, str]] = dict

    def configure(self, pairs: Mapping[tuple[str, str], Mapping[str, str]]) -> None:
        """Set the pairs being run (with their static labels); drop the others' series."""
        for key in list(self.pairs):
            if key not in pairs:
                del self.pairs[key]
        for key, labels in pairs.items():
            self.pairs.setdefault(key, PairState()).labels = dict(labels)

    def restore(self, result: RunResult) -> None:
        """Seed the last state from history after a restart (no counters are replayed)."""
        pair = self.pairs.get((result.workflow, result.env))
        if pair is not None and pair.last_result is None:
            pair.last_result, pair.last_run = result, result.started_at
            pair.success = int(result.outcome == "success") if result.outcome != "skipped" else pair.success

    def record(self, result: RunResult) -> None:
        pair = self.pairs.get((result.workflow, result.env))
        if pair is None:  # a run that finished after its workflow was removed
            return
        pair.runs[result.outcome] += 1
        pair.last_run = result.started_at + result.duration
        pair.last_result = result
        pair.retries += result.attempts - 1
        pair.flaky += int(result.flaky)
        if result.outcome == "skipped":
            return
        pair.success = int(result.outcome == "success")
        pair.duration.observe(result.duration)
        # Earliest expiry seen by this run, so a renewed certificate shows at the next run.
        expiries = [s.cert_not_after for s in result.steps if s.cert_not_after is not None]
        if expiries:
            pair.cert_not_after = min(expiries)
        for step in result.steps:
            if step.outcome == "skipped":
                continue
            state = pair.steps.get(step.name)
            if state is None:
                state = pair.steps[step.name] = StepState()
            state.duration.observe(step.duration)
            state.success = int(step.outcome == "success")
            if step.phases:
                state.phases = step.phases
            for failure in {f.reason for f in step.failures}:
                state.failures[failure] = state.failures.get(failure, 0) + 1


class StateCollector(Collector):
    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        pairs = list(state.pairs.items())
        wl = ["workflow", "env"]
        success = GaugeMetricFamily("flowprobe_workflow_success", "1 if the last run of the workflow succeeded, else 0.", labels=wl)
        last = GaugeMetricFamily(
            "flowprobe_workflow_last_run_timestamp_seconds", "When the last run finished, as a unix timestamp.", labels=wl
        )
        runs = CounterMetricFamily("flowprobe_workflow_runs", "Runs by result: success, failure, error or skipped.", labels=[*wl, "result"])
        duration = HistogramMetricFamily("flowprobe_workflow_duration_seconds", "Duration of whole runs, retries included.", labels=wl)
        retries = CounterMetricFamily("flowprobe_workflow_retries", "Workflow attempts beyond the first.", labels=wl)
        flaky = CounterMetricFamily("flowprobe_workflow_flaky", "Runs that passed only after a retry.", labels=wl)
        missed = CounterMetricFamily("flowprobe_runs_missed", "Scheduled runs that were due but not made (coalesced or overlapping).", labels=wl)
        cert = GaugeMetricFamily(
            "flowprobe_ssl_earliest_cert_expiry", "Earliest expiry of the TLS certificates seen, as a unix timestamp.", labels=wl
        )
        step_duration = HistogramMetricFamily("flowprobe_step_duration_seconds", "Duration of each step.", labels=[*wl, "step"])
        step_success = GaugeMetricFamily("flowprobe_step_success", "1 if the step passed in the last run that reached it, else 0.", labels=[*wl, "step"])
        phase = GaugeMetricFamily(
            "flowprobe_step_phase_seconds", "Time per phase of the step's last request.", labels=[*wl, "step", "phase"]
        )
        failures = CounterMetricFamily("flowprobe_step_failures", "Step failures by reason.", labels=[*wl, "step", "reason"])
        info = InfoMetricFamily("flowprobe_workflow", "Static labels of each workflow, to join on (workflow, env).", labels=wl)

        for (workflow, env), pair in pairs:
            key = [workflow, env]
            if pair.success is not None:
                success.add_metric(key, pair.success)
            if pair.last_run is not None:
                last.add_metric(key, pair.last_run)
            for outcome, count in list(pair.runs.items()):
                runs.add_metric([*key, outcome], count)
            duration.add_metric(key, pair.duration.buckets(), pair.duration.sum)
            retries.add_metric(key, pair.retries)
            flaky.add_metric(key, pair.flaky)
            missed.add_metric(key, pair.missed)
            if pair.cert_not_after is not None:
                cert.add_metric(key, pair.cert_not_after)
            info.add_metric(key, dict(pair.labels))
            for step, step_state in list(pair.steps.items()):
                step_key = [*key, step]
                step_duration.add_metric(step_key, step_state.duration.buckets(), step_state.duration.sum)
                if step_state.success is not None:
                    step_success.add_metric(step_key, step_state.success)
                for name in PHASES:
                    if name in step_state.phases:
                        phase.add_metric([*step_key, name], step_state.phases[name])
                for reason, count in list(step_state.failures.items()):
                    failures.add_metric([*step_key, reason], count)
        yield from (success, last, runs, duration, retries, flaky, missed, cert, step_duration, step_success, phase, failures, info)

        circuit = GaugeMetricFamily("flowprobe_circuit_open", "1 while the circuit breaker of a target host is open or half-open.", labels=["target"])
        for target, breaker_state in list(state.circuits().items()):
            circuit.add_metric([target], 0 if breaker_state == "closed" else 1)
        yield circuit
        lateness = HistogramMetricFamily("flowprobe_scheduler_lateness_seconds", "How late runs started after their scheduled time.")
        lateness.add_metric([], state.lateness.buckets(), state.lateness.sum)
        yield lateness
        yield GaugeMetricFamily(
            "flowprobe_config_last_reload_successful", "1 if the last config load or reload succeeded, else 0.", value=state.reload_successful
        )
        yield GaugeMetricFamily(
            "flowprobe_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully, as a unix timestamp.",
            value=state.reload_success_time,
        )
        yield CounterMetricFamily("flowprobe_internal_errors", "Bugs in flowprobe itself caught while running workflows.", value=state.internal_errors())
        build = InfoMetricFamily("flowprobe_build", "The running flowprobe version.")
        build.add_metric([], {"version": VERSION})
        yield build


def new_registry(state: State, *, process: bool = True) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(state))
    if process:
        ProcessCollector(registry=registry)
    return registry


class MetricsRenderer:
    """Renders the exposition in a worker thread and serves one render to concurrent scrapes.

    Rendering 100k series takes seconds; on the event loop it would delay
    probes and distort their timings.
    """

    def __init__(self, registry: CollectorRegistry, *, max_age: float = 1.0) -> None:
        self.registry = registry
        self.max_age = max_age
        self._lock = threading.Lock()
        self._cached: tuple[float, bytes] | None = None

    def render(self) -> bytes:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.max_age:
                return self._cached[1]
            body = generate_latest(self.registry)
            self._cached = (time.monotonic(), body)
            return body
