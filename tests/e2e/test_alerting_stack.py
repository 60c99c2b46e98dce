"""Alerting end to end, every part real: the demo target, the collector, Prometheus
with the generated rules, Alertmanager with the shipped config, a local SMTP
server (aiosmtpd) and a local HTTP server standing in for Slack's webhook.

Only intervals are shortened, in the test's copies of the configs. The story:
1. auth breaks: login-dependent workflows fail, Prometheus fires, Slack and
   email receive messages naming the failing step, the webhook stores ACTIVE;
2. acknowledging creates the matching silence, and no further notification
   comes for that alert while the others repeat;
3. an unacknowledged alert is escalated to the on-call receiver;
4. health-check goes down: only its alert is delivered for the environment,
   the dependent alert still firing is inhibited;
5. the target heals: the alerts resolve, the history holds the whole
   lifecycle, and the silence is expired.
"""

from __future__ import annotations

import email
import email.policy
import json
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller

from collector.target import create_app
from tests.helpers import (
    PROBE_EMAIL, PROBE_PASSWORD, REPO, fast_copy, free_port, probe_environment, prometheus_config, running_alertmanager,
    running_process, running_prometheus, serve_in_thread, wait_until,
)

pytestmark = pytest.mark.e2e

RULES = REPO / "provisioning/prometheus/rules/flowprobe.rules.yml"
ALERTMANAGER = REPO / "alertmanager/alertmanager.yml"


class SlackStandIn:
    """Receives what Slack's incoming webhook would."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.payloads.append(json.loads(body))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def about(self, workflow: str, alertname: str = "FlowprobeWorkflowFailing") -> list[str]:
        """Messages about one alert of one workflow (the title names both)."""
        return [json.dumps(p) for p in self.payloads if f"{alertname} {workflow} " in p["attachments"][0]["title"]]


@dataclass
class Mailbox:
    messages: list[tuple[list[str], email.message.EmailMessage]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 OK"

    def to(self, address: str, mentioning: str) -> list[email.message.EmailMessage]:
        found = []
        for rcpts, message in self.messages:
            body = message.get_body(preferencelist=("plain", "html"))
            text = f"{message['subject']}\n{body.get_content() if body else ''}"
            if address in rcpts and mentioning in text:
                found.append(message)
        return found


def shortened(node: Any) -> Any:
    """Test intervals: notifications within seconds, repeats every few seconds."""
    if isinstance(node, dict):
        out = {k: shortened(v) for k, v in node.items()}
        for key, value in (("group_wait", "1s"), ("group_interval", "2s"), ("repeat_interval", "6s")):
            if key in out:
                out[key] = value
        return out
    if isinstance(node, list):
        return [shortened(v) for v in node]
    return node


def alertmanager_config(tmp: Path, *, webhook: str, webhook_token: str, slack: str, smtp: str) -> Path:
    """The shipped config, pointed at the local stand-ins, with shortened intervals."""
    secrets_dir = tmp / "am-secrets"
    secrets_dir.mkdir()
    (secrets_dir / "token").write_text(webhook_token)
    (secrets_dir / "slack").write_text(slack)
    config = shortened(yaml.safe_load(ALERTMANAGER.read_text()))
    config["templates"] = [str(REPO / "alertmanager/templates/*.tmpl")]
    glob = config["global"]
    glob.update(smtp_smarthost=smtp, smtp_require_tls=False)
    glob.pop("smtp_auth_username")  # aiosmtpd here offers no AUTH
    glob.pop("smtp_auth_password_file")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook
            hook["http_config"]["authorization"]["credentials_file"] = str(secrets_dir / "token")
        for slack_config in receiver.get("slack_configs", []):
            slack_config["api_url_file"] = str(secrets_dir / "slack")
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, str]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield box, f"127.0.0.1:{controller.port}"
    finally:
        controller.stop()


def test_alerts_page_acknowledge_escalate_inhibit_and_resolve(tmp_path: Path, mailbox: tuple[Mailbox, str]) -> None:
    box, smtp = mailbox
    slack = SlackStandIn()
    webhook_token, operator_token = (f"{name}-{secrets.token_hex(12)}" for name in ("webhook", "operator"))
    collector_port = free_port()
    collector = f"http://127.0.0.1:{collector_port}"
    operator = {"Authorization": f"Bearer {operator_token}"}

    with serve_in_thread(create_app(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD)) as target, \
            serve_in_thread(slack) as slack_url:
        am_config = alertmanager_config(tmp_path, webhook=f"{collector}/api/alertmanager/webhook", webhook_token=webhook_token,
                                        slack=f"{slack_url}/services/T0/B0/x", smtp=smtp)
        with running_alertmanager(tmp_path / "alertmanager", am_config) as alertmanager:
            config = fast_copy(tmp_path / "workflows")
            (config / "flowprobe.yaml").write_text(yaml.safe_dump({
                "public_url": collector,
                "alerting": {
                    "alertmanager_url": alertmanager,
                    "tokens": [
                        {"name": "alertmanager", "role": "webhook", "token": {"env": "TEST_WEBHOOK_TOKEN"}},
                        {"name": "oncall-operator", "role": "operator", "token": {"env": "TEST_OPERATOR_TOKEN"}},
                    ],
                    # Shortened for the test: warnings escalate to on-call after 15 s, critical after 60 s.
                    "escalation": {"critical": [{"after": "60s", "to": "oncall"}], "warning": [{"after": "15s", "to": "oncall"}]},
                    "escalation_check": "1s",
                    "resolved_after_missing": "3s",
                },
            }))
            env = probe_environment({"prod": target}) | {"TEST_WEBHOOK_TOKEN": webhook_token, "TEST_OPERATOR_TOKEN": operator_token}
            args = [sys.executable, "-m", "collector.cli", "run", "--config", str(config), "--env", "prod",
                    "--listen", f"127.0.0.1:{collector_port}", "--data-dir", str(tmp_path / "data"), "--no-watch"]
            with running_process(args, env=env, log=tmp_path / "collector.log"):
                wait_until(lambda: httpx.get(f"{collector}/readyz").status_code == 200, what="collector ready")
                config = prometheus_config({"flowprobe": [collector]}, rules=[RULES], alertmanager=alertmanager)
                with running_prometheus(tmp_path, config, "--rules.alert.resend-delay=1s"):
                    try:
                        story(target, collector, alertmanager, operator, slack, box)
                    except AssertionError as exc:
                        logs = "\n".join(f"--- {n}\n{(tmp_path / n).read_text()[-3000:]}" for n in ("collector.log", "prometheus.log"))
                        raise AssertionError(f"{exc}\n{logs}") from None


def story(target: str, collector: str, alertmanager: str, operator: dict[str, str], slack: SlackStandIn, box: Mailbox) -> None:
    def alerts(**params: str) -> list[dict[str, Any]]:
        return httpx.get(f"{collector}/api/alerts", params=params, headers=operator).json()["items"]

    def one_alert(workflow: str, status: str) -> Callable[[], dict[str, Any] | None]:
        return lambda: next(iter(alerts(workflow=workflow, status=status)), None)

    def silence(silence_id: str) -> dict[str, Any]:
        return httpx.get(f"{alertmanager}/api/v2/silence/{silence_id}").json()

    def healthy() -> bool:
        items = httpx.get(f"{collector}/api/workflows").json()["items"]
        return all(i["success"] == 1 for i in items if i["workflow"] in ("health-check", "user-login", "registration"))

    wait_until(healthy, timeout=30, what="a healthy start")

    # 1. auth breaks: login fails, and every channel hears about the failing step.
    httpx.put(f"{target}/chaos/auth", json={"outage": True}).raise_for_status()
    wait_until(lambda: slack.about("user-login"), timeout=45, what="Slack to hear about user-login")
    assert any('step login' in text or '`login`' in text or 'login (status)' in text for text in slack.about("user-login")), slack.payloads
    wait_until(lambda: box.to("flowprobe-critical@example.com", "user-login"), timeout=20, what="the critical email")
    mail = box.to("flowprobe-critical@example.com", "user-login")[0]
    assert "login" in mail.get_body(preferencelist=("plain",)).get_content()
    login_alert = wait_until(one_alert("user-login", "ACTIVE"), timeout=20, what="the webhook to store user-login as ACTIVE")
    assert login_alert["labels"]["step"] == "login" and login_alert["labels"]["severity"] == "critical"
    wait_until(lambda: slack.about("registration"), timeout=30, what="Slack to hear about registration (a warning)")

    # 2. Acknowledge: a silence for exactly that alert, and no more notifications for it.
    acked = httpx.post(f"{collector}/api/alerts/{login_alert['id']}/acknowledge", json={"comment": "auth team is on it"}, headers=operator)
    assert acked.status_code == 200, acked.text
    silence_id = acked.json()["silence_id"]
    made = silence(silence_id)
    assert made["status"]["state"] == "active"
    assert made["createdBy"] == "oncall-operator" and made["comment"] == "auth team is on it"
    assert {m["name"]: m["value"] for m in made["matchers"]} == login_alert["labels"]
    time.sleep(3)  # a notification already on its way when the silence was made may still land
    login_messages = len(slack.about("user-login"))
    registration_messages = len(slack.about("registration"))
    wait_until(lambda: len(slack.about("registration")) >= registration_messages + 2, timeout=30,
               what="two more repeats of the unacknowledged registration alert")
    assert len(slack.about("user-login")) == login_messages, f"a notification came for the acknowledged alert: {slack.about('user-login')}"

    # 3. The unacknowledged warning escalates to on-call.
    wait_until(lambda: box.to("flowprobe-oncall@example.com", "registration"), timeout=40, what="the on-call escalation email")
    registration = wait_until(one_alert("registration", "ESCALATED"), timeout=10, what="registration to be ESCALATED")

    # 4. health-check goes down: only its alert is delivered; the dependent one is inhibited.
    httpx.put(f"{target}/chaos/database", json={"outage": True}).raise_for_status()
    wait_until(lambda: slack.about("health-check"), timeout=30, what="Slack to hear about health-check")

    def registration_inhibited() -> bool:
        found = httpx.get(f"{alertmanager}/api/v2/alerts", params={"filter": 'workflow="registration"'}).json()
        return bool(found) and all(a["status"]["inhibitedBy"] for a in found)

    wait_until(registration_inhibited, timeout=20, what="the dependent alert to be inhibited")
    time.sleep(3)
    before = len(slack.about("registration"))
    health_messages = len(slack.about("health-check"))
    wait_until(lambda: len(slack.about("health-check")) >= health_messages + 2, timeout=30, what="health-check repeats")
    assert len(slack.about("registration")) == before, "the inhibited dependent was delivered"
    delivered = {w for w in ("user-login", "registration", "farm-creation", "product-listing", "order-placement") if slack.about(w)}
    assert delivered <= {"user-login", "registration"}, "a dependent of health-check paged while it was down"

    # 5. Heal: everything resolves; the acknowledged alert's history is whole and its silence expired.
    httpx.delete(f"{target}/chaos").raise_for_status()
    resolved = wait_until(one_alert("user-login", "RESOLVED"), timeout=60, what="user-login to resolve")
    wait_until(lambda: silence(silence_id)["status"]["state"] == "expired", timeout=20, what="the silence to be expired")
    detail = httpx.get(f"{collector}/api/alerts/{resolved['id']}", headers=operator).json()
    assert [(e["action"], e["to_status"]) for e in detail["events"]] == [
        ("fired", "ACTIVE"), ("acknowledged", "ACKNOWLEDGED"), ("resolved", "RESOLVED"), ("silence_expired", "RESOLVED")
    ]
    assert detail["events"][1]["actor"] == "oncall-operator" and detail["events"][1]["comment"] == "auth team is on it"
    wait_until(one_alert("health-check", "RESOLVED"), timeout=60, what="health-check to resolve")
    assert registration["labels"]["dependencies"] == ",health-check,"
