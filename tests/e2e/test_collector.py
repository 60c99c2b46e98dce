"""The collector as a real process: Prometheus scrapes it, promtool lints it, signals drive it."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.target import create_app
from tests.helpers import (
    PROBE_EMAIL, PROBE_PASSWORD, fast_copy, free_port, probe_environment, prometheus_config, require_binary, running_process,
    running_prometheus, serve_in_thread, wait_until,
)

pytestmark = pytest.mark.e2e

WORKFLOW_NAMES = {"health-check", "user-login", "registration", "farm-creation", "product-listing", "order-placement"}


class InFlight:
    """ASGI middleware counting requests in progress at the target."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.count += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.count -= 1


@pytest.fixture
def target() -> Iterator[tuple[str, InFlight]]:
    app = InFlight(create_app(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD))
    with serve_in_thread(app) as url:
        yield url, app


def start_collector(config: Path, data: Path, target_url: str, log: Path, *extra: str) -> tuple[Any, str]:
    port = free_port()
    args = [sys.executable, "-m", "collector.cli", "run", "--config", str(config), "--env", "prod",
            "--listen", f"127.0.0.1:{port}", "--data-dir", str(data), "--grace", "10", *extra]
    env = probe_environment({"prod": target_url})
    return running_process(args, env=env, log=log), f"http://127.0.0.1:{port}"


def ready(base: str) -> bool:
    return httpx.get(f"{base}/readyz", timeout=2).status_code == 200


def metric(base: str, name: str, **labels: str) -> float | None:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


def test_prometheus_scrapes_all_six_workflows(tmp_path: Path, target: tuple[str, InFlight]) -> None:
    config = fast_copy(tmp_path / "workflows")
    process, base = start_collector(config, tmp_path / "data", target[0], tmp_path / "collector.log")
    with process:
        wait_until(lambda: ready(base), what="collector ready")
        with running_prometheus(tmp_path, prometheus_config({"flowprobe": [base]})) as prometheus:
            def series() -> dict[str, float] | None:
                response = httpx.get(f"{prometheus}/api/v1/query",
                                     params={"query": 'flowprobe_workflow_success{env="prod"}'}, timeout=5)
                found = {r["metric"]["workflow"]: float(r["value"][1]) for r in response.json()["data"]["result"]}
                return found if set(found) == WORKFLOW_NAMES else None

            found = wait_until(series, timeout=60, interval=0.5, what="all six workflows in Prometheus")
            assert found == dict.fromkeys(WORKFLOW_NAMES, 1.0), (tmp_path / "collector.log").read_text()[-3000:]


def test_exposition_passes_promtool_check_metrics(tmp_path: Path, target: tuple[str, InFlight]) -> None:
    promtool = require_binary("promtool")
    config = fast_copy(tmp_path / "workflows")
    process, base = start_collector(config, tmp_path / "data", target[0], tmp_path / "collector.log")
    with process:
        wait_until(lambda: ready(base), what="collector ready")
        wait_until(lambda: metric(base, "flowprobe_step_phase_seconds", workflow="order-placement", phase="connect") is not None,
                   timeout=30, what="order-placement to run")
        exposition = httpx.get(f"{base}/metrics").content
    assert b"_created" not in exposition
    checked = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    # A secret must never reach the exposition.
    assert PROBE_PASSWORD.encode() not in exposition


def test_reload_on_sighup_keeps_old_config_when_new_one_is_invalid(tmp_path: Path, target: tuple[str, InFlight]) -> None:
    config = fast_copy(tmp_path / "workflows")
    process, base = start_collector(config, tmp_path / "data", target[0], tmp_path / "collector.log", "--no-watch")
    with process as proc:
        wait_until(lambda: ready(base), what="collector ready")
        assert metric(base, "flowprobe_config_last_reload_successful") == 1.0

        (config / "broken.yaml").write_text("name: broken\nschedule: {every: 1s}\nsteps: []\nbogus: 1\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: metric(base, "flowprobe_config_last_reload_successful") == 0.0, what="failed reload metric")
        log = (tmp_path / "collector.log").read_text()
        assert "config reload failed" in log and "broken.yaml:4: bogus: unknown key" in log
        # The old config keeps running: health-check still gets runs.
        runs = metric(base, "flowprobe_workflow_runs_total", workflow="health-check", result="success") or 0
        wait_until(lambda: (metric(base, "flowprobe_workflow_runs_total", workflow="health-check", result="success") or 0) > runs,
                   what="runs to continue after a failed reload")

        (config / "broken.yaml").unlink()
        extra = (config / "health-check.yaml").read_text().replace("name: health-check", "name: health-check-copy")
        (config / "health-check-copy.yaml").write_text(extra.replace("depends_on", "# depends_on"))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: metric(base, "flowprobe_config_last_reload_successful") == 1.0, what="successful reload")
        names = {i["workflow"] for i in httpx.get(f"{base}/api/workflows").json()["items"]}
        assert names == WORKFLOW_NAMES | {"health-check-copy"}


def test_reload_on_file_change(tmp_path: Path, target: tuple[str, InFlight]) -> None:
    config = fast_copy(tmp_path / "workflows")
    process, base = start_collector(config, tmp_path / "data", target[0], tmp_path / "collector.log")
    with process:
        wait_until(lambda: ready(base), what="collector ready")
        (config / "registration.yaml").unlink()
        wait_until(lambda: "registration" not in {i["workflow"] for i in httpx.get(f"{base}/api/workflows").json()["items"]},
                   what="the removed workflow to disappear")
        assert metric(base, "flowprobe_workflow_success", workflow="registration") is None
        (config / "user-login.yaml").write_text("name: user-login\nschedule: {every: nope}\nsteps: []\n")
        wait_until(lambda: metric(base, "flowprobe_config_last_reload_successful") == 0.0, what="failed reload metric")


def test_sigterm_lets_runs_in_flight_finish_and_writes_them(tmp_path: Path, target: tuple[str, InFlight]) -> None:
    url, app = target
    config = fast_copy(tmp_path / "workflows", every="2s")
    data = tmp_path / "data"
    # Every database call takes 1.5 s, so runs are in flight most of the time.
    httpx.put(f"{url}/chaos/database", json={"latency_ms": 1500}).raise_for_status()
    process, base = start_collector(config, data, url, tmp_path / "collector.log")
    with process as proc:
        wait_until(lambda: ready(base), what="collector ready")
        wait_until(lambda: app.count > 0, what="a request in flight at the target")
        signalled = time.time()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    log = (tmp_path / "collector.log").read_text()
    assert "collector stopped" in log
    with sqlite3.connect(data / "history.sqlite3") as db:
        spans = db.execute("SELECT started_at, started_at + duration FROM runs").fetchall()
    assert any(start < signalled < end for start, end in spans), "no run that was in flight at SIGTERM was written"
    # Logs are one JSON object per line, and carry no secret.
    for line in log.splitlines():
        json.loads(line)
    assert PROBE_PASSWORD not in log
