"""The collector's HTTP API: metrics, health, the state and history of workflows, and administration.

Everything returned is already redacted: results are redacted when they are
made, and nothing else here carries secrets.

Who may call what is decided here, route by route (SECURITY.md has the
matrix): health and metrics are open; status reads are open while
``api.public_reads`` is true and need a viewer token otherwise; alerts and
reports need a viewer token; writes need operator; administration needs
admin. collector.apisecurity wraps the whole app with the rate limit, the
body size limit and CORS.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
# Prometheus before 3.0 knows only the 0.0.4 text format by name; the body is that format.
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
from starlette.exceptions import HTTPException as StarletteHTTPException

from collector.analytics_api import analytics_router
from collector.alert_api import alert_router
from collector.apisecurity import SecurityMiddleware
from collector.auth import ADMIN, Principal, TokenAuth
from collector.dashboard_api import dashboard_router
from collector.errors import ErrorRoute, describe_validation, error_response
from collector.live import live_router
from collector.metrics import VERSION
from collector.page import page_router
from collector.report import reports_router

if TYPE_CHECKING:
    from collector.service import Service

__all__ = ["admin_router", "create_app"]

log = logging.getLogger("flowprobe.api")


def _summary(result: Any) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "run_id": result.run_id,
        "outcome": result.outcome,
        "started_at": result.started_at,
        "duration": result.duration,
        "failed_step": result.failed_step,
        "reason": result.reason,
        "message": result.message,
        "flaky": result.flaky,
        "attempts": result.attempts,
        "skip_reason": result.skip_reason,
    }


def admin_router(service: Service, auth: TokenAuth) -> APIRouter:
    """``/api/admin/*``: what an admin token may do beyond an operator's."""
    admin = Depends(auth.require(ADMIN))  # on the router, so no admin route can be added without it; one check per request
    router = APIRouter(prefix="/api/admin", tags=["admin"], route_class=ErrorRoute, dependencies=[admin])

    @router.post("/reload", summary="Load the config again, as SIGHUP does; an invalid one leaves the running config in place")
    async def reload(caller: Principal = admin) -> JSONResponse:
        log.info("config reload asked through the API", extra={"fields": {"by": caller.name}})
        if not service.reload():
            raise HTTPException(422, "the new config is invalid; the previous config keeps running (the collector's log lists the problems)")
        return JSONResponse({"reloaded": True, "workflows": len(service.config.workflows)})

    @router.post("/reports/{index}/run", summary="Make (and mail) reports.schedules[index] now, as its cron would")
    async def run_report(
        index: Annotated[int, Path(ge=0, le=1000, description="The schedule's place in reports.schedules")], caller: Principal = admin
    ) -> JSONResponse:
        schedules = service.config.settings.reports.schedules
        if index >= len(schedules):
            raise HTTPException(404, f"no report schedule {index} (reports.schedules has {len(schedules)})")
        log.info("report asked through the API", extra={"fields": {"by": caller.name, "schedule": index}})
        files = await service.reports.run(schedules[index])
        if not files:
            raise HTTPException(502, "the report failed (the collector's log says why)")
        return JSONResponse({"files": [f"/api/reports/{path.name}" for path in files]})

    return router


def create_app(service: Service) -> FastAPI:
    app = FastAPI(
        title="flowprobe collector",
        version=VERSION,
        description="Synthetic workflow monitoring: state, run history and Prometheus metrics.",
    )
    auth = TokenAuth(lambda: service.config.tokens, public_reads=lambda: service.config.settings.api.public_reads)
    # Status reads: open while api.public_reads is true, else a viewer token (collector/auth.py).
    status_read = Depends(auth.reader())

    # One error shape for what no router catches itself: unknown paths, methods, and the routes below.
    @app.exception_handler(StarletteHTTPException)
    async def _error(_request: Any, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Any, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, describe_validation(exc.errors()))

    @app.get("/metrics", summary="Prometheus exposition", response_class=Response)
    async def metrics(request: Request) -> Response:
        gzipped = "gzip" in request.headers.get("accept-encoding", "")
        body = await service.metrics.serve(gzipped=gzipped)
        headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"} if gzipped else {}
        return Response(body, media_type=CONTENT_TYPE, headers=headers)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="The config is loaded and runs are scheduled")
    async def readyz() -> JSONResponse:
        ready = service.ready
        body = {"status": "ready" if ready else "not ready", "config_reload_successful": bool(service.state.reload_successful)}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/api/workflows", summary="The current state of every (workflow, env) pair", dependencies=[status_read])
    async def workflows() -> dict[str, Any]:
        config = service.config
        items = []
        for (name, env), pair in sorted(service.state.pairs.items()):
            workflow = config.workflows.get(name)
            if workflow is None:
                continue
            items.append(
                {
                    "workflow": name,
                    "env": env,
                    "description": workflow.description,
                    "labels": dict(workflow.labels),
                    "schedule": workflow.schedule.model_dump(exclude_none=True),
                    "depends_on": list(workflow.depends_on),
                    "steps": [s.name for s in workflow.steps],
                    "success": pair.success,
                    "runs": dict(pair.runs),
                    "missed": pair.missed,
                    "last_run": _summary(pair.last_result),
                }
            )
        return {"items": items, "total": len(items)}

    @app.get("/api/workflows/{name}/runs", summary="Recent runs of one workflow, newest first", dependencies=[status_read])
    def runs(
        name: str,
        env: str | None = None,
        limit: int = Query(50, ge=1, le=500),
        before: float | None = Query(None, description="Page back: the started_at of the last run of the previous page"),
    ) -> dict[str, Any]:
        if name not in service.config.workflows:
            raise HTTPException(404, f"unknown workflow {name!r}")
        found = service.store.runs(name, env, limit=limit, before=before)
        next_cursor = found[-1].started_at if len(found) == limit else None
        return {"items": [r.to_dict() for r in found], "next_before": next_cursor}

    @app.get("/api/runs/{run_id}", summary="One run with every step, phase, failure and (redacted) capture", dependencies=[status_read])
    def run(run_id: str) -> dict[str, Any]:
        result = service.store.get(run_id)
        if result is None:
            raise HTTPException(404, "unknown run")
        return result.to_dict()

    app.include_router(alert_router(service.alerts, tokens=lambda: service.config.tokens))
    app.include_router(reports_router(service))
    # Stack mode reads the aggregates from Prometheus; embedded mode from the SQLite history.
    app.include_router(dashboard_router(service, prometheus_url=service.config.settings.prometheus_url), dependencies=[status_read])
    app.include_router(live_router(service, hub=service.live, auth=auth))
    app.include_router(admin_router(service, auth))
    # The analytics worker's findings, passed through (the status page's anomaly badges read them too).
    app.include_router(analytics_router(lambda: service.analytics_url), dependencies=[status_read])
    app.include_router(page_router())
    app.add_middleware(SecurityMiddleware, settings=lambda: service.config.settings)
    return app
