"""The collector's HTTP API: metrics, health, and the state and history of workflows.

Everything returned is already redacted: results are redacted when they are
made, and nothing else here carries secrets.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
# Prometheus before 3.0 knows only the 0.0.4 text format by name; the body is that format.
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE

from collector.alert_api import alert_router
from collector.dashboard_api import dashboard_router
from collector.live import live_router
from collector.metrics import VERSION
from collector.page import page_router
from collector.report import reports_router

if TYPE_CHECKING:
    from collector.service import Service

__all__ = ["create_app"]


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


def create_app(service: Service) -> FastAPI:
    app = FastAPI(
        title="flowprobe collector",
        version=VERSION,
        description="Synthetic workflow monitoring: state, run history and Prometheus metrics.",
    )

    @app.exception_handler(HTTPException)
    async def _error(_request: Any, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    @app.get("/metrics", summary="Prometheus exposition", response_class=Response)
    async def metrics(request: Request) -> Response:
        gzipped = "gzip" in request.headers.get("accept-encoding", "")
        body = await asyncio.to_thread(service.metrics.render, gzipped=gzipped)
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

    @app.get("/api/workflows", summary="The current state of every (workflow, env) pair")
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

    @app.get("/api/workflows/{name}/runs", summary="Recent runs of one workflow, newest first")
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

    @app.get("/api/runs/{run_id}", summary="One run with every step, phase, failure and (redacted) capture")
    def run(run_id: str) -> dict[str, Any]:
        result = service.store.get(run_id)
        if result is None:
            raise HTTPException(404, "unknown run")
        return result.to_dict()

    app.include_router(alert_router(service.alerts, tokens=lambda: service.config.tokens))
    app.include_router(reports_router(service))
    # Stack mode reads the aggregates from Prometheus; embedded mode from the SQLite history.
    app.include_router(dashboard_router(service, prometheus_url=service.config.settings.prometheus_url))
    app.include_router(live_router(service, hub=service.live))
    # The status page at /; its anomaly badges come through the collector from the analytics worker.
    app.include_router(page_router(analytics_url=service.analytics_url))
    return app
