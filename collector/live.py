"""Live updates for the status page: a snapshot, then only what changed, over WebSocket or SSE.

Endpoints
---------
- ``WS /api/monitoring/websocket``: JSON text messages, one object each.
  The client may send ``{"subscribe": {"env": [...], "workflow": [...]}}`` at
  any time (a list empty or absent means all); the server answers with a fresh
  snapshot of that subset, and from then on sends only events within it.
  ``?env=prod&workflow=user-login`` on the URL sets the first subscription.
  ``?batch=1`` lets the server send what is queued for the client at once as
  one message, a JSON array of event objects (under ``MAX_MESSAGE_BYTES``): a
  client that asks for it takes an object or an array. It is for clients that
  follow many pairs: each message costs the server far more than its bytes
  (bench/live_load.py). Snapshots, pings and errors are always alone.
- ``GET /api/monitoring/events``: the same messages as Server-Sent Events,
  ``event: <type>\\ndata: <the same JSON object>\\n\\n``, subscribed with the
  same query parameters (repeat them, or separate values with commas).
  Heartbeats are SSE comments (``: ping <unix time>``); the stream opens
  with ``retry: 2000`` (reconnect after 2 s).

Who may listen
--------------
The live stream is a status read (collector/auth.py): open while
``api.public_reads`` is true, else it needs a viewer token in an
``Authorization: Bearer`` header (refused before the handshake completes: 401
or 403, or a close with 1008 where the server cannot send a denial). Alerts
name what is failing and who acknowledged it, so only a client whose token
may read alerts (viewer, operator, admin) gets them: for any other client the
snapshot has no ``alerts`` key (not an empty list: the page then says a token
is needed rather than "no open alerts") and no ``alert`` event is sent.

A client message larger than ``MAX_CLIENT_MESSAGE_BYTES`` closes the socket
(1009); subscriptions faster than 5 a second (bursts of 20) are answered with
an ``error`` and ignored, since each one costs a snapshot.

Message contract (a user contract: the status page is built on it)
-------------------------------------------------------------------
Every message is a JSON object with ``"type"``; times are unix seconds.

``snapshot``
    ``{"type": "snapshot", "part": 1, "parts": 1, "pairs": [...], "alerts": [...]}``
    (``alerts`` only for a client that may read alerts, above).
    ``pairs`` items: ``{workflow, env, status, last_run}`` where ``last_run``
    is ``null`` (never ran) or ``{run_id, outcome, started_at, duration,
    failed_step, reason}``. ``alerts`` items: the open alerts (not resolved),
    ``{id, alertname, workflow, env, severity, status}``.
    A snapshot bigger than one message is sent as several parts (``part`` 1
    to ``parts``), each under ``MAX_MESSAGE_BYTES`` (48 KiB, the plan says
    under 50 KB): a client starts a new picture at part 1 and swaps it in
    at part ``parts``. Pairs are sorted by (workflow, env), alerts by id.
``run``
    A run finished: ``{workflow, env, run_id, outcome, started_at, duration,
    failed_step, reason, flaky}``. ``outcome`` is success, failure, error or
    skipped; ``reason`` is one of status, assertion, timeout, connect, tls,
    capture, or null.
``state``
    The status of a (workflow, env) pair changed: ``{workflow, env, status,
    previous}``. Sent after the ``run`` that changed it; ``previous`` is
    ``unknown`` at a pair's first run.
``alert``
    An alert fired or changed status: ``{id, alertname, workflow, env,
    severity, status}``; ``status`` is ACTIVE, ACKNOWLEDGED, ESCALATED or
    RESOLVED (as in the alert API). ``workflow``, ``env`` and ``severity`` are
    the alert's labels, null when it has none. An alert without a workflow
    (or env) label is sent to every subscription.
``ping``
    ``{"type": "ping", "at": <unix time>}``, every ``heartbeat`` seconds.
``error``
    ``{"type": "error", "message": "..."}``: the client sent something that
    is not a subscription; the connection stays open and nothing else changes.

Status words (``pair_status``, shared with the dashboard API): ``down`` if
the last run that was not skipped failed or errored; ``skipped`` if the last
run was skipped; ``degraded`` if it passed but was flaky (passed only after a
retry) or slower than the workflow's ``alert.latency_slo``; ``up`` otherwise;
``unknown`` before the pair's first run.

Slow and dead clients
---------------------
Each client has a bounded queue (``queue_size`` events; a snapshot does not
count). A client that falls that far behind is dropped, not buffered: the
WebSocket is closed with 1013 (try again later), the SSE stream ends, and
``LiveHub.dropped["slow"]`` counts it. A client that does not read at all is
found by the send side: a send (an event or the heartbeat) that cannot be
written within ``send_timeout`` drops it the same way, counted as ``"dead"``.
A client that reconnects gets a fresh snapshot, so nothing is lost.

Events are encoded once and shared by every client. The hub may be fed from
another thread or event loop than the clients' (tests do that); each client
is handed its events on its own loop. One ticker task per event loop sends
the heartbeats, finds dead clients and ends every stream when the service
stops (``service.stopping``) or ``LiveHub.close()`` is called: an open SSE
response would otherwise hold uvicorn's shutdown.

Wiring::

    app.include_router(live_router(service))      # makes a LiveHub and attaches it

or, to keep the hub (``hub.stats()``, ``hub.close()``)::

    hub = LiveHub(service)
    hub.attach()    # service.listeners += on_run; service.alerts.listeners += on_alert
    app.include_router(live_router(service, hub))
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, HTTPException, Query, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.websockets import WebSocketDisconnect

from collector.alertstore import Alert, Status
from collector.apisecurity import RateLimiter
from collector.auth import Principal, TokenAuth, bearer_token
from collector.config import Workflow
from collector.metrics import PairState
from collector.result import RunResult

if TYPE_CHECKING:
    from collector.service import Service

__all__ = [
    "CLOSE_TRY_AGAIN_LATER",
    "MAX_CLIENT_MESSAGE_BYTES",
    "MAX_MESSAGE_BYTES",
    "STATUSES",
    "LiveHub",
    "Subscription",
    "live_router",
    "pair_status",
]

log = logging.getLogger("flowprobe.live")

MAX_MESSAGE_BYTES = 48 * 1024
STATUSES = ("up", "degraded", "down", "skipped", "unknown")
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_TOO_BIG = 1009
MAX_CLIENT_MESSAGE_BYTES = 256 * 1024  # a subscription of 2 x 1000 long names fits
_SUBSCRIBE_RATE, _SUBSCRIBE_BURST = 5.0, 20
_OPEN_ALERTS = [Status.ACTIVE, Status.ACKNOWLEDGED, Status.ESCALATED]
_MAX_NAMES = 1000  # values per subscription dimension
_SSE_CHUNK = 64 * 1024
# The ticker's period at most: how soon a stopping service ends the streams
# (an open SSE stream would hold uvicorn's shutdown) and a dead client is found.
_TICK = 1.0


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def pair_status(pair_state: PairState, workflow: Workflow | None) -> str:
    """up, degraded, down, skipped or unknown: the one rule for a pair's status word."""
    last = pair_state.last_result
    if pair_state.success == 0:
        return "down"
    if last is None:
        return "unknown"
    if last.outcome == "skipped":
        return "skipped"
    if last.outcome != "success":
        return "down"
    slo = workflow.alert.latency_slo if workflow is not None else None
    if last.flaky or (slo is not None and last.duration > slo):
        return "degraded"
    return "up"


# ---------------------------------------------------------------- messages


def _dumps(message: dict[str, Any]) -> str:
    # ASCII only, so len() is the size on the wire.
    return json.dumps(message, separators=(",", ":"), allow_nan=False)


def _time(value: float, digits: int) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def _last_run(result: RunResult | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {
        "run_id": result.run_id,
        "outcome": result.outcome,
        "started_at": _time(result.started_at, 3),
        "duration": _time(result.duration, 4),
        "failed_step": result.failed_step,
        "reason": result.reason,
    }


def _alert_fields(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "alertname": alert.alertname,
        "workflow": alert.workflow,
        "env": alert.env,
        "severity": alert.severity,
        "status": alert.status.value,
    }


def _snapshot_parts(pairs: list[str], alerts: list[str] | None, limit: int = MAX_MESSAGE_BYTES) -> list[str]:
    """Encoded pair and alert items packed into snapshot messages of at most `limit` characters each.

    `alerts` None: the client may not read alerts, and the messages have no ``alerts`` key."""
    envelope = len(_dumps({"type": "snapshot", "part": 999999, "parts": 999999, "pairs": [], "alerts": []}))
    budget = limit - envelope
    chunks: list[tuple[list[str], list[str]]] = [([], [])]
    used = 0
    for index, items in ((0, pairs), (1, alerts or [])):
        for item in items:
            cost = len(item) + 1  # and its comma
            if used + cost > budget and (chunks[-1][0] or chunks[-1][1]):
                chunks.append(([], []))
                used = 0
            chunks[-1][index].append(item)
            used += cost
    parts = len(chunks)
    if alerts is None:
        return [f'{{"type":"snapshot","part":{n},"parts":{parts},"pairs":[{",".join(p)}]}}' for n, (p, _) in enumerate(chunks, start=1)]
    return [
        f'{{"type":"snapshot","part":{n},"parts":{parts},"pairs":[{",".join(p)}],"alerts":[{",".join(a)}]}}'
        for n, (p, a) in enumerate(chunks, start=1)
    ]


@dataclass(frozen=True)
class Subscription:
    """Which pairs a client wants; None in a dimension means all."""

    envs: frozenset[str] | None = None
    workflows: frozenset[str] | None = None

    @classmethod
    def of(cls, envs: Iterable[str] | None = None, workflows: Iterable[str] | None = None) -> Subscription:
        """From query parameters: repeated, or comma-separated."""

        def names(values: Iterable[str] | None) -> frozenset[str] | None:
            picked = frozenset(v.strip() for value in values or () for v in value.split(",") if v.strip())
            if len(picked) > _MAX_NAMES:
                raise ValueError(f"at most {_MAX_NAMES} values per dimension")
            return picked or None

        return cls(names(envs), names(workflows))

    @classmethod
    def parse(cls, message: Any) -> Subscription:
        """From a client's ``{"subscribe": {"env": [...], "workflow": [...]}}``; ValueError says what is wrong."""
        shape = 'expected {"subscribe": {"env": [...], "workflow": [...]}}'
        if not isinstance(message, dict) or set(message) != {"subscribe"}:
            raise ValueError(shape)
        body = message["subscribe"] if message["subscribe"] is not None else {}
        if not isinstance(body, dict) or not set(body) <= {"env", "workflow"}:
            raise ValueError(shape)
        lists: dict[str, list[str]] = {}
        for key in ("env", "workflow"):
            value = body.get(key)
            if value is None:
                value = []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"subscribe.{key} must be a list of strings")
            lists[key] = value
        return cls.of(lists["env"], lists["workflow"])

    def matches(self, workflow: str | None, env: str | None) -> bool:
        # An event without a workflow or env (a collector-wide alert) concerns every subscription.
        return (self.envs is None or env is None or env in self.envs) and (
            self.workflows is None or workflow is None or workflow in self.workflows
        )


# ---------------------------------------------------------------- clients


class _Client:
    """One connection: its subscription and bounded queue, on its own event loop."""

    __slots__ = ("alerts", "batch", "bound", "dropped", "first", "hub", "loop", "queue", "sending_since", "subscription", "task", "wake")

    def __init__(self, hub: LiveHub, subscription: Subscription, bound: int, *, batch: bool = False, alerts: bool = True) -> None:
        self.hub = hub
        self.subscription = subscription
        self.bound = bound
        self.batch = batch
        self.alerts = alerts  # may read alerts: gets them in snapshots and as events
        self.loop = asyncio.get_running_loop()
        self.first: deque[tuple[str, str]] = deque()  # snapshot parts, pings, errors: not counted against the bound
        self.queue: deque[tuple[str, str]] = deque()
        self.wake = asyncio.Event()
        self.dropped: str | None = None
        self.sending_since: float | None = None  # loop time the send in progress began
        self.task: asyncio.Task[None] | None = None  # the WebSocket sender, cancelled when dropped

    def offer(self, kind: str, text: str, workflow: str | None, env: str | None) -> None:
        """On the client's loop: queue one event, or drop the client if it is `bound` behind."""
        if self.dropped is not None or not self.subscription.matches(workflow, env) or (kind == "alert" and not self.alerts):
            return
        if len(self.queue) >= self.bound:
            self.drop("slow")
            return
        self.queue.append((kind, text))
        self.wake.set()

    def reset(self, subscription: Subscription, snapshot: list[str]) -> None:
        """A new subscription: what was queued for the old one is replaced by the snapshot of the new one."""
        self.subscription = subscription
        self.queue.clear()
        self.first.clear()
        self.first.extend(("snapshot", part) for part in snapshot)
        self.wake.set()

    def tell(self, kind: str, text: str) -> None:
        if self.dropped is None:
            self.first.append((kind, text))
            self.wake.set()

    def drop(self, why: str) -> None:
        if self.dropped is not None:
            return
        self.dropped = why
        self.queue.clear()
        self.first.clear()
        self.hub.dropped[why] = self.hub.dropped.get(why, 0) + 1
        self.wake.set()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    def next(self) -> tuple[str, str] | None:
        if self.first:
            return self.first.popleft()
        if self.queue:
            return self.queue.popleft()
        return None

    def next_batch(self) -> str | None:
        """For a batching client: what is queued as one JSON array (under MAX_MESSAGE_BYTES), or one message."""
        if self.first or len(self.queue) < 2:
            item = self.next()
            return None if item is None else item[1]
        texts, size = [], 2
        while self.queue and size + len(self.queue[0][1]) + 1 <= MAX_MESSAGE_BYTES:
            text = self.queue.popleft()[1]
            texts.append(text)
            size += len(text) + 1
        if not texts:  # one event larger than a message: alone, as it is
            return self.queue.popleft()[1]
        return texts[0] if len(texts) == 1 else f"[{','.join(texts)}]"


# ---------------------------------------------------------------- the hub


class LiveHub:
    """Turns runs and alert changes into events, and hands them to every subscribed client.

    `heartbeat`: seconds between pings. `queue_size`: events a client may be
    behind before it is dropped. `send_timeout`: seconds one send may block
    (the client reads nothing) before the client is dropped as dead.
    """

    def __init__(self, service: Service, *, heartbeat: float = 15.0, queue_size: int = 1000, send_timeout: float = 10.0) -> None:
        if heartbeat <= 0 or queue_size < 1 or send_timeout <= 0:
            raise ValueError("heartbeat and send_timeout must be positive, queue_size at least 1")
        self.service = service
        self.heartbeat = heartbeat
        self.queue_size = queue_size
        self.send_timeout = send_timeout
        self.dropped: dict[str, int] = {"slow": 0, "dead": 0}
        self.events: dict[str, int] = {"run": 0, "state": 0, "alert": 0}
        self._clients: dict[int, _Client] = {}
        self._status: dict[tuple[str, str], str] = {}  # the last status told, per pair: a change is a `state` event
        self._alerts: dict[int, dict[str, Any]] = {}  # open alerts, for snapshots
        self._alerts_loaded = False
        self._loading_alerts = False
        self._changed_alerts: set[int] = set()  # changed while the open alerts were being loaded
        self._attached = False
        self._closed = False
        self._tickers: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}

    # ------------------------------------------------------------ wiring

    def attach(self) -> None:
        """Listen to the service's runs and alert changes (once)."""
        if self._attached:
            return
        self._attached = True
        self.service.listeners.append(self.on_run)
        self.service.alerts.listeners.append(self.on_alert)
        for (workflow, env), pair in list(self.service.state.pairs.items()):
            self._status.setdefault((workflow, env), pair_status(pair, self.service.config.workflows.get(workflow)))

    def detach(self) -> None:
        if not self._attached:
            return
        self._attached = False
        with contextlib.suppress(ValueError):
            self.service.listeners.remove(self.on_run)
        with contextlib.suppress(ValueError):
            self.service.alerts.listeners.remove(self.on_alert)

    def close(self) -> None:
        """End every stream (for shutdown): WebSockets are closed, SSE streams end; no new client is served."""
        self._closed = True
        for client in tuple(self._clients.values()):
            self._call(client, client.drop, "closed")

    def stats(self) -> dict[str, Any]:
        """Clients connected; clients dropped by why (slow, dead, closed at shutdown); events made by type."""
        return {"clients": len(self._clients), "dropped": dict(self.dropped), "events": dict(self.events)}

    # ------------------------------------------------------------ sources

    def on_run(self, result: RunResult) -> None:
        """Service listener, called after the run is recorded in the state."""
        key = (result.workflow, result.env)
        pair = self.service.state.pairs.get(key)
        if pair is None:  # finished after its workflow was removed
            return
        status = pair_status(pair, self.service.config.workflows.get(result.workflow))
        previous = self._status.get(key, "unknown")
        self._status[key] = status
        fields = {"workflow": result.workflow, "env": result.env, **(_last_run(result) or {}), "flaky": result.flaky}
        self._publish("run", fields, result.workflow, result.env)
        if status != previous:
            self._publish("state", {"workflow": result.workflow, "env": result.env, "status": status, "previous": previous},
                          result.workflow, result.env)

    def on_alert(self, alert: Alert) -> None:
        """AlertService listener: an alert fired or changed status."""
        fields = _alert_fields(alert)
        if not self._alerts_loaded:
            self._changed_alerts.add(alert.id)
        if alert.status is Status.RESOLVED:
            self._alerts.pop(alert.id, None)
        else:
            self._alerts[alert.id] = fields
        self._publish("alert", fields, alert.workflow, alert.env)

    async def load_alerts(self) -> None:
        """Read the open alerts once, when the alert store is ready; later changes come from `on_alert`."""
        alerts = self.service.alerts
        deadline = time.monotonic() + 5.0
        while self._loading_alerts and time.monotonic() < deadline:  # another connection is loading them
            await asyncio.sleep(0.02)
        if self._alerts_loaded or self._loading_alerts or not alerts.ready:
            return
        self._loading_alerts = True
        try:
            found = await alerts.find(status=_OPEN_ALERTS, limit=10_000)
            for alert in found:
                if alert.id not in self._changed_alerts:  # an event newer than this read wins
                    self._alerts.setdefault(alert.id, _alert_fields(alert))
            self._alerts_loaded = True
            self._changed_alerts.clear()
        except Exception as exc:
            log.warning("cannot read the open alerts for live snapshots; retried at the next snapshot",
                        extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
        finally:
            self._loading_alerts = False

    def snapshot(self, subscription: Subscription = Subscription(), *, alerts: bool = True) -> list[str]:
        """The snapshot messages for `subscription`, encoded, each at most MAX_MESSAGE_BYTES; without alerts unless `alerts`."""
        workflows = self.service.config.workflows
        pairs = []
        for (workflow, env), pair in sorted(list(self.service.state.pairs.items())):
            if not subscription.matches(workflow, env):
                continue
            status = pair_status(pair, workflows.get(workflow))
            if self._status.get((workflow, env), "unknown") == "unknown":
                # First told here (or restored from history since): the next change is counted from this.
                self._status[(workflow, env)] = status
            pairs.append(_dumps({"workflow": workflow, "env": env, "status": status, "last_run": _last_run(pair.last_result)}))
        if not alerts:
            return _snapshot_parts(pairs, None)
        return _snapshot_parts(pairs, [_dumps(a) for _, a in sorted(list(self._alerts.items())) if subscription.matches(a["workflow"], a["env"])])

    # ------------------------------------------------------------ delivery

    def _publish(self, kind: str, fields: dict[str, Any], workflow: str | None, env: str | None) -> None:
        self.events[kind] = self.events.get(kind, 0) + 1
        clients = tuple(self._clients.values())
        if not clients:
            return
        text = _dumps({"type": kind, **fields})
        running = _running_loop()
        for client in clients:
            if client.loop is running:
                client.offer(kind, text, workflow, env)
            else:
                with contextlib.suppress(RuntimeError):  # its loop is closed: the client is gone
                    client.loop.call_soon_threadsafe(client.offer, kind, text, workflow, env)

    @staticmethod
    def _call(client: _Client, method: Any, *args: Any) -> None:
        """Run `method` on the client's loop: at once when we are on it, else scheduled there."""
        if _running_loop() is client.loop:
            method(*args)
            return
        with contextlib.suppress(RuntimeError):  # its loop is closed: the client is gone
            client.loop.call_soon_threadsafe(method, *args)

    def _join(self, subscription: Subscription, *, batch: bool = False, alerts: bool = True) -> _Client:
        client = _Client(self, subscription, self.queue_size, batch=batch, alerts=alerts)
        self._clients[id(client)] = client
        if self._stopping():
            client.drop("closed")
        ticker = self._tickers.get(client.loop)
        if ticker is None or ticker.done():
            self._tickers[client.loop] = client.loop.create_task(self._tick(client.loop), name="live-heartbeat")
        return client

    def _leave(self, client: _Client) -> None:
        self._clients.pop(id(client), None)

    def _stopping(self) -> bool:
        stopping = getattr(self.service, "stopping", None)
        return self._closed or (stopping is not None and stopping.is_set())

    async def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        """One per event loop with clients: heartbeats, dead senders, shutdown. No timer per client."""
        next_ping = loop.time() + self.heartbeat
        try:
            while True:
                await asyncio.sleep(min(self.heartbeat, _TICK))
                clients = [c for c in tuple(self._clients.values()) if c.loop is loop]
                if not clients:
                    return
                now = loop.time()
                stopping = self._stopping()
                ping = None
                if now >= next_ping:
                    ping = _dumps({"type": "ping", "at": round(time.time(), 3)})
                    next_ping = now + self.heartbeat
                for client in clients:
                    if stopping:
                        client.drop("closed")
                    elif client.sending_since is not None and now - client.sending_since > self.send_timeout:
                        client.drop("dead")  # one send blocked that long: the client reads nothing
                    elif ping is not None:
                        client.tell("ping", ping)
        finally:
            if self._tickers.get(loop) is asyncio.current_task():
                del self._tickers[loop]

    # ------------------------------------------------------------ WebSocket

    async def serve_websocket(self, websocket: WebSocket, *, alerts: bool = True) -> None:
        """Serve one WebSocket client; `alerts`: it may read alerts."""
        params = websocket.query_params
        try:
            subscription = Subscription.of(params.getlist("env"), params.getlist("workflow"))
        except ValueError as exc:
            await websocket.close(1008, str(exc))
            return
        await websocket.accept()
        client = self._join(subscription, batch=params.get("batch", "").lower() in ("1", "true", "yes"), alerts=alerts)
        tasks: list[asyncio.Task[None]] = []
        try:
            await self.load_alerts()
            if client.dropped is None:
                client.reset(client.subscription, self.snapshot(client.subscription, alerts=alerts))
            client.task = asyncio.create_task(self._send(websocket, client))
            tasks = [client.task, asyncio.create_task(self._receive(websocket, client))]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._leave(client)
        if client.dropped is not None:
            reason = {"slow": "too slow: events queued past the limit", "dead": "not reading", "closed": "server closing"}[client.dropped]
            code = 1001 if client.dropped == "closed" else CLOSE_TRY_AGAIN_LATER
            # The close frame waits for room to write, which a dead client never makes.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await websocket.close(code, reason)

    async def _send(self, websocket: WebSocket, client: _Client) -> None:
        loop = client.loop
        take = client.next_batch if client.batch else lambda: (item[1] if (item := client.next()) is not None else None)
        try:
            while client.dropped is None:
                text = take()
                if text is None:
                    client.wake.clear()
                    await client.wake.wait()
                    continue
                # A send blocks while the socket is full; the ticker drops a client blocked past send_timeout.
                client.sending_since = loop.time()
                await websocket.send({"type": "websocket.send", "text": text})
                client.sending_since = None
        except (WebSocketDisconnect, RuntimeError, OSError):
            client.sending_since = None  # gone, not dead: the receiver sees the disconnect too

    async def _receive(self, websocket: WebSocket, client: _Client) -> None:
        pace = RateLimiter(max_clients=1)  # each subscription costs a snapshot: a client may not ask for them in a loop
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text")
            if data is None and message.get("bytes") is not None:
                data = message["bytes"].decode("utf-8", "replace")
            if data is not None and len(data) > MAX_CLIENT_MESSAGE_BYTES:
                client.drop("closed")
                with contextlib.suppress(Exception):
                    await websocket.close(CLOSE_TOO_BIG, f"a message may be at most {MAX_CLIENT_MESSAGE_BYTES} bytes")
                return
            if pace.take(("subscribe", ""), _SUBSCRIBE_RATE, _SUBSCRIBE_BURST):
                client.tell("error", _dumps({"type": "error", "message": "too many subscriptions; at most 5 a second"}))
                continue
            try:
                subscription = Subscription.parse(json.loads(data or ""))
            except ValueError as exc:  # JSONDecodeError is a ValueError
                client.tell("error", _dumps({"type": "error", "message": str(exc)[:200]}))
                continue
            await self.load_alerts()
            client.reset(subscription, self.snapshot(subscription, alerts=client.alerts))

    # ------------------------------------------------------------ SSE

    async def stream(self, subscription: Subscription, *, alerts: bool = True) -> AsyncIterator[str]:
        """The SSE body: a snapshot, then events and heartbeat comments; ends when the client is dropped.
        `alerts`: the client may read alerts."""
        client = self._join(subscription, alerts=alerts)
        loop = client.loop
        try:
            await self.load_alerts()
            if client.dropped is None:
                client.reset(subscription, self.snapshot(subscription, alerts=alerts))
            yield "retry: 2000\n\n"
            while client.dropped is None:
                if not (client.first or client.queue):
                    client.wake.clear()
                    await client.wake.wait()
                    continue
                # What is queued goes in one chunk: one write for a burst.
                chunk, size = [], 0
                while size < _SSE_CHUNK and (item := client.next()) is not None:
                    kind, text = item
                    frame = f": ping {json.loads(text)['at']}\n\n" if kind == "ping" else f"event: {kind}\ndata: {text}\n\n"
                    chunk.append(frame)
                    size += len(frame)
                client.sending_since = loop.time()
                yield "".join(chunk)
                client.sending_since = None
        finally:
            self._leave(client)


def live_router(service: Service, hub: LiveHub | None = None, *, auth: TokenAuth | None = None) -> APIRouter:
    """The live endpoints; without `hub`, one is made and attached to `service`.

    `auth` decides who may listen and who gets alerts (default: the service's
    tokens and ``api.public_reads``, as the collector's app has them)."""
    if hub is None:
        hub = LiveHub(service)
        hub.attach()
    live = hub
    if auth is None:
        auth = TokenAuth(lambda: service.config.tokens, public_reads=lambda: service.config.settings.api.public_reads)
    guard = auth
    router = APIRouter(tags=["live"])

    @router.websocket("/api/monitoring/websocket")
    async def websocket(websocket: WebSocket) -> None:
        try:
            caller = guard.status_reader(bearer_token(websocket.headers.get("authorization")))
        except HTTPException as exc:
            await _deny(websocket, exc)
            return
        await live.serve_websocket(websocket, alerts=guard.may_read_alerts(caller))

    @router.get(
        "/api/monitoring/events",
        summary="Live updates as Server-Sent Events: a snapshot, then runs, state changes and alerts",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def events(
        env: list[str] | None = Query(None, description="Only these environments (repeat, or comma-separated)"),
        workflow: list[str] | None = Query(None, description="Only these workflows (repeat, or comma-separated)"),
        caller: Principal | None = Depends(guard.reader()),
    ) -> StreamingResponse:
        try:
            subscription = Subscription.of(env, workflow)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(live.stream(subscription, alerts=guard.may_read_alerts(caller)), media_type="text/event-stream", headers=headers)

    return router


async def _deny(websocket: WebSocket, exc: HTTPException) -> None:
    """Refuse a handshake with the HTTP status where the server can send one, else close with 1008."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers))
    else:
        await websocket.close(1008, str(exc.detail)[:120])
