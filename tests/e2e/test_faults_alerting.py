"""Alertmanager down while an alert is open: nothing is lost (issue 7 §3).

Real processes: Alertmanager (0.25, Debian's) with a webhook receiver that
is the collector, and the collector. The story:

1. an alert fires into Alertmanager (as Prometheus would post it) and
   reaches the collector through the webhook: ACTIVE;
2. Alertmanager is killed (SIGKILL); the alert's escalation comes due: the
   collector records it (ESCALATED) and its posts of the escalated copy
   fail, are logged, and are retried at every check;
3. Alertmanager comes back on the same port and storage, and Prometheus
   posts the still-firing alert again (Alertmanager keeps no alerts over a
   restart): the collector's next retry lands the escalated copy, which
   comes back through the webhook and is ignored there;
4. Alertmanager redelivers the same notification every second
   (repeat_interval 1s): however many times it comes, the history holds one
   alert with one ``fired`` and one ``escalated`` event.
"""

from __future__ import annotations

import json
import secrets
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from collector.target import create_app
from tests.helpers import (
    PROBE_EMAIL, PROBE_PASSWORD, alertmanager_on, free_port, probe_environment, running_process, serve_in_thread, wait_until,
)

pytestmark = pytest.mark.e2e

LABELS = {"alertname": "FlowprobeWorkflowFailing", "workflow": "steady", "env": "prod", "severity": "warning", "step": "get"}


def post_firing(alertmanager: str, starts_at: str) -> None:
    """What Prometheus posts for a firing alert (and posts again while it fires)."""
    alert = {"labels": LABELS, "annotations": {"summary": "steady fails at get"}, "startsAt": starts_at, "generatorURL": "http://prometheus.test/graph"}
    httpx.post(f"{alertmanager}/api/v2/alerts", json=[alert], timeout=5).raise_for_status()


def log_lines(log: Path, msg: str) -> list[dict[str, Any]]:
    return [entry for text in log.read_text().splitlines() if text.startswith("{") and (entry := json.loads(text))["msg"] == msg]


def test_alertmanager_down_loses_no_escalation_and_redeliveries_are_stored_once(tmp_path: Path) -> None:
    webhook_token, viewer_token = (f"{name}-{secrets.token_hex(12)}" for name in ("webhook", "viewer"))
    viewer = {"Authorization": f"Bearer {viewer_token}"}
    collector_port, am_port = free_port(), free_port()
    collector, alertmanager = f"http://127.0.0.1:{collector_port}", f"http://127.0.0.1:{am_port}"

    am_config = tmp_path / "alertmanager.yml"
    am_config.write_text(yaml.safe_dump({
        "route": {"receiver": "collector", "group_by": ["..."], "group_wait": "0s", "group_interval": "1s", "repeat_interval": "1s"},
        "receivers": [{"name": "collector", "webhook_configs": [{
            "url": f"{collector}/api/alertmanager/webhook", "send_resolved": True,
            "http_config": {"authorization": {"type": "Bearer", "credentials": webhook_token}},
        }]}],
    }))
    config = tmp_path / "workflows"
    config.mkdir()
    (config / "environments.yaml").write_text('environments:\n  prod: {base_url: "${FLOWPROBE_PROD_URL}"}\n')
    (config / "steady.yaml").write_text("name: steady\nschedule: {every: 5s}\nsteps:\n  - name: get\n    request: {url: '{{ base_url }}/health'}\n")
    (config / "flowprobe.yaml").write_text(yaml.safe_dump({"alerting": {
        "alertmanager_url": alertmanager,
        "tokens": [{"name": "alertmanager", "role": "webhook", "token": {"env": "TEST_WEBHOOK_TOKEN"}},
                   {"name": "reader", "role": "viewer", "token": {"env": "TEST_VIEWER_TOKEN"}}],
        "escalation": {"warning": [{"after": "5s", "to": "oncall"}]},
        "escalation_check": "1s",
    }}))
    log = tmp_path / "collector.log"

    def alerts() -> list[dict[str, Any]]:
        return httpx.get(f"{collector}/api/alerts", headers=viewer, timeout=5).json()["items"]

    def escalation_failures() -> list[dict[str, Any]]:
        return [e for e in log_lines(log, "Alertmanager call failed; retried at the next escalation check") if e["action"] == "post its escalation"]

    def copies_in_alertmanager() -> list[dict[str, Any]]:
        found = httpx.get(f"{alertmanager}/api/v2/alerts", params={"filter": 'escalated="true"'}, timeout=5).json()
        return [a for a in found if a["labels"].get("escalation") == "oncall" and a["labels"]["workflow"] == "steady"]

    with serve_in_thread(create_app(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD)) as target:
        env = probe_environment({"prod": target}) | {"TEST_WEBHOOK_TOKEN": webhook_token, "TEST_VIEWER_TOKEN": viewer_token}
        args = [sys.executable, "-m", "collector.cli", "run", "--config", str(config), "--env", "prod",
                "--listen", f"127.0.0.1:{collector_port}", "--data-dir", str(tmp_path / "data"), "--no-watch"]
        try:
            with running_process(args, env=env, log=log):
                wait_until(lambda: httpx.get(f"{collector}/readyz").status_code == 200, what="collector ready")
                starts_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

                # 1. Fired, through a real Alertmanager.
                with alertmanager_on(am_port, tmp_path / "am-data", am_config, tmp_path / "am-1.log") as first:
                    post_firing(alertmanager, starts_at)
                    fired = wait_until(lambda: next(iter(alerts()), None), what="the webhook to store the alert")
                    assert fired["status"] == "ACTIVE" and fired["labels"] == LABELS
                    # 2. Alertmanager goes away before the escalation is due.
                    first.send_signal(signal.SIGKILL)
                    first.wait(timeout=10)
                    killed_at = datetime.now(UTC)

                escalated = wait_until(lambda: (a := alerts()) and a[0]["status"] == "ESCALATED" and a[0], timeout=15,
                                       what="the escalation to be recorded while Alertmanager is down")
                assert escalated["escalations"] == ["oncall"]
                wait_until(lambda: len(escalation_failures()) >= 2, timeout=15, what="the escalation post to fail and be retried")

                # 3. Back: Prometheus posts the firing alert again; the collector's retry lands the copy.
                with alertmanager_on(am_port, tmp_path / "am-data", am_config, tmp_path / "am-2.log"):
                    post_firing(alertmanager, starts_at)
                    copies = wait_until(copies_in_alertmanager, timeout=15, what="the escalated copy in Alertmanager")
                    assert copies[0]["labels"] == {**LABELS, "escalated": "true", "escalation": "oncall"}

                    # 4. Redeliveries of the same alert: counted in the collector's log, stored once.
                    def deliveries() -> list[dict[str, Any]]:
                        return [e for e in log_lines(log, "webhook received") if e["created"] + e["updated"] >= 1]

                    wait_until(lambda: len(deliveries()) >= 4, timeout=20, what="Alertmanager to redeliver the alert")
                    wait_until(lambda: any(e["ignored"] >= 1 for e in log_lines(log, "webhook received")), timeout=15,
                               what="the escalated copy to come back through the webhook")
                    failures_while_down = len(escalation_failures())
                    stored = alerts()
                    detail = httpx.get(f"{collector}/api/alerts/{stored[0]['id']}", headers=viewer, timeout=5).json()
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- collector\n{log.read_text()[-4000:]}") from None

    assert sum(e["created"] for e in deliveries()) == 1
    assert len(stored) == 1 and stored[0]["id"] == fired["id"] and stored[0]["status"] == "ESCALATED"
    assert [(e["action"], e["to_status"]) for e in detail["events"]] == [("fired", "ACTIVE"), ("escalated", "ESCALATED")]
    assert datetime.fromisoformat(detail["events"][1]["at"]) > killed_at  # escalated while Alertmanager was down
    assert failures_while_down >= 2
