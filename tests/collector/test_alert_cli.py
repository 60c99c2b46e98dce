"""`flowprobe alerts` against the collector's app served for real, with a real Alertmanager behind it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from collector.api import create_app
from collector.cli import main
from tests.collector.test_alert_api import TOKENS, collector, payload, webhook_alert
from tests.helpers import alertmanager_for_module, closing, free_port, serve_in_thread


alertmanager = pytest.fixture(scope="module", name="alertmanager")(alertmanager_for_module)


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alertmanager: str) -> Iterator[str]:
    with closing(collector(tmp_path, monkeypatch, alertmanager)) as service, serve_in_thread(create_app(service)) as base_url:
        httpx.post(
            f"{base_url}/api/alertmanager/webhook",
            json=payload(webhook_alert("prod"), webhook_alert("staging", severity="warning")),
            headers={"Authorization": f"Bearer {TOKENS['webhook']}"},
        ).raise_for_status()
        yield base_url


def alerts(url: str, *args: str, token_env: str = "FLOWPROBE_TOKEN") -> int:
    return main(["alerts", "--url", url, "--token-env", token_env, *args])


def test_list_show_acknowledge_and_resolve(url: str, alertmanager: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLOWPROBE_TOKEN", TOKENS["viewer"])
    assert alerts(url, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "SEVERITY", "ALERT", "WORKFLOW", "ENV", "STARTED", "ESCALATED", "TO", "ACKNOWLEDGED", "BY"]
    assert [line.split()[:6] for line in lines[1:]] == [
        ["2", "ACTIVE", "warning", "WorkflowFailing", "order-placement", "staging"],
        ["1", "ACTIVE", "critical", "WorkflowFailing", "order-placement", "prod"],
    ]
    assert lines[1].index("ACTIVE") == lines[0].index("STATUS")  # columns line up

    assert alerts(url, "list", "--severity", "critical", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(a["id"], a["env"]) for a in listed] == [(1, "prod")]
    assert alerts(url, "list", "--status", "resolved") == 0
    assert capsys.readouterr().out == "no alerts\n"

    monkeypatch.setenv("FLOWPROBE_OPERATOR", TOKENS["operator"])
    assert alerts(url, "ack", "1", "-m", "rolling back the deploy", token_env="FLOWPROBE_OPERATOR") == 0
    done = capsys.readouterr().out
    assert done.startswith("alert 1 WorkflowFailing is ACKNOWLEDGED (silence ") and done.endswith(" in Alertmanager)\n")
    silence_id = done.split("(silence ")[1].split()[0]
    made = httpx.get(f"{alertmanager}/api/v2/silence/{silence_id}").json()
    assert (made["createdBy"], made["comment"], made["status"]["state"]) == ("alice", "rolling back the deploy", "active")

    assert alerts(url, "resolve", "1", "--comment", "fixed", token_env="FLOWPROBE_OPERATOR") == 0
    assert capsys.readouterr().out == "alert 1 WorkflowFailing is RESOLVED\n"
    assert httpx.get(f"{alertmanager}/api/v2/silence/{silence_id}").json()["status"]["state"] == "expired"

    assert alerts(url, "show", "1") == 0
    shown = capsys.readouterr().out
    assert "status        RESOLVED\n" in shown and f"silence       {silence_id}\n" in shown
    assert "  env=prod\n" in shown and "  summary=order-placement fails in prod\n" in shown
    history = shown.split("history:\n")[1].splitlines()
    assert history[0].split() == ["TIME", "ACTOR", "ACTION", "FROM", "TO", "COMMENT"]
    assert [row.split()[2:6] for row in history[1:]] == [
        ["alertmanager", "fired", "-", "ACTIVE"],
        ["alice", "acknowledged", "ACTIVE", "ACKNOWLEDGED"],
        ["alice", "resolved", "ACKNOWLEDGED", "RESOLVED"],
        ["flowprobe", "silence_expired", "RESOLVED", "RESOLVED"],
    ]
    assert history[2].endswith("rolling back the deploy")


def test_refusals_and_failures_are_one_clear_line(url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLOWPROBE_TOKEN", TOKENS["viewer"])
    assert alerts(url, "ack", "1", "-m", "mine") == 1
    assert capsys.readouterr().err == "flowprobe alerts ack: 403: the token 'grafana' has the role viewer; this needs operator or admin\n"
    assert alerts(url, "show", "9") == 1
    assert capsys.readouterr().err == "flowprobe alerts show: 404: unknown alert 9\n"
    monkeypatch.setenv("FLOWPROBE_TOKEN", "x" * 20)
    assert alerts(url, "list") == 1
    assert capsys.readouterr().err == "flowprobe alerts list: 401: invalid bearer token\n"
    monkeypatch.setenv("FLOWPROBE_TOKEN", TOKENS["operator"])
    assert alerts(url, "resolve", "2", "-m", "fixed") == 0 and alerts(url, "resolve", "2", "-m", "again") == 1
    assert capsys.readouterr().err == "flowprobe alerts resolve: 409: alert 2 is RESOLVED; it cannot be resolved\n"


def test_the_token_comes_from_the_environment_only(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FLOWPROBE_ALERTS_TOKEN", raising=False)
    assert alerts("http://127.0.0.1:9", "list", token_env="FLOWPROBE_ALERTS_TOKEN") == 1
    assert capsys.readouterr().err == (
        "flowprobe alerts: set FLOWPROBE_ALERTS_TOKEN to an API token of the collector (alerting.tokens in flowprobe.yaml)\n"
    )


def test_an_unreachable_collector_is_reported(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FLOWPROBE_TOKEN", TOKENS["viewer"])
    down = f"http://127.0.0.1:{free_port()}"
    assert alerts(down, "list") == 1
    assert capsys.readouterr().err.startswith(f"flowprobe alerts list: cannot reach the collector at {down}: ")
