"""The API's one error shape, ``{"error": "..."}``, for every router of the collector.

A router's route class turns each failure into that shape whatever app
includes the router (the collector's, or a test's bare FastAPI). Routers map
their own exceptions to a status in `ErrorRoute.statuses`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

__all__ = ["ErrorRoute", "describe_validation", "error_response"]


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def describe_validation(errors: Sequence[Mapping[str, Any]]) -> str:
    """Pydantic's errors in one line: `where: what` for the first five."""
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


class ErrorRoute(APIRoute):
    """Every failure as ``{"error": ...}``; `statuses` maps a router's own exceptions to a status."""

    statuses: ClassVar[Mapping[type[Exception], int]] = {}

    def message(self, exc: Exception, status: int) -> str:
        """The error text for an exception from `statuses` (a subclass may log it too)."""
        return str(exc)

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                return error_response(exc.status_code, str(exc.detail), exc.headers)
            except RequestValidationError as exc:
                return error_response(422, describe_validation(exc.errors()))
            except tuple(self.statuses) as exc:
                status = next(code for kind, code in self.statuses.items() if isinstance(exc, kind))
                return error_response(status, self.message(exc, status))

        return route
