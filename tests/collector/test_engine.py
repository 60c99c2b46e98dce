"""The engines against real servers on 127.0.0.1 (never any other address)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from aiohttp import web

from collector.engine import PHASES, AiohttpEngine, EngineError, HttpxEngine, OutgoingRequest, Response, Session

NOT_AFTER = dt.datetime(2031, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)


def peer_port(request: web.Request) -> str:
    assert request.transport is not None
    return str(request.transport.get_extra_info("peername")[1])


async def hello(request: web.Request) -> web.Response:
    response = web.json_response({"hello": "world"}, headers={"X-Test": "yes", "X-Peer-Port": peer_port(request)})
    response.set_cookie("sid", "s1")
    return response


async def cookie(request: web.Request) -> web.Response:
    return web.json_response({"sid": request.cookies.get("sid")})


async def echo(request: web.Request) -> web.Response:
    return web.json_response({"query": dict(request.query), "body": await request.text(), "agent": request.headers.get("User-Agent")})


async def slow_redirect(request: web.Request) -> web.Response:
    await asyncio.sleep(0.05)
    raise web.HTTPFound("/hello")


async def big(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * 2_000_000)


def app() -> web.Application:
    application = web.Application()
    application.router.add_get("/hello", hello)
    application.router.add_get("/cookie", cookie)
    application.router.add_route("*", "/echo", echo)
    application.router.add_get("/redirect", slow_redirect)
    application.router.add_get("/big", big)
    return application


@contextlib.asynccontextmanager
async def serve(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    runner = web.AppRunner(app(), access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        sock.close()


@contextlib.asynccontextmanager
async def engine_session(engine: AiohttpEngine | None = None) -> AsyncIterator[Session]:
    owned = engine is None
    engine = engine or AiohttpEngine()
    session = engine.session()
    try:
        yield session
    finally:
        await session.close()
        if owned:
            await engine.close()


async def get(session: Session, url: str, **options: Any) -> Response:
    return await session.send(OutgoingRequest("GET", url, **options))


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


# ---------------------------------------------------------------- plain HTTP


def test_response_and_all_phases() -> None:
    async def test() -> None:
        async with serve() as base, engine_session() as session:
            first = await get(session, f"{base}/hello")
            assert first.status == 200
            assert first.headers["x-test"] == "yes"
            assert first.headers["content-type"].startswith("application/json")
            assert first.json() == {"hello": "world"}
            assert first.cookies == {"sid": "s1"}
            assert first.cert_not_after is None
            assert tuple(first.phases) == PHASES
            assert first.phases["connect"] > 0
            assert first.phases["tls"] == 0
            assert first.phases["first_byte"] > 0
            assert all(v >= 0 for v in first.phases.values())
            # The phases are disjoint moments inside the request.
            assert sum(first.phases.values()) <= first.duration

            again = await get(session, f"{base}/hello")
            assert again.phases["connect"] == 0  # the run's connection is reused
            assert again.phases["tls"] == 0
            assert again.phases["first_byte"] > 0
            assert again.headers["x-peer-port"] == first.headers["x-peer-port"]

    run(test)


def test_transfer_is_measured() -> None:
    async def test() -> None:
        async with serve() as base, engine_session() as session:
            response = await get(session, f"{base}/big")
            assert len(response.body) == 2_000_000
            assert response.phases["transfer"] > 0

    run(test)


def test_a_new_session_opens_a_new_connection() -> None:
    async def test() -> None:
        engine = AiohttpEngine()
        try:
            async with serve() as base:
                async with engine_session(engine) as one:
                    first = await get(one, f"{base}/hello")
                async with engine_session(engine) as two:
                    second = await get(two, f"{base}/hello")
            assert second.phases["connect"] > 0
            assert second.headers["x-peer-port"] != first.headers["x-peer-port"]
        finally:
            await engine.close()

    run(test)


def test_cookies_persist_within_a_session_only() -> None:
    async def test() -> None:
        async with serve() as base:
            async with engine_session() as one:
                await get(one, f"{base}/hello")
                assert (await get(one, f"{base}/cookie")).json() == {"sid": "s1"}
            async with engine_session() as two:
                assert (await get(two, f"{base}/cookie")).json() == {"sid": None}

    run(test)


def test_query_merges_with_the_url_and_bodies_are_sent() -> None:
    async def test() -> None:
        async with serve() as base, engine_session() as session:
            response = await session.send(OutgoingRequest("POST", f"{base}/echo?a=1", query={"b": "2"}, body="plain text"))
            assert response.json() == {"query": {"a": "1", "b": "2"}, "body": "plain text", "agent": "flowprobe/0.1"}
            posted = await session.send(OutgoingRequest("POST", f"{base}/echo", json_body={"n": 1}))
            assert posted.json()["body"] == '{"n": 1}'

    run(test)


def test_redirect_phases_are_summed_over_hops() -> None:
    async def test() -> None:
        async with serve() as base, engine_session() as session:
            response = await get(session, f"{base}/redirect")
            assert response.status == 200
            assert response.json() == {"hello": "world"}
            # The first hop waited 50 ms for its answer; that wait is not lost.
            assert response.phases["first_byte"] >= 0.05
            unfollowed = await get(session, f"{base}/redirect", follow_redirects=False)
            assert unfollowed.status == 302

    run(test)


@pytest.mark.parametrize("url", ["/orders/5", "http://[::1/"])
def test_an_invalid_url_is_a_connect_error(url: str) -> None:
    async def test() -> None:
        for engine in (AiohttpEngine(), HttpxEngine(httpx.MockTransport(lambda r: httpx.Response(200)))):
            session = engine.session()
            try:
                with pytest.raises(EngineError) as raised:
                    await get(session, url)
            finally:
                await session.close()
                await engine.close()
            assert raised.value.reason == "connect"
            assert raised.value.message.startswith("invalid URL: ")

    run(test)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_connection_refused_is_a_connect_error() -> None:
    async def test() -> None:
        async with engine_session() as session:
            with pytest.raises(EngineError) as raised:
                await get(session, f"http://127.0.0.1:{free_port()}/")
            assert raised.value.reason == "connect"
            assert raised.value.message.startswith("connection failed: ")

    run(test)


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", not_after=NOT_AFTER).configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def test_tls_with_a_trusted_ca(server_context: ssl.SSLContext, ca_file: str) -> None:
    async def test() -> None:
        async with serve(server_context) as base, engine_session() as session:
            first = await get(session, f"{base}/hello", ca_file=ca_file)
            assert first.status == 200
            assert first.phases["connect"] > 0
            assert first.phases["tls"] > 0
            assert sum(first.phases.values()) <= first.duration
            assert first.cert_not_after == NOT_AFTER.timestamp()
            again = await get(session, f"{base}/hello", ca_file=ca_file)
            assert (again.phases["connect"], again.phases["tls"]) == (0, 0)
            assert again.cert_not_after == NOT_AFTER.timestamp()  # known on a reused connection too

    run(test)


def test_tls_with_an_unknown_ca_fails_with_reason_tls(server_context: ssl.SSLContext) -> None:
    async def test() -> None:
        async with serve(server_context) as base, engine_session() as session:
            with pytest.raises(EngineError) as raised:
                await get(session, f"{base}/hello")
            assert raised.value.reason == "tls"
            assert raised.value.message.startswith("TLS error: ")
            assert "CERTIFICATE_VERIFY_FAILED" in raised.value.message

    run(test)


def test_tls_without_verification(server_context: ssl.SSLContext) -> None:
    async def test() -> None:
        async with serve(server_context) as base, engine_session() as session:
            response = await get(session, f"{base}/hello", verify=False)
            assert response.status == 200
            assert response.phases["tls"] > 0
            assert response.cert_not_after == NOT_AFTER.timestamp()  # still read, to warn of expiry

    run(test)


def test_an_unreadable_ca_file_is_a_tls_error(tmp_path: Path) -> None:
    async def test() -> None:
        async with engine_session() as session:
            with pytest.raises(EngineError) as raised:
                await get(session, "https://127.0.0.1:1/", ca_file=str(tmp_path / "missing.pem"))
            assert raised.value.reason == "tls"
            assert raised.value.message.startswith(f"cannot load ca_file {tmp_path / 'missing.pem'}: ")

    run(test)


def test_tls_to_a_plain_http_server_is_a_tls_error() -> None:
    async def test() -> None:
        async with serve() as base, engine_session() as session:
            with pytest.raises(EngineError) as raised:
                await get(session, base.replace("http://", "https://") + "/hello", verify=False)
            assert raised.value.reason == "tls"

    run(test)


# ---------------------------------------------------------------- httpx over a real transport


def test_httpx_engine_over_a_real_transport() -> None:
    async def test() -> None:
        engine = HttpxEngine(httpx.AsyncHTTPTransport())
        try:
            async with serve() as base:
                ports = []
                for _ in range(2):
                    session = engine.session()
                    try:
                        await get(session, f"{base}/hello")
                        response = await get(session, f"{base}/hello")
                        echoed = await get(session, f"{base}/echo?a=1", query={"b": "2"})
                    finally:
                        await session.close()
                    ports.append(response.headers["x-peer-port"])
                    assert response.cookies == {"sid": "s1"}
                    assert echoed.json()["query"] == {"a": "1", "b": "2"}
                    assert tuple(response.phases) == PHASES
                # One connection per session, a new one for the next session, as with aiohttp.
                assert ports[0] != ports[1]
                session = engine.session()
                try:
                    with pytest.raises(EngineError) as raised:
                        await get(session, f"http://127.0.0.1:{free_port()}/")
                finally:
                    await session.close()
                assert raised.value.reason == "connect"
        finally:
            await engine.close()

    run(test)
