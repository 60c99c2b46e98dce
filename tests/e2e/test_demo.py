"""`flowprobe demo`: one command, no external server, prints where to look, stops cleanly on Ctrl-C."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from analytics.scorers import how_they_run
from tests.helpers import free_port, running_process, wait_until

pytestmark = pytest.mark.e2e


def three_free_ports() -> int:
    """A base port whose next two are free too (the demo's prod, staging and dev targets)."""
    for _ in range(50):
        base = free_port()
        if base + 2 > 65535:
            continue
        try:
            for port in (base, base + 1, base + 2):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError("no three consecutive free ports")


def test_demo_runs_the_workflows_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    api_port, target_port = free_port(), three_free_ports()
    log = tmp_path / "demo.log"
    args = [sys.executable, "-m", "collector.cli", "demo", "--listen", f"127.0.0.1:{api_port}",
            "--target-port", str(target_port), "--data-dir", str(tmp_path / "data"), "--analytics-listen", f"127.0.0.1:{free_port()}"]
    with running_process(args, log=log) as proc:
        base = f"http://127.0.0.1:{api_port}"

        def health_checks() -> set[str] | None:
            items = httpx.get(f"{base}/api/workflows", timeout=2).json()["items"]
            envs = {i["env"] for i in items if i["workflow"] == "health-check" and i["success"] == 1}
            return envs if envs == {"prod", "staging", "dev"} else None

        wait_until(health_checks, timeout=40, interval=0.5, what="health-check to pass in all three environments")
        assert httpx.get(f"http://127.0.0.1:{target_port + 1}/health").json()["status"] == "ok"

        # The analytics worker's findings, through the collector: forecasts once pairs have run twice.
        def forecasts() -> list[dict] | None:
            items = httpx.get(f"{base}/api/analytics/predictions", timeout=5).json()["items"]
            return items if any(i["latency_forecast_seconds"] for i in items) else None

        wait_until(forecasts, timeout=40, interval=0.5, what="latency forecasts from the demo's analytics worker")
        incidents = httpx.get(f"{base}/api/analytics/incidents", params={"open": "true"}, timeout=5)
        assert incidents.status_code == 200 and isinstance(incidents.json()["items"], list)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    output = log.read_text()
    for url in (f"{base}/metrics", f"{base}/api/workflows", f"http://127.0.0.1:{target_port}"):
        assert url in output
    assert f"  detectors           {how_they_run()}\n" in output, "the banner says whether the detectors run compiled"
    assert (tmp_path / "data" / "history.sqlite3").exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{target_port}/health", timeout=2)
