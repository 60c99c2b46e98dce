"""The dashboard API: overview, executions, alerts, the collector's own metrics, health history, exports.

``dashboard_router(service, prometheus_url=None)`` returns the routes; the
collector's app includes them. Without `prometheus_url` (embedded mode) the
overview is computed from the SQLite history; with it (stack mode) from
Prometheus. Both give the same shape, and ``source`` says which answered.
collector.dashboard documents the statuses and how each figure is counted.

- Times are unix seconds (floats), as in the rest of the collector's API;
  exports write ISO 8601 instead (collector.export). ``since`` and ``until``
  take unix seconds, ISO 8601 or a duration ago (``24h``).
- Percentages are 0..100, or null for a window without runs.
- The overview is cached for ``ttl`` seconds (10 by default), then answered
  from the cache while it is refreshed, up to ``max_stale``: 100 dashboards
  polling cost one computation per ``ttl``.
- The alert summary needs a viewer (or operator) token, like /api/alerts;
  the rest is read-only and as open as /api/workflows.

Every error is ``{"error": "..."}``: 401 and 403 (alerts), 404 an unknown
workflow or environment, 422 a parameter of the wrong shape, 503 the history
cannot be read. An export that fails once streaming has begun can only stop:
its body ends early (a CSV without its last rows, a JSON array not closed).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import sqlite3
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from collector.alert_api import AlertOut
from collector.alerting import AlertingUnavailable
from collector.alertstore import Status
from collector.auth import READ, Principal, TokenAuth
from collector.errors import ErrorRoute
from collector.dashboard import Dashboard, decode_cursor, encode_cursor, parse_time, totals
from collector.export import FORMATS, encode, metric_pages, run_pages

if TYPE_CHECKING:
    from collector.service import Service

__all__ = ["dashboard_router"]

log = logging.getLogger("flowprobe.dashboard")

PREFIX = "/api/monitoring/dashboard"
ACTIVE = (Status.ACTIVE, Status.ESCALATED, Status.ACKNOWLEDGED)
SEVERITIES = ("critical", "warning", "info")
_ALERT_PAGE = 500
_ALERT_MAX = 10_000

Outcome = Literal["success", "failure", "error", "skipped"]
StatusName = Literal["up", "degraded", "down", "skipped", "unknown"]

# Query parameters shared by the endpoints (module level: the annotations are resolved by name).
WorkflowQuery = Annotated[str | None, Query(alias="workflow", description="One workflow's name")]
EnvQuery = Annotated[str | None, Query(alias="env", description="One environment")]
SinceQuery = Annotated[str | None, Query(alias="since", description="From (inclusive): unix seconds, ISO 8601, or a duration ago such as 24h")]
StatusQuery = Annotated[StatusName | None, Query(alias="status", description="Only the pairs with this status")]
UntilQuery = Annotated[str | None, Query(alias="until", description="To (exclusive): unix seconds, ISO 8601, or a duration ago")]

# ---------------------------------------------------------------- response shapes (the OpenAPI document)


class Windows(BaseModel):
    """A percentage (0..100) per window, null without runs."""

    model_config = ConfigDict(populate_by_name=True)

    h1: float | None = Field(alias="1h")
    h24: float | None = Field(alias="24h")
    d7: float | None = Field(alias="7d")
    d30: float | None = Field(alias="30d")


class OverviewItem(BaseModel):
    workflow: str
    env: str
    status: StatusName = Field(description="down, skipped, degraded, up or unknown (no run yet); see collector/dashboard.py")
    status_reason: str | None = Field(description="Why the status is not up, in words")
    last_check: float | None = Field(description="When the last run finished (unix seconds)")
    last_outcome: Outcome | None
    uptime: Windows = Field(description="success / (success + failure + error) runs, in percent")
    reachability: Windows = Field(description="runs that got a response (no connect, tls or timeout failure) / runs not skipped, in percent")
    p50: float | None = Field(description="Median run duration over 24h, seconds")
    p95: float | None = Field(description="95th percentile run duration over 24h, seconds")
    latency_slo: float | None = Field(description="The workflow's alert.latency_slo, seconds")
    labels: dict[str, str]


class Totals(BaseModel):
    up: int
    degraded: int
    down: int
    skipped: int
    unknown: int


class OverviewOut(BaseModel):
    generated_at: float
    source: Literal["history", "prometheus"]
    source_error: str | None = Field(None, description="Present when Prometheus failed and the history answered instead")
    items: list[OverviewItem]
    totals: Totals


class RunOut(BaseModel):
    run_id: str
    workflow: str
    env: str
    started_at: float
    duration: float
    outcome: Outcome
    failed_step: str | None
    reason: str | None
    flaky: bool
    attempts: int
    message: str
    skip_reason: str | None


class ExecutionsOut(BaseModel):
    items: list[RunOut]
    next_before: str | None = Field(description="Pass as `before` for the next page; null on the last page")


class AlertsOut(BaseModel):
    available: bool = Field(description="false while the alert store is not ready (items then empty)")
    reason: str | None = None
    total: int = Field(description="Alerts not resolved")
    truncated: bool = Field(description="More than 10000 alerts not resolved: the counts stop there")
    by_severity: dict[str, int]
    by_status: dict[str, int]
    items: list[AlertOut] = Field(description="Newest first, at most `limit`")


class ProcessOut(BaseModel):
    cpu_seconds_total: float
    cpu_percent: float | None = Field(description="CPU time over wall time over the last minute (100 = one core)")
    cpu_window_seconds: float
    rss_bytes: int | None
    max_rss_bytes: int
    threads: int
    open_fds: int | None


class RunsOut(BaseModel):
    window_seconds: float
    total: int
    per_second: float
    by_outcome: dict[str, int]
    error_rate_percent: float | None = Field(description="failure + error over runs not skipped, in percent")


class HistoryOut(BaseModel):
    path: str
    file_bytes: int | None
    wal_bytes: int | None
    rows: int | None
    oldest_run: float | None = None
    newest_run: float | None = None
    page_size: int | None = None
    pages: int | None = None
    free_pages: int | None = None
    write_errors: int
    runs_per_pair: int
    max_age: float


class AlertDatabaseOut(BaseModel):
    ready: bool
    backend: str | None
    pool: dict[str, Any] | None = Field(description="SQLAlchemy's pool: class, status() and its counters")
    pool_error: str | None = None


class MetricsOut(BaseModel):
    generated_at: float
    process: ProcessOut
    runs: RunsOut
    history: HistoryOut
    alert_database: AlertDatabaseOut


class HealthRun(BaseModel):
    run_id: str
    started_at: float
    duration: float
    outcome: Outcome
    failed_step: str | None
    reason: str | None
    message: str
    skip_reason: str | None


class HealthItem(BaseModel):
    workflow: str
    env: str
    status: StatusName
    runs: list[HealthRun] = Field(description="Newest first")
    passed: int
    failed: int


class HealthOut(BaseModel):
    generated_at: float
    workflows: list[str] = Field(description="health-check and every workflow without depends_on")
    items: list[HealthItem]


class ErrorOut(BaseModel):
    error: str


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    meaning = {
        401: "No token, an unknown token, or no tokens configured",
        403: "The token's role may not read alerts",
        404: "Unknown workflow or environment",
        422: "A parameter of the wrong shape",
        503: "The run history cannot be read",
    }
    return {code: {"model": ErrorOut, "description": meaning[code]} for code in codes}


# ---------------------------------------------------------------- plumbing


class _DashboardRoute(ErrorRoute):
    # sqlite3.Error: the history is locked past the busy timeout, or the file went away.
    statuses = {sqlite3.Error: 503}

    def message(self, exc: Exception, status: int) -> str:
        log.warning("cannot read the run history", exc_info=exc)
        return f"cannot read the run history: {exc}"


def _json(body: Any, *, status_code: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":"), allow_nan=False).encode(), status_code=status_code, media_type="application/json")


class _Rendered:
    """The unfiltered overview as bytes (and gzipped), made once per cached value."""

    def __init__(self) -> None:
        self._of: object | None = None
        self._body = b""
        self._gzipped: bytes | None = None

    def get(self, overview: dict[str, Any], gzipped: bool) -> bytes:
        if overview is not self._of:
            self._body, self._gzipped, self._of = json.dumps(overview, separators=(",", ":"), allow_nan=False).encode(), None, overview
        if not gzipped:
            return self._body
        if self._gzipped is None:
            self._gzipped = gzip.compress(self._body, compresslevel=5)
        return self._gzipped


def dashboard_router(service: Service, prometheus_url: str | None = None, *, dashboard: Dashboard | None = None) -> APIRouter:
    """The dashboard and export routes over `service`.

    `prometheus_url` (stack mode) makes Prometheus the source of the overview.
    `dashboard` replaces the default `Dashboard(service, prometheus_url=...)`,
    for another cache TTL, clock or HTTP transport (tests, benchmarks).
    """
    dashboard = dashboard or Dashboard(service, prometheus_url=prometheus_url)
    auth = TokenAuth(lambda: service.config.tokens)
    reader = Depends(auth.require(READ))
    rendered = _Rendered()
    router = APIRouter(route_class=_DashboardRoute, tags=["dashboard"])

    def known(workflow: str | None, env: str | None) -> None:
        if workflow is not None and workflow not in service.config.workflows:
            raise HTTPException(404, f"unknown workflow {workflow!r}")
        if env is not None and env not in service.config.environments:
            raise HTTPException(404, f"unknown environment {env!r}")

    def time_range(since: str | None, until: str | None) -> tuple[float | None, float | None]:
        now = dashboard.clock()
        try:
            low = parse_time(since, now) if since is not None else None
            high = parse_time(until, now) if until is not None else None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        if low is not None and high is not None and low > high:
            raise HTTPException(422, "since is after until")
        return low, high

    # ------------------------------------------------------------ overview

    @router.get(
        f"{PREFIX}/overview",
        summary="Status, uptime, reachability and latency per (workflow, env)",
        response_model=OverviewOut,
        responses=_responses(404, 422, 503),
    )
    async def overview(request: Request, workflow: WorkflowQuery = None, env: EnvQuery = None, status: StatusQuery = None) -> Response:
        known(workflow, env)
        data = await dashboard.overview()
        if workflow is None and env is None and status is None:
            gzipped = "gzip" in request.headers.get("accept-encoding", "")
            headers = {"Vary": "Accept-Encoding", **({"Content-Encoding": "gzip"} if gzipped else {})}
            return Response(rendered.get(data, gzipped), media_type="application/json", headers=headers)
        items = [
            item
            for item in data["items"]
            if (workflow is None or item["workflow"] == workflow) and (env is None or item["env"] == env) and (status is None or item["status"] == status)
        ]
        return _json({**data, "items": items, "totals": totals(items)})

    # ------------------------------------------------------------ executions

    @router.get(
        f"{PREFIX}/executions",
        summary="Recent runs, newest first, filtered and paginated (`before` = next_before of the previous page)",
        response_model=ExecutionsOut,
        responses=_responses(404, 422, 503),
    )
    async def executions(
        workflow: WorkflowQuery = None,
        env: EnvQuery = None,
        outcome: Annotated[list[Outcome] | None, Query(description="Repeat for several")] = None,
        since: SinceQuery = None,
        until: UntilQuery = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        before: Annotated[str | None, Query(description="next_before of the previous page, or a unix time (runs started before it)")] = None,
    ) -> Response:
        known(workflow, env)
        low, high = time_range(since, until)
        try:
            cursor = decode_cursor(before) if before is not None else None
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        found = await asyncio.to_thread(
            dashboard.reader.runs,
            workflows=[workflow] if workflow is not None else None,
            env=env,
            outcomes=outcome,
            since=low,
            until=high,
            before=cursor,
            limit=limit,
        )
        next_before = encode_cursor(found[-1]["started_at"], found[-1]["run_id"]) if len(found) == limit else None
        return _json({"items": found, "next_before": next_before})

    # ------------------------------------------------------------ alerts

    @router.get(
        f"{PREFIX}/alerts",
        summary="Alerts not resolved, with counts by severity and status (viewer token)",
        response_model=AlertsOut,
        responses=_responses(401, 403, 422),
    )
    async def alerts(
        _caller: Principal = reader,
        limit: Annotated[int, Query(ge=1, le=500, description="Items returned; the counts cover them all")] = 100,
    ) -> Response:
        by_status = {s.value: 0 for s in ACTIVE}
        empty = {"available": False, "total": 0, "truncated": False, "by_severity": dict.fromkeys(SEVERITIES, 0), "by_status": by_status, "items": []}
        if not service.alerts.ready:
            return _json({**empty, "reason": "the alert store is not ready yet"})
        found = []
        before: int | None = None
        try:
            while len(found) < _ALERT_MAX:
                page = await service.alerts.find(status=list(ACTIVE), limit=_ALERT_PAGE, before=before)
                found += page
                if len(page) < _ALERT_PAGE:
                    break
                before = page[-1].id
        except AlertingUnavailable as exc:
            return _json({**empty, "reason": str(exc)})
        except Exception as exc:  # the database went away: the summary says so rather than failing the dashboard
            log.warning("cannot read the alert store", exc_info=True)
            return _json({**empty, "reason": f"cannot read the alert store: {type(exc).__name__}"})
        by_severity = dict.fromkeys(SEVERITIES, 0)
        for alert in found:
            by_severity[alert.severity or "none"] = by_severity.get(alert.severity or "none", 0) + 1
            by_status[alert.status.value] = by_status.get(alert.status.value, 0) + 1
        return _json(
            {
                "available": True,
                "reason": None,
                "total": len(found),
                "truncated": len(found) >= _ALERT_MAX,
                "by_severity": by_severity,
                "by_status": by_status,
                "items": [AlertOut.of(a).model_dump(mode="json") for a in found[:limit]],
            }
        )

    # ------------------------------------------------------------ the collector itself

    @router.get(
        f"{PREFIX}/metrics",
        summary="The collector's own CPU, memory, run rate, history file and alert database pool",
        response_model=MetricsOut,
        responses=_responses(503),
    )
    async def metrics() -> Response:
        return _json(await asyncio.to_thread(dashboard.collector_metrics, dashboard.clock()))

    # ------------------------------------------------------------ health history

    @router.get(
        f"{PREFIX}/health",
        summary="Recent runs of health-check and every workflow without depends_on, per env",
        response_model=HealthOut,
        responses=_responses(404, 422, 503),
    )
    async def health(env: EnvQuery = None, limit: Annotated[int, Query(ge=1, le=500, description="Runs per (workflow, env)")] = 20) -> Response:
        known(None, env)
        items = await asyncio.to_thread(dashboard.health, env=env, limit=limit)
        statuses = {(i["workflow"], i["env"]): i["status"] for i in (await dashboard.overview())["items"]}
        for item in items:
            item["status"] = statuses.get((item["workflow"], item["env"]), "unknown")
        return _json({"generated_at": dashboard.clock(), "workflows": dashboard.roots(), "items": items})

    # ------------------------------------------------------------ exports

    @router.get(
        "/api/monitoring/export",
        summary="Export runs or hourly metrics as CSV or a JSON array, streamed",
        description=(
            "kind=runs: one row per run (run_id, workflow, env, started_at ISO 8601, duration, outcome, failed_step, reason, attempts, flaky), "
            "oldest first. kind=metrics: one row per UTC hour and (workflow, env): runs, failures, skipped, uptime (percent), p50, p95 "
            "(seconds). format=csv is RFC 4180 with a header row; format=json is one JSON array, one object per line. "
            "Read from the run history, so limited to its retention."
        ),
        tags=["export"],
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/csv": {}, "application/json": {}}, "description": "The export, streamed"},
            **_responses(404, 422),
        },
    )
    async def export(
        format: Literal["csv", "json"] = "csv",
        kind: Literal["runs", "metrics"] = "runs",
        workflow: WorkflowQuery = None,
        env: EnvQuery = None,
        since: SinceQuery = None,
        until: UntilQuery = None,
    ) -> StreamingResponse:
        known(workflow, env)
        low, high = time_range(since, until)
        workflows = [workflow] if workflow is not None else None
        pages = (run_pages if kind == "runs" else metric_pages)(dashboard.reader, workflows=workflows, env=env, since=low, until=high)
        stamp = datetime.fromtimestamp(dashboard.clock(), UTC).strftime("%Y%m%dT%H%M%SZ")
        filename = f"flowprobe-{kind}-{stamp}.{format}"
        return StreamingResponse(
            encode(pages, kind, format), media_type=FORMATS[format], headers={"Content-Disposition": f'attachment; filename="{filename}"'}
        )

    return router

