"""The analytics worker's findings through the collector's API: anomalies, predictions and incidents.

The worker computes them and serves them as JSON on its own port
(analytics/emit.py). The collector passes ``GET /api/analytics/anomalies``,
``/api/analytics/predictions`` and ``/api/analytics/incidents`` (with their
query strings) through to it, so API clients and the status page have one
address, the worker needs no CORS headers, and its own port need not be
reachable from outside. The worker's address is ``analytics_url`` in
flowprobe.yaml (set by ``flowprobe demo``).

Without an ``analytics_url`` the routes answer 404 with the reason, and the
status page hides its anomaly badges. A worker that does not answer is a 502
that names the kind of failure but not the worker's address.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

__all__ = ["ANALYTICS_ROUTES", "analytics_router"]

ANALYTICS_ROUTES = {
    "anomalies": "The latest anomaly score of every series, most anomalous first",
    "predictions": "The failure probability and latency forecast of every (workflow, env)",
    "incidents": "Incidents (simultaneous failures grouped), their ranked root causes, and recurring failures",
}
TIMEOUT = 5.0


def analytics_router(analytics_url: Callable[[], str | None]) -> APIRouter:
    """`analytics_url` is asked on every request, so a config reload that sets or moves it applies at once."""
    router = APIRouter(tags=["analytics"])

    def route(name: str, summary: str) -> None:
        async def passthrough(request: Request) -> Any:
            base = analytics_url()
            if not base:
                return JSONResponse({"error": "no analytics worker is configured (analytics_url in flowprobe.yaml)"}, status_code=404)
            try:
                async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                    response = await client.get(f"{base.rstrip('/')}/api/analytics/{name}", params=request.query_params)
                body = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                return JSONResponse({"error": f"the analytics worker did not answer ({type(exc).__name__})"}, status_code=502)
            # The worker's own answer, errors included (a 422 for a bad query parameter stays a 422).
            return JSONResponse(body, status_code=response.status_code, headers={"Cache-Control": "no-store"})

        router.add_api_route(f"/api/analytics/{name}", passthrough, methods=["GET"], summary=summary, name=f"analytics_{name}")

    for name, summary in ANALYTICS_ROUTES.items():
        route(name, summary)
    return router
