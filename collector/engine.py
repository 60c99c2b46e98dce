"""The HTTP engine: the one module that knows which client library probes use.

Chosen on evidence (ISSUE 2, measured here at concurrency 100 on one core):
aiohttp made about 3,400 fresh-connection requests/s against httpx's 850, and
its TraceConfig hooks give the connection phases. httpx stays as a second
engine over any httpx transport, so step logic is unit-tested with
``httpx.MockTransport`` and no sockets.

Each run opens a `Session`: a fresh connection and cookie jar, reused across
that run's steps, as one new user would. What is costly to build (SSL
contexts, DNS answers, the trace config) is shared by the `Engine`.

A response body is read up to ``max_body`` bytes (after decompression;
`MAX_BODY_BYTES` unless the engine is given another): a target sending a
huge or endless body fails the step with reason ``assertion`` (the response
came, and was not acceptable) instead of filling the collector's memory. A
Content-Length over the cap fails before any of the body is read. A slow
endless body is cut by the runner's deadline like any other hang.
"""

from __future__ import annotations

import functools
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, Literal, Protocol

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from cryptography import x509

__all__ = [
    "AiohttpEngine",
    "Engine",
    "EngineError",
    "HttpxEngine",
    "MAX_BODY_BYTES",
    "OutgoingRequest",
    "PHASES",
    "Response",
    "Session",
]

PHASES = ("connect", "tls", "request", "first_byte", "transfer")
FailureKind = Literal["connect", "tls", "status", "assertion"]
# The largest response body read into memory; a bigger one fails the step (see the module docstring).
MAX_BODY_BYTES = 10 * 1024 * 1024


class EngineError(Exception):
    """A request that got no usable response: connect, tls, status (redirect loops),
    assertion (a body over the engine's size cap)."""

    def __init__(self, reason: FailureKind, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class OutgoingRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    json_body: Any = None
    form: Mapping[str, str] | None = None
    body: str | None = None
    verify: bool = True
    ca_file: str | None = None
    server_name: str | None = None
    follow_redirects: bool = True


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes
    cookies: dict[str, str]
    duration: float
    phases: dict[str, float]
    cert_not_after: float | None = None
    _json: Any = field(default=None, repr=False)
    _json_error: str | None = field(default=None, repr=False)
    _parsed: bool = field(default=False, repr=False)

    def json(self) -> Any:
        """The body as JSON, parsed once. Raises ValueError if it is not JSON."""
        if not self._parsed:
            self._parsed = True
            try:
                self._json = json.loads(self.body)
            except ValueError as exc:
                self._json_error = f"body is not JSON: {exc}"
        if self._json_error:
            raise ValueError(self._json_error)
        return self._json

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


class Session(Protocol):
    async def send(self, request: OutgoingRequest) -> Response: ...

    async def close(self) -> None: ...


class Engine(Protocol):
    def session(self) -> Session: ...

    async def close(self) -> None: ...


@functools.lru_cache(maxsize=256)
def _not_after(der: bytes) -> float:
    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()


@functools.lru_cache(maxsize=64)
def _ssl_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    # Building a context costs about 20 ms (it loads the CA bundle): build each kind once.
    if verify:
        return ssl.create_default_context(cafile=ca_file)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# ---------------------------------------------------------------- aiohttp


class _Timeline:
    """Timestamps of one request, filled by trace hooks; summed over redirects."""

    __slots__ = ("connect", "tls", "request", "first_byte", "_conn_start", "_tcp_done", "_ready", "_sent")

    def __init__(self) -> None:
        self.connect = self.tls = self.request = self.first_byte = 0.0
        self._conn_start = self._tcp_done = self._ready = self._sent = 0.0

    def phases(self, transfer: float) -> dict[str, float]:
        return {"connect": self.connect, "tls": self.tls, "request": self.request, "first_byte": self.first_byte, "transfer": transfer}


async def _on_request_start(_s: Any, ctx: Any, _p: Any) -> None:
    ctx.trace_request_ctx._ready = time.perf_counter()


async def _on_connection_create_start(_s: Any, ctx: Any, _p: Any) -> None:
    ctx.trace_request_ctx._conn_start = time.perf_counter()
    ctx.trace_request_ctx._tcp_done = 0.0


async def _on_connection_create_end(_s: Any, ctx: Any, _p: Any) -> None:
    line: _Timeline = ctx.trace_request_ctx
    now = time.perf_counter()
    if line._tcp_done:
        line.connect += line._tcp_done - line._conn_start
        line.tls += now - line._tcp_done
    else:
        line.connect += now - line._conn_start
    line._ready = now


async def _on_request_sent(_s: Any, ctx: Any, _p: Any) -> None:
    ctx.trace_request_ctx._sent = time.perf_counter()


async def _on_request_end(_s: Any, ctx: Any, _p: Any) -> None:
    line: _Timeline = ctx.trace_request_ctx
    now = time.perf_counter()
    sent = line._sent or now
    line.request += max(0.0, sent - line._ready)
    line.first_byte += now - sent
    line._sent = 0.0


async def _on_request_redirect(_s: Any, ctx: Any, _p: Any) -> None:
    # aiohttp sends no request_end for a hop it follows: close this hop's
    # phases here, or the wait for the redirect would be lost.
    await _on_request_end(_s, ctx, _p)
    ctx.trace_request_ctx._ready = time.perf_counter()


def _trace_config() -> aiohttp.TraceConfig:
    config = aiohttp.TraceConfig(trace_config_ctx_factory=lambda trace_request_ctx: _TraceCtx(trace_request_ctx))
    config.on_request_start.append(_on_request_start)
    config.on_request_redirect.append(_on_request_redirect)
    config.on_connection_create_start.append(_on_connection_create_start)
    config.on_connection_create_end.append(_on_connection_create_end)
    config.on_request_headers_sent.append(_on_request_sent)
    config.on_request_chunk_sent.append(_on_request_sent)
    config.on_request_end.append(_on_request_end)
    config.freeze()
    return config


class _TraceCtx:
    __slots__ = ("trace_request_ctx",)

    def __init__(self, trace_request_ctx: _Timeline) -> None:
        self.trace_request_ctx = trace_request_ctx


class _CachingResolver(AbstractResolver):
    """One DNS cache for all runs: a fresh connection per run must not mean a fresh lookup."""

    def __init__(self, ttl: float = 30.0) -> None:
        self._inner: ThreadedResolver | None = None
        self._ttl = ttl
        self._cache: dict[tuple[str, int, int], tuple[float, list[ResolveResult]]] = {}

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        key = (host, port, int(family))
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit and hit[0] > now:
            return hit[1]
        if self._inner is None:
            self._inner = ThreadedResolver()
        result = await self._inner.resolve(host, port, family)
        self._cache[key] = (now + self._ttl, result)
        return result

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


class _TimedConnector(aiohttp.TCPConnector):
    """Splits TCP connect from the TLS handshake, which aiohttp's hooks report as one.

    The TCP connection is made plain and TLS is started on it afterwards, the
    way aiohttp itself upgrades proxy tunnels (`_start_tls_connection`), so the
    moment in between can be recorded.

    It also keeps each host's certificate expiry as the handshake ends: by the
    time a response is handed over, aiohttp has often released a short
    response's connection already, and with it the way to the certificate.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeline: _Timeline | None = None
        self.not_after: dict[tuple[str, int | None], float | None] = {}

    async def _wrap_create_connection(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if not kwargs.get("ssl"):
            return await super()._wrap_create_connection(*args, **kwargs)
        req, timeout = kwargs["req"], kwargs["timeout"]
        client_error = kwargs.get("client_error", aiohttp.ClientConnectorError)
        plain = {**kwargs, "ssl": None, "server_hostname": None}
        transport, _ = await super()._wrap_create_connection(*args, **plain)
        if self.timeline is not None:
            self.timeline._tcp_done = time.perf_counter()
        tls_transport, protocol = await self._start_tls_connection(transport, req, timeout, client_error)  # type: ignore[arg-type]
        self.not_after[(req.url.raw_host, req.url.port)] = _peer_not_after(tls_transport)
        return tls_transport, protocol


def _peer_not_after(transport: Any) -> float | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    # The binary form is there even when verification is off: expiry is still worth knowing.
    der = ssl_object.getpeercert(binary_form=True)
    return _not_after(der) if der else None


def _size(limit: int) -> str:
    mib = limit / (1024 * 1024)
    return f"{mib:g} MiB" if mib >= 1 and mib == int(mib) else f"{limit} bytes"


async def _read_body(chunks: AsyncIterator[bytes], headers: Mapping[str, str], status: int, limit: int) -> bytes:
    """The body from `chunks`, or EngineError("assertion") as soon as it passes `limit` bytes.

    A declared Content-Length over the limit fails at once; it is trusted only
    without a Content-Encoding (compressed, it says nothing of the decoded size)."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit and headers.get("content-encoding", "identity").lower() == "identity":
        raise EngineError("assertion", f"response body over the limit of {_size(limit)}: HTTP {status} with Content-Length {declared}")
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise EngineError("assertion", f"response body over the limit of {_size(limit)}: HTTP {status} sent more")
        parts.append(chunk)
    return b"".join(parts)


def _cookies(set_cookie: list[str]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for header in set_cookie:
        try:
            jar.load(header)
        except Exception:  # a malformed cookie from the target is its problem, not ours
            continue
    return {name: morsel.value for name, morsel in jar.items()}


class _AiohttpSession:
    def __init__(self, engine: AiohttpEngine) -> None:
        self._max_body = engine.max_body
        self._connector = _TimedConnector(resolver=engine.resolver, use_dns_cache=False, limit=0, enable_cleanup_closed=False)
        self._session = aiohttp.ClientSession(
            connector=self._connector,
            cookie_jar=aiohttp.CookieJar(unsafe=True),  # unsafe: keep cookies for IP-address hosts
            trace_configs=[engine.trace_config],
            auto_decompress=True,
            timeout=aiohttp.ClientTimeout(total=None),  # the runner owns deadlines
            skip_auto_headers=("User-Agent",),
            headers={"User-Agent": engine.user_agent},
        )

    async def send(self, request: OutgoingRequest) -> Response:
        try:
            ssl_context = _ssl_context(request.verify, request.ca_file)
        except OSError as exc:  # ssl.SSLError is one too: a missing or unreadable ca_file
            raise EngineError("tls", f"cannot load ca_file {request.ca_file}: {_first_line(exc)}") from None
        timeline = _Timeline()
        self._connector.timeline = timeline
        started = time.perf_counter()
        kwargs = _body(request, raw="data")
        try:
            async with self._session.request(
                request.method,
                request.url,
                headers=dict(request.headers),
                params=dict(request.query) or None,
                ssl=ssl_context,
                server_hostname=request.server_name,
                allow_redirects=request.follow_redirects,
                trace_request_ctx=timeline,
                **kwargs,
            ) as response:
                headers_at = time.perf_counter()
                cert_not_after = self._connector.not_after.get((response.url.raw_host, response.url.port))
                headers = {k.lower(): v for k, v in response.headers.items()}
                body = await _read_body(response.content.iter_any(), headers, response.status, self._max_body)
                done = time.perf_counter()
                return Response(
                    status=response.status,
                    headers=headers,
                    body=body,
                    cookies=_cookies(response.headers.getall("Set-Cookie", [])),
                    duration=done - started,
                    phases=timeline.phases(done - headers_at),
                    cert_not_after=cert_not_after,
                )
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientConnectorSSLError, aiohttp.ClientSSLError) as exc:
            raise EngineError("tls", f"TLS error: {_first_line(exc)}") from None
        except aiohttp.TooManyRedirects:
            raise EngineError("status", "too many redirects") from None
        except aiohttp.InvalidURL as exc:
            raise EngineError("connect", f"invalid URL: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise EngineError("connect", f"connection failed: {_first_line(exc) or type(exc).__name__}") from None

    async def close(self) -> None:
        await self._session.close()


def _body(request: OutgoingRequest, *, raw: str) -> dict[str, Any]:
    """The body keyword for the client library; `raw` is its name for bytes."""
    if request.json_body is not None:
        return {"json": request.json_body}
    if request.form is not None:
        return {"data": dict(request.form)}
    if request.body is not None:
        return {raw: request.body.encode()}
    return {}


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else ""


class AiohttpEngine:
    """The production engine."""

    def __init__(self, *, user_agent: str = "flowprobe/0.1", max_body: int = MAX_BODY_BYTES) -> None:
        self.user_agent = user_agent
        self.max_body = max_body
        self.trace_config = _trace_config()
        self.resolver = _CachingResolver()

    def session(self) -> Session:
        return _AiohttpSession(self)

    async def close(self) -> None:
        await self.resolver.close()


# ---------------------------------------------------------------- httpx


class _HttpxSession:
    def __init__(self, engine: HttpxEngine) -> None:
        self._max_body = engine.max_body
        self._client = httpx.AsyncClient(
            # Closing the session closes the transport's pool: the next run connects
            # afresh, as with aiohttp; httpx pools reopen on the next request.
            transport=engine.transport,
            headers={"User-Agent": engine.user_agent},
            timeout=None,  # the runner owns deadlines, as with aiohttp; httpx would stop at 5 s
        )

    async def send(self, request: OutgoingRequest) -> Response:
        started = time.perf_counter()
        kwargs = _body(request, raw="content")
        try:
            url = httpx.URL(request.url)
            if url.scheme not in ("http", "https") or not url.host:
                # A mock transport would answer it, then httpx's cookie jar raises a bare ValueError.
                raise httpx.InvalidURL(f"not an absolute http(s) URL: {request.url}")
            # Merged into the URL's own query, as aiohttp does: httpx's `params=` would replace it.
            url = url.copy_merge_params(dict(request.query)) if request.query else url
            outgoing = self._client.build_request(request.method, url, headers=dict(request.headers), **kwargs)
            response = await self._client.send(outgoing, follow_redirects=request.follow_redirects, stream=True)
            try:
                headers = {k.lower(): v for k, v in response.headers.items()}
                body = await _read_body(response.aiter_bytes(), headers, response.status_code, self._max_body)
            finally:
                await response.aclose()
        except httpx.TooManyRedirects:
            raise EngineError("status", "too many redirects") from None
        except httpx.InvalidURL as exc:
            raise EngineError("connect", f"invalid URL: {exc}") from None
        except httpx.ConnectError as exc:
            reason: FailureKind = "tls" if "SSL" in str(exc) or "certificate" in str(exc) else "connect"
            raise EngineError(reason, f"connection failed: {_first_line(exc)}") from None
        except httpx.TransportError as exc:
            raise EngineError("connect", f"connection failed: {_first_line(exc) or type(exc).__name__}") from None
        duration = time.perf_counter() - started
        # httpx exposes no phase hooks: the whole exchange is reported as first_byte.
        phases = dict.fromkeys(PHASES, 0.0) | {"first_byte": duration}
        return Response(
            status=response.status_code,
            headers=headers,
            body=body,
            cookies=dict(response.cookies.items()),
            duration=duration,
            phases=phases,
        )

    async def close(self) -> None:
        await self._client.aclose()


class HttpxEngine:
    """Runs steps over any httpx transport: MockTransport in unit tests, ASGITransport in-process."""

    def __init__(self, transport: httpx.AsyncBaseTransport, *, user_agent: str = "flowprobe/0.1", max_body: int = MAX_BODY_BYTES) -> None:
        self.transport = transport
        self.user_agent = user_agent
        self.max_body = max_body

    def session(self) -> Session:
        return _HttpxSession(self)

    async def close(self) -> None:
        await self.transport.aclose()
