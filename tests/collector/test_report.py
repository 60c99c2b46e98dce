"""SLA reports: numbers from a seeded history (checked by hand), the four formats, mail, schedule, API and command."""

from __future__ import annotations

import asyncio
import csv
import email
import email.policy
import io
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from fastapi import FastAPI
from fastapi.testclient import TestClient

from collector import cli
from collector.alertstore import AlertStore, Notification
from collector.config import Config, load_config
from collector.cron import crontab_trigger
from collector.report import (
    Report,
    ReportScheduler,
    build_report,
    csv_columns,
    list_reports,
    period_window,
    render,
    report_name,
    reports_router,
    write_report,
)
from collector.result import RunResult, StepResult
from collector.store import HistoryStore
from tests.helpers import free_port, require_binary

END = datetime(2024, 6, 2, tzinfo=UTC)  # a daily report covers 2024-06-01, and compares with 2024-05-31
DAY = datetime(2024, 6, 1, tzinfo=UTC)
VIEWER = "viewer-token-0123456789abcdef"

WORKFLOWS = {
    "alpha": "alert: {availability_slo: 0.5, latency_slo: 3s}\nsteps:\n  - {name: login, request: {url: '{{ base_url }}/login'}}\n",
    "beta": "alert: {availability_slo: 0.9, after_failures: 2, severity: critical}\n"
    "steps:\n  - {name: browse, request: {url: '{{ base_url }}/'}}\n  - {name: order, request: {url: '{{ base_url }}/order'}}\n",
    "gamma": "steps:\n  - {name: health, request: {url: '{{ base_url }}/health'}}\n",
}


def write_config(directory: Path, *, settings: dict[str, Any] | None = None, history: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "environments.yaml").write_text(
        "environments:\n  prod: {base_url: http://prod.test}\n  staging: {base_url: http://staging.test}\n" + history
    )
    for name, body in WORKFLOWS.items():
        (directory / f"{name}.yaml").write_text(f"name: {name}\nschedule: {{every: 6h}}\n{body}")
    if settings is not None:
        (directory / "flowprobe.yaml").write_text(json.dumps(settings))  # JSON is YAML
    return directory


def at(hour: float, day: datetime = DAY) -> float:
    return (day + timedelta(hours=hour)).timestamp()


def run(workflow: str, started_at: float, outcome: str = "success", duration: float = 1.0, *, env: str = "prod",
        step: str | None = None, reason: str | None = None, steps: dict[str, float] | None = None) -> RunResult:
    step_results = [StepResult(name, "success", status=200, duration=d) for name, d in (steps or {}).items()]
    if step is not None:
        step_results.append(StepResult(step, "failure", status=500, duration=duration))
    return RunResult(workflow, env, f"{workflow}-{env}-{started_at}", started_at, outcome, duration=duration, steps=step_results,
                     failed_step=step, reason=reason)  # type: ignore[arg-type]


# Three workflows in prod on 2024-06-01 (hours UTC), each outcome known:
#   alpha  00 ok, 06 FAIL (login: status), 12 ok, 18 ok       durations 1 2 3 4; the day before: 10 ok, 20 ok (2 s each)
#   beta   06 ok, 12 FAIL (order: assertion), 15 ERROR, 18 ok, 20 skipped   (0.5 s each)
#   gamma  00 ok, 08 ok, 16 ok; and a run at the period's end, which belongs to the next period
SEEDED = [
    run("alpha", at(0), duration=1.0, steps={"login": 0.9}),
    run("alpha", at(6), "failure", 2.0, step="login", reason="status"),
    run("alpha", at(12), duration=3.0, steps={"login": 2.9}),
    run("alpha", at(18), duration=4.0, steps={"login": 3.9}),
    run("alpha", at(10, END - timedelta(days=2)), duration=2.0),
    run("alpha", at(20, END - timedelta(days=2)), duration=2.0),
    run("beta", at(6), duration=0.5, steps={"browse": 0.1, "order": 0.4}),
    run("beta", at(12), "failure", 0.5, step="order", reason="assertion"),
    run("beta", at(15), "error", 0.5),
    run("beta", at(18), duration=0.5, steps={"browse": 0.1, "order": 0.4}),
    run("beta", at(20), "skipped", 0.0),
    run("gamma", at(0), duration=0.2, steps={"health": 0.2}),
    run("gamma", at(8), duration=0.2, steps={"health": 0.2}),
    run("gamma", at(16), duration=0.2, steps={"health": 0.2}),
    run("gamma", END.timestamp(), "failure", 9.0, step="health", reason="timeout"),
    run("alpha", at(12), "failure", 7.0, env="staging", step="login", reason="connect"),
]


def seed(path: Path, runs: list[RunResult] = SEEDED) -> HistoryStore:
    # Fixed timestamps in 2024: retention must not prune them when the writer starts.
    store = HistoryStore(path, max_age=100 * 365 * 86400.0)
    for result in runs:
        store.add(result)
    store.flush()
    return store


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load_config(write_config(tmp_path / "config"))


@pytest.fixture
def history(tmp_path: Path) -> Iterator[HistoryStore]:
    store = seed(tmp_path / "data" / "history.sqlite3")
    yield store
    store.close()


@pytest.fixture
def report(config: Config, history: HistoryStore) -> Report:
    return build_report(config, history, period="daily", end=END, env="prod", now=END)


def rows(report: Report) -> dict[str, Any]:
    return {row.workflow: row for env in report.environments for row in env.workflows}


# ---------------------------------------------------------------- periods


def test_periods_end_at_the_given_time_and_compare_with_the_one_before() -> None:
    daily = period_window("daily", END)
    assert (daily.start, daily.previous_start) == (DAY, DAY - timedelta(days=1))
    weekly = period_window("weekly", END)
    assert (weekly.start, weekly.previous_start) == (END - timedelta(days=7), END - timedelta(days=14))
    # A calendar month back, the day clamped: March 31 -> February 29 (2024) -> January 29.
    monthly = period_window("monthly", datetime(2024, 3, 31, 6, tzinfo=UTC))
    assert (monthly.start, monthly.previous_start) == (datetime(2024, 2, 29, 6, tzinfo=UTC), datetime(2024, 1, 29, 6, tzinfo=UTC))
    january = period_window("monthly", datetime(2024, 1, 1, tzinfo=UTC))
    assert january.start == datetime(2023, 12, 1, tzinfo=UTC)


# ---------------------------------------------------------------- numbers


def test_availability_uptime_and_error_budget_by_hand(report: Report) -> None:
    alpha, beta, gamma = (rows(report)[n] for n in ("alpha", "beta", "gamma"))
    # alpha: 3 of 4 ok. Down 06-12 of the 24 h observed from 00:00. Budget 1-0.5 = 0.5, spent 1/4: left 1 - 0.25/0.5 = 50%.
    assert (alpha.runs, alpha.successes, alpha.failed, alpha.skipped) == (4, 3, 1, 0)
    assert alpha.availability == 0.75
    assert alpha.uptime == pytest.approx(18 / 24)
    assert alpha.observed_from == "2024-06-01T00:00:00Z"
    assert alpha.error_budget_left_pct == pytest.approx(50.0)
    assert alpha.slo_met is True
    # beta: ok, FAIL, ERROR, ok (the skipped run counts for nothing): 2 of 4. Observed from 06:00 (18 h),
    # down 12-18: uptime 12/18. Budget 0.1, spent 0.5: left 1 - 5 = -400%.
    assert (beta.runs, beta.successes, beta.failed, beta.skipped) == (4, 2, 2, 1)
    assert beta.availability == 0.5
    assert beta.uptime == pytest.approx(12 / 18)
    assert beta.error_budget_left_pct == pytest.approx(-400.0)
    assert beta.slo_met is False
    # gamma: all ok; the run at exactly the end belongs to the next period. No SLO: no SLO values.
    assert (gamma.runs, gamma.availability, gamma.uptime) == (3, 1.0, 1.0)
    assert (gamma.availability_slo, gamma.slo_met, gamma.error_budget_left_pct) == (None, None, None)
    # The environment: 3 + 2 + 3 = 8 of 4 + 4 + 3 = 11 runs ok; staging's run is in no prod number.
    (prod,) = report.environments
    assert (prod.env, prod.runs, prod.availability) == ("prod", 11, 8 / 11)


def test_percentiles_and_the_trend_against_the_previous_period(report: Report) -> None:
    alpha = rows(report)["alpha"]
    # Durations 1, 2, 3, 4: p50 = 2.5; p95 at rank 0.95*3 = 2.85 -> 3.85; p99 at 2.97 -> 3.97.
    assert (alpha.p50, alpha.p95, alpha.p99) == (pytest.approx(2.5), pytest.approx(3.85), pytest.approx(3.97))
    # The day before: 2 s and 2 s.
    assert (alpha.previous_runs, alpha.previous_availability, alpha.previous_p50, alpha.previous_p95) == (2, 1.0, 2.0, 2.0)
    assert alpha.p50_change_pct == pytest.approx(25.0)
    assert alpha.p95_change_pct == pytest.approx(92.5)
    # latency_slo 3s against p95 3.85 s, as the generated latency alert compares them.
    assert (alpha.latency_slo, alpha.latency_slo_met) == (3.0, False)
    beta = rows(report)["beta"]
    assert (beta.previous_runs, beta.previous_p50, beta.p50_change_pct) == (0, None, None)


def test_incidents_come_from_failed_runs_without_an_alert_history(report: Report) -> None:
    assert report.incident_source == "runs"
    (prod,) = report.environments
    summary = [(i.workflow, i.started_at, i.ended_at, i.duration_seconds, i.root_cause, i.time_to_acknowledge_seconds) for i in prod.incidents]
    assert summary == [
        ("alpha", "2024-06-01T06:00:00Z", "2024-06-01T12:00:00Z", 6 * 3600.0, "step login: status", None),
        # beta alerts after 2 failed runs: the failure at 12 and the error at 15 make one incident until 18.
        ("beta", "2024-06-01T12:00:00Z", "2024-06-01T18:00:00Z", 6 * 3600.0, "step order: assertion", None),
    ]
    assert (rows(report)["alpha"].incidents, rows(report)["beta"].incidents, rows(report)["gamma"].incidents) == (1, 1, 0)
    assert any("analytics root-cause hints are not used yet" in note for note in report.notes)


def test_a_streak_shorter_than_after_failures_is_no_incident(config: Config, tmp_path: Path) -> None:
    store = seed(tmp_path / "short.sqlite3", [run("beta", at(1)), run("beta", at(2), "failure", step="order", reason="status"), run("beta", at(3))])
    try:
        report = build_report(config, store, period="daily", end=END, env="prod")
    finally:
        store.close()
    assert report.environments[0].incidents == []


def _alert(store: AlertStore, fingerprint: str, labels: dict[str, str], starts: datetime, *, ends: datetime | None = None,
           acknowledged: datetime | None = None) -> None:
    firing = Notification("firing", fingerprint, starts, None, {"alertname": "FlowprobeWorkflowFailing", "env": "prod", **labels})
    store.receive([firing], now=starts)
    if acknowledged is not None:
        (alert,) = [a for a in store.find(limit=100) if a.fingerprint == fingerprint]
        store.acknowledge(alert.id, actor="alice", comment="on it", silence_id=None, now=acknowledged)
    if ends is not None:
        store.receive([Notification("resolved", fingerprint, starts, ends, firing.labels)], now=ends)


def test_incidents_come_from_the_alert_history_with_acknowledgement_times(config: Config, history: HistoryStore, tmp_path: Path) -> None:
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.sqlite3'}")
    store.migrate()
    failing = {"workflow": "beta", "severity": "critical", "step": "order", "reason": "assertion"}
    _alert(store, "a1", failing, DAY + timedelta(hours=12, minutes=1), ends=DAY + timedelta(hours=18, minutes=1),
           acknowledged=DAY + timedelta(hours=12, minutes=11))
    _alert(store, "a2", {"workflow": "alpha", "severity": "warning"}, DAY + timedelta(hours=22))  # still firing at the end
    # Not incidents of this report: a certificate warning, an info alert, another environment, one over before the period.
    _alert(store, "c1", {"workflow": "alpha", "severity": "warning", "alertname": "FlowprobeCertificateExpiring"}, DAY + timedelta(hours=1))
    _alert(store, "i1", {"workflow": "alpha", "severity": "info", "alertname": "FlowprobeWorkflowDegraded"}, DAY + timedelta(hours=2))
    _alert(store, "s1", {"workflow": "alpha", "severity": "warning", "env": "staging"}, DAY + timedelta(hours=3))
    _alert(store, "o1", {"workflow": "alpha", "severity": "warning"}, DAY - timedelta(hours=5), ends=DAY - timedelta(hours=4))
    try:
        report = build_report(config, history, period="daily", end=END, env="prod", alerts=store)
    finally:
        store.close()
    assert report.incident_source == "alerts"
    (prod,) = report.environments
    beta, alpha = prod.incidents
    assert (beta.workflow, beta.alertname, beta.severity, beta.started_at, beta.ended_at) == (
        "beta", "FlowprobeWorkflowFailing", "critical", "2024-06-01T12:01:00Z", "2024-06-01T18:01:00Z")
    assert (beta.duration_seconds, beta.root_cause, beta.acknowledged_by, beta.time_to_acknowledge_seconds) == (
        6 * 3600.0, "step order: assertion", "alice", 600.0)
    assert (alpha.workflow, alpha.ongoing, alpha.ended_at, alpha.duration_seconds, alpha.root_cause) == ("alpha", True, None, 2 * 3600.0, None)
    assert prod.mean_time_to_acknowledge_seconds == 600.0
    assert (rows(report)["alpha"].incidents, rows(report)["beta"].incidents) == (1, 1)


def test_an_empty_alert_history_falls_back_to_the_runs(config: Config, history: HistoryStore, tmp_path: Path) -> None:
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.sqlite3'}")
    store.migrate()
    try:
        report = build_report(config, history, period="daily", end=END, env="prod", alerts=store)
    finally:
        store.close()
    assert report.incident_source == "runs"
    assert len(report.environments[0].incidents) == 2


def test_slowest_steps_by_p95_and_the_duration_timeline(report: Report) -> None:
    (prod,) = report.environments
    top = [(s.workflow, s.step, s.runs, s.failed) for s in prod.slowest_steps]
    # alpha/login ran 0.9, 2.0 (failed), 2.9 and 3.9 s.
    assert top[0] == ("alpha", "login", 4, 1)
    assert prod.slowest_steps[0].p95 == pytest.approx(2.9 + 0.85 * 1.0)
    assert [s for s in top if s[0] == "beta"] == [("beta", "order", 3, 1), ("beta", "browse", 2, 0)]
    timeline = prod.timeline
    assert (timeline.bucket_seconds, len(timeline.starts), timeline.starts[0]) == (3600, 24, "2024-06-01T00:00:00Z")
    assert timeline.p95["gamma"][0] == pytest.approx(0.2) and timeline.p95["gamma"][1] is None


def test_every_environment_without_env_and_the_history_retention_note(tmp_path: Path, history: HistoryStore) -> None:
    config = load_config(write_config(tmp_path / "short", history="history: {max_age: 1d}\n"))
    report = build_report(config, history, period="daily", end=END)
    assert report.env is None
    assert [e.env for e in report.environments] == ["prod", "staging"]
    staging = report.environments[1]
    assert [(r.workflow, r.runs, r.failed) for r in staging.workflows] == [("alpha", 1, 1), ("beta", 0, 0), ("gamma", 0, 0)]
    assert any("history.max_age" in note for note in report.notes)


# ---------------------------------------------------------------- formats

DOCUMENTED_ROW = {
    "env", "workflow", "runs", "successes", "failed", "skipped", "availability", "uptime", "observed_from", "availability_slo",
    "slo_met", "error_budget_left_pct", "latency_slo", "p50", "p95", "p99", "latency_slo_met", "previous_runs",
    "previous_availability", "previous_p50", "previous_p95", "previous_p99", "p50_change_pct", "p95_change_pct", "p99_change_pct",
    "incidents",
}


def test_json_has_the_documented_shape(report: Report) -> None:
    data = json.loads(render(report, "json"))
    assert list(data) == ["kind", "version", "period", "env", "start", "end", "previous_start", "generated_at", "incident_source",
                          "notes", "environments"]
    assert (data["kind"], data["version"], data["period"], data["env"]) == ("flowprobe-sla-report", 1, "daily", "prod")
    assert (data["start"], data["end"], data["previous_start"]) == ("2024-06-01T00:00:00Z", "2024-06-02T00:00:00Z", "2024-05-31T00:00:00Z")
    (env,) = data["environments"]
    assert set(env) == {"env", "runs", "availability", "incident_count", "mean_time_to_acknowledge_seconds", "workflows", "incidents",
                        "slowest_steps", "timeline"}
    assert all(set(row) == DOCUMENTED_ROW for row in env["workflows"])
    assert set(env["incidents"][0]) == {
        "workflow", "source", "alertname", "severity", "started_at", "ended_at", "duration_seconds", "ongoing", "cause_step",
        "cause_reason", "root_cause", "acknowledged_at", "acknowledged_by", "time_to_acknowledge_seconds"}
    assert set(env["slowest_steps"][0]) == {"workflow", "step", "runs", "failed", "p50", "p95", "p99"}
    assert set(env["timeline"]) == {"bucket_seconds", "starts", "p95"}
    assert env["workflows"][0]["availability"] == 0.75


def test_csv_round_trips_to_the_json_rows(config: Config, history: HistoryStore) -> None:
    report = build_report(config, history, period="daily", end=END)  # both environments: one table
    expected = [row for env in json.loads(render(report, "json"))["environments"] for row in env["workflows"]]
    text = render(report, "csv").decode()
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == csv_columns()
    assert set(csv_columns()) == DOCUMENTED_ROW

    def typed(column: str, value: str) -> Any:
        sample = next((row[column] for row in expected if row[column] is not None), None)
        if value == "":
            return None
        if isinstance(sample, bool):
            return value == "true"
        if isinstance(sample, (int, float)):
            number = float(value)
            return int(number) if isinstance(sample, int) and number.is_integer() and "." not in value else number
        return value

    parsed = [{column: typed(column, value) for column, value in row.items()} for row in reader]
    assert parsed == expected
    assert len(parsed) == 6


def test_html_has_the_numbers_and_both_charts_and_no_script(report: Report) -> None:
    page = render(report, "html").decode()
    assert "<script" not in page
    assert page.count("<svg") == 2
    for text in ("alpha", "beta", "gamma", "75.00%", "-400.0%", "+25.0%", "step order: assertion", "analytics root-cause hints are not used yet"):
        assert text in page


def test_html_escapes_what_comes_from_alert_labels(config: Config, history: HistoryStore, tmp_path: Path) -> None:
    store = AlertStore(f"sqlite:///{tmp_path / 'alerts.sqlite3'}")
    store.migrate()
    _alert(store, "x", {"workflow": "beta", "severity": "critical", "step": "<script>alert(1)</script>"}, DAY + timedelta(hours=1))
    try:
        page = render(build_report(config, history, period="daily", end=END, alerts=store), "html").decode()
    finally:
        store.close()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_pdf_opens_and_shows_the_workflows(report: Report, tmp_path: Path) -> None:
    pdftotext = require_binary("pdftotext")
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: Pango is missing (make test installs it)
        pytest.skip(f"WeasyPrint cannot render here: {exc}")
    path = tmp_path / "report.pdf"
    path.write_bytes(render(report, "pdf"))
    assert path.read_bytes().startswith(b"%PDF-")
    text = subprocess.run([pdftotext, str(path), "-"], capture_output=True, text=True, check=True).stdout
    for name in ("alpha", "beta", "gamma", "Environment prod", "75.00%", "step order: assertion", "Uptime per workflow"):
        assert name in text
    assert "p95 run duration per hour" in text  # the SVG chart's own text made it into the PDF


# ---------------------------------------------------------------- mail, schedule, API, command line


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.EmailMessage]] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 OK"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"smtp-secret")


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port(), authenticator=box.authenticate, auth_require_tls=False)
    controller.start()
    try:
        yield box, controller.port
    finally:
        controller.stop()


def scheduled_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp_port: int) -> Config:
    monkeypatch.setenv("FLOWPROBE_TEST_SMTP_PASSWORD", "smtp-secret")
    monkeypatch.setenv("FLOWPROBE_TEST_VIEWER_TOKEN", VIEWER)
    settings = {
        "alerting": {"tokens": [{"name": "grafana", "role": "viewer", "token": {"env": "FLOWPROBE_TEST_VIEWER_TOKEN"}}]},
        "reports": {
            "schedules": [{"cron": "0 6 * * 1", "period": "daily", "formats": ["json", "csv"], "env": "prod",
                           "email": ["sre@example.test", "lead@example.test"]}],
            "smtp": {"host": "127.0.0.1", "port": smtp_port, "sender": "flowprobe@example.test", "username": "flowprobe",
                     "password": {"env": "FLOWPROBE_TEST_SMTP_PASSWORD"}},
        },
    }
    return load_config(write_config(tmp_path / "config", settings=settings))


def test_a_scheduled_report_is_written_and_mailed_with_its_attachments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, history: HistoryStore, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    config = scheduled_config(tmp_path, monkeypatch, port)
    scheduler = ReportScheduler(lambda: config, history, data_dir=tmp_path / "data")
    (schedule,) = config.settings.reports.schedules
    files = asyncio.run(scheduler.run(schedule, end=END))  # the cron job's function, called directly
    directory = tmp_path / "data" / "reports"
    assert [p.name for p in files] == ["flowprobe-sla-daily-prod-20240602T000000Z.json", "flowprobe-sla-daily-prod-20240602T000000Z.csv"]
    assert all(p.parent == directory and p.stat().st_size > 0 for p in files)
    assert json.loads(files[0].read_text())["environments"][0]["workflows"][0]["availability"] == 0.75
    assert box.logins == [(b"flowprobe", b"smtp-secret")]
    ((recipients, message),) = box.messages
    assert recipients == ["sre@example.test", "lead@example.test"]
    assert message["From"] == "flowprobe@example.test"
    assert "daily SLA report: prod" in message["Subject"]
    assert "alpha: availability 75.00% (SLO 50.00%)" in message.get_body(("plain",)).get_content()
    attachments = {part.get_filename(): part for part in message.iter_attachments()}
    assert set(attachments) == {p.name for p in files}
    assert attachments[files[0].name].get_content_type() == "application/json"
    assert attachments[files[0].name].get_payload(decode=True) == files[0].read_bytes()
    assert attachments[files[1].name].get_payload(decode=True) == files[1].read_bytes()


def test_a_failing_mail_is_logged_and_the_files_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, history: HistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    config = scheduled_config(tmp_path, monkeypatch, free_port())  # nothing listens there
    scheduler = ReportScheduler(lambda: config, history, data_dir=tmp_path / "data")
    assert asyncio.run(scheduler.run(config.settings.reports.schedules[0], end=END)) == []
    assert "scheduled report failed" in caplog.text and "smtp-secret" not in caplog.text
    assert len(list((tmp_path / "data" / "reports").iterdir())) == 2


@pytest.mark.parametrize(
    ("cron", "days"),
    [
        ("0 6 * * 1", ["Monday"]),  # CONFIGURATION.md's example: APScheduler 3's from_crontab would say Tuesday
        ("0 6 * * 0", ["Sunday"]),
        ("0 6 * * 7", ["Sunday"]),
        ("0 6 * * mon", ["Monday"]),
        ("0 6 * * 1-5", ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]),
        ("0 6 * * 5-7", ["Sunday", "Friday", "Saturday"]),
        ("0 6 * * */2", ["Sunday", "Tuesday", "Thursday", "Saturday"]),
        ("0 6 * * 1,3", ["Monday", "Wednesday"]),
        ("0 6 * * *", ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]),
    ],
)
def test_report_crons_read_the_day_of_week_as_crontab_does(cron: str, days: list[str]) -> None:
    trigger = crontab_trigger(cron)
    fired, previous = [], END - timedelta(seconds=1)  # a Saturday night; the first week from Sunday 06:00
    for _ in range(len(days)):
        previous = trigger.get_next_fire_time(None, previous + timedelta(seconds=1))
        fired.append(previous)
    assert [f.strftime("%A") for f in fired] == days
    assert all((f.hour, f.minute) == (6, 0) and f < END + timedelta(days=7) for f in fired)


def test_the_scheduler_registers_each_schedule_as_a_cron_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, history: HistoryStore) -> None:
    config = scheduled_config(tmp_path, monkeypatch, free_port())
    scheduler = ReportScheduler(lambda: config, history, data_dir=tmp_path / "data", clock=lambda: END)

    async def lifecycle() -> list[Any]:
        scheduler.start()
        jobs = scheduler.scheduler.get_jobs()
        await scheduler.stop()
        return jobs

    (job,) = asyncio.run(lifecycle())
    assert job.id == "report-0" and job.next_run_time.weekday() == 0 and (job.next_run_time.hour, job.next_run_time.minute) == (6, 0)
    assert not scheduler.scheduler.running


def test_reports_are_listed_and_downloaded_and_nothing_else_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, history: HistoryStore) -> None:
    config = scheduled_config(tmp_path, monkeypatch, free_port())
    data_dir = tmp_path / "data"
    directory = data_dir / "reports"
    report = build_report(config, history, period="daily", end=END, env="prod")
    json_file, html_file = write_report(report, ["json", "html"], directory)
    (directory / "notes.txt").write_text("not a report")
    outside = data_dir / report_name("daily", None, END, "json")
    outside.write_text('{"secret": true}')  # named like a report, outside the directory
    (directory / report_name("weekly", None, END, "json")).symlink_to(outside)
    app = FastAPI()
    app.include_router(reports_router(SimpleNamespace(config=config, data_dir=data_dir)))
    client = TestClient(app)
    auth = {"Authorization": f"Bearer {VIEWER}"}

    assert client.get("/api/reports").status_code == 401
    listing = client.get("/api/reports", headers=auth).json()
    assert sorted(i["name"] for i in listing["items"]) == sorted([json_file.name, html_file.name]) and listing["total"] == 2
    item = next(i for i in listing["items"] if i["format"] == "json")
    assert (item["period"], item["env"], item["end"], item["size"], item["url"]) == (
        "daily", "prod", "2024-06-02T00:00:00Z", json_file.stat().st_size, f"/api/reports/{json_file.name}")
    assert datetime.fromisoformat(item["created_at"].replace("Z", "+00:00")).tzinfo is not None

    download = client.get(f"/api/reports/{json_file.name}", headers=auth)
    assert download.status_code == 200 and download.content == json_file.read_bytes()
    assert download.headers["content-type"] == "application/json"
    assert "attachment" in download.headers["content-disposition"]
    assert client.get(f"/api/reports/{html_file.name}", headers=auth).headers["content-type"].startswith("text/html")

    for name in (
        "notes.txt",
        report_name("weekly", None, END, "json"),  # a link out of the directory
        f"..%2F{outside.name}",
        f"%2E%2E%2F{outside.name}",
        "..%2Fhistory.sqlite3",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "..",
        "%2E%2E",
        f"{json_file.name}%00.json",
        "flowprobe-sla-daily-prod-20240602T000000Z.sqlite3",
    ):
        response = client.get(f"/api/reports/{name}", headers=auth)
        assert response.status_code == 404, name
        assert b"secret" not in response.content
    assert [i["name"] for i in list_reports(directory / "missing")] == []


def test_the_report_command(tmp_path: Path, history: HistoryStore, capsys: pytest.CaptureFixture[str]) -> None:
    # Closing a HistoryStore applies its retention: the command must use the configured one (here: keep 2024's runs).
    write_config(tmp_path / "config", history="history: {max_age: 36500d}\n")
    base = ["report", "--config", str(tmp_path / "config"), "--data-dir", str(tmp_path / "data"), "--end", "2024-06-02T00:00:00Z"]
    out = tmp_path / "out" / "r.json"
    assert cli.main([*base, "--period", "daily", "--format", "json", "--env", "prod", "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert json.loads(out.read_text())["environments"][0]["workflows"][0]["uptime"] == 0.75
    assert cli.main([*base, "--period", "weekly", "--format", "csv"]) == 0
    written = Path(capsys.readouterr().out.strip())
    assert written == tmp_path / "data" / "reports" / "flowprobe-sla-weekly-20240602T000000Z.csv"
    assert [(r["env"], r["runs"]) for r in csv.DictReader(io.StringIO(written.read_text()))] == [
        ("prod", "6"), ("prod", "4"), ("prod", "3"), ("staging", "1"), ("staging", "0"), ("staging", "0")]
    assert history.count() == len(SEEDED)

    assert cli.main([*base, "--period", "daily", "--format", "json", "--env", "nope"]) == 1
    assert "unknown environment 'nope' (defined: prod, staging)" in capsys.readouterr().err
    assert cli.main([*base[:3], "--data-dir", str(tmp_path / "empty"), "--period", "daily", "--format", "json"]) == 1
    assert "no run history at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([*base[:5], "--end", "yesterday", "--period", "daily"])
    assert "expected an ISO 8601 time" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "empty")


def test_wired_to_a_service_it_reports_the_pairs_that_collector_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx

    from collector.engine import HttpxEngine
    from collector.service import Service

    monkeypatch.setenv("FLOWPROBE_TEST_VIEWER_TOKEN", VIEWER)
    settings = {
        "alerting": {"tokens": [{"name": "grafana", "role": "viewer", "token": {"env": "FLOWPROBE_TEST_VIEWER_TOKEN"}}]},
        "reports": {"schedules": [{"cron": "0 0 * * *", "period": "daily", "formats": ["json"]}]},
    }
    write_config(tmp_path / "config", settings=settings, history="history: {max_age: 36500d}\n")
    service = Service([tmp_path / "config"], data_dir=tmp_path / "data", envs=["prod"],
                      engine=HttpxEngine(httpx.MockTransport(lambda r: httpx.Response(200))), watch=False)
    service.alerts.open()  # an empty alert history: incidents come from the runs
    try:
        for result in SEEDED:
            service.store.add(result)
        service.store.flush()
        scheduler = ReportScheduler.for_service(service)
        (written,) = asyncio.run(scheduler.run(service.config.settings.reports.schedules[0], end=END))
        data = json.loads(written.read_text())
        assert [e["env"] for e in data["environments"]] == ["prod"]  # --env prod: staging's runs are another collector's
        assert (data["env"], data["incident_source"], data["environments"][0]["runs"]) == (None, "runs", 11)
        app = FastAPI()
        app.include_router(reports_router(service))
        listing = TestClient(app).get("/api/reports", headers={"Authorization": f"Bearer {VIEWER}"}).json()
        assert [i["name"] for i in listing["items"]] == [written.name] == ["flowprobe-sla-daily-20240602T000000Z.json"]
    finally:
        service.alerts.store.close()
        service.store.close()
