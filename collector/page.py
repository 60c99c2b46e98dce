"""The status page: ``/`` and ``/static/*``, served from the package itself.

The page is plain ES modules and CSS (``collector/static``), with no build
step, so what is in the package is what the browser runs. Files are read
through importlib.resources, so an installed wheel serves the same files as a
checkout (``collector/static/**`` must be package data).

Caching: the file names carry no content hash, so every file is served with
``Cache-Control: no-cache`` and a strong ETag. The browser keeps its copy and
revalidates it on each load, and an upgrade is seen at the next reload. Files
under ``vendor/`` carry their pinned version in the path and may be kept for a
day without asking.

The page's anomaly badges read ``GET /api/analytics/anomalies`` from its own
origin: the collector passes it through to the analytics worker
(collector/analytics_api.py), and without a worker (a 404) the page hides them.
The pass-through is a status read (collector/auth.py): the app passes its
read policy in `dependencies`. The page's own files hold no data and are
always served.
"""

from __future__ import annotations

import hashlib
import posixpath
from importlib.resources import files
from importlib.resources.abc import Traversable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

__all__ = ["CONTENT_TYPES", "page_router"]

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".map": "application/json",
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}

# Same-origin only: the page's scripts, styles and API calls all come from the collector.
# 'self' covers ws:// and wss:// to the same host in CSP level 3 browsers.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_COMMON = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_VENDOR_MAX_AGE = 86400


def _static_root() -> Traversable:
    return files("collector").joinpath("static")


def _find(path: str) -> Traversable | None:
    """The file at `path` below static/, or None: no '..', no absolute path, no directory."""
    if not path or "\\" in path or "\x00" in path:
        return None
    normal = posixpath.normpath(path)
    if normal.startswith(("/", "..")) or normal in (".", "") or any(part.startswith(".") for part in normal.split("/")):
        return None
    node = _static_root()
    for part in normal.split("/"):
        node = node.joinpath(part)
    return node if node.is_file() else None


def _serve(request: Request, node: Traversable, name: str) -> Response:
    suffix = posixpath.splitext(name)[1].lower()
    media_type = CONTENT_TYPES.get(suffix)
    if media_type is None:
        # Only known kinds are served: nothing in static/ is sent as something a browser might sniff.
        return JSONResponse({"error": "not found"}, status_code=404)
    body = node.read_bytes()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    cache = f"public, max-age={_VENDOR_MAX_AGE}" if name.startswith("vendor/") else "no-cache"
    headers = {**_COMMON, "ETag": etag, "Cache-Control": cache}
    if suffix == ".html":
        headers["Content-Security-Policy"] = _CSP
    if etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        return Response(status_code=200, headers={**headers, "Content-Length": str(len(body))}, media_type=media_type)
    return Response(body, media_type=media_type, headers=headers)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def page_router() -> APIRouter:
    """The status page at ``/`` and its files at ``/static/*``."""
    router = APIRouter(tags=["status page"])

    @router.api_route("/", methods=["GET", "HEAD"], summary="The status page", response_class=Response, include_in_schema=False)
    async def index(request: Request) -> Response:
        node = _find("index.html")
        if node is None:  # a package built without its package data
            return JSONResponse({"error": "the status page is not installed (collector/static is missing)"}, status_code=404)
        return _serve(request, node, "index.html")

    @router.api_route("/static/{path:path}", methods=["GET", "HEAD"], summary="The status page's files", response_class=Response,
                      include_in_schema=False)
    async def static(path: str, request: Request) -> Response:
        node = _find(path)
        if node is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        return _serve(request, node, posixpath.normpath(path))

    return router
