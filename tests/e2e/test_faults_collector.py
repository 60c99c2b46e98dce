"""Faults of the collector itself, as a real process (issue 7 §3).

- SIGKILL in the middle of a run, then a restart on the same data directory:
  the SQLite history (WAL) passes ``PRAGMA integrity_check`` and keeps every
  run committed before the kill; the schedule resumes; and the metrics restart
  as METRICS.md documents ("Series lifetime"): counters and histograms from 0,
  which Prometheus reads as a counter reset (a drop, and a new
  ``process_start_time_seconds``) and which only grow from there, while
  ``flowprobe_workflow_success`` and ``flowprobe_workflow_consecutive_failures``
  carry on from the history.
- A broken config pushed by a file change: the old config keeps running,
  and the failure shows in ``flowprobe_config_last_reload_successful``, the
  log and ``/readyz`` until a good config comes. (SIGHUP with an unknown key
  is tested in test_collector.py.)
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.target import create_app
from tests.e2e.test_collector import InFlight, metric, ready, start_collector
from tests.helpers import PROBE_EMAIL, PROBE_PASSWORD, serve_in_thread, wait_until

pytestmark = pytest.mark.e2e

WORKFLOWS = ("steady", "failing", "slow")


class SlowPath(InFlight):
    """The demo target, plus /slow: its /health answered after a second, so a run is in flight most of the time."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/slow":
            self.count += 1  # in flight for the whole second, not only while /health answers
            try:
                await asyncio.sleep(1.0)
            finally:
                self.count -= 1
            scope = {**scope, "path": "/health", "raw_path": b"/health"}
        await super().__call__(scope, receive, send)


@pytest.fixture
def target() -> Iterator[tuple[str, SlowPath]]:
    app = SlowPath(create_app(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD))
    with serve_in_thread(app) as url:
        yield url, app


def write_config(directory: Path) -> Path:
    directory.mkdir()
    (directory / "environments.yaml").write_text('environments:\n  prod: {base_url: "${FLOWPROBE_PROD_URL}"}\n')
    for name, path, status in (("steady", "health", 200), ("failing", "health", 418), ("slow", "slow", 200)):
        (directory / f"{name}.yaml").write_text(
            f"name: {name}\nschedule: {{every: 1s}}\ntimeout: 5s\n"
            f"steps:\n  - name: get\n    request: {{url: '{{{{ base_url }}}}/{path}', timeout: 3s}}\n    expect: {{status: {status}}}\n"
        )
    return directory


def scrape(base: str) -> dict[str, float]:
    """Every sample of /metrics, keyed by its name and labels as written."""
    samples = {}
    for text in httpx.get(f"{base}/metrics", timeout=5).text.splitlines():
        if text and not text.startswith("#"):
            key, value = text.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def runs_total(samples: dict[str, float], workflow: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith("flowprobe_workflow_runs_total{") and f'workflow="{workflow}"' in k)


def counters(samples: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in samples.items() if k.split("{")[0].endswith(("_total", "_count", "_sum", "_bucket")) and k.startswith("flowprobe_")}


def api_runs(base: str, workflow: str) -> list[dict[str, Any]]:
    return httpx.get(f"{base}/api/workflows/{workflow}/runs", params={"limit": 500}, timeout=5).json()["items"]


def stored(data: Path) -> dict[str, str]:
    """run_id -> stored JSON of every run, read with the collector stopped, after checking every database in `data`."""
    databases = sorted(data.glob("*.sqlite3"))
    assert {d.name for d in databases} >= {"history.sqlite3", "alerts.sqlite3"}
    for database in databases:
        with sqlite3.connect(database) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)], database.name
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",), database.name
    with sqlite3.connect(data / "history.sqlite3") as db:
        return dict(db.execute("SELECT run_id, data FROM runs").fetchall())


def test_sigkill_mid_run_keeps_the_history_and_a_restart_resumes(tmp_path: Path, target: tuple[str, SlowPath]) -> None:
    url, app = target
    config = write_config(tmp_path / "workflows")
    data = tmp_path / "data"

    process, base = start_collector(config, data, url, tmp_path / "collector-1.log", "--no-watch")
    with process as proc:
        wait_until(lambda: ready(base), what="collector ready")
        wait_until(lambda: metric(base, "flowprobe_workflow_consecutive_failures", workflow="failing") >= 4
                   and runs_total(scrape(base), "steady") >= 6, timeout=30, what="a few runs of every workflow")
        committed = {r["run_id"]: r for w in WORKFLOWS for r in api_runs(base, w)}
        before = scrape(base)
        wait_until(lambda: app.count > 0, timeout=60, what="a run in flight at the target")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    assert (data / "history.sqlite3-wal").exists()  # killed: the WAL was not checkpointed away

    after_kill = stored(data)
    # Every run the API had served from the history before the kill is there, unchanged.
    missing = set(committed) - set(after_kill)
    assert not missing, f"{len(missing)} committed runs lost"
    assert all(json.loads(after_kill[run_id]) == run for run_id, run in committed.items())
    failing = [run for run in map(json.loads, after_kill.values()) if run["workflow"] == "failing"]
    assert {(run["outcome"], run["reason"]) for run in failing} == {("failure", "status")}
    streak = len(failing)  # every run of it failed: the streak in the history

    restarted_at = time.time()
    process, base = start_collector(config, data, url, tmp_path / "collector-2.log", "--no-watch")
    with process as proc:
        wait_until(lambda: ready(base), what="collector ready again")
        first = scrape(base)
        # A reset, as Prometheus detects one: the counters dropped, and the process is new.
        assert first["process_start_time_seconds"] > before["process_start_time_seconds"]
        for workflow in WORKFLOWS:
            assert runs_total(first, workflow) < runs_total(before, workflow), workflow
        # What the history restores: the last result and the failure streak (no run replays a counter).
        assert first['flowprobe_workflow_success{workflow="steady",env="prod"}'] == 1
        assert first['flowprobe_workflow_success{workflow="failing",env="prod"}'] == 0
        assert first['flowprobe_workflow_consecutive_failures{workflow="failing",env="prod"}'] >= streak >= 4

        # The schedule resumes: every workflow runs again, and its runs are stored beside the old ones.
        scrapes = [first]

        def resumed() -> bool:
            scrapes.append(scrape(base))
            return all(any(r["started_at"] >= restarted_at for r in api_runs(base, w)) for w in WORKFLOWS)

        wait_until(resumed, timeout=30, interval=0.5, what="every workflow to run again")
        # From the reset on, every counter only grows.
        for earlier, later in zip(scrapes, scrapes[1:]):
            shrunk = {k: (v, later.get(k)) for k, v in counters(earlier).items() if later.get(k, -1) < v}
            assert not shrunk, shrunk
        assert runs_total(scrapes[-1], "steady") > runs_total(first, "steady")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0

    after_restart = stored(data)
    assert set(after_kill) <= set(after_restart)
    assert {json.loads(d)["workflow"] for run_id, d in after_restart.items() if run_id not in after_kill} == set(WORKFLOWS)


def readiness(base: str) -> tuple[int, str, bool]:
    response = httpx.get(f"{base}/readyz", timeout=5)
    body = response.json()
    return response.status_code, body["status"], body["config_reload_successful"]


def test_a_broken_config_pushed_at_reload_keeps_the_old_one_running_and_says_so(tmp_path: Path, target: tuple[str, SlowPath]) -> None:
    url, _app = target
    config = write_config(tmp_path / "workflows")
    log = tmp_path / "collector.log"
    process, base = start_collector(config, tmp_path / "data", url, log)  # file watching on
    with process:
        wait_until(lambda: ready(base), what="collector ready")
        assert readiness(base) == (200, "ready", True)
        good = (config / "steady.yaml").read_text()

        # A half-written file: broken YAML replaces a running workflow.
        (config / "steady.yaml").write_text(good.replace("steps:", "steps: [\n  oops"))
        wait_until(lambda: metric(base, "flowprobe_config_last_reload_successful") == 0.0, what="the failed reload")
        # Still ready (the old config serves), and saying that the reload failed.
        assert readiness(base) == (200, "ready", False)
        failures = [json.loads(text) for text in log.read_text().splitlines() if "config reload failed" in text]
        assert failures and failures[-1]["level"] == "error", failures
        assert any("steady.yaml" in problem for problem in failures[-1]["problems"]), failures[-1]

        # The old steady keeps running, unchanged.
        runs = metric(base, "flowprobe_workflow_runs_total", workflow="steady", result="success") or 0
        wait_until(lambda: (metric(base, "flowprobe_workflow_runs_total", workflow="steady", result="success") or 0) >= runs + 2,
                   what="the old config's runs to go on")
        steady = [i for i in httpx.get(f"{base}/api/workflows").json()["items"] if i["workflow"] == "steady"]
        assert [s["steps"] for s in steady] == [["get"]]

        # A good config ends it.
        (config / "steady.yaml").write_text(good.replace("name: get", "name: get-health"))
        wait_until(lambda: metric(base, "flowprobe_config_last_reload_successful") == 1.0, what="the good reload")
        assert readiness(base) == (200, "ready", True)
        steady = [i for i in httpx.get(f"{base}/api/workflows").json()["items"] if i["workflow"] == "steady"]
        assert [s["steps"] for s in steady] == [["get-health"]]
