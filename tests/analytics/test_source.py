"""Sources: the collector's real history file, and a real Prometheus scraping a live exposition."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from analytics.source import HistorySource, Point, PrometheusSource, SourceError, open_source
from collector.result import CheckFailure, RunResult, StepResult
from collector.store import HistoryStore
from tests.helpers import free_port, require_binary, running_process, serve_in_thread, wait_until

# Recent: the store prunes runs older than its max_age (7 days) as it writes.
T0 = float(int(time.time()) // 60 * 60 - 3600)


def run(workflow: str, env: str, t: float, duration: float, outcome: str = "success", steps: list[tuple[str, float, str]] | None = None) -> RunResult:
    """A run as the collector records it: steps with phases, a failed step with its check failure."""
    step_results = []
    for name, step_duration, step_outcome in steps or [("login", duration * 0.4, "success"), ("list-products", duration * 0.5, "success")]:
        failures = [CheckFailure("status", "status", "expected 200, got 503")] if step_outcome == "failure" else []
        step_results.append(
            StepResult(name, step_outcome, status=503 if failures else 200, duration=step_duration, attempts=1, started_at=t,
                       phases={"connect": 0.001, "request": 0.0005, "first_byte": step_duration * 0.8, "transfer": 0.0002},
                       failures=failures)
        )
    failed = next((s for s in step_results if s.outcome == "failure"), None)
    return RunResult(workflow, env, f"{workflow}-{env}-{t}", t, outcome, duration=duration, steps=step_results,  # type: ignore[arg-type]
                     failed_step=failed.name if failed else None, reason=failed.reason if failed else None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    history = HistoryStore(tmp_path / "data" / "history.sqlite3")
    yield history
    history.close()


def read(source: Any) -> list[Point]:
    return asyncio.run(source.read())


def series(points: list[Point], workflow: str, env: str, signal: str) -> list[tuple[float, float]]:
    return [(p.t, p.value) for p in points if (p.workflow, p.env, p.signal) == (workflow, env, signal)]


# ---------------------------------------------------------------- history


def test_history_gives_latency_error_rate_and_steps_of_each_run_while_the_collector_writes(store: HistoryStore) -> None:
    store.add(run("order-placement", "prod", T0, 0.30))
    store.add(run("order-placement", "prod", T0 + 60, 0.90, "failure", [("login", 0.1, "success"), ("place-order", 0.8, "failure"),
                                                                            ("cancel-order", 0.0, "skipped")]))
    store.add(run("health-check", "staging", T0 + 1, 0.05, steps=[("health", 0.05, "success")]))
    store.add(RunResult("order-placement", "prod", "skip-1", T0 + 120, "skipped", skip_reason="dependency"))
    store.flush()  # committed; the store stays open and keeps writing, as the collector does
    source = HistorySource(store.path, error_window=3)

    points = read(source)
    assert series(points, "order-placement", "prod", "latency") == [(T0, 0.30), (T0 + 60, 0.90)]
    assert series(points, "order-placement", "prod", "error_rate") == [(T0, 0.0), (T0 + 60, 0.5)]
    assert series(points, "order-placement", "prod", "step:login") == [(T0, pytest.approx(0.12)), (T0 + 60, 0.1)]
    assert series(points, "order-placement", "prod", "step:place-order") == [(T0 + 60, 0.8)]
    assert series(points, "order-placement", "prod", "step:cancel-order") == []  # skipped steps did not run
    assert series(points, "health-check", "staging", "step:health") == [(T0 + 1, 0.05)]
    assert {p.signal for p in points} == {"latency", "error_rate", "step:login", "step:list-products", "step:place-order", "step:health"}
    assert all(p.t != T0 + 120 for p in points), "a skipped run is no point of any signal"

    runs = source.take_runs()
    assert [(r.pair, r.t, r.outcome) for r in runs] == [
        (("order-placement", "prod"), T0, "success"), (("order-placement", "prod"), T0 + 60, "failure"),
        (("health-check", "staging"), T0 + 1, "success"), (("order-placement", "prod"), T0 + 120, "skipped"),
    ], "every run, skipped ones too, in the order written"
    failed = runs[1]
    assert failed.failed and (failed.failed_step, failed.reason, failed.duration) == ("place-order", "status", 0.90)
    assert runs[3].skip_reason == "dependency" and not runs[3].failed
    assert source.take_runs() == [], "taken once"

    assert read(source) == [], "a second read gives only what is new"
    assert source.take_runs() == []
    for i in range(3):
        store.add(run("order-placement", "prod", T0 + 180 + 60 * i, 0.3))
    store.flush()
    points = read(source)
    # The window holds the last three runs: [ok, fail, ok], [fail, ok, ok], then [ok, ok, ok].
    assert series(points, "order-placement", "prod", "error_rate") == [(T0 + 180, 1 / 3), (T0 + 240, 1 / 3), (T0 + 300, 0.0)]
    assert {p.workflow for p in points} == {"order-placement"}


def test_a_restarted_history_source_reads_everything_again_in_order(store: HistoryStore) -> None:
    for i in range(12):
        store.add(run("user-login", "prod", T0 + i, 0.1 + i / 100))
    store.flush()
    points = read(HistorySource(store.path, batch=5))  # several batches
    assert [t for t, _ in series(points, "user-login", "prod", "latency")] == [T0 + i for i in range(12)]


def test_a_missing_history_is_an_error_until_the_collector_makes_it(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    source = HistorySource(path)
    with pytest.raises(SourceError, match="does not exist"):
        read(source)
    assert not path.exists(), "a read-only source never creates the file"
    history = HistoryStore(path)
    try:
        history.add(run("health-check", "prod", T0, 0.02))
        history.flush()
        assert len(series(read(source), "health-check", "prod", "latency")) == 1
    finally:
        history.close()


def test_a_locked_or_foreign_history_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    HistoryStore(path).close()
    # A writer in rollback-journal mode holding an exclusive lock: readers must wait, then give up.
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    source = HistorySource(path, busy_timeout=0.05)
    try:
        with pytest.raises(SourceError, match="locked"):
            read(source)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert read(source) == []  # released: an empty history is no points and no error

    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(SourceError, match="not a database"):
        read(source)


def test_a_replaced_history_is_read_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    first = HistoryStore(path)
    for i in range(3):
        first.add(run("health-check", "prod", T0 + i, 0.02))
    first.flush()
    first.close()
    source = HistorySource(path)
    assert len(read(source)) == 3 * 4
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    second = HistoryStore(path)
    try:
        second.add(run("health-check", "prod", T0 + 10, 0.03))
        second.flush()
        assert series(read(source), "health-check", "prod", "latency") == [(T0 + 10, 0.03)]
    finally:
        second.close()


def test_open_source_takes_history_or_prometheus(tmp_path: Path) -> None:
    assert isinstance(open_source(f"history:{tmp_path}/h.sqlite3"), HistorySource)
    prometheus = open_source("prometheus:http://127.0.0.1:9090/", step=30.0)
    assert isinstance(prometheus, PrometheusSource) and prometheus.url == "http://127.0.0.1:9090" and prometheus.step == 30.0
    asyncio.run(prometheus.close())
    for spec in ("history:", "prometheus:127.0.0.1:9090", "influx:http://x", "data/history.sqlite3"):
        with pytest.raises(ValueError, match="history:PATH or prometheus:URL"):
            open_source(spec)


# ---------------------------------------------------------------- Prometheus, mocked: what is asked and how answers are read


def test_prometheus_queries_each_signal_over_the_new_steps_and_drops_nan() -> None:
    asked: list[dict[str, str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        asked.append(form)
        labels = {"workflow": "order-placement", "env": "prod"}
        if "flowprobe_step_duration_seconds" in form["query"]:
            labels["step"] = "login"
        values = [[float(form["start"]), "0.25"], [float(form["start"]) + 15, "NaN"], [float(form["end"]), "+Inf"]]
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": [{"metric": labels, "values": values}]}})

    now = [T0 + 1000.0]
    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    source = PrometheusSource("http://prometheus:9090", step=15, lookback=300, client=client, clock=lambda: now[0])
    try:
        points = read(source)
        assert {p.signal for p in points} == {"latency", "error_rate", "step:login"}
        assert all(p.value == 0.25 for p in points), "NaN (no runs in the window) and Inf are no points"
        first = asked[0]
        assert float(first["step"]) == 15 and float(first["start"]) % 15 == 0
        assert float(first["end"]) == math.floor((T0 + 1000 - 15) / 15) * 15  # `settle` (one step) before now, on the grid
        assert "rate(flowprobe_workflow_duration_seconds_sum[1m])" in asked[0]["query"]
        assert 'flowprobe_workflow_runs_total{result=~"failure|error"}[10m]' in asked[1]["query"]
        assert "sum by (workflow, env, step)" in asked[2]["query"]

        asked.clear()
        now[0] += 30
        read(source)
        assert float(asked[0]["start"]) == float(first["end"]) + 15, "the next read starts after the last one"
        asked.clear()
        source.resume(T0 + 2000)  # a restarted worker learned up to here: nothing older is asked for
        assert read(source) == [] and asked == []
    finally:
        asyncio.run(client.aclose())


def test_prometheus_errors_are_source_errors() -> None:
    def bad_query(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": "parse error"})

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    for handler, message in ((bad_query, "answered 400: parse error"), (refused, "cannot be reached")):
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        source = PrometheusSource("http://prometheus:9090", client=client, clock=lambda: T0)
        try:
            with pytest.raises(SourceError, match=message):
                read(source)
        finally:
            asyncio.run(client.aclose())


# ---------------------------------------------------------------- a real Prometheus


class Exposition:
    """A collector stand-in: each scrape is one more run (0.2 s, half of them failed) with a 0.05 s login step."""

    def __init__(self) -> None:
        self.scrapes = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.scrapes += 1
        n = self.scrapes
        key = 'workflow="order-placement",env="prod"'
        body = (
            "# TYPE flowprobe_workflow_runs_total counter\n"
            f'flowprobe_workflow_runs_total{{{key},result="success"}} {n}\n'
            f'flowprobe_workflow_runs_total{{{key},result="failure"}} {n}\n'
            f'flowprobe_workflow_runs_total{{{key},result="error"}} 0\n'
            f'flowprobe_workflow_runs_total{{{key},result="skipped"}} {3 * n}\n'
            "# TYPE flowprobe_workflow_duration_seconds histogram\n"
            f'flowprobe_workflow_duration_seconds_bucket{{{key},le="+Inf"}} {2 * n}\n'
            f"flowprobe_workflow_duration_seconds_count{{{key}}} {2 * n}\n"
            f"flowprobe_workflow_duration_seconds_sum{{{key}}} {0.4 * n}\n"
            "# TYPE flowprobe_step_duration_seconds histogram\n"
            f'flowprobe_step_duration_seconds_bucket{{{key},step="login",le="+Inf"}} {2 * n}\n'
            f'flowprobe_step_duration_seconds_count{{{key},step="login"}} {2 * n}\n'
            f'flowprobe_step_duration_seconds_sum{{{key},step="login"}} {0.1 * n}\n'
        ).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain; version=0.0.4")]})
        await send({"type": "http.response.body", "body": body})


async def read_once(source: PrometheusSource) -> list[Point]:
    try:
        return await source.read()
    finally:
        await source.close()


async def poll(source: PrometheusSource, signals: set[str], timeout: float) -> dict[str, list[Point]]:
    """Read every half second (one event loop, one client) until every signal has points."""
    found: dict[str, list[Point]] = {}
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while set(found) != signals and asyncio.get_running_loop().time() < deadline:
            for point in await source.read():
                found.setdefault(point.signal, []).append(point)
            await asyncio.sleep(0.5)
    finally:
        await source.close()
    return found


@pytest.mark.e2e
def test_a_real_prometheus_gives_the_three_signals_and_a_dead_one_an_error(tmp_path: Path) -> None:
    prometheus = require_binary("prometheus")
    exposition = Exposition()
    with serve_in_thread(exposition) as target:
        port = free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s}\n"
            f"scrape_configs:\n  - job_name: flowprobe\n    static_configs: [{{targets: ['{target.removeprefix('http://')}']}}]\n"
        )
        args = [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
        url = f"http://127.0.0.1:{port}"
        with running_process(args, log=tmp_path / "prometheus.log"):
            wait_until(lambda: httpx.get(f"{url}/-/ready", timeout=1).status_code == 200, timeout=15, what="Prometheus to be ready")
            signals = {"latency", "error_rate", "step:login"}
            source = PrometheusSource(url, step=1.0, lookback=30, settle=0)
            found = asyncio.run(poll(source, signals, timeout=15))
            assert set(found) == signals, (tmp_path / "prometheus.log").read_text()
        assert exposition.scrapes >= 2
    assert {(p.workflow, p.env) for points in found.values() for p in points} == {("order-placement", "prod")}
    assert found["latency"][-1].value == pytest.approx(0.2)
    assert found["error_rate"][-1].value == pytest.approx(0.5), "failed runs over runs not skipped"
    assert found["step:login"][-1].value == pytest.approx(0.05)
    # Half the runs of every step fail: each step of the range with runs in it is one failed Run.
    runs = [r for r in source.take_runs() if r.outcome != "skipped"]
    assert runs and all(r.pair == ("order-placement", "prod") and r.failed for r in runs)
    latencies = {p.t: p.value for p in found["latency"]}
    assert any(r.t in latencies and r.duration == pytest.approx(0.2) for r in runs), "a Run carries the step's mean latency"
    times = [p.t for p in found["latency"]]
    assert times == sorted(set(times)) and all(t == int(t) for t in times), "one point per step of the range, never twice"

    # Prometheus is gone now: an error to retry, not a crash.
    dead = PrometheusSource(url, step=1.0, settle=0)
    with pytest.raises(SourceError, match="cannot be reached"):
        asyncio.run(read_once(dead))


def test_prometheus_gives_the_topology_from_workflow_info_and_step_series() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        query = dict(httpx.QueryParams(request.content.decode()))["query"]
        if query == "flowprobe_workflow_info":
            result = [{"metric": {"__name__": "flowprobe_workflow_info", "workflow": "order-placement", "env": "prod", "team": "shop",
                                  "dependencies": ",health-check,user-login,"}, "values": [[T0, "1"]]},
                      {"metric": {"__name__": "flowprobe_workflow_info", "workflow": "health-check", "env": "prod"}, "values": [[T0, "1"]]}]
        else:
            assert "flowprobe_step_success" in query
            result = [{"metric": {"workflow": "order-placement", "step": step}, "values": [[T0, "1"]]} for step in ("login", "place-order")]
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": result}})

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    source = PrometheusSource("http://prometheus:9090", client=client, clock=lambda: T0)
    try:
        topology = asyncio.run(source.topology())
    finally:
        asyncio.run(client.aclose())
    assert topology.upstream("order-placement") == {"health-check", "user-login"}
    assert topology.upstream("health-check") == frozenset()
    assert topology.steps["order-placement"] == ("login", "place-order")
