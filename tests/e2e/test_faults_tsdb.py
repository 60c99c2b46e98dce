"""The TSDB killed and restarted under a running collector loses no point (issue 7 §3).

Every part is a real process: the demo target, the collector (the shipped
workflows every second, writing through its InfluxDB sink) and
VictoriaMetrics as the Influx v2 write endpoint. VictoriaMetrics is killed
with SIGKILL while the collector runs on; its writes fail and go to the disk
spool; VictoriaMetrics comes back on the same data directory and the spool
drains. Then every point the collector's history says it made is counted
in VictoriaMetrics: each exactly once.

VictoriaMetrics (1.79, Debian's) acknowledges a write before the samples
reach its disk: a SIGKILL within about ten seconds of a write loses it, even
after ``/internal/force_flush`` (measured here). InfluxDB fsyncs its WAL
before it answers. That loss is the server's, invisible to any client, so
the test takes it out: the collector is paused (SIGSTOP) for the moment it
takes to make VictoriaMetrics durable (``/snapshot/create`` writes
everything it acknowledged to disk) and kill it. What the collector
acknowledged as written is then on disk, and what was in flight or came
later is the collector's to keep.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from collector.result import RunResult
from collector.sink import result_lines
from collector.target import create_app
from tests.e2e.test_collector import metric, ready, start_collector
from tests.e2e.test_sink_victoriametrics import TOKEN
from tests.helpers import PROBE_EMAIL, PROBE_PASSWORD, VictoriaMetrics, fast_copy, serve_in_thread, wait_until

pytestmark = pytest.mark.e2e

Point = tuple[str, frozenset[tuple[str, str]], int]  # (VictoriaMetrics name, labels, milliseconds)


def expected_points(history: Path) -> Counter[Point]:
    """The `_duration` sample of every point the collector made for the runs in its history."""
    with sqlite3.connect(history) as db:
        results = [RunResult.from_dict(json.loads(data)) for (data,) in db.execute("SELECT data FROM runs")]
    points: Counter[Point] = Counter()
    for result in results:
        for text in result_lines(result):
            head, _fields, nanoseconds = text.split(" ")
            measurement, *tags = head.split(",")
            points[(f"{measurement}_duration", frozenset(tuple(t.split("=", 1)) for t in tags), int(nanoseconds) // 1_000_000)] += 1
    return points


def stored_points(vm: VictoriaMetrics) -> Counter[Point]:
    points: Counter[Point] = Counter()
    for row in vm.export('{__name__=~"flowprobe_(run|step)_duration"}'):
        labels = dict(row["metric"])
        name = labels.pop("__name__")
        for timestamp in row["timestamps"]:
            points[(name, frozenset(labels.items()), timestamp)] += 1
    return points


def influx_rows(vm: VictoriaMetrics) -> float:
    text = httpx.get(f"{vm.url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith('vm_rows_inserted_total{type="influx"}'))


def sink(base: str, result: str) -> float:
    return metric(base, "flowprobe_sink_points_total", result=result) or 0.0


def test_a_sigkilled_tsdb_loses_no_point_of_a_running_collector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWPROBE_INFLUX_TOKEN", TOKEN)  # the collector's environment comes from the test's
    vm = VictoriaMetrics(tmp_path)
    config = fast_copy(tmp_path / "workflows")
    (config / "flowprobe.yaml").write_text(yaml.safe_dump({"influx": {
        "url": vm.url, "org": "acme", "bucket": "probes", "token": {"env": "FLOWPROBE_INFLUX_TOKEN"},
        "flush_interval": "100ms", "timeout": "2s", "retry_initial": "200ms", "retry_max": "1s",
    }}))
    data = tmp_path / "data"
    log = tmp_path / "collector.log"
    with serve_in_thread(create_app(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD)) as target:
        process, base = start_collector(config, data, target, log, "--no-watch")
        try:
            with vm.running() as first_vm, process as proc:
                wait_until(lambda: ready(base), what="collector ready")
                wait_until(lambda: sink(base, "written") >= 100, timeout=30, what="points written before the kill")

                proc.send_signal(signal.SIGSTOP)
                try:
                    seen: list[float] = []

                    def settled() -> bool:  # no write of the collector is still being taken in
                        seen.append(influx_rows(vm))
                        return len(seen) > 1 and seen[-1] == seen[-2]

                    wait_until(settled, interval=0.3, timeout=10, what="VictoriaMetrics to take in the last write")
                    httpx.get(f"{vm.url}/snapshot/create", timeout=30).raise_for_status()
                    first_vm.send_signal(signal.SIGKILL)
                    first_vm.wait(timeout=10)
                finally:
                    proc.send_signal(signal.SIGCONT)

                # The collector runs on: its writes fail and its points wait in the spool.
                wait_until(lambda: sink(base, "spooled") >= 100 and (metric(base, "flowprobe_sink_write_failures_total") or 0) >= 2,
                           timeout=30, what="points spooled while VictoriaMetrics is down")
                with vm.running():
                    spooled = sink(base, "spooled")
                    wait_until(lambda: metric(base, "flowprobe_sink_spool_points") == 0 and sink(base, "written") > 100 + spooled,
                               timeout=30, what="the spool to drain into the restarted VictoriaMetrics")
                    assert sink(base, "dropped") == 0 and sink(base, "rejected") == 0
                    proc.send_signal(signal.SIGTERM)  # stopping writes what is left
                    assert proc.wait(timeout=30) == 0

                    expected = expected_points(data / "history.sqlite3")
                    try:
                        wait_until(lambda: sum(stored_points(vm).values()) >= sum(expected.values()), timeout=15,
                                   what="as many points in VictoriaMetrics as the history made")
                    except AssertionError:
                        pass  # counted below, point by point
                    found = stored_points(vm)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- collector\n{log.read_text()[-3000:]}") from None
    lost, repeated = expected - found, found - expected
    assert not lost and not repeated, f"{sum(lost.values())} points lost, {sum(repeated.values())} repeated, of {sum(expected.values())}"
    assert len({name for name, _labels, _ms in expected}) == 2 and sum(expected.values()) > 100 + spooled
