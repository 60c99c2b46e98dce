"""The worker end to end in-process: history in, scores out on /metrics, state across restarts, recovery."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from analytics.emit import create_app
from analytics.scorers import how_they_run
from analytics.source import HistorySource, Point, PrometheusSource
from analytics.influx import InfluxOutput
from analytics.state import SavedSeries, StateFile, kind_of
from analytics.worker import Worker, command
from collector.cli import _parser
from collector.result import RunResult, StepResult
from collector.service import ApiServer
from collector.store import HistoryStore
from tests.helpers import free_port, wait_until

T0 = float(int(time.time()) // 60 * 60 - 3600)  # recent: the store prunes runs older than 7 days


class CountingDetector:
    """The contract, tiny: the score is the distance from the mean learned so far, relative to it, capped at 1."""

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.seen: list[tuple[str, float]] = []

    def learn_one(self, x: float, t: float | None = None) -> None:
        self.n += 1
        self.total += x
        self.seen.append(("learn", x))

    def score_one(self, x: float, t: float | None = None) -> float:
        self.seen.append(("score", x))
        if self.n == 0:
            return 0.0
        mean = self.total / self.n
        return min(1.0, abs(x - mean) / max(mean, 1e-9))


class OtherDetector(CountingDetector):
    pass


class BrokenDetector(CountingDetector):
    def score_one(self, x: float, t: float | None = None) -> float:
        raise RuntimeError("broken")


class ListSource:
    """A source that hands out what the test gives it, or raises."""

    name = "test"

    def __init__(self) -> None:
        self.pending: list[Point] = []
        self.error: Exception | None = None
        self.resumed: float | None = None

    async def read(self) -> list[Point]:
        if self.error is not None:
            raise self.error
        points, self.pending = self.pending, []
        return points

    def resume(self, after: float) -> None:
        self.resumed = after

    async def close(self) -> None:
        pass


def run(t: float, duration: float, outcome: str = "success", workflow: str = "order-placement") -> RunResult:
    steps = [StepResult("login", "success", 200, duration * 0.3, started_at=t), StepResult("place-order", outcome, 200, duration * 0.6, started_at=t)]
    return RunResult(workflow, "prod", f"{workflow}-{t}", t, outcome, duration=duration, steps=steps)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[HistoryStore]:
    history = HistoryStore(tmp_path / "history.sqlite3")
    yield history
    history.close()


def metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return metrics(text).get((name, tuple(sorted(labels.items()))))


# ---------------------------------------------------------------- end to end


async def _serve_and_scrape(worker: Worker, until: Any) -> tuple[str, dict[str, Any]]:
    """Run the worker and its API on this loop; scrape until `until(text)`; stop."""
    stop = asyncio.Event()
    api = ApiServer(create_app(worker), "127.0.0.1", 0)
    await api.start()
    task = asyncio.create_task(worker.run(stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}", timeout=5) as client:
            for _ in range(100):
                text = (await client.get("/metrics")).text
                if until(text):
                    break
                await asyncio.sleep(0.05)
            anomalies = (await client.get("/api/analytics/anomalies")).json()
            assert (await client.get("/healthz")).json()["status"] == "ok"
    finally:
        stop.set()
        await task
        await api.stop()
        await worker.close()
    return text, anomalies


def test_history_runs_become_anomaly_scores_on_metrics(store: HistoryStore, tmp_path: Path) -> None:
    for i in range(5):
        store.add(run(T0 + 60 * i, 0.2))
    store.add(run(T0 + 300, 1.0, "failure"))  # five times slower, and failed
    store.flush()
    worker = Worker(HistorySource(store.path), CountingDetector, interval=0.05, threshold=0.9, state=StateFile(tmp_path / "state"))

    text, anomalies = asyncio.run(_serve_and_scrape(worker, lambda t: "flowprobe_anomaly_score{" in t and "\nflowprobe_analytics_last_run_timestamp_seconds " in t))

    key = {"workflow": "order-placement", "env": "prod"}
    assert value(text, "flowprobe_anomaly_score", **key, signal="latency") == 1.0
    assert value(text, "flowprobe_anomaly", **key, signal="latency") == 1.0
    assert value(text, "flowprobe_anomaly_score", **key, signal="step:login") == 1.0
    assert value(text, "flowprobe_anomaly_score", **key, signal="error_rate") == 1.0  # 1/6 against a mean of 0
    assert value(text, "flowprobe_analytics_points_total", source="history") == 6 * 4
    assert value(text, "flowprobe_analytics_errors_total") == 0
    assert time.time() - (value(text, "flowprobe_analytics_last_run_timestamp_seconds") or 0) < 30
    assert value(text, "process_resident_memory_bytes") is not None, "process metrics are exported too"
    signals = {labels for (name, labels) in metrics(text) if name == "flowprobe_anomaly_score"}
    assert len(signals) == 4, "latency, error_rate, step:login and step:place-order"

    assert anomalies["threshold"] == 0.9 and anomalies["source"] == "history"
    first = anomalies["items"][0]
    assert first["score"] == 1.0 and first["anomaly"] is True and first["at"] == T0 + 300
    assert {item["signal"] for item in anomalies["items"]} == {"latency", "error_rate", "step:login", "step:place-order"}
    assert (tmp_path / "state" / "analytics-state.pickle").exists(), "the state is saved when the worker stops"


def test_each_point_is_scored_before_it_is_learned() -> None:
    source = ListSource()
    worker = Worker(source, CountingDetector)
    source.pending = [Point("w", "prod", "latency", T0 + i, x) for i, x in enumerate([1.0, 1.0, 3.0])]
    assert asyncio.run(worker.run_once()) == 3
    series = worker.series[("w", "prod", "latency")]
    detector = series.detector
    assert isinstance(detector, CountingDetector)
    assert detector.seen == [("score", 1.0), ("learn", 1.0), ("score", 1.0), ("learn", 1.0), ("score", 3.0), ("learn", 3.0)]
    assert series.score == 1.0 and series.value == 3.0 and series.last_t == T0 + 2
    source.pending = [Point("w", "prod", "latency", T0 + 2, 5.0), Point("w", "prod", "latency", T0 + 1, 5.0)]
    assert asyncio.run(worker.run_once()) == 0, "points at or before the last one learned are not learned again"


def test_the_flowprobe_analytics_command_serves_until_sigterm(store: HistoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("collector.log.configure_logging", lambda *args, **kwargs: None)  # keep pytest's log capture
    for i in range(3):
        store.add(run(T0 + 60 * i, 0.2))
    store.flush()
    port = free_port()
    args = _parser().parse_args(["analytics", "--listen", f"127.0.0.1:{port}", "--source", f"history:{store.path}",
                                 "--interval", "100ms", "--state-dir", str(tmp_path / "state")])
    scraped: list[str] = []
    returned = threading.Event()

    def scores() -> str | None:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        return text if "flowprobe_anomaly_score{" in text else None

    def scrape_then_stop() -> None:
        try:
            scraped.append(wait_until(scores, timeout=20, what="scores on /metrics"))
        except AssertionError as exc:
            scraped.append(str(exc))
        finally:
            if not returned.is_set():  # after the command, SIGTERM would end pytest itself
                os.kill(os.getpid(), signal.SIGTERM)  # the command's handler stops it, as in a container

    thread = threading.Thread(target=scrape_then_stop)
    thread.start()
    try:
        with caplog.at_level(logging.INFO, "flowprobe.analytics"):
            assert command(args, factory=CountingDetector) == 0
    finally:
        returned.set()
        thread.join(timeout=30)
    assert value(scraped[0], "flowprobe_analytics_points_total", source="history") == 3 * 4
    (started,) = [r for r in caplog.records if r.getMessage() == "analytics worker started"]
    assert started.fields["detectors"] == how_they_run(), "the start line says how the detectors run"  # type: ignore[attr-defined]
    assert len(StateFile(tmp_path / "state").load()) == 4


def test_the_command_fails_at_start_without_a_detector_or_with_a_taken_port(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("collector.log.configure_logging", lambda *args, **kwargs: None)

    def no_detector() -> Any:
        raise ModuleNotFoundError("No module named 'analytics.scorers.registry'")

    args = _parser().parse_args(["analytics", "--source", f"history:{tmp_path}/h.sqlite3", "--state-dir", str(tmp_path)])
    assert command(args, factory=no_detector) == 1
    assert "cannot make a detector: ModuleNotFoundError" in capsys.readouterr().err
    with socketserver_on_a_port() as port:
        args = _parser().parse_args(["analytics", "--listen", f"127.0.0.1:{port}", "--source", "prometheus:http://127.0.0.1:9",
                                     "--state-dir", str(tmp_path)])
        assert command(args, factory=CountingDetector) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


class socketserver_on_a_port:
    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        return int(self.sock.getsockname()[1])

    def __exit__(self, *_: object) -> None:
        self.sock.close()


def test_the_cli_flags_parse() -> None:
    args = _parser().parse_args(["analytics", "--source", "prometheus:http://prometheus:9090", "--interval", "1m30s", "--threshold", "0.95"])
    assert (args.listen, args.interval, args.threshold, args.state_dir) == (("127.0.0.1", 9701), 90.0, 0.95, Path("data/analytics"))
    assert _parser().parse_args(["analytics", "--interval", "5"]).interval == 5.0
    assert (args.probation, _parser().parse_args(["analytics", "--probation", "0"]).probation) == (None, 0)
    for bad in (["--source", "prometheus:localhost:9090"], ["--source", "sqlite:x"], ["--interval", "0s"], ["--interval", "soon"],
                ["--threshold", "1.5"], ["--probation", "-1"], ["--probation", "1.5"], ["--probation", "many"]):
        with pytest.raises(SystemExit):
            _parser().parse_args(["analytics", *bad])


# ---------------------------------------------------------------- the probation


class Alarmed(CountingDetector):
    """Every point is as anomalous as can be."""

    def score_one(self, x: float, t: float | None = None) -> float:
        super().score_one(x, t)
        return 1.0


class Lines:
    """Where InfluxOutput hands its lines (the sink's side is tested in tests/e2e/test_analytics_influx.py)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add_lines(self, lines: list[str]) -> None:
        self.lines.extend(lines)

    def fields(self) -> list[dict[str, str]]:
        """Each line's fields (`flowprobe_anomaly,TAGS score=..,anomaly=..,value=.. TIME`; no spaces in these tags)."""
        return [dict(field.split("=") for field in line.split(" ")[1].split(",")) for line in self.lines]


def _flags(worker: Worker) -> tuple[bool, bool, float]:
    """(anomaly and learning in the API, flowprobe_anomaly on /metrics) of the one series."""
    from analytics.emit import render

    (item,) = worker.anomalies()["items"]
    return item["anomaly"], item["learning"], value(render(worker), "flowprobe_anomaly", workflow="w", env="prod", signal="latency")


def test_no_anomaly_is_flagged_on_a_series_first_probation_points(tmp_path: Path) -> None:
    source, lines = ListSource(), Lines()
    worker = Worker(source, Alarmed, threshold=0.9, probation=3, state=StateFile(tmp_path), influx=InfluxOutput(lines))  # type: ignore[arg-type]
    seen = []
    for i in range(2):
        source.pending = [Point("w", "prod", "latency", T0 + i, 1.0)]
        asyncio.run(worker.run_once())
        seen.append(_flags(worker))
    asyncio.run(worker.save())
    # A restart goes on counting: the probation is not served twice.
    worker = Worker(source, Alarmed, threshold=0.9, probation=3, state=StateFile(tmp_path), influx=InfluxOutput(lines))  # type: ignore[arg-type]
    worker.load()
    for i in range(2, 4):
        source.pending = [Point("w", "prod", "latency", T0 + i, 1.0)]
        asyncio.run(worker.run_once())
        seen.append(_flags(worker))
    assert seen == [(False, True, 0.0)] * 3 + [(True, False, 1.0)]
    assert all(worker.series[("w", "prod", "latency")].score == 1.0 for _ in seen), "the score itself is exported all along"
    assert [f["anomaly"] for f in lines.fields()] == ["false"] * 3 + ["true"]


def test_a_state_saved_before_the_points_were_counted_resumes_past_its_probation(tmp_path: Path) -> None:
    state = StateFile(tmp_path)
    state.save({("w", "prod", "latency"): SavedSeries(Alarmed(), kind_of(Alarmed()), T0, 1.0, 1.0)})  # no `learned`
    source = ListSource()
    worker = Worker(source, Alarmed, threshold=0.9, probation=750, state=state)
    assert worker.load() == 1
    source.pending = [Point("w", "prod", "latency", T0 + 1, 1.0)]
    asyncio.run(worker.run_once())
    assert _flags(worker) == (True, False, 1.0)


def test_the_shipped_probation_holds_back_a_young_detectors_false_alarms() -> None:
    """Clean workflow latencies (no incident) but for one benign slow request, 5 times, at the 400th point: the shipped
    ensemble, young, scores it above the threshold (its step member; the value, mean and spread members are settling)."""
    from analytics.scorers import default_detector
    from analytics.worker import DEFAULT_PROBATION, DEFAULT_THRESHOLD
    from bench.anomaly_domain import make_series

    rng = random.Random(3)
    source, lines = ListSource(), Lines()
    worker = Worker(source, default_detector, probation=DEFAULT_PROBATION, influx=InfluxOutput(lines))  # type: ignore[arg-type]
    young = []
    for index in range(3):
        series, _ = make_series(rng, index)  # its incidents come after the probation, so these points are clean
        values = series.values[:DEFAULT_PROBATION]
        values[400] *= 5.0
        source.pending = [Point(f"w{index}", "prod", "latency", t, x) for t, x in zip(series.times, values)]
        asyncio.run(worker.run_once())
        young.append(worker.series[(f"w{index}", "prod", "latency")].learned)
    fields = lines.fields()
    assert young == [DEFAULT_PROBATION] * 3 and len(fields) == 3 * DEFAULT_PROBATION
    assert any(float(f["score"]) >= DEFAULT_THRESHOLD for f in fields), "a young detector alarms: the probation has work to do"
    assert not any(f["anomaly"] == "true" for f in fields)


# ---------------------------------------------------------------- state across restarts


def test_a_restarted_worker_resumes_its_detectors_and_learns_nothing_twice(store: HistoryStore, tmp_path: Path) -> None:
    for i in range(5):
        store.add(run(T0 + 60 * i, 0.2))
    store.flush()
    state = StateFile(tmp_path / "state")
    first = Worker(HistorySource(store.path), CountingDetector, state=state)
    assert asyncio.run(first.run_once()) == 5 * 4
    assert asyncio.run(first.save())

    store.add(run(T0 + 300, 0.2))
    store.flush()
    second = Worker(HistorySource(store.path), CountingDetector, state=state)
    assert second.load() == 4
    latency = second.series[("order-placement", "prod", "latency")]
    assert isinstance(latency.detector, CountingDetector) and latency.detector.n == 5 and latency.last_t == T0 + 240
    assert latency.score is not None, "the last scores are back before the first read"
    # The history is read again from its start; only the new run is learned.
    assert asyncio.run(second.run_once()) == 4
    assert latency.detector.n == 6


def test_a_restarted_worker_asks_prometheus_only_for_what_it_has_not_learned(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "state")
    source = ListSource()
    first = Worker(source, CountingDetector, state=state)
    source.pending = [Point("w", "prod", "latency", T0, 1.0), Point("w", "prod", "error_rate", T0 + 15, 0.0)]
    asyncio.run(first.run_once())
    asyncio.run(first.save())
    second = Worker(source, CountingDetector, state=state)
    second.load()
    assert source.resumed == T0 + 15


def test_a_corrupt_state_file_is_logged_and_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "analytics-state.pickle").write_bytes(b"\x80\x05 truncated")
    worker = Worker(ListSource(), CountingDetector, state=StateFile(tmp_path))
    with caplog.at_level(logging.WARNING, "flowprobe.analytics"):
        assert worker.load() == 0
    assert "ignoring the unreadable analytics state" in caplog.text
    asyncio.run(worker.save())  # the next save replaces it with a good one
    assert StateFile(tmp_path).load() == {}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "no temporary file is left behind"


def test_saved_detectors_of_another_kind_are_relearned(tmp_path: Path) -> None:
    source = ListSource()
    first = Worker(source, OtherDetector, state=StateFile(tmp_path))
    source.pending = [Point("w", "prod", "latency", T0, 1.0)]
    asyncio.run(first.run_once())
    asyncio.run(first.save())
    second = Worker(source, CountingDetector, state=StateFile(tmp_path))
    assert second.load() == 0, "the shipped detector changed: its old models are not mixed in"


# ---------------------------------------------------------------- recovery


def test_a_missing_then_present_history_is_retried_without_a_crash(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "history.sqlite3"
    worker = Worker(HistorySource(path), CountingDetector)
    with caplog.at_level(logging.WARNING, "flowprobe.analytics"):
        assert asyncio.run(worker.run_once()) == 0
        assert asyncio.run(worker.run_once()) == 0
    assert worker.errors_total == 2 and worker.last_run is None and "does not exist" in (worker.source_error or "")
    assert caplog.text.count("cannot read the analytics source") == 1, "logged once, not once per interval"
    history = HistoryStore(path)
    try:
        history.add(run(T0, 0.2))
        history.flush()
        assert asyncio.run(worker.run_once()) == 4
    finally:
        history.close()
    assert worker.source_error is None and worker.last_run is not None


def test_a_locked_history_is_retried(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "history.sqlite3"
    history = HistoryStore(path)
    history.add(run(T0, 0.2))
    history.flush()
    history.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    worker = Worker(HistorySource(path, busy_timeout=0.05), CountingDetector)
    try:
        assert asyncio.run(worker.run_once()) == 0
        assert worker.errors_total == 1 and "locked" in (worker.source_error or "")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert asyncio.run(worker.run_once()) == 4


def test_a_dead_prometheus_is_retried_and_an_empty_answer_is_no_error() -> None:
    async def scenario() -> Worker:
        dead = PrometheusSource(f"http://127.0.0.1:{free_port()}", step=1.0, settle=0, timeout=2)
        worker = Worker(dead, CountingDetector)
        try:
            assert await worker.run_once() == 0
            assert await worker.run_once() == 0
        finally:
            await worker.close()
        return worker

    worker = asyncio.run(scenario())
    assert worker.errors_total == 2 and "cannot be reached" in (worker.source_error or "")

    def empty(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "matrix", "result": []}})

    async def empty_series() -> Worker:
        client = httpx.AsyncClient(transport=httpx.MockTransport(empty))
        worker = Worker(PrometheusSource("http://prometheus:9090", client=client), CountingDetector)
        assert await worker.run_once() == 0
        await client.aclose()
        return worker

    worker = asyncio.run(empty_series())
    assert worker.errors_total == 0 and worker.last_run is not None and worker.series == {}


def test_a_failing_detector_or_factory_is_counted_and_the_rest_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    source = ListSource()
    made: list[CountingDetector] = []

    def counting() -> CountingDetector:
        made.append(BrokenDetector() if not made else CountingDetector())  # the first series gets a broken one
        return made[-1]

    worker = Worker(source, counting)
    source.pending = [Point("w", "prod", "latency", T0, 1.0), Point("w", "prod", "latency", T0 + 1, 1.0), Point("w", "prod", "error_rate", T0, 0.0)]
    with caplog.at_level(logging.ERROR, "flowprobe.analytics"):
        assert asyncio.run(worker.run_once()) == 1, "the broken series is skipped, the other scored"
    assert worker.errors_total == 2 and caplog.text.count("a detector failed") == 1

    def no_detector() -> CountingDetector:
        raise ImportError("no registry yet")

    worker = Worker(source, no_detector)
    source.pending = [Point("w", "prod", "latency", T0 + i, 1.0) for i in range(3)] + [Point("w", "prod", "error_rate", T0, 0.0)]
    assert asyncio.run(worker.run_once()) == 0
    assert worker.errors_total == 2, "one per series that has no detector, not one per point"

    source.error = RuntimeError("a bug in a source")
    assert asyncio.run(worker.run_once()) == 0 and worker.errors_total == 3, "even our own bugs do not stop the worker"


def test_stale_series_leave_the_exposition_but_keep_their_detector() -> None:
    now = [T0]
    source = ListSource()
    worker = Worker(source, CountingDetector, stale_after=3600, clock=lambda: now[0])
    source.pending = [Point("w", "prod", "latency", T0, 1.0)]
    asyncio.run(worker.run_once())
    assert [key for key, _ in worker.current()] == [("w", "prod", "latency")]
    now[0] += 3601
    assert worker.current() == [] and ("w", "prod", "latency") in worker.series



def test_a_bug_in_an_interval_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    source = ListSource()
    worker = Worker(source, CountingDetector, interval=0.01)
    source.pending = ["not a point"]  # type: ignore[list-item]

    async def two_intervals() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        while worker.last_run is None:  # the second interval reads (nothing) successfully
            await asyncio.sleep(0.01)
        stop.set()
        await task

    with caplog.at_level(logging.ERROR, "flowprobe.analytics"):
        asyncio.run(asyncio.wait_for(two_intervals(), 10))
    assert worker.errors_total == 1 and "failed an interval" in caplog.text


class Attuned(CountingDetector):
    """A detector that acts on its own alarms: it wants the threshold it is alarmed at."""

    def __init__(self) -> None:
        super().__init__()
        self.alarm_level: float | None = None

    def set_alarm_level(self, threshold: float) -> None:
        self.alarm_level = threshold


def test_every_detector_made_or_restored_is_attuned_to_the_workers_threshold(tmp_path: Path) -> None:
    source = ListSource()
    worker = Worker(source, Attuned, threshold=0.7, state=StateFile(tmp_path))
    source.pending = [Point("w", "prod", "latency", T0, 1.0)]
    asyncio.run(worker.run_once())
    assert worker.series[("w", "prod", "latency")].detector.alarm_level == 0.7
    assert asyncio.run(worker.save())
    # Restarted with another --threshold: the saved detector alarms at the new one.
    restarted = Worker(source, Attuned, threshold=0.8, state=StateFile(tmp_path))
    assert restarted.load() == 1
    assert restarted.series[("w", "prod", "latency")].detector.alarm_level == 0.8
