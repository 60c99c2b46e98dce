"""The analytics worker's scores and predictions as InfluxDB points in a real VictoriaMetrics, each at its own time."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from analytics.findings import Findings
from analytics.influx import TOKEN_ENV, InfluxOutput
from analytics.scorers import default_detector
from analytics.source import HistorySource
from analytics.state import StateFile
from analytics.worker import Worker, command
from collector.cli import _parser
from collector.result import RunResult, StepResult
from collector.store import HistoryStore
from tests.helpers import VictoriaMetrics, wait_until

pytestmark = pytest.mark.e2e

T0 = float(int(time.time()) // 60 * 60 - 3 * 3600)
RUNS = 60


def history(path: Path) -> None:
    store = HistoryStore(path)
    try:
        for m in range(RUNS):
            t = T0 + 60 * m
            step = StepResult("health", "success", status=200, duration=0.05 + 0.001 * (m % 5), attempts=1, started_at=t)
            store.add(RunResult("health-check", "prod", f"r{m}", t, "success", duration=step.duration, steps=[step]))
        store.flush()
    finally:
        store.close()


def test_scores_and_predictions_land_at_their_own_times(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vm = VictoriaMetrics(tmp_path)
    history(tmp_path / "history.sqlite3")
    monkeypatch.setenv(TOKEN_ENV, "a-token-for-the-analytics-worker")
    with vm.running():
        output = InfluxOutput.open(vm.url, "flowprobe", "flowprobe", tmp_path / "state")
        worker = Worker(HistorySource(tmp_path / "history.sqlite3"), default_detector, state=StateFile(tmp_path / "state"),
                        findings=Findings.default(), influx=output)
        output.start()
        asyncio.run(worker.run_once())
        asyncio.run(worker.close())  # writes what is queued

        def exported(name: str) -> list[int] | None:
            rows = vm.export(name)
            stamps = sorted(t for row in rows for t in row["timestamps"])
            return stamps if len(stamps) >= RUNS - 1 else None

        # One score per point of the latency signal, each at its run's start (milliseconds), none at write time.
        stamps = wait_until(lambda: exported('flowprobe_anomaly_score{signal="latency",workflow="health-check",env="prod"}'),
                            timeout=20, what="the anomaly scores in VictoriaMetrics")
        assert stamps == [int((T0 + 60 * m) * 1000) for m in range(RUNS)]
        forecasts = wait_until(lambda: exported('flowprobe_prediction_latency_forecast_5m{workflow="health-check"}'),
                               timeout=20, what="the forecasts in VictoriaMetrics")
        assert set(forecasts) <= {int((T0 + 60 * m) * 1000) for m in range(RUNS)}
    assert output.sink.stats()["written"] >= RUNS * 3


def test_the_command_refuses_influx_without_its_token_or_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    base = ["analytics", "--source", f"history:{tmp_path}/h.sqlite3", "--state-dir", str(tmp_path / "s"), "--listen", "127.0.0.1:0"]
    args = _parser().parse_args([*base, "--influx-url", "http://127.0.0.1:1", "--influx-org", "o", "--influx-bucket", "b"])
    assert command(args) == 1
    assert f"needs the token in the environment variable {TOKEN_ENV}" in capsys.readouterr().err
    args = _parser().parse_args([*base, "--influx-url", "http://127.0.0.1:1"])
    assert command(args) == 1
    assert "--influx-url needs --influx-org and --influx-bucket" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "s" / "influx-spool")
