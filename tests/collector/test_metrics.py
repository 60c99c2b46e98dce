"""The metrics collector over State: values, label sets and the exposition text."""

from __future__ import annotations

import gzip

from collector.metrics import MetricsRenderer, State, new_registry
from collector.result import CheckFailure, RunResult, StepResult

PHASES = {"connect": 0.001, "tls": 0.0, "request": 0.0005, "first_byte": 0.02, "transfer": 0.0001}


def run(outcome: str = "success", *, attempts: int = 1, flaky: bool = False, cert: float | None = None) -> RunResult:
    failed = outcome == "failure"
    steps = [
        StepResult("login", "success", status=200, duration=0.03, phases=PHASES, cert_not_after=cert),
        StepResult("order", "failure" if failed else "success", status=500 if failed else 201, duration=0.2, phases=PHASES,
                   failures=[CheckFailure("status", "status", "expected status 201, got 500")] if failed else []),
        StepResult("cleanup", "skipped"),
    ]
    return RunResult("order-placement", "prod", "r1", 1700000000.0, outcome, duration=0.25, steps=steps, attempts=attempts,
                     flaky=flaky, failed_step="order" if failed else None, reason="status" if failed else None)


def test_samples_follow_the_runs() -> None:
    state = State()
    state.configure({("order-placement", "prod"): {"team": "marketplace"}})
    registry = new_registry(state, process=False)
    labels = {"workflow": "order-placement", "env": "prod"}
    assert registry.get_sample_value("flowprobe_workflow_success", labels) is None  # no run yet: no guess
    assert registry.get_sample_value("flowprobe_workflow_runs_total", {**labels, "result": "failure"}) == 0

    state.record(run("success", attempts=2, flaky=True, cert=1800000000.0))
    state.record(run("failure"))
    state.record(RunResult("order-placement", "prod", "r3", 1700000100.0, "skipped", skip_reason="dependency"))

    assert registry.get_sample_value("flowprobe_workflow_success", labels) == 0
    assert registry.get_sample_value("flowprobe_workflow_runs_total", {**labels, "result": "success"}) == 1
    assert registry.get_sample_value("flowprobe_workflow_runs_total", {**labels, "result": "failure"}) == 1
    assert registry.get_sample_value("flowprobe_workflow_runs_total", {**labels, "result": "skipped"}) == 1
    assert registry.get_sample_value("flowprobe_workflow_retries_total", labels) == 1
    assert registry.get_sample_value("flowprobe_workflow_flaky_total", labels) == 1
    assert registry.get_sample_value("flowprobe_workflow_duration_seconds_count", labels) == 2  # skipped runs have no duration
    assert registry.get_sample_value("flowprobe_workflow_duration_seconds_bucket", {**labels, "le": "0.25"}) == 2
    assert registry.get_sample_value("flowprobe_workflow_duration_seconds_bucket", {**labels, "le": "0.1"}) == 0
    assert registry.get_sample_value("flowprobe_step_failures_total", {**labels, "step": "order", "reason": "status"}) == 1
    assert registry.get_sample_value("flowprobe_step_success", {**labels, "step": "order"}) == 0
    assert registry.get_sample_value("flowprobe_step_success", {**labels, "step": "login"}) == 1
    assert registry.get_sample_value("flowprobe_step_success", {**labels, "step": "cleanup"}) is None
    assert registry.get_sample_value("flowprobe_step_phase_seconds", {**labels, "step": "login", "phase": "first_byte"}) == 0.02
    assert registry.get_sample_value("flowprobe_ssl_earliest_cert_expiry", labels) == 1800000000.0
    assert registry.get_sample_value("flowprobe_workflow_info", {**labels, "team": "marketplace"}) == 1
    assert registry.get_sample_value("flowprobe_config_last_reload_successful") == 1


def test_removed_pairs_lose_their_series() -> None:
    state = State()
    state.configure({("order-placement", "prod"): {}, ("order-placement", "dev"): {}})
    state.record(run())
    state.configure({("order-placement", "dev"): {}})
    registry = new_registry(state, process=False)
    assert registry.get_sample_value("flowprobe_workflow_success", {"workflow": "order-placement", "env": "prod"}) is None
    assert registry.get_sample_value("flowprobe_workflow_runs_total",
                                     {"workflow": "order-placement", "env": "dev", "result": "success"}) == 0


def test_circuit_state_is_exported_per_target() -> None:
    state = State()
    state.circuits = lambda: {"10.0.0.1:443": "open", "shop:80": "closed", "api:443": "half_open"}
    registry = new_registry(state, process=False)
    assert registry.get_sample_value("flowprobe_circuit_open", {"target": "10.0.0.1:443"}) == 1
    assert registry.get_sample_value("flowprobe_circuit_open", {"target": "api:443"}) == 1
    assert registry.get_sample_value("flowprobe_circuit_open", {"target": "shop:80"}) == 0


GOLDEN = """\
# HELP flowprobe_workflow_success 1 if the last run of the workflow succeeded, else 0.
# TYPE flowprobe_workflow_success gauge
flowprobe_workflow_success{workflow="order-placement",env="prod"} 1
# HELP flowprobe_workflow_last_run_timestamp_seconds When the last run finished, as a unix timestamp.
# TYPE flowprobe_workflow_last_run_timestamp_seconds gauge
flowprobe_workflow_last_run_timestamp_seconds{workflow="order-placement",env="prod"} 1700000000.25
# HELP flowprobe_workflow_runs_total Runs by result: success, failure, error or skipped.
# TYPE flowprobe_workflow_runs_total counter
flowprobe_workflow_runs_total{workflow="order-placement",env="prod",result="success"} 1
flowprobe_workflow_runs_total{workflow="order-placement",env="prod",result="failure"} 0
flowprobe_workflow_runs_total{workflow="order-placement",env="prod",result="error"} 0
flowprobe_workflow_runs_total{workflow="order-placement",env="prod",result="skipped"} 0
# HELP flowprobe_workflow_duration_seconds Duration of whole runs, retries included.
# TYPE flowprobe_workflow_duration_seconds histogram
flowprobe_workflow_duration_seconds_bucket{workflow="order-placement",env="prod",le="0.05"} 0
flowprobe_workflow_duration_seconds_bucket{workflow="order-placement",env="prod",le="0.1"} 0
flowprobe_workflow_duration_seconds_bucket{workflow="order-placement",env="prod",le="0.25"} 1
flowprobe_workflow_duration_seconds_bucket{workflow="order-placement",env="prod",le="0.5"} 1
flowprobe_workflow_duration_seconds_bucket{workflow="order-placement",env="prod",le="1.0"} 1
flowprobe_workflow_duration_seconds_bucket{workflow="order-placement",env="prod",le="2.5"} 1
flowprobe_workflow_duration_seconds_bucket{workflow="order-placement",env="prod",le="5.0"} 1
flowprobe_workflow_duration_seconds_bucket{workflow="order-placement",env="prod",le="10.0"} 1
flowprobe_workflow_duration_seconds_bucket{workflow="order-placement",env="prod",le="30.0"} 1
flowprobe_workflow_duration_seconds_bucket{workflow="order-placement",env="prod",le="+Inf"} 1
flowprobe_workflow_duration_seconds_count{workflow="order-placement",env="prod"} 1
flowprobe_workflow_duration_seconds_sum{workflow="order-placement",env="prod"} 0.25
"""


def test_exposition_golden_text_and_no_created_series() -> None:
    state = State()
    state.configure({("order-placement", "prod"): {}})
    state.record(run())
    text = state.render()
    assert text.startswith(GOLDEN)
    assert "_created" not in text
    # Series stay few: one run of a 3-step workflow (one step skipped).
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(samples) < 80


def test_a_renewed_certificate_shows_at_the_next_run() -> None:
    state = State()
    state.configure({("order-placement", "prod"): {}})
    registry = new_registry(state, process=False)
    labels = {"workflow": "order-placement", "env": "prod"}
    state.record(run(cert=1800000000.0))
    state.record(run(cert=1900000000.0))
    assert registry.get_sample_value("flowprobe_ssl_earliest_cert_expiry", labels) == 1900000000.0


def test_a_pair_is_rendered_again_only_after_it_changes() -> None:
    state = State()
    state.configure({("a", "prod"): {}, ("b", "prod"): {}})
    state.record(run())
    first = state.render()
    cached = state.pairs[("b", "prod")].rendered
    assert state.render() == first
    assert state.pairs[("b", "prod")].rendered is cached  # untouched pairs reuse their lines
    state.add_missed(("a", "prod"), 3)
    assert 'flowprobe_runs_missed_total{workflow="a",env="prod"} 3\n' in state.render()
    assert state.pairs[("b", "prod")].rendered is cached


def test_label_values_are_escaped() -> None:
    state = State()
    state.configure({("a", "prod"): {"owner": 'team "blue"\\ops\nnight'}})
    registry = new_registry(state, process=False)
    labels = {"workflow": "a", "env": "prod", "owner": 'team "blue"\\ops\nnight'}
    assert registry.get_sample_value("flowprobe_workflow_info", labels) == 1


def test_consecutive_failures_and_the_failing_step() -> None:
    state = State()
    state.configure({("order-placement", "prod"): {}})
    registry = new_registry(state, process=False)
    labels = {"workflow": "order-placement", "env": "prod"}
    failing = {**labels, "step": "order", "reason": "status"}
    state.record(run("failure"))
    state.record(RunResult("order-placement", "prod", "s", 1.0, "skipped", skip_reason="dependency"))  # says nothing
    state.record(run("failure"))
    assert registry.get_sample_value("flowprobe_workflow_consecutive_failures", labels) == 2
    assert registry.get_sample_value("flowprobe_workflow_failure_info", failing) == 1
    state.record(run("success"))
    assert registry.get_sample_value("flowprobe_workflow_consecutive_failures", labels) == 0
    assert registry.get_sample_value("flowprobe_workflow_failure_info", failing) is None


def test_sink_counters_appear_only_with_a_sink() -> None:
    state = State()
    registry = new_registry(state, process=False)
    assert registry.get_sample_value("flowprobe_sink_spool_points", {"sink": "influx"}) is None
    state.sinks = lambda: {"influx": {"written": 10, "spooled": 4, "dropped": 1, "rejected": 0, "failed_writes": 2, "spool_points": 3}}
    assert registry.get_sample_value("flowprobe_sink_points_total", {"sink": "influx", "result": "written"}) == 10
    assert registry.get_sample_value("flowprobe_sink_points_total", {"sink": "influx", "result": "dropped"}) == 1
    assert registry.get_sample_value("flowprobe_sink_spool_points", {"sink": "influx"}) == 3
    assert registry.get_sample_value("flowprobe_sink_write_failures_total", {"sink": "influx"}) == 2


def test_a_restart_resumes_the_failure_streak() -> None:
    state = State()
    state.configure({("order-placement", "prod"): {}})
    registry = new_registry(state, process=False)
    labels = {"workflow": "order-placement", "env": "prod"}
    state.restore(run("failure"), (4, "order", "status"))
    assert registry.get_sample_value("flowprobe_workflow_consecutive_failures", labels) == 4
    assert registry.get_sample_value("flowprobe_workflow_failure_info", {**labels, "step": "order", "reason": "status"}) == 1
    # When the restored run finished, as record() sets it: a restart does not move the gauge back by a run's duration.
    assert registry.get_sample_value("flowprobe_workflow_last_run_timestamp_seconds", labels) == 1700000000.0 + 0.25
    state.record(run("failure"))
    assert registry.get_sample_value("flowprobe_workflow_consecutive_failures", labels) == 5


def test_once_scraped_a_run_renders_its_pair_as_it_is_recorded() -> None:
    """After the first scrape each run renders its own pair's lines, so a scrape finds them ready;
    before it (nobody scrapes the embedded default) a run renders nothing."""
    state = State()
    state.configure({("order-placement", "prod"): {}, ("b", "prod"): {}})
    pair = state.pairs[("order-placement", "prod")]
    state.record(run())
    assert pair.rendered is None
    renderer = MetricsRenderer(state, max_age=0)
    renderer.render()
    state.record(run("failure"))
    assert pair.rendered is not None and pair.rendered[0] == pair.version
    ready = pair.rendered
    text = renderer.render().decode()
    assert pair.rendered is ready  # the scrape used the lines the run made
    assert 'flowprobe_workflow_runs_total{workflow="order-placement",env="prod",result="failure"} 1\n' in text
    assert 'flowprobe_workflow_consecutive_failures{workflow="order-placement",env="prod"} 1\n' in text
    for each in state.pairs.values():
        each.rendered = None
    assert text.startswith(state.render())  # the same lines a fresh render makes, then the process metrics


def test_scrapes_render_in_a_lowest_priority_thread_of_their_own() -> None:
    """The probes' loop preempts the render whenever it has work (the scale benchmark's lateness depends on it)."""
    import asyncio
    import os
    import threading

    state = State()
    state.configure({("order-placement", "prod"): {}})
    state.record(run())
    renderer = MetricsRenderer(state, max_age=0)

    async def scrape() -> tuple[bytes, int, int]:
        body = await renderer.serve(gzipped=True)
        where = await asyncio.get_running_loop().run_in_executor(
            renderer._executor, lambda: (threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        return body, *where

    body, thread, nice = asyncio.run(scrape())
    assert gzip.decompress(body).decode().startswith(state.render())
    assert thread != threading.get_native_id()
    assert nice == 19
