"""The collector service in-process: dependencies, restart, graceful stop, filters, and its API."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from collector.api import create_app
from collector.engine import HttpxEngine
from collector.scheduler import Shard
from collector.metrics import new_registry
from collector.service import Service
from collector.target import create_app as create_target
from tests.helpers import PROBE_EMAIL, PROBE_PASSWORD, WORKFLOWS

pytestmark = pytest.mark.usefixtures("offline_environments")

TARGET = "http://prod.test"


@pytest.fixture
def target() -> httpx.ASGITransport:
    return httpx.ASGITransport(create_target(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD))


def service(tmp_path: Path, transport: httpx.AsyncBaseTransport, **kwargs: object) -> Service:
    return Service([WORKFLOWS], data_dir=tmp_path, envs=["prod"], engine=HttpxEngine(transport), watch=False, **kwargs)  # type: ignore[arg-type]


def chaos(transport: httpx.ASGITransport, dependency: str, **state: object) -> None:
    async def put() -> None:
        async with httpx.AsyncClient(transport=transport, base_url=TARGET) as client:
            (await client.put(f"/chaos/{dependency}", json=state)).raise_for_status()

    asyncio.run(put())


def test_dependents_are_skipped_not_failed_while_their_dependency_fails(tmp_path: Path, target: httpx.ASGITransport) -> None:
    svc = service(tmp_path, target)
    chaos(target, "database", outage=True)  # the API is down: health-check fails

    async def main() -> list[str]:
        health = await svc.run_pair("health-check", "prod")
        listing = await svc.run_pair("product-listing", "prod")
        assert health is not None and listing is not None
        return [health.outcome, listing.outcome, listing.skip_reason or "", listing.message]

    assert asyncio.run(main()) == ["failure", "skipped", "dependency", "skipped: health-check is failing in prod"]
    labels = {"workflow": "product-listing", "env": "prod"}
    assert svc.registry.get_sample_value("flowprobe_workflow_runs_total", {**labels, "result": "skipped"}) == 1
    assert svc.registry.get_sample_value("flowprobe_workflow_success", labels) is None  # skipped says nothing of health
    svc.store.close()


def test_state_and_history_survive_a_restart(tmp_path: Path, target: httpx.ASGITransport) -> None:
    first = service(tmp_path, target)
    result = asyncio.run(first.run_pair("user-login", "prod"))
    assert result is not None and result.outcome == "success"
    first.store.close()

    second = service(tmp_path, target)

    async def start_and_stop() -> None:
        await second.start()
        await second.stop()

    asyncio.run(start_and_stop())
    labels = {"workflow": "user-login", "env": "prod"}
    assert second.registry.get_sample_value("flowprobe_workflow_success", labels) == 1
    assert second.state.pairs[("user-login", "prod")].last_result.run_id == result.run_id  # type: ignore[union-attr]


def test_stop_waits_for_a_run_in_flight_and_writes_it(tmp_path: Path) -> None:
    entered = asyncio.Event()

    async def slow_target(request: httpx.Request) -> httpx.Response:
        entered.set()
        await asyncio.sleep(0.5)
        return httpx.Response(200, json={"status": "ok", "dependencies": {"database": "ok"}}, headers={"content-type": "application/json"})

    svc = service(tmp_path, httpx.MockTransport(slow_target), grace=5.0)

    async def main() -> None:
        await svc.start()
        task = asyncio.create_task(svc.scheduler._fire(("health-check", "prod")))
        await entered.wait()
        await svc.stop()
        assert task.done()

    asyncio.run(main())
    reopened = service(tmp_path, httpx.MockTransport(slow_target))
    runs = reopened.store.runs("health-check", "prod")
    assert [r.outcome for r in runs] == ["success"]
    reopened.store.close()


def test_env_and_shard_filters_select_pairs(tmp_path: Path, target: httpx.ASGITransport) -> None:
    everything = Service([WORKFLOWS], data_dir=tmp_path / "a", watch=False)
    assert len(everything.selected(everything.config)) == 18
    shards = [Service([WORKFLOWS], data_dir=tmp_path / f"s{i}", shard=Shard(i, 3), watch=False) for i in range(3)]
    chosen = [set(s.selected(s.config)) for s in shards]
    assert set.union(*chosen) == set(everything.selected(everything.config))
    assert sum(len(c) for c in chosen) == 18
    with pytest.raises(ValueError, match="unknown environment"):
        Service([WORKFLOWS], data_dir=tmp_path / "b", envs=["qa"], watch=False)
    for svc in [everything, *shards]:
        svc.store.close()


def test_workflow_info_carries_static_labels_and_dependencies(tmp_path: Path, target: httpx.ASGITransport) -> None:
    svc = Service([WORKFLOWS], data_dir=tmp_path, watch=False)
    try:
        registry = new_registry(svc.state, process=False)
        order = {"workflow": "order-placement", "env": "prod", "team": "marketplace",
                 "dependencies": ",health-check,product-listing,user-login,"}
        assert registry.get_sample_value("flowprobe_workflow_info", order) == 1
        # No depends_on, no dependencies label.
        assert registry.get_sample_value("flowprobe_workflow_info", {"workflow": "health-check", "env": "prod", "team": "platform", "tier": "0"}) == 1
    finally:
        svc.store.close()


@pytest.fixture
def api(tmp_path: Path, target: httpx.ASGITransport) -> Iterator[tuple[Service, TestClient]]:
    svc = service(tmp_path, target)
    with TestClient(create_app(svc)) as client:
        yield svc, client
    svc.store.close()


def test_api_health_readiness_and_metrics(api: tuple[Service, TestClient]) -> None:
    svc, client = api
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 503  # not started yet
    svc.ready = True
    assert client.get("/readyz").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "\nflowprobe_config_last_reload_successful 1\n" in metrics.text
    zipped = client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.text == metrics.text  # the client decompresses it


def test_api_workflows_and_paginated_runs(api: tuple[Service, TestClient]) -> None:
    svc, client = api
    svc._apply(svc.config)

    async def runs() -> list[str]:
        return [(await svc.run_pair("user-login", "prod")).run_id for _ in range(5)]  # type: ignore[union-attr]

    ids = asyncio.run(runs())
    svc.store.flush()
    items = client.get("/api/workflows").json()["items"]
    login = next(i for i in items if i["workflow"] == "user-login")
    assert login["env"] == "prod" and login["success"] == 1 and login["runs"]["success"] == 5
    assert login["last_run"]["run_id"] == ids[-1]
    assert {i["workflow"] for i in items} == {"health-check", "user-login", "registration", "farm-creation", "product-listing", "order-placement"}

    page = client.get("/api/workflows/user-login/runs", params={"limit": 3}).json()
    assert [r["run_id"] for r in page["items"]] == ids[::-1][:3]
    rest = client.get("/api/workflows/user-login/runs", params={"limit": 3, "before": page["next_before"]}).json()
    assert [r["run_id"] for r in rest["items"]] == ids[::-1][3:]
    assert rest["next_before"] is None

    detail = client.get(f"/api/runs/{ids[0]}").json()
    assert [s["name"] for s in detail["steps"]] == ["login", "profile"]
    assert detail["steps"][0]["captures"]["token"] == "[REDACTED]"
    assert PROBE_PASSWORD not in client.get(f"/api/runs/{ids[0]}").text
    assert client.get("/api/workflows/nope/runs").status_code == 404
    assert client.get("/api/runs/nope").json() == {"error": "unknown run"}


def test_the_api_server_sets_tcp_nodelay_on_accepted_connections() -> None:
    """Without it a kept-alive client waits for a delayed ACK on every request after the first."""
    import socket

    from collector.service import ApiServer

    async def scenario() -> int:
        api = ApiServer(lambda scope, receive, send: None, "127.0.0.1", 0)
        await api.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
            try:
                connections = await _connections(api)
                (transport,) = [c.transport for c in connections]
                return transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            finally:
                writer.close()
                await writer.wait_closed()
        finally:
            await api.stop()

    async def _connections(api: ApiServer) -> list:
        for _ in range(200):  # the accept happens on the loop: poll it, with a deadline
            if api.server.server_state.connections:
                return list(api.server.server_state.connections)
            await asyncio.sleep(0.01)
        raise AssertionError("the server never accepted the connection")

    assert asyncio.run(scenario()) != 0


def test_the_api_server_refuses_a_websocket_message_over_the_live_streams_cap() -> None:
    """uvicorn cuts an oversized client message itself (close 1009), before the app could buffer it."""
    import websockets

    from collector.live import MAX_CLIENT_MESSAGE_BYTES
    from collector.service import ApiServer

    async def echo(scope: dict, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        await receive()  # connect
        await send({"type": "websocket.accept"})
        while (await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": "ok"})

    async def scenario() -> tuple[str, int | None]:
        api = ApiServer(echo, "127.0.0.1", 0)
        await api.start()
        try:
            async with websockets.connect(f"ws://127.0.0.1:{api.port}/", max_size=None) as ws:
                await ws.send("x" * 1000)
                small = await ws.recv()
                await ws.send("x" * (MAX_CLIENT_MESSAGE_BYTES + 1))
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await ws.recv()
                return str(small), closed.value.rcvd.code if closed.value.rcvd else None
        finally:
            await api.stop()

    assert asyncio.run(scenario()) == ("ok", 1009)


def test_run_event_loop_runs_on_uvloop_where_installed():
    """`flowprobe run` and `flowprobe demo` run on uvloop (bench/vs_blackbox.py: the CPU per probe that beats blackbox_exporter's)."""
    import uvloop

    from collector.service import run_event_loop

    async def which() -> type:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop())

    assert issubclass(run_event_loop(which()), uvloop.Loop)
