"""Rate limits, request body limits and CORS for the collector's API: one pure ASGI middleware.

Pure ASGI rather than Starlette's BaseHTTPMiddleware, so a streamed response
(SSE, exports) and a WebSocket pass through untouched and nothing is
buffered. Settings are read per request from ``api:`` in flowprobe.yaml
(CONFIGURATION.md), so a config reload applies at once.

- **Rate limit**: a token bucket per client address (IPv6: per /64, which one
  host usually holds whole). Over the limit: 429 with ``Retry-After`` (a
  WebSocket handshake: 429 where the server can send a denial response,
  else a close with 1008). ``/metrics``, ``/healthz`` and ``/readyz`` draw
  from a bucket of their own, so a flood of API calls never makes Prometheus
  miss a scrape. Addresses in ``exempt`` (loopback by default) and clients
  without an IP address (a Unix socket, an in-process ASGI client) are not
  limited. Behind a reverse proxy the address is the one uvicorn takes from
  ``X-Forwarded-For`` when the proxy is in ``--forwarded-allow-ips``.
- **Body size**: a declared ``Content-Length`` over ``max_body_size`` is
  refused with 413 before the app runs; a chunked body is counted as it is
  read and refused with 413 as soon as it passes the limit, so an endless
  body costs at most the limit in memory.
- **CORS**: off unless ``cors_origins`` lists origins. Only then does a
  response carry ``Access-Control-Allow-Origin``, and only for a listed
  origin. A WebSocket handshake from a browser page of another origin (one
  not listed, not ``public_url``'s and not the Host it was sent to) is
  refused: browsers apply no CORS to WebSockets.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from collector.config import ApiSettings, SettingsFile

__all__ = ["SCRAPE_PATHS", "BodyTooLarge", "RateLimiter", "SecurityMiddleware", "client_key"]

SCRAPE_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
_MAX_CLIENTS = 65_536  # buckets kept; the least recently seen is forgotten past this (it comes back full)
_PREFLIGHT_MAX_AGE = "600"
_ALLOW_METHODS = "GET, HEAD, POST"
_ALLOW_HEADERS = "Authorization, Content-Type"
_EXPOSE_HEADERS = "Retry-After, Content-Disposition"


class BodyTooLarge(HTTPException):
    """Raised from `receive` when a body passes the limit. An HTTPException, so FastAPI's body
    parsing re-raises it and every router's error shape turns it into a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes (api.max_body_size)")


Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_key(scope: Scope) -> tuple[str, Address] | None:
    """(bucket key, address) of the client, or None when it has no IP address (a Unix socket, an in-process client)."""
    client = scope.get("client")
    return _key_of(client[0]) if client else None


@functools.lru_cache(maxsize=_MAX_CLIENTS)
def _key_of(host: str) -> tuple[str, Address] | None:
    # Cached: parsing the address is most of the limiter's cost per request.
    try:
        address: Address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        else:
            # One host usually holds a whole /64: limiting per address would let it rotate past the limit.
            return str(ipaddress.IPv6Network((address, 64), strict=False)), address
    return str(address), address


class RateLimiter:
    """Token buckets by key, at most `max_clients` of them (least recently seen forgotten first).

    A bucket holds up to `burst` tokens and gains `rate` a second; a request
    takes one. Rate and burst come with each call, so new settings apply to
    the buckets already there."""

    def __init__(self, *, max_clients: int = _MAX_CLIENTS, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self.limited = 0  # requests refused, for tests and stats

    def take(self, key: tuple[str, str], rate: float, burst: int) -> float:
        """0.0 if the request may go; else the seconds until it could."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = [float(burst), now]
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(float(burst), bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return 0.0
        self.limited += 1
        return (1.0 - bucket[0]) / rate

    def __len__(self) -> int:
        return len(self._buckets)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class SecurityMiddleware:
    """The API's rate limit, body size limit and CORS, from `settings()` on every request."""

    def __init__(self, app: ASGIApp, settings: Callable[[], SettingsFile], *, limiter: RateLimiter | None = None) -> None:
        self.app = app
        self.settings = settings
        self.limiter = limiter or RateLimiter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        settings = self.settings()
        api = settings.api
        origin = _header(scope, b"origin")
        allowed_origin = self._allowed_origin(api, origin)
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send, settings, origin, allowed_origin)
            return
        if allowed_origin is not None:
            send = _with_cors(send, allowed_origin)
            if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method") is not None:
                await self._preflight(send, allowed_origin)
                return
        retry = self._retry_after(scope, api)
        if retry:
            await _respond(send, 429, f"too many requests from this address; retry after {retry} s", {"Retry-After": str(retry)})
            return
        limit = api.max_body_size
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            # Refused unread: the server closes the connection rather than drain a body nobody wants.
            await _respond(send, 413, BodyTooLarge(limit).detail, {"Connection": "close"})
            return
        await self._limited_body(scope, receive, send, limit)

    # ------------------------------------------------------------ pieces

    @staticmethod
    def _allowed_origin(api: ApiSettings, origin: str | None) -> str | None:
        if origin is None or not api.cors_origins:
            return None
        if origin in api.cors_origins:
            return origin
        return "*" if "*" in api.cors_origins else None

    def _retry_after(self, scope: Scope, api: ApiSettings) -> int:
        """0 if the request may go, else whole seconds to wait (at least 1)."""
        limits = api.rate_limit
        if limits is None:
            return 0
        found = client_key(scope)
        if found is None:
            return 0
        key, address = found
        if any(address in network for network in limits.exempt):
            return 0
        if scope["path"] in SCRAPE_PATHS:
            wait = self.limiter.take(("scrape", key), limits.scrape_rate, limits.scrape_burst)
        else:
            wait = self.limiter.take(("api", key), limits.rate, limits.burst)
        return max(1, math.ceil(wait)) if wait > 0 else 0

    @staticmethod
    async def _preflight(send: Send, origin: str) -> None:
        headers = {
            "Access-Control-Allow-Methods": _ALLOW_METHODS,
            "Access-Control-Allow-Headers": _ALLOW_HEADERS,
            "Access-Control-Max-Age": _PREFLIGHT_MAX_AGE,
        }
        await send({"type": "http.response.start", "status": 204, "headers": _raw(headers)})
        await send({"type": "http.response.body", "body": b""})

    async def _limited_body(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:
            if started:
                raise
            await _respond(send, 413, str(exc.detail), {"Connection": "close"})

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, settings: SettingsFile, origin: str | None,
                         allowed_origin: str | None) -> None:
        if origin is not None and allowed_origin is None and not _same_origin(scope, origin, settings.public_url):
            await _deny_websocket(scope, receive, send, 403, "this origin may not open the live stream (api.cors_origins)", {})
            return
        retry = self._retry_after(scope, settings.api)
        if retry:
            await _deny_websocket(scope, receive, send, 429, f"too many requests from this address; retry after {retry} s",
                                  {"Retry-After": str(retry)})
            return
        await self.app(scope, receive, send)


def _same_origin(scope: Scope, origin: str, public_url: str) -> bool:
    """The page that opens the WebSocket was served by this collector (by its Host, or its public_url)."""
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        return False
    host = (_header(scope, b"host") or "").lower()
    return bool(netloc) and (netloc == host or netloc == urlsplit(public_url).netloc.lower())


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


_CORS_HEADERS = (b"access-control-allow-origin", b"access-control-expose-headers")


def _with_cors(send: Send, origin: str) -> Send:
    cors = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", _EXPOSE_HEADERS.encode()),
    ]
    vary = origin != "*"

    async def cors_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            # Ours replace any the app set: the origin decision is made here, once.
            headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() not in _CORS_HEADERS]
            headers += cors
            if vary:
                headers.append((b"vary", b"Origin"))
            message = {**message, "headers": headers}
        await send(message)

    return cors_send


async def _respond(send: Send, status: int, message: str, headers: dict[str, str]) -> None:
    body = _error_body(message)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *_raw(headers)]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _deny_websocket(scope: Scope, receive: Receive, send: Send, status: int, message: str, headers: dict[str, str]) -> None:
    """Refuse a handshake: an HTTP response where the server supports it, else a close (1008, policy violation)."""
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        body = _error_body(message)
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *_raw(headers)]
        await send({"type": "websocket.http.response.start", "status": status, "headers": raw})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
