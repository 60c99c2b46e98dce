"""The InfluxDB sink against a real server of the v2 write API: VictoriaMetrics.

The official client writes; the export API reads back. VictoriaMetrics names
each field `{measurement}_{field}`, keeps milliseconds, stores booleans as 1/0
and string fields as 0. Stopping it mid-run must lose no point and repeat none.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from collector.config import InfluxSettings
from collector.result import RunResult, StepResult
from collector.sink import InfluxSink
from tests.helpers import VictoriaMetrics, failed_order_run, wait_until

pytestmark = pytest.mark.e2e

TOKEN = "vm-ignores-this-token-but-it-is-sent"


@pytest.fixture
def vm(tmp_path: Path) -> VictoriaMetrics:
    return VictoriaMetrics(tmp_path)


def sink_for(vm: VictoriaMetrics, spool: Path, **overrides: Any) -> InfluxSink:
    settings = InfluxSettings.model_validate(
        {
            "url": vm.url,
            "org": "acme",
            "bucket": "probes",
            "token": {"env": "FLOWPROBE_INFLUX_TOKEN"},
            "batch_size": 20,
            "flush_interval": 0.05,
            "timeout": 2.0,
            "retry_initial": 0.1,
            "retry_max": 0.5,
            **overrides,
        }
    )
    sink = InfluxSink(settings, TOKEN, spool)
    sink.start()
    return sink


def series(rows: list[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    """Export rows keyed by (name, sorted label pairs...)."""
    out = {}
    for row in rows:
        metric = dict(row["metric"])
        name = metric.pop("__name__")
        out[(name, *(f"{k}={v}" for k, v in sorted(metric.items())))] = row
    return out


def test_points_arrive_with_their_tags_fields_and_timestamps(vm: VictoriaMetrics, tmp_path: Path) -> None:
    now = time.time()
    result = failed_order_run(now - 2.0, login_at=now - 1.75, pay_at=now - 1.5, pay_connect=0.004)
    with vm.running():
        sink = sink_for(vm, tmp_path / "spool")
        sink.add(result)
        wait_until(lambda: sink.stats()["written"] == 3, timeout=10, what="3 points written")
        sink.close(2.0)
        got = wait_until(
            lambda: (s := series(vm.export('{__name__=~"flowprobe_.*"}'))) and len(s) == 20 and s, timeout=10, what="20 series"
        )

    def sample(name: str, **labels: str) -> tuple[float, int]:
        row = got[(name, *(f"{k}={v}" for k, v in sorted(labels.items())))]
        assert len(row["values"]) == 1, row
        return row["values"][0], row["timestamps"][0]

    def ms(unix: float) -> int:
        return int(unix * 1000)

    login = {"workflow": "order-placement", "env": "prod", "step": "login"}
    pay = {**login, "step": "pay"}
    run = {"workflow": "order-placement", "env": "prod", "result": "failure"}
    assert sample("flowprobe_step_duration", **login) == (0.125, ms(now - 1.75))
    for phase, seconds in result.steps[0].phases.items():
        assert sample(f"flowprobe_step_{phase}", **login) == (seconds, ms(now - 1.75))
    assert sample("flowprobe_step_success", **login)[0] == 1
    assert sample("flowprobe_step_status_code", **login)[0] == 200
    assert sample("flowprobe_step_retries", **login)[0] == 0
    assert sample("flowprobe_step_duration", **pay) == (0.25, ms(now - 1.5))
    assert sample("flowprobe_step_connect", **pay)[0] == 0.004
    assert sample("flowprobe_step_success", **pay)[0] == 0
    assert sample("flowprobe_step_status_code", **pay)[0] == 500
    assert sample("flowprobe_step_retries", **pay)[0] == 2
    assert sample("flowprobe_run_duration", **run) == (1.5, ms(now - 2.0))
    assert sample("flowprobe_run_success", **run)[0] == 0
    assert sample("flowprobe_run_attempts", **run)[0] == 2
    assert sample("flowprobe_run_flaky", **run)[0] == 1
    # String fields: VictoriaMetrics keeps that they were there, not their text.
    assert sample("flowprobe_run_failed_step", **run)[1] == ms(now - 2.0)
    assert sample("flowprobe_run_reason", **run)[1] == ms(now - 2.0)
    assert not any(key[0].startswith("flowprobe_step_") and "step=cancel" in key for key in got)


def test_a_server_outage_loses_no_point_and_repeats_none(vm: VictoriaMetrics, tmp_path: Path) -> None:
    base = time.time() - 600
    spool = tmp_path / "spool"
    added: list[RunResult] = []

    def add(sink: InfluxSink, count: int, pause: float = 0.0) -> None:
        for _ in range(count):
            i = len(added)
            result = RunResult(
                f"wf-{i % 3}",
                "prod",
                f"r{i}",
                base + i * 0.01,
                "success" if i % 4 else "failure",
                duration=0.2,
                attempts=1,
                steps=[
                    StepResult(name, "success", status=200, duration=0.01 * (k + 1), attempts=1, started_at=base + i * 0.01)
                    for k, name in enumerate(("login", "order"))
                ],
            )
            added.append(result)
            sink.add(result)
            time.sleep(pause)

    def written(sink: InfluxSink, total: int) -> bool:
        return sink.stats()["written"] == total

    with vm.running() as proc:
        sink = sink_for(vm, spool)
        add(sink, 20)
        wait_until(lambda: written(sink, 60), timeout=10, what="points before the outage")
        vm.stop(proc)
        add(sink, 30, pause=0.01)  # runs go on while the server is away
        wait_until(lambda: sink.stats()["spool_points"] == 90, timeout=10, what="the outage's points in the spool")
    assert sink.stats()["failed_writes"] >= 1
    with vm.running() as proc:
        add(sink, 20)  # newer points wait behind the spooled ones
        wait_until(lambda: written(sink, 210), timeout=15, what="the spool replayed")
        assert sink.stats()["spool_points"] == 0
        # Away again, and the collector stops: the spool keeps the points for the next start.
        vm.stop(proc)
        add(sink, 10)
        sink.close(1.0)
        assert sink.stats()["spool_points"] == 30
    with vm.running():
        again = sink_for(vm, spool)
        add(again, 5)
        wait_until(lambda: written(again, 45), timeout=15, what="the spool replayed after a restart")
        again.close(2.0)
        assert sink.stats()["dropped"] == 0 and again.stats()["dropped"] == 0

        expected_runs = Counter((r.workflow, r.outcome) for r in added)
        expected_times = {key: sorted(int(r.started_at * 1000) for r in added if (r.workflow, r.outcome) == key) for key in expected_runs}

        def runs_exported() -> dict[tuple[str, str], list[int]] | None:
            rows = vm.export('{__name__="flowprobe_run_duration"}')
            found = {(row["metric"]["workflow"], row["metric"]["result"]): sorted(row["timestamps"]) for row in rows}
            return found if sum(len(t) for t in found.values()) >= len(added) else None

        found = wait_until(runs_exported, timeout=10, what=f"{len(added)} run points")
        steps = vm.export('{__name__="flowprobe_step_duration"}')
    # Exactly once: every run's timestamp once in its series, nothing extra.
    assert found == expected_times
    step_counts = Counter((row["metric"]["workflow"], row["metric"]["step"]) for row in steps for _ in row["timestamps"])
    assert step_counts == Counter((r.workflow, s.name) for r in added for s in r.steps)
    for row in steps:
        assert len(row["timestamps"]) == len(set(row["timestamps"])), row["metric"]


def test_the_collector_writes_its_runs_through_the_sink(vm: VictoriaMetrics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """flowprobe.yaml's influx: wires the sink into the daemon: runs arrive, and the sink's counters are exported."""
    from collector.service import Service
    from collector.target import create_app
    from tests.helpers import PROBE_EMAIL, PROBE_PASSWORD, WORKFLOWS, probe_environment, serve_in_thread

    config = tmp_path / "workflows"
    shutil.copytree(WORKFLOWS, config)
    (config / "flowprobe.yaml").write_text(
        f"influx: {{url: '{vm.url}', org: acme, bucket: probes, token: {{env: FLOWPROBE_INFLUX_TOKEN}}, flush_interval: 50ms}}\n"
    )
    monkeypatch.setenv("FLOWPROBE_INFLUX_TOKEN", TOKEN)
    with serve_in_thread(create_app(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD)) as url, vm.running():
        for name, value in probe_environment({"prod": url}).items():
            monkeypatch.setenv(name, value)
        service = Service([config], data_dir=tmp_path / "data", envs=["prod"], watch=False)

        async def main() -> list[Any]:
            await service.start()
            done = [await service.run_pair(workflow, "prod") for workflow in ("health-check", "product-listing")]
            await service.stop()
            return done

        results = asyncio.run(main())
        assert service.registry.get_sample_value("flowprobe_sink_points_total", {"sink": "influx", "result": "written"}) == 5

        def arrived() -> dict[tuple[str, ...], dict[str, Any]] | None:
            found = series(vm.export('{__name__=~"flowprobe_(run|step)_duration"}'))
            return found if len(found) == 5 else None

        rows = wait_until(arrived, what="the collector's points in VictoriaMetrics")
        runs = {key for key in rows if key[0] == "flowprobe_run_duration"}
        assert runs == {
            ("flowprobe_run_duration", "env=prod", "result=success", "workflow=health-check"),
            ("flowprobe_run_duration", "env=prod", "result=success", "workflow=product-listing"),
        }, [r.outcome for r in results]
        steps = {dict(p.split("=", 1) for p in key[1:])["step"] for key in rows if key[0] == "flowprobe_step_duration"}
        assert steps == {"health", "list-products", "get-product"}
