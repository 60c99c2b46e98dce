"""The run-level models inside the worker: runs from a real history file to predictions, root causes and back after a restart."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from analytics.emit import create_app, render
from analytics.findings import Findings
from analytics.patterns import Topology
from analytics.predict import FailurePredictor
from analytics.scorers import default_detector
from analytics.source import HistorySource
from analytics.state import StateFile
from analytics.worker import Worker
from collector.result import CheckFailure, RunResult, StepResult
from collector.store import HistoryStore
from tests.helpers import require_binary

T0 = float(int(time.time()) // 60 * 60 - 6 * 3600)
TOPOLOGY = Topology.from_api([
    {"workflow": "health-check", "depends_on": [], "steps": ["health"]},
    {"workflow": "user-login", "depends_on": ["health-check"], "steps": ["login", "me"]},
])


def result(workflow: str, t: float, ok: bool, step: str, duration: float = 0.1) -> RunResult:
    failures = [] if ok else [CheckFailure("status", "status", "expected 200, got 503")]
    steps = [StepResult(step, "success" if ok else "failure", status=200 if ok else 503, duration=duration, attempts=1,
                        started_at=t, host="127.0.0.1:8080", failures=failures)]
    return RunResult(workflow, "prod", f"{workflow}-{t}", t, "success" if ok else "failure", duration=duration, steps=steps,
                     failed_step=None if ok else step, reason=None if ok else "status")


def history(store: HistoryStore, minutes: int, broken_from: int | None) -> None:
    """health-check and user-login every minute; from `broken_from` health-check fails and user-login is skipped."""
    for m in range(minutes):
        t = T0 + 60 * m
        broken = broken_from is not None and m >= broken_from
        store.add(result("health-check", t, not broken, "health", 0.05 + 0.001 * (m % 7)))
        if broken:
            store.add(RunResult("user-login", "prod", f"login-{t}", t + 1, "skipped", skip_reason="dependency"))
        else:
            store.add(result("user-login", t + 1, m % 37 != 5, "login", 0.2 + 0.002 * (m % 5)))
    store.flush()


def worker(store: HistoryStore, state: Path) -> Worker:
    async def topology() -> Topology:
        return TOPOLOGY

    default = Findings.default()
    findings = Findings(FailurePredictor(min_labels=10), default.forecaster, default.patterns)
    return Worker(HistorySource(store.path), default_detector, state=StateFile(state), findings=findings, topology=topology,
                  clock=lambda: T0 + 3600 * 6)


async def _get(app: Any, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://analytics") as client:
        return await client.get(path)


def test_runs_become_predictions_forecasts_and_a_root_cause_and_survive_a_restart(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history.sqlite3")
    try:
        history(store, 200, broken_from=195)
        first = worker(store, tmp_path / "state")
        asyncio.run(first.run_once())
        assert first.findings is not None and first.findings.runs_total == 400

        text = render(first)
        app = create_app(first)
        incidents = asyncio.run(_get(app, "/api/analytics/incidents?open=true")).json()
        (incident,) = incidents["items"]
        top = incident["top"]
        assert incident["status"] == "open" and top["cause"] == "health-check" and top["kind"] in ("dependency", "workflow")
        assert [(m["workflow"], m["env"]) for m in incident["members"]] == [("health-check", "prod")]
        assert {s["workflow"] for s in incident["skipped"]} == {"user-login"}
        assert (f'flowprobe_root_cause_info{{incident="{incident["id"]}",workflow="health-check",env="prod",'
                f'cause="health-check",kind="{top["kind"]}"}} 1') in text

        predictions = asyncio.run(_get(app, "/api/analytics/predictions")).json()
        by_pair = {(p["workflow"], p["env"]): p for p in predictions["items"]}
        assert set(by_pair) == {("health-check", "prod"), ("user-login", "prod")}
        health = by_pair[("health-check", "prod")]
        assert health["failure_probability"] is not None and 0.0 <= health["failure_probability"] <= 1.0
        assert health["horizon_runs"] == 5 and health["warning"] == (health["failure_probability"] >= predictions["alert_at"])
        assert 'flowprobe_failure_probability{workflow="health-check",env="prod"} ' in text
        forecast = health["latency_forecast_seconds"]
        assert set(forecast) == {"5m", "15m", "1h"} and all(0.0 < v < 1.0 for v in forecast.values())
        assert 'flowprobe_latency_forecast_seconds{workflow="health-check",env="prod",horizon="15m"} ' in text
        assert 'flowprobe_analytics_runs_total{source="history"} 400' in text

        assert asyncio.run(first.save())
        # A restart reads the whole history again: nothing is learned twice, the incident stays one incident.
        second = worker(store, tmp_path / "state")
        second.load()
        assert second.findings is not None and second.findings.runs_total == 400
        asyncio.run(second.run_once())
        assert second.findings.runs_total == 400
        history_more = [result("health-check", T0 + 60 * 200, True, "health")]
        for run in history_more:
            store.add(run)
        store.flush()
        asyncio.run(second.run_once())
        assert second.findings.runs_total == 401
        (again,) = asyncio.run(_get(create_app(second), "/api/analytics/incidents?open=true")).json()["items"]
        assert again["id"] == incident["id"], "the restored finder carries the same incident on"
    finally:
        store.close()


def test_the_full_exposition_passes_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    store = HistoryStore(tmp_path / "history.sqlite3")
    try:
        history(store, 120, broken_from=117)
        w = worker(store, tmp_path / "state")
        asyncio.run(w.run_once())
        body = asyncio.run(_get(create_app(w), "/metrics")).content
    finally:
        store.close()
    for family in (b"flowprobe_failure_probability", b"flowprobe_latency_forecast_seconds", b"flowprobe_root_cause_info"):
        assert family + b"{" in body
    checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_the_generated_alert_fires_at_the_predictors_threshold() -> None:
    from analytics.findings import FAILURE_ALERT
    from analytics.predict import ALERT_THRESHOLD
    from collector.rules import FAILURE_PROBABILITY_ALERT

    assert FAILURE_PROBABILITY_ALERT == ALERT_THRESHOLD == FAILURE_ALERT
