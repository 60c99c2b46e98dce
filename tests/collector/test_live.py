"""Live updates: snapshot, run and state events, subscriptions, SSE, heartbeats, slow clients, size, alerts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from collector.alertstore import Alert, Notification, Status
from collector.config import AlertingSettings, load_config
from collector.engine import HttpxEngine
from collector.live import MAX_MESSAGE_BYTES, LiveHub, Subscription, live_router, pair_status
from collector.metrics import PairState
from collector.result import RunResult
from collector.service import Service
from collector.target import create_app as create_target
from tests.helpers import PROBE_EMAIL, PROBE_PASSWORD, WORKFLOWS

pytestmark = pytest.mark.usefixtures("offline_environments")

TARGET = "http://prod.test"
WS = "/api/monitoring/websocket"
SSE = "/api/monitoring/events"
# Alerts go only to clients that may read them (tests/test_security.py covers the others): these tests read as a viewer.
VIEWER_TOKEN = "viewer-token-of-the-live-tests"
SIX = ["farm-creation", "health-check", "order-placement", "product-listing", "registration", "user-login"]


@pytest.fixture
def target() -> httpx.ASGITransport:
    return httpx.ASGITransport(create_target(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD))


@dataclass
class Live:
    service: Service
    hub: LiveHub
    client: TestClient

    def run(self, workflow: str, env: str = "prod") -> RunResult:
        """One real run against the in-process target, on the app's event loop (as under uvicorn)."""
        result = self.client.portal.call(self.service.run_pair, workflow, env)  # type: ignore[union-attr]
        assert result is not None
        return result

    def on_loop(self, function: Any, *args: Any) -> Any:
        return self.client.portal.call(function, *args)  # type: ignore[union-attr]


@contextlib.contextmanager
def make_live(tmp_path: Path, transport: httpx.AsyncBaseTransport, **hub_options: Any) -> Iterator[Live]:
    service = Service([WORKFLOWS], data_dir=tmp_path, engine=HttpxEngine(transport), watch=False)
    service.config = replace(service.config, tokens={VIEWER_TOKEN: ("live-tests", "viewer")})
    hub = LiveHub(service, **hub_options)
    hub.attach()
    app = FastAPI()
    app.include_router(live_router(service, hub))
    with TestClient(app, headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}) as client:
        yield Live(service, hub, client)
    service.store.close()
    service.alerts.store.close()


@pytest.fixture
def live(tmp_path: Path, target: httpx.ASGITransport) -> Iterator[Live]:
    with make_live(tmp_path, target, heartbeat=30.0) as live:
        yield live


def receive(ws: WebSocketTestSession, timeout: float = 5.0) -> dict[str, Any]:
    """The next message, or fail after `timeout` (the TestClient's own receive waits forever)."""

    async def next_message() -> Any:
        with anyio.fail_after(timeout):
            return await ws._send_rx.receive()

    message = ws.portal.call(next_message)
    ws._raise_on_close(message)
    return json.loads(message["text"])  # type: ignore[no-any-return]


def snapshot(ws: WebSocketTestSession) -> dict[str, Any]:
    """All parts of the next snapshot, merged."""
    first = receive(ws)
    assert first["type"] == "snapshot" and first["part"] == 1, first
    merged = {"pairs": list(first["pairs"]), "alerts": list(first["alerts"]), "parts": first["parts"]}
    for number in range(2, first["parts"] + 1):
        part = receive(ws)
        assert (part["type"], part["part"], part["parts"]) == ("snapshot", number, first["parts"])
        merged["pairs"] += part["pairs"]
        merged["alerts"] += part["alerts"]
    return merged


def chaos(transport: httpx.ASGITransport, dependency: str, **state: object) -> None:
    async def put() -> None:
        async with httpx.AsyncClient(transport=transport, base_url=TARGET) as client:
            (await client.put(f"/chaos/{dependency}", json=state)).raise_for_status()

    asyncio.run(put())


# ---------------------------------------------------------------- status words


def result(outcome: str, *, duration: float = 0.1, flaky: bool = False) -> RunResult:
    return RunResult("user-login", "prod", "r1", 1000.0, outcome, duration=duration, flaky=flaky)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("success", "last", "expected"),
    [
        (None, None, "unknown"),
        (1, result("success"), "up"),
        (1, result("success", flaky=True), "degraded"),
        (1, result("success", duration=0.6), "degraded"),  # user-login's latency_slo is 500ms
        (0, result("failure"), "down"),
        (0, result("error"), "down"),
        (0, result("skipped"), "down"),  # the last run that was not skipped failed
        (1, result("skipped"), "skipped"),
        (None, result("skipped"), "skipped"),
    ],
)

def test_pair_status_words(success: int | None, last: RunResult | None, expected: str) -> None:
    workflow = load_config(WORKFLOWS).workflows["user-login"]
    assert pair_status(PairState(success=success, last_result=last), workflow) == expected
    assert pair_status(PairState(success=1, last_result=result("success", duration=5.0)), None) == "up"  # no SLO known


# ---------------------------------------------------------------- WebSocket


def test_snapshot_first_then_runs_and_state_changes(live: Live, target: httpx.ASGITransport) -> None:
    with live.client.websocket_connect(f"{WS}?env=prod") as ws:
        first = snapshot(ws)
        assert first["parts"] == 1 and first["alerts"] == []
        assert [(p["workflow"], p["env"], p["status"], p["last_run"]) for p in first["pairs"]] == [(w, "prod", "unknown", None) for w in SIX]

        run = live.run("health-check")
        event = receive(ws)
        assert event == {
            "type": "run", "workflow": "health-check", "env": "prod", "run_id": run.run_id, "outcome": "success",
            "started_at": round(run.started_at, 3), "duration": round(run.duration, 4), "failed_step": None, "reason": None, "flaky": False,
        }
        assert receive(ws) == {"type": "state", "workflow": "health-check", "env": "prod", "status": "up", "previous": "unknown"}

        live.run("health-check")  # still up: a run event and no state event
        assert receive(ws)["type"] == "run"
        chaos(target, "database", outage=True)
        failed = live.run("health-check")
        event = receive(ws)
        assert (event["type"], event["run_id"], event["outcome"], event["failed_step"], event["reason"]) == (
            "run", failed.run_id, "failure", "health", "status")
        assert receive(ws) == {"type": "state", "workflow": "health-check", "env": "prod", "status": "down", "previous": "up"}

        skipped = live.run("user-login")  # its dependency is down
        assert receive(ws)["run_id"] == skipped.run_id
        assert receive(ws) == {"type": "state", "workflow": "user-login", "env": "prod", "status": "skipped", "previous": "unknown"}

    # A new client's snapshot says where things stand now.
    with live.client.websocket_connect(f"{WS}?env=prod&workflow=health-check,user-login") as ws:
        pairs = {p["workflow"]: p for p in snapshot(ws)["pairs"]}
        assert {w: p["status"] for w, p in pairs.items()} == {"health-check": "down", "user-login": "skipped"}
        assert pairs["health-check"]["last_run"]["run_id"] == failed.run_id
    assert live.hub.stats()["events"] == {"run": 4, "state": 3, "alert": 0}


def test_a_status_restored_from_history_is_where_changes_count_from(live: Live) -> None:
    # The collector restores the last runs at start, after the hub was attached (create_app comes first).
    failed = RunResult("health-check", "prod", "before-restart", time.time() - 60, "failure", failed_step="health", reason="status")
    live.service.state.restore(failed, (3, "health", "status"))
    with live.client.websocket_connect(f"{WS}?env=prod&workflow=health-check") as ws:
        [pair] = snapshot(ws)["pairs"]
        assert (pair["status"], pair["last_run"]["run_id"]) == ("down", "before-restart")
        run = live.run("health-check")
        assert receive(ws)["run_id"] == run.run_id
        assert receive(ws) == {"type": "state", "workflow": "health-check", "env": "prod", "status": "up", "previous": "down"}


def test_subscriptions_filter_events_and_answer_with_a_fresh_snapshot(live: Live) -> None:
    with live.client.websocket_connect(WS) as everything, live.client.websocket_connect(WS) as narrow:
        assert len(snapshot(everything)["pairs"]) == 18  # six workflows in prod, staging and dev
        assert len(snapshot(narrow)["pairs"]) == 18

        narrow.send_json({"subscribe": {"env": ["staging"], "workflow": ["user-login", "health-check"]}})
        fresh = snapshot(narrow)
        assert sorted((p["workflow"], p["env"]) for p in fresh["pairs"]) == [("health-check", "staging"), ("user-login", "staging")]

        live.run("health-check", "prod")
        live.run("user-login", "staging")
        assert [(e["type"], e["workflow"], e["env"]) for e in (receive(everything) for _ in range(4))] == [
            ("run", "health-check", "prod"), ("state", "health-check", "prod"),
            ("run", "user-login", "staging"), ("state", "user-login", "staging"),
        ]
        assert [(e["type"], e["workflow"], e["env"]) for e in (receive(narrow) for _ in range(2))] == [
            ("run", "user-login", "staging"), ("state", "user-login", "staging"),
        ]

        narrow.send_text("not json")
        assert receive(narrow)["type"] == "error"
        narrow.send_json({"subscribe": {"env": "prod"}})
        assert receive(narrow) == {"type": "error", "message": "subscribe.env must be a list of strings"}
        narrow.send_json({"subscribe": {}})  # empty: everything again
        assert len(snapshot(narrow)["pairs"]) == 18


def test_subscription_parsing() -> None:
    assert Subscription.parse({"subscribe": {"env": [], "workflow": ["a"]}}) == Subscription(None, frozenset({"a"}))
    assert Subscription.parse({"subscribe": None}) == Subscription()
    assert Subscription.of(["prod,staging", "dev"], None) == Subscription(frozenset({"prod", "staging", "dev"}), None)
    for bad in ([], {"subscribe": [], "x": 1}, {"subscribe": {"envs": []}}, {"subscribe": {"workflow": [1]}}):
        with pytest.raises(ValueError):
            Subscription.parse(bad)
    sub = Subscription.of(["prod"], ["user-login"])
    assert sub.matches("user-login", "prod") and not sub.matches("user-login", "dev") and not sub.matches("x", "prod")
    assert sub.matches(None, None)  # a collector-wide alert concerns everyone


def test_heartbeats_are_sent(tmp_path: Path, target: httpx.ASGITransport) -> None:
    with make_live(tmp_path, target, heartbeat=0.1) as live:
        with live.client.websocket_connect(WS) as ws:
            snapshot(ws)
            started = time.time()
            pings = [receive(ws, timeout=2.0) for _ in range(3)]
            assert [p["type"] for p in pings] == ["ping"] * 3
            assert all(started - 1 <= p["at"] <= time.time() + 1 for p in pings)
            assert pings[0]["at"] < pings[1]["at"] < pings[2]["at"]


def test_a_client_that_falls_behind_is_closed_with_1013_and_counted(tmp_path: Path, target: httpx.ASGITransport) -> None:
    with make_live(tmp_path, target, queue_size=5) as live:
        fake = RunResult("user-login", "prod", "", time.time(), "success", duration=0.01)

        def burst(count: int) -> None:
            # All on the app's loop in one go: the senders get no turn in between,
            # as when a client's socket is full and its sender is stuck writing.
            for n in range(count):
                fake.run_id = f"r{n}"
                live.hub.on_run(fake)

        with live.client.websocket_connect(WS) as slow, live.client.websocket_connect(f"{WS}?workflow=health-check") as other:
            snapshot(slow)
            snapshot(other)
            live.on_loop(burst, 5)  # up to the bound: kept
            assert [receive(slow)["run_id"] for _ in range(5)] == [f"r{n}" for n in range(5)]

            live.on_loop(burst, 6)  # one past it: dropped, and what was queued is let go
            with pytest.raises(WebSocketDisconnect) as closed:
                while True:
                    receive(slow)
            assert (closed.value.code, closed.value.reason) == (1013, "too slow: events queued past the limit")
            assert live.hub.dropped == {"slow": 1, "dead": 0}

            run = live.run("health-check")  # the other client is unaffected
            assert receive(other)["run_id"] == run.run_id
        assert wait_for_leave(live)


def test_a_client_whose_sends_block_is_dropped_as_dead(tmp_path: Path, target: httpx.ASGITransport) -> None:
    with make_live(tmp_path, target, heartbeat=0.05, send_timeout=0.2) as live:
        blocked = asyncio.Event()

        async def wrapped(websocket: Any, **options: Any) -> None:
            original = websocket.send

            async def send(message: Any) -> None:
                if message["type"] == "websocket.send" and json.loads(message["text"])["type"] == "ping":
                    await blocked.wait()  # a socket that is never read: the write never completes
                await original(message)

            websocket.send = send
            await serve(websocket, **options)

        serve = live.hub.serve_websocket
        live.hub.serve_websocket = wrapped  # type: ignore[method-assign]
        with live.client.websocket_connect(WS) as ws:
            snapshot(ws)
            with pytest.raises(WebSocketDisconnect) as closed:
                receive(ws, timeout=3.0)
            assert closed.value.code == 1013
        assert live.hub.dropped == {"slow": 0, "dead": 1}


# ---------------------------------------------------------------- SSE


def sse_events(lines: Iterator[str], wanted: int, timeout: float = 5.0) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """Read `wanted` events (and the comments between them); heartbeats keep lines coming, so the deadline is checked."""
    deadline = time.monotonic() + timeout
    events: list[tuple[str, dict[str, Any]]] = []
    comments: list[str] = []
    kind = None
    for line in lines:
        assert time.monotonic() < deadline, f"timed out with {events}"
        if line.startswith(":"):
            comments.append(line)
        elif line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            assert kind is not None
            data = json.loads(line.removeprefix("data: "))
            assert data["type"] == kind
            events.append((kind, data))
            if len(events) == wanted:
                break
    return events, comments


def test_sse_carries_the_same_events_with_heartbeat_comments(tmp_path: Path, target: httpx.ASGITransport) -> None:
    with make_live(tmp_path, target, heartbeat=0.1) as live:
        with live.client.stream("GET", SSE, params={"env": "prod", "workflow": ["user-login", "health-check"]}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.iter_lines()
            events, _ = sse_events(lines, 1)
            assert events[0][0] == "snapshot"
            assert [p["workflow"] for p in events[0][1]["pairs"]] == ["health-check", "user-login"]

            login = live.run("user-login")
            live.run("product-listing")  # not subscribed
            health = live.run("health-check")
            events, _ = sse_events(lines, 4)
            assert [(kind, data["workflow"]) for kind, data in events] == [
                ("run", "user-login"), ("state", "user-login"), ("run", "health-check"), ("state", "health-check")]
            assert events[0][1]["run_id"] == login.run_id and events[2][1]["run_id"] == health.run_id
            deadline = time.monotonic() + 2
            heartbeat = next(line for line in lines if line.startswith(":") or time.monotonic() > deadline)
            assert heartbeat.startswith(": ping ") and float(heartbeat.split()[-1]) > 1e9
        assert wait_for_leave(live)


def wait_for_leave(live: Live) -> bool:
    deadline = time.monotonic() + 2
    while live.hub.stats()["clients"] and time.monotonic() < deadline:
        time.sleep(0.02)
    return live.hub.stats()["clients"] == 0


# ---------------------------------------------------------------- size


def test_snapshot_of_1000_pairs_comes_in_parts_under_50_kb(live: Live) -> None:
    state = live.service.state
    names = [(f"checkout-flow-with-a-rather-long-name-{i:04d}", env) for i in range(334) for env in ("production-eu", "staging", "dev")][:1000]
    state.configure({pair: {"team": "marketplace"} for pair in names})
    for n, (workflow, env) in enumerate(names):
        state.record(RunResult(workflow, env, f"{n:016x}{n:016x}", 1.7e9 + n / 7, "failure", duration=1.23456789,
                               failed_step="place-order-with-a-coupon", reason="assertion"))
    for n in range(50):
        live.hub.on_alert(alert(n + 1, names[n]))

    messages = live.hub.snapshot()
    assert len(messages) > 1
    assert all(len(m.encode()) < MAX_MESSAGE_BYTES < 50_000 for m in messages)
    with live.client.websocket_connect(WS) as ws:
        merged = snapshot(ws)
    assert merged["parts"] == len(messages)
    assert [(p["workflow"], p["env"]) for p in merged["pairs"]] == sorted(names)
    assert all(p["status"] == "down" and p["last_run"]["failed_step"] == "place-order-with-a-coupon" for p in merged["pairs"])
    assert [a["id"] for a in merged["alerts"]] == list(range(1, 51))


def alert(alert_id: int, pair: tuple[str, str], status: str = "ACTIVE") -> Alert:
    now = datetime.now(UTC)
    labels = {"alertname": "FlowprobeWorkflowFailing", "severity": "critical", "workflow": pair[0], "env": pair[1]}
    return Alert(alert_id, f"fp{alert_id}", Status(status), labels["alertname"], "critical", pair[0], pair[1], labels, {}, "",
                 now, None, now, now, None, None, None, None, None, None, 0, (), False)


# ---------------------------------------------------------------- alerts


def test_alert_lifecycle_changes_are_events(live: Live) -> None:
    alerts = live.service.alerts
    alerts.open()
    posted: list[str] = []

    def alertmanager(request: httpx.Request) -> httpx.Response:
        posted.append(f"{request.method} {request.url.path}")
        return httpx.Response(200, json={"silenceID": "s-1"} if request.url.path.endswith("/silences") else {})

    alerts.transport = httpx.MockTransport(alertmanager)
    settings = AlertingSettings.model_validate({"alertmanager_url": "http://am.test", "escalation": {"critical": [{"after": "1s", "to": "oncall"}]}})
    alerts.settings = lambda: settings
    labels = {"alertname": "FlowprobeWorkflowFailing", "severity": "critical", "workflow": "user-login", "env": "prod"}
    starts = datetime(2025, 1, 1, tzinfo=UTC)
    note = Notification("firing", "fp-1", starts, None, labels)

    with live.client.websocket_connect(f"{WS}?workflow=user-login") as ws, live.client.websocket_connect(f"{WS}?workflow=health-check") as other:
        snapshot(ws)
        snapshot(other)
        live.on_loop(alerts.receive, [note])
        fired = receive(ws)
        assert fired == {"type": "alert", "id": fired["id"], "alertname": "FlowprobeWorkflowFailing", "workflow": "user-login",
                         "env": "prod", "severity": "critical", "status": "ACTIVE"}
        live.on_loop(alerts.receive, [note])  # a repeat changes nothing: no event
        live.on_loop(alerts.check)  # started in 2025: the step is due
        assert receive(ws)["status"] == "ESCALATED"
        with live.client.websocket_connect(WS) as late:  # a snapshot has the open alerts
            assert [(a["id"], a["status"]) for a in snapshot(late)["alerts"]] == [(fired["id"], "ESCALATED")]
        live.on_loop(lambda: alerts.acknowledge(fired["id"], actor="ana", comment="on it"))
        assert receive(ws)["status"] == "ACKNOWLEDGED"
        live.on_loop(lambda: alerts.resolve(fired["id"], actor="ana", comment="fixed"))
        assert receive(ws)["status"] == "RESOLVED"
        ws.send_json({"subscribe": {}})
        assert snapshot(ws)["alerts"] == []  # resolved alerts are not open
        run = live.run("health-check")
        assert receive(other)["run_id"] == run.run_id  # `other` heard nothing of user-login's alert
    assert "POST /api/v2/silences" in posted
    assert live.hub.stats()["events"]["alert"] == 4


# ---------------------------------------------------------------- batching, shutdown


def test_a_batching_client_gets_what_is_queued_as_one_array(live: Live) -> None:
    fake = RunResult("user-login", "prod", "", time.time(), "success", duration=0.01)

    def burst() -> None:
        for n in range(5):
            fake.run_id = f"r{n}"
            live.hub.on_run(fake)

    with live.client.websocket_connect(f"{WS}?batch=1") as batching, live.client.websocket_connect(WS) as plain:
        assert snapshot(batching)["parts"] == 1
        snapshot(plain)
        live.on_loop(burst)
        events = receive(batching)
        assert isinstance(events, list) and [e["run_id"] for e in events] == ["r0", "r1", "r2", "r3", "r4"]
        assert [receive(plain)["run_id"] for _ in range(5)] == ["r0", "r1", "r2", "r3", "r4"]  # one object per message
        run = live.run("health-check")  # a run and the state change it made, queued together
        assert [(e["type"], e.get("run_id")) for e in receive(batching)] == [("run", run.run_id), ("state", None)]
        run = live.run("health-check")  # alone in the queue: an object, not an array of one
        assert receive(batching)["run_id"] == run.run_id


def test_a_stopping_service_ends_every_stream(tmp_path: Path, target: httpx.ASGITransport) -> None:
    with make_live(tmp_path, target, heartbeat=0.1) as live:
        with live.client.websocket_connect(WS) as ws, live.client.stream("GET", SSE) as response:
            snapshot(ws)
            lines = response.iter_lines()
            assert sse_events(lines, 1)[0][0][0] == "snapshot"
            live.service.stopping.set()  # SIGTERM: uvicorn's shutdown waits for open responses to end
            with pytest.raises(WebSocketDisconnect) as closed:
                while True:
                    receive(ws, timeout=3.0)
            assert (closed.value.code, closed.value.reason) == (1001, "server closing")
            deadline = time.monotonic() + 3
            for _ in lines:  # pings until the stream ends
                assert time.monotonic() < deadline
        assert wait_for_leave(live)
        assert live.hub.dropped["closed"] == 2
        with live.client.websocket_connect(WS) as late:  # nobody new is served either
            with pytest.raises(WebSocketDisconnect):
                receive(late, timeout=3.0)
