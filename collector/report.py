"""SLA reports from the run history (and the alert history): HTML, PDF, CSV and JSON.

A report covers one period (daily, weekly or monthly) ending at a given time,
one section per environment. Every number comes from the runs in the period;
the trends compare with the previous period of the same length.

- **runs**: successful, failed (``failure`` or ``error``) and skipped runs.
  Skipped runs (a failing dependency, an open circuit) count for nothing.
- **availability**: successful runs / runs that were not skipped. This is the
  SLI of ``alert.availability_slo`` and of the generated burn-rate rules.
- **uptime**: the share of the observed time that the workflow was passing.
  Each run's outcome holds from its start until the next run (the last one
  until the period's end); time before the first run is not observed.
- **error budget left**: budget = 1 - SLO, spent = failed / not skipped,
  left = 1 - spent / budget, in percent (negative once overspent).
- **p50, p95, p99**: durations of the runs that were not skipped, by linear
  interpolation between the closest ranks (numpy's default).
- **incidents**: from the alert history when it has alerts (not the
  certificate warning, not ``info`` alerts); else streaks of at least
  ``after_failures`` failed runs. The root cause is the failing step and
  reason (the alert's ``step`` and ``reason`` labels): the analytics
  root-cause hints are not read yet, and the report says so.

The PDF is the HTML rendered by WeasyPrint, so both show the same content,
charts included (inline SVG made here, no JavaScript). Scheduled reports
(``reports.schedules`` in flowprobe.yaml) are written to the reports
directory, listed and served by ``reports_router``, and mailed when
``email`` and ``reports.smtp`` are set.

This module holds the report, its scheduler and its API routes together
because one owner builds them; they would split cleanly along those lines.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import csv
import html
import io
import json
import logging
import math
import os
import re
import smtplib
import ssl
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse

from collector.alertstore import Alert, AlertStore, Status
from collector.auth import READ, TokenAuth
from collector.cron import crontab_trigger
from collector.config import Config, ConfigError, SmtpSettings, Workflow, load_config
from collector.result import RunResult
from collector.store import HistoryStore

if TYPE_CHECKING:
    from collector.config import ReportSchedule

__all__ = [
    "FORMATS",
    "PERIODS",
    "EnvironmentReport",
    "Incident",
    "Report",
    "ReportError",
    "ReportScheduler",
    "StepRow",
    "Window",
    "WorkflowRow",
    "build_report",
    "command",
    "list_reports",
    "period_window",
    "render",
    "report_name",
    "reports_directory",
    "reports_router",
    "send_report",
    "write_report",
]

log = logging.getLogger("flowprobe.report")

Period = Literal["daily", "weekly", "monthly"]
Format = Literal["html", "pdf", "csv", "json"]
PERIODS: tuple[Period, ...] = ("daily", "weekly", "monthly")
FORMATS: tuple[Format, ...] = ("html", "pdf", "csv", "json")
MEDIA_TYPES: dict[str, str] = {
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
}
KIND = "flowprobe-sla-report"
VERSION = 1
ROOT_CAUSE_NOTE = (
    "Root cause is the failing step and reason from the alert's step and reason labels "
    "(from the failed runs when incidents come from the run history); the analytics root-cause hints are not used yet."
)

# flowprobe-sla-<period>[-<env>]-<end>.<format>; an env is a slug, so it never looks like the upper-case timestamp.
_NAME = re.compile(
    r"flowprobe-sla-(?P<period>daily|weekly|monthly)(?:-(?P<env>[a-z0-9][a-z0-9_-]{0,62}))?"
    r"-(?P<end>\d{8}T\d{6}Z)\.(?P<format>html|pdf|csv|json)"
)
_PAGE = 1000
_ALERT_PAGE = 500
# Alerts received this long before the period may still overlap it; older resolved ones are not read.
_ALERT_LOOKBACK = timedelta(days=7)
_SLOWEST_STEPS = 10
_TIMELINE_BUCKET: dict[Period, int] = {"daily": 3600, "weekly": 86400, "monthly": 86400}
# collector.rules CERT and PREDICTED: warnings ahead of time, not outages (FlowprobeAnomalyDetected is severity info).
_ALERTS_NOT_INCIDENTS = frozenset({"FlowprobeCertificateExpiring", "FlowprobeFailurePredicted"})


class ReportError(Exception):
    """A report cannot be made (unknown environment, no history, PDF renderer missing)."""


# ---------------------------------------------------------------- periods


@dataclass(frozen=True)
class Window:
    """The period [start, end) and the one before it, [previous_start, start)."""

    period: Period
    start: datetime
    end: datetime
    previous_start: datetime


def _month_before(moment: datetime) -> datetime:
    year, month = (moment.year, moment.month - 1) if moment.month > 1 else (moment.year - 1, 12)
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def period_window(period: Period, end: datetime) -> Window:
    """Daily and weekly periods are 24 h and 7 days; a monthly one is a calendar month back (the day clamped)."""
    if end.tzinfo is None:
        raise ValueError("the end of a report period must be an aware datetime")
    end = end.astimezone(UTC)
    if period == "monthly":
        start = _month_before(end)
        return Window(period, start, end, _month_before(start))
    length = timedelta(days=1 if period == "daily" else 7)
    return Window(period, end - length, end, end - 2 * length)


# ---------------------------------------------------------------- the report


@dataclass
class WorkflowRow:
    """One workflow in one environment; also one CSV row (fields in column order)."""

    env: str
    workflow: str
    runs: int  # not skipped
    successes: int
    failed: int
    skipped: int
    availability: float | None
    uptime: float | None
    observed_from: str | None
    availability_slo: float | None
    slo_met: bool | None
    error_budget_left_pct: float | None
    latency_slo: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    latency_slo_met: bool | None
    previous_runs: int
    previous_availability: float | None
    previous_p50: float | None
    previous_p95: float | None
    previous_p99: float | None
    p50_change_pct: float | None
    p95_change_pct: float | None
    p99_change_pct: float | None
    incidents: int


@dataclass
class Incident:
    workflow: str
    source: Literal["alerts", "runs"]
    alertname: str | None
    severity: str | None
    started_at: str
    ended_at: str | None  # None: still open at the period's end
    duration_seconds: float  # until ended_at, or until the period's end
    ongoing: bool
    cause_step: str | None
    cause_reason: str | None
    root_cause: str | None
    acknowledged_at: str | None
    acknowledged_by: str | None
    time_to_acknowledge_seconds: float | None


@dataclass
class StepRow:
    workflow: str
    step: str
    runs: int
    failed: int
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass
class Timeline:
    """p95 run duration per bucket (an hour in a daily report, else a day), per workflow; None: no runs."""

    bucket_seconds: int
    starts: list[str]
    p95: dict[str, list[float | None]]


@dataclass
class EnvironmentReport:
    env: str
    runs: int
    availability: float | None
    incident_count: int
    mean_time_to_acknowledge_seconds: float | None
    workflows: list[WorkflowRow]
    incidents: list[Incident]
    slowest_steps: list[StepRow]
    timeline: Timeline


@dataclass
class Report:
    period: Period
    env: str | None  # the one environment asked for; None: every environment
    start: str
    end: str
    previous_start: str
    generated_at: str
    incident_source: Literal["alerts", "runs"]
    notes: list[str]
    environments: list[EnvironmentReport]
    kind: str = KIND
    version: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"kind": data.pop("kind"), "version": data.pop("version"), **data}


# ---------------------------------------------------------------- arithmetic


def _iso(moment: datetime | float) -> str:
    if isinstance(moment, (int, float)):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); `values` sorted."""
    if not values:
        return None
    rank = q * (len(values) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (rank - low)


def _change_pct(current: float | None, previous: float | None) -> float | None:
    if current is None or previous is None or previous <= 0:
        return None
    return (current - previous) / previous * 100.0


def _failed(run: RunResult) -> bool:
    return run.outcome in ("failure", "error")


@dataclass
class _Stats:
    runs: int = 0
    successes: int = 0
    failed: int = 0
    skipped: int = 0
    durations: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, runs: Iterable[RunResult]) -> _Stats:
        stats = cls()
        for run in runs:
            if run.outcome == "skipped":
                stats.skipped += 1
                continue
            stats.runs += 1
            stats.successes += run.outcome == "success"
            stats.failed += _failed(run)
            stats.durations.append(run.duration)
        stats.durations.sort()
        return stats

    @property
    def availability(self) -> float | None:
        return self.successes / self.runs if self.runs else None

    def quantile(self, q: float) -> float | None:
        return _percentile(self.durations, q)


def _uptime(runs: Sequence[RunResult], end: float) -> float | None:
    """Time-weighted: each run's outcome holds until the next run, the last until `end`. `runs` ascending."""
    counted = [r for r in runs if r.outcome != "skipped"]
    if not counted or counted[0].started_at >= end:
        return None
    up = 0.0
    for run, following in zip(counted, [*counted[1:], None]):
        until = end if following is None else following.started_at
        if run.outcome == "success":
            up += until - run.started_at
    return up / (end - counted[0].started_at)


def _error_budget_left(stats: _Stats, slo: float | None) -> float | None:
    if slo is None or not stats.runs:
        return None
    spent = stats.failed / stats.runs
    return (1.0 - spent / (1.0 - slo)) * 100.0


# ---------------------------------------------------------------- reading the histories


def _runs_between(history: HistoryStore, workflow: str, env: str, since: float, until: float) -> list[RunResult]:
    """Runs with since <= started_at < until, oldest first, paged back through the store's public API.

    A page boundary between two runs with the same started_at would skip one;
    started_at is the wall clock in float seconds, so two runs of one pair never share it."""
    found: list[RunResult] = []
    before = until
    while True:
        page = history.runs(workflow, env, limit=_PAGE, before=before)
        for run in page:
            if run.started_at < since:
                return found[::-1]
            found.append(run)
        if len(page) < _PAGE:
            return found[::-1]
        before = page[-1].started_at


def _alerts_of(store: AlertStore, env: str, since: datetime) -> list[Alert]:
    """The env's alerts that may overlap a period starting at `since`: every unresolved one, and the rest received from `since` on."""
    found: dict[int, Alert] = {}
    open_statuses = [Status.ACTIVE, Status.ESCALATED, Status.ACKNOWLEDGED]
    for statuses in (open_statuses, None):
        before: int | None = None
        while True:
            page = store.find(status=statuses, env=env, limit=_ALERT_PAGE, before=before)
            for alert in page:
                found[alert.id] = alert
            if len(page) < _ALERT_PAGE or (statuses is None and page[-1].received_at < since):
                break
            before = page[-1].id
    return list(found.values())


def _alert_incidents(alerts: Iterable[Alert], workflows: set[str], start: datetime, end: datetime) -> list[Incident]:
    incidents = []
    for alert in alerts:
        if alert.workflow not in workflows or alert.severity == "info" or alert.alertname in _ALERTS_NOT_INCIDENTS:
            continue
        ended = alert.ends_at or alert.resolved_at
        if alert.starts_at >= end or (ended is not None and ended <= start):
            continue
        ongoing = ended is None or ended > end
        step, reason = alert.labels.get("step") or None, alert.labels.get("reason") or None
        acknowledged = alert.acknowledged_at
        incidents.append(
            Incident(
                workflow=alert.workflow,
                source="alerts",
                alertname=alert.alertname,
                severity=alert.severity,
                started_at=_iso(alert.starts_at),
                ended_at=None if ongoing or ended is None else _iso(ended),
                duration_seconds=((end if ongoing or ended is None else ended) - alert.starts_at).total_seconds(),
                ongoing=ongoing,
                cause_step=step,
                cause_reason=reason,
                root_cause=_cause(step, reason),
                acknowledged_at=_iso(acknowledged) if acknowledged else None,
                acknowledged_by=alert.acknowledged_by,
                time_to_acknowledge_seconds=(acknowledged - alert.starts_at).total_seconds() if acknowledged else None,
            )
        )
    return incidents


def _cause(step: str | None, reason: str | None) -> str | None:
    if step and reason:
        return f"step {step}: {reason}"
    if step:
        return f"step {step}"
    return reason


def _run_incidents(workflow: Workflow, runs: Sequence[RunResult], start: float, end: float) -> list[Incident]:
    """Streaks of at least after_failures failed runs, as the failing alert counts them: a skipped run neither ends nor extends one."""
    incidents: list[Incident] = []
    streak: list[RunResult] = []

    def close(recovered_at: float | None) -> None:
        if len(streak) >= workflow.alert.after_failures and (recovered_at is None or recovered_at > start):
            first = streak[0]
            ongoing = recovered_at is None
            incidents.append(
                Incident(
                    workflow=workflow.name,
                    source="runs",
                    alertname=None,
                    severity=workflow.alert.severity,
                    started_at=_iso(first.started_at),
                    ended_at=None if ongoing else _iso(recovered_at),
                    duration_seconds=(end if recovered_at is None else recovered_at) - first.started_at,
                    ongoing=ongoing,
                    cause_step=first.failed_step,
                    cause_reason=first.reason,
                    root_cause=_cause(first.failed_step, first.reason),
                    acknowledged_at=None,
                    acknowledged_by=None,
                    time_to_acknowledge_seconds=None,
                )
            )
        streak.clear()

    for run in runs:
        if _failed(run):
            streak.append(run)
        elif run.outcome == "success" and streak:
            close(run.started_at)
    if streak:
        close(None)
    return incidents


# ---------------------------------------------------------------- building


def _workflow_row(env: str, workflow: Workflow, current: Sequence[RunResult], previous: Sequence[RunResult], end: float, incidents: int) -> WorkflowRow:
    now, before = _Stats.of(current), _Stats.of(previous)
    slo, latency_slo = workflow.alert.availability_slo, workflow.alert.latency_slo
    availability = now.availability
    p50, p95, p99 = now.quantile(0.5), now.quantile(0.95), now.quantile(0.99)
    prev50, prev95, prev99 = before.quantile(0.5), before.quantile(0.95), before.quantile(0.99)
    observed = next((r.started_at for r in current if r.outcome != "skipped"), None)
    return WorkflowRow(
        env=env,
        workflow=workflow.name,
        runs=now.runs,
        successes=now.successes,
        failed=now.failed,
        skipped=now.skipped,
        availability=availability,
        uptime=_uptime(current, end),
        observed_from=_iso(observed) if observed is not None else None,
        availability_slo=slo,
        slo_met=None if slo is None or availability is None else availability >= slo,
        error_budget_left_pct=_error_budget_left(now, slo),
        latency_slo=latency_slo,
        p50=p50,
        p95=p95,
        p99=p99,
        # The generated latency alert compares p95 with latency_slo; so does the report.
        latency_slo_met=None if latency_slo is None or p95 is None else p95 <= latency_slo,
        previous_runs=before.runs,
        previous_availability=before.availability,
        previous_p50=prev50,
        previous_p95=prev95,
        previous_p99=prev99,
        p50_change_pct=_change_pct(p50, prev50),
        p95_change_pct=_change_pct(p95, prev95),
        p99_change_pct=_change_pct(p99, prev99),
        incidents=incidents,
    )


def _slowest_steps(runs_by_workflow: dict[str, Sequence[RunResult]]) -> list[StepRow]:
    durations: dict[tuple[str, str], list[float]] = {}
    failed: dict[tuple[str, str], int] = {}
    for workflow, runs in runs_by_workflow.items():
        for run in runs:
            for step in run.steps:
                if step.outcome == "skipped":
                    continue
                key = (workflow, step.name)
                durations.setdefault(key, []).append(step.duration)
                failed[key] = failed.get(key, 0) + (step.outcome != "success")
    rows = []
    for (workflow, step), values in durations.items():
        values.sort()
        rows.append(StepRow(workflow, step, len(values), failed[(workflow, step)], _percentile(values, 0.5), _percentile(values, 0.95), _percentile(values, 0.99)))
    rows.sort(key=lambda r: (-(r.p95 or 0.0), r.workflow, r.step))
    return rows[:_SLOWEST_STEPS]


def _timeline(period: Period, start: float, end: float, runs_by_workflow: dict[str, Sequence[RunResult]]) -> Timeline:
    size = _TIMELINE_BUCKET[period]
    count = max(1, math.ceil((end - start) / size))
    series: dict[str, list[float | None]] = {}
    for workflow, runs in runs_by_workflow.items():
        buckets: list[list[float]] = [[] for _ in range(count)]
        for run in runs:
            if run.outcome != "skipped":
                buckets[min(int((run.started_at - start) // size), count - 1)].append(run.duration)
        series[workflow] = [_percentile(sorted(b), 0.95) for b in buckets]
    return Timeline(size, [_iso(start + i * size) for i in range(count)], series)


def _retention_notes(config: Config, window: Window, workflows: Iterable[Workflow]) -> list[str]:
    """Say when the history cannot hold both periods: its retention silently shortens them."""
    needed = (window.end - window.previous_start).total_seconds()
    notes = []
    if config.history.max_age < needed:
        notes.append(
            f"The run history keeps runs for {_duration_text(config.history.max_age)} (history.max_age in environments.yaml); "
            f"this report and the period it is compared with span {_duration_text(needed)}, so older runs are missing."
        )
    short = sorted(
        wf.name for wf in workflows if wf.schedule.every is not None and config.history.runs_per_pair * wf.schedule.every < needed
    )
    if short:
        notes.append(
            f"The run history keeps {config.history.runs_per_pair} runs per workflow and environment (history.runs_per_pair), "
            f"less than both periods hold for: {', '.join(short)}; their older runs are missing."
        )
    return notes


def build_report(
    config: Config,
    history: HistoryStore,
    *,
    period: Period,
    end: datetime,
    env: str | None = None,
    alerts: AlertStore | None = None,
    pairs: Iterable[tuple[str, str]] | None = None,
    now: datetime | None = None,
) -> Report:
    """The report of `period` ending at `end`: every environment, or only `env`.

    `pairs` limits it to the (workflow, env) pairs one collector runs
    (``--env``, ``--shard``); `alerts` is the alert history, used when it
    holds any alert. Blocking: call it in a thread from async code."""
    if env is not None and env not in config.environments:
        raise ReportError(f"unknown environment {env!r} (defined: {', '.join(config.environments)})")
    window = period_window(period, end)
    start_ts, end_ts, previous_ts = window.start.timestamp(), window.end.timestamp(), window.previous_start.timestamp()
    chosen = set(pairs) if pairs is not None else None
    selected = [
        (wf, e) for wf, e in config.pairs() if (env is None or e == env) and (chosen is None or (wf.name, e) in chosen)
    ]
    notes: list[str] = []
    alert_history = alerts
    if alerts is not None:
        try:
            if not alerts.find(limit=1):
                alert_history = None
        except Exception as exc:  # a database that is away or not migrated: the runs still make a report
            log.warning("alert history unavailable for the report; incidents come from the run history", exc_info=True)
            notes.append(f"The alert history could not be read ({type(exc).__name__}); incidents come from the run history.")
            alert_history = None
    incident_source: Literal["alerts", "runs"] = "alerts" if alert_history is not None else "runs"
    if incident_source == "runs":
        notes.append(
            "No alert history: incidents are streaks of at least alert.after_failures failed runs in the run history, "
            "and have no acknowledgement time."
        )
    notes.append(ROOT_CAUSE_NOTE)
    notes.extend(_retention_notes(config, window, {wf.name: wf for wf, _ in selected}.values()))

    environments = []
    for env_name in config.environments:
        workflows = sorted((wf for wf, e in selected if e == env_name), key=lambda wf: wf.name)
        if not workflows and env != env_name:
            continue
        current: dict[str, list[RunResult]] = {}
        previous: dict[str, list[RunResult]] = {}
        incidents: list[Incident] = []
        for wf in workflows:
            runs = _runs_between(history, wf.name, env_name, previous_ts, end_ts)
            current[wf.name] = [r for r in runs if r.started_at >= start_ts]
            previous[wf.name] = [r for r in runs if r.started_at < start_ts]
            if alert_history is None:
                incidents += _run_incidents(wf, runs, start_ts, end_ts)
        if alert_history is not None:
            incidents = _alert_incidents(_alerts_of(alert_history, env_name, window.start - _ALERT_LOOKBACK), {wf.name for wf in workflows},
                                         window.start, window.end)
        incidents.sort(key=lambda i: (i.started_at, i.workflow))
        rows = [
            _workflow_row(env_name, wf, current[wf.name], previous[wf.name], end_ts, sum(i.workflow == wf.name for i in incidents))
            for wf in workflows
        ]
        total = sum(r.runs for r in rows)
        acknowledged = [i.time_to_acknowledge_seconds for i in incidents if i.time_to_acknowledge_seconds is not None]
        environments.append(
            EnvironmentReport(
                env=env_name,
                runs=total,
                availability=sum(r.successes for r in rows) / total if total else None,
                incident_count=len(incidents),
                mean_time_to_acknowledge_seconds=sum(acknowledged) / len(acknowledged) if acknowledged else None,
                workflows=rows,
                incidents=incidents,
                slowest_steps=_slowest_steps(current),
                timeline=_timeline(period, start_ts, end_ts, current),
            )
        )
    return Report(
        period=period,
        env=env,
        start=_iso(window.start),
        end=_iso(window.end),
        previous_start=_iso(window.previous_start),
        generated_at=_iso(now or datetime.now(UTC)),
        incident_source=incident_source,
        notes=notes,
        environments=environments,
    )


# ---------------------------------------------------------------- formatting


def _duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s"


def _percent_text(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def _change_text(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}%"


def _time_text(iso: str | None) -> str:
    return "—" if iso is None else iso.replace("T", " ").removesuffix("Z")[:16] + " UTC"


def _title(report: Report) -> str:
    where = report.env or "all environments"
    return f"flowprobe {report.period} SLA report: {where}, {_time_text(report.start)} to {_time_text(report.end)}"


# ---------------------------------------------------------------- charts (inline SVG: no JavaScript, so the PDF has them too)

_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D31", "#000000")  # Okabe-Ito, colour-blind safe
_FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def uptime_chart(rows: Sequence[WorkflowRow]) -> str:
    """Horizontal bars of uptime per workflow, with each SLO as a tick; the axis starts near the lowest value."""
    label_w, bar_w, row_h, top = 190, 420, 22, 22
    width, height = label_w + bar_w + 80, top + row_h * max(len(rows), 1) + 8
    values = [v for r in rows for v in (r.uptime, r.availability_slo) if v is not None]
    low = min(values, default=1.0)
    axis_min = 0.0 if low < 0.5 else math.floor((low - 0.001) * 20) / 20  # a multiple of 5% below the lowest value

    def x(value: float) -> float:
        return label_w + (value - axis_min) / (1.0 - axis_min) * bar_w

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" {_FONT} font-size="11">']
    for tick in (axis_min, (axis_min + 1.0) / 2, 1.0):
        parts.append(f'<line x1="{x(tick):.1f}" y1="{top - 4}" x2="{x(tick):.1f}" y2="{height - 8}" stroke="#ddd"/>')
        parts.append(f'<text x="{x(tick):.1f}" y="{top - 8}" text-anchor="middle" fill="#555">{_percent_text(tick, 1)}</text>')
    for i, row in enumerate(rows):
        y = top + i * row_h
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_esc(row.workflow)}</text>')
        if row.uptime is None:
            parts.append(f'<text x="{label_w + 4}" y="{y + 15}" fill="#777">no runs</text>')
            continue
        below = row.availability_slo is not None and row.uptime < row.availability_slo
        colour = "#D55E00" if below else "#009E73"
        parts.append(f'<rect x="{label_w}" y="{y + 4}" width="{max(x(row.uptime) - label_w, 0.5):.1f}" height="{row_h - 8}" fill="{colour}"/>')
        parts.append(f'<text x="{x(row.uptime) + 4:.1f}" y="{y + 15}">{_percent_text(row.uptime)}</text>')
        if row.availability_slo is not None:
            sx = x(row.availability_slo)
            parts.append(f'<line x1="{sx:.1f}" y1="{y + 1}" x2="{sx:.1f}" y2="{y + row_h - 1}" stroke="#000" stroke-width="2"/>')
    parts.append("</svg>")
    return "".join(parts)


def _nice_ceiling(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= value)


def duration_chart(timeline: Timeline) -> str:
    """One line of p95 duration per workflow across the period's buckets, a dot for each bucket that had runs."""
    left, right, top, bottom = 64, 190, 12, 34
    plot_w, plot_h = 520, 200
    width, height = left + plot_w + right, top + plot_h + bottom
    count = len(timeline.starts)
    values = [v for series in timeline.p95.values() for v in series if v is not None]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" {_FONT} font-size="11">']
    if not values:
        parts.append(f'<text x="{left}" y="{top + 20}" fill="#777">no runs in this period</text></svg>')
        return "".join(parts)
    ymax = _nice_ceiling(max(values))

    def x(index: int) -> float:
        return left + (index * plot_w / (count - 1) if count > 1 else plot_w / 2)

    def y(value: float) -> float:
        return top + plot_h * (1 - value / ymax)

    for k in range(5):
        tick = ymax * k / 4
        parts.append(f'<line x1="{left}" y1="{y(tick):.1f}" x2="{left + plot_w}" y2="{y(tick):.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" fill="#555">{_duration_text(tick) if tick else "0"}</text>')
    step = max(1, math.ceil(count / 8))
    for index in range(0, count, step):
        start = timeline.starts[index]
        label = start[11:16] if timeline.bucket_seconds < 86400 else start[5:10]
        parts.append(f'<text x="{x(index):.1f}" y="{top + plot_h + 16}" text-anchor="middle" fill="#555">{label}</text>')
    unit = "hour" if timeline.bucket_seconds < 86400 else "day"
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" fill="#555">p95 run duration per {unit} (UTC)</text>')
    for n, (workflow, series) in enumerate(timeline.p95.items()):
        colour = _PALETTE[n % len(_PALETTE)]
        # The line joins the buckets that had runs; the dots show which did.
        points = [f"{x(index):.1f},{y(value):.1f}" for index, value in enumerate(series) if value is not None]
        if len(points) > 1:
            parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        parts.extend(f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="2.2" fill="{colour}"/>' for p in points)
        ly = top + 10 + n * 16
        parts.append(f'<rect x="{left + plot_w + 14}" y="{ly - 8}" width="12" height="8" fill="{colour}"/>')
        parts.append(f'<text x="{left + plot_w + 30}" y="{ly}">{_esc(workflow)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------- rendering

TEMPLATES = Path(__file__).resolve().parent / "templates"


@lru_cache(maxsize=1)
def _jinja() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(duration=_duration_text, percent=_percent_text, change=_change_text, when=_time_text)
    return environment


def render_html(report: Report) -> str:
    from markupsafe import Markup

    charts = {
        e.env: {"uptime": Markup(uptime_chart(e.workflows)), "duration": Markup(duration_chart(e.timeline))} for e in report.environments
    }
    return str(_jinja().get_template("report.html").render(report=report, title=_title(report), charts=charts))


def render_pdf(report: Report) -> bytes:
    """The HTML, rendered by WeasyPrint: the same content, charts included."""
    try:
        from weasyprint import HTML
    except OSError as exc:  # WeasyPrint loads Pango with cffi when imported
        raise ReportError(
            f"PDF reports need Pango for WeasyPrint (Debian: libpango-1.0-0 libpangoft2-1.0-0 and a font such as fonts-dejavu-core): {exc}"
        ) from None
    progress = logging.getLogger("weasyprint.progress")
    if progress.level == logging.NOTSET:
        progress.setLevel(logging.WARNING)  # it narrates every layout step at INFO
    return bytes(HTML(string=render_html(report)).write_pdf())


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


def csv_columns() -> list[str]:
    return [f.name for f in fields(WorkflowRow)]


def render_csv(report: Report) -> str:
    """One row per workflow and environment: the `workflows` rows of the JSON, flattened into one table."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(csv_columns())
    for env in report.environments:
        for row in env.workflows:
            writer.writerow(_csv_value(v) for v in asdict(row).values())
    return out.getvalue()


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"


def render(report: Report, fmt: Format) -> bytes:
    if fmt == "pdf":
        return render_pdf(report)
    text = {"html": render_html, "csv": render_csv, "json": render_json}[fmt](report)
    return text.encode("utf-8")


# ---------------------------------------------------------------- files


def reports_directory(config: Config, data_dir: Path | str) -> Path:
    """reports.directory (relative to the working directory, like --data-dir), else <data-dir>/reports."""
    directory = config.settings.reports.directory
    return Path(directory) if directory else Path(data_dir) / "reports"


def report_name(period: Period, env: str | None, end: datetime | str, fmt: Format) -> str:
    moment = datetime.fromisoformat(end.replace("Z", "+00:00")) if isinstance(end, str) else end
    stamp = moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"flowprobe-sla-{period}{f'-{env}' if env else ''}-{stamp}.{fmt}"


def _write_atomic(path: Path, data: bytes) -> None:
    # A dot name until complete: the listing never shows (nor serves) half a file.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_report(report: Report, formats: Iterable[Format], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in dict.fromkeys(formats):
        path = directory / report_name(report.period, report.env, report.end, fmt)
        _write_atomic(path, render(report, fmt))
        written.append(path)
    return written


def list_reports(directory: Path) -> list[dict[str, Any]]:
    """The report files in `directory`, newest first; other files are not listed."""
    items = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        match = _NAME.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        stat = entry.stat(follow_symlinks=False)
        items.append(
            {
                "name": entry.name,
                "period": match["period"],
                "env": match["env"],
                "format": match["format"],
                "end": _iso(datetime.strptime(match["end"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)),
                "created_at": _iso(stat.st_mtime),
                "size": stat.st_size,
            }
        )
    items.sort(key=lambda i: (i["created_at"], i["name"]), reverse=True)
    return items


def report_file(directory: Path, name: str) -> Path | None:
    """The report called `name` in `directory`, or None: only a report's own name, never a path, a link or another file."""
    if _NAME.fullmatch(name) is None:
        return None
    path = directory / name
    try:
        if path.is_symlink() or not path.is_file() or path.resolve().parent != directory.resolve():
            return None
    except OSError:
        return None
    return path


# ---------------------------------------------------------------- email


def _summary_text(report: Report) -> str:
    lines = [_title(report), ""]
    for env in report.environments:
        lines.append(f"{env.env}: availability {_percent_text(env.availability)}, {env.incident_count} incident(s)")
        for row in env.workflows:
            slo = f" (SLO {_percent_text(row.availability_slo)})" if row.availability_slo is not None else ""
            lines.append(f"  {row.workflow}: availability {_percent_text(row.availability)}{slo}, uptime {_percent_text(row.uptime)}, "
                         f"p95 {_duration_text(row.p95)} ({_change_text(row.p95_change_pct)})")
        lines.append("")
    lines.append("The full report is attached.")
    return "\n".join(lines) + "\n"


def send_report(
    smtp: SmtpSettings, password: str | None, recipients: Sequence[str], report: Report, files: Sequence[Path], *, timeout: float = 30.0
) -> None:
    """Mail the report's files as attachments. Blocking; raises smtplib.SMTPException or OSError on failure."""
    message = EmailMessage()
    message["From"] = smtp.sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = _title(report)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=smtp.sender.rpartition("@")[2])
    message.set_content(_summary_text(report))
    for path in files:
        maintype, _, subtype = MEDIA_TYPES[path.suffix.lstrip(".")].partition(";")[0].partition("/")
        message.add_attachment(path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name)
    with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as client:
        if smtp.starttls:
            client.starttls(context=ssl.create_default_context())
        if smtp.username:
            client.login(smtp.username, password or "")
        client.send_message(message, to_addrs=list(recipients))


# ---------------------------------------------------------------- scheduling

class ReportScheduler:
    """Cron jobs for ``reports.schedules``, on an AsyncIOScheduler of its own.

    Start it in a running event loop; ``apply()`` after a config reload
    registers the schedules again; ``stop()`` lets a report in progress
    finish (within `grace`)."""

    def __init__(
        self,
        config: Callable[[], Config],
        history: HistoryStore,
        *,
        data_dir: Path | str,
        alerts: Callable[[], AlertStore | None] = lambda: None,
        pairs: Callable[[Config], Iterable[tuple[str, str]]] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self.config, self.history, self.data_dir = config, history, Path(data_dir)
        self.alerts, self.pairs, self.clock = alerts, pairs, clock
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self._running: set[asyncio.Task[Any]] = set()

    @classmethod
    def for_service(cls, service: Any) -> ReportScheduler:
        """Reads the service's current config, history, alert store (once open) and selected pairs."""
        return cls(
            lambda: service.config,
            service.store,
            data_dir=service.data_dir,
            alerts=lambda: service.alerts.store if service.alerts.ready else None,
            pairs=lambda config: service.selected(config).keys(),
        )

    def start(self) -> None:
        self.apply()
        self.scheduler.start()

    def apply(self) -> None:
        self.scheduler.remove_all_jobs()
        for index, schedule in enumerate(self.config().settings.reports.schedules):
            try:
                trigger = crontab_trigger(schedule.cron)
            except ValueError as exc:
                log.error("report schedule not registered: %s", exc, extra={"fields": {"index": index, "cron": schedule.cron}})
                continue
            self.scheduler.add_job(
                self.run,
                trigger,
                args=[schedule],
                id=f"report-{index}",
                name=f"{schedule.period} report ({schedule.env or 'all environments'})",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=600,  # a busy loop or a suspended host still gets its report
            )

    async def stop(self, grace: float = 30.0) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace)

    async def run(self, schedule: ReportSchedule, *, end: datetime | None = None) -> list[Path]:
        """Make one scheduled report now (the cron job; tests call it directly). Never raises: failures are logged."""
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            end = end or self.clock().replace(second=0, microsecond=0)  # cron fires on the minute
            config = self.config()
            files, report = await asyncio.to_thread(self._write, config, schedule, end)
            log.info("report written", extra={"fields": {"period": schedule.period, "env": schedule.env, "files": [p.name for p in files]}})
            smtp = config.settings.reports.smtp
            if schedule.email and smtp is None:
                log.warning("report not mailed: reports.smtp is not set", extra={"fields": {"files": [p.name for p in files]}})
            elif schedule.email and smtp is not None:
                await asyncio.to_thread(send_report, smtp, config.smtp_password, schedule.email, report, files)
                log.info("report mailed", extra={"fields": {"to": list(schedule.email), "files": [p.name for p in files]}})
            return files
        except Exception:
            log.exception("scheduled report failed", extra={"fields": {"period": schedule.period, "env": schedule.env}})
            return []
        finally:
            if task is not None:
                self._running.discard(task)

    def _write(self, config: Config, schedule: ReportSchedule, end: datetime) -> tuple[list[Path], Report]:
        pairs = self.pairs(config) if self.pairs is not None else None
        report = build_report(config, self.history, period=schedule.period, end=end, env=schedule.env, alerts=self.alerts(), pairs=pairs)
        return write_report(report, schedule.formats, reports_directory(config, self.data_dir)), report


# ---------------------------------------------------------------- API


def reports_router(service: Any) -> APIRouter:
    """``GET /api/reports`` (the list) and ``GET /api/reports/{name}`` (a download), for viewer and operator tokens.

    Reports carry the alert history's incidents and who acknowledged them,
    so they are read like the alert history: with a token."""
    auth = TokenAuth(lambda: service.config.tokens)
    router = APIRouter(prefix="/api/reports", tags=["reports"], dependencies=[Depends(auth.require(READ))])

    def directory() -> Path:
        return reports_directory(service.config, service.data_dir)

    @router.get("", summary="Report files, newest first")
    def listing() -> dict[str, Any]:
        items = list_reports(directory())
        for item in items:
            item["url"] = f"/api/reports/{item['name']}"
        return {"items": items, "total": len(items)}

    @router.get("/{name}", summary="Download one report file", response_class=FileResponse)
    def download(name: str) -> FileResponse:
        path = report_file(directory(), name)
        if path is None:
            raise HTTPException(404, "no such report")
        return FileResponse(
            path, media_type=MEDIA_TYPES[path.suffix.lstrip(".")], filename=name, headers={"X-Content-Type-Options": "nosniff"}
        )

    return router


# ---------------------------------------------------------------- command line


def parse_end(text: str) -> datetime:
    """ISO 8601; without a zone, UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time like 2024-06-03T06:00:00Z, got {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _open_alerts(config: Config, data_dir: Path) -> AlertStore | None:
    if config.database_url is not None:
        return AlertStore(config.database_url)
    path = data_dir / "alerts.sqlite3"
    return AlertStore(f"sqlite:///{path}") if path.is_file() else None


def command(args: argparse.Namespace) -> int:
    """flowprobe report: one report from the history in --data-dir, to --output or the reports directory."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    history_path = args.data_dir / "history.sqlite3"
    if not history_path.is_file():
        print(f"flowprobe report: no run history at {history_path} (see --data-dir)", file=sys.stderr)
        return 1
    # HistoryStore.close() applies retention even when nothing was written: give it the daemon's, never the defaults.
    history = HistoryStore(history_path, runs_per_pair=config.history.runs_per_pair, max_age=config.history.max_age)
    alerts = _open_alerts(config, args.data_dir)
    try:
        end = args.end or datetime.now(UTC).replace(microsecond=0)
        report = build_report(config, history, period=args.period, end=end, env=args.env, alerts=alerts)
        data = render(report, args.format)
    except ReportError as exc:
        print(f"flowprobe report: {exc}", file=sys.stderr)
        return 1
    finally:
        history.close()
        if alerts is not None:
            alerts.close()
    if args.output is not None and str(args.output) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    if args.output is not None:
        path = args.output
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        directory = reports_directory(config, args.data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / report_name(report.period, report.env, report.end, args.format)
    _write_atomic(path, data)
    print(path)
    return 0
