"""SECURITY.md against the running code: the route matrix, tokens, limits, CORS, the sandbox, and secrets in every output.

- The matrix: every route of the app is in SECURITY.md's table, and answers
  every caller (none, an unknown token, each role) as the table says, with
  public reads on and off. Token values never appear in a response or a log.
- Limits: the rate limiter (unit and through the app), body sizes (declared,
  chunked, endless over a real socket), CORS.
- No code from config or responses: template payloads, a hostile target's
  captured `{{ ... }}` sent on verbatim, YAML tags never constructed.
- Secrets: the collector runs as a process with a secret of every kind
  planted, against the demo target and a hostile server that echoes what it
  is sent; every output is grepped for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import secrets
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from collector import auth as auth_module
from collector.api import create_app
from collector.apisecurity import RateLimiter, client_key
from collector.auth import TokenAuth
from collector.config import ApiSettings, ConfigError, RateLimitSettings, load_config
from collector.service import Service
from collector.target import create_app as create_target
from collector.template import Template, TemplateError
from tests.helpers import (
    PROBE_PASSWORD, REPO, WORKFLOWS, closing, config_with_tokens, demo_service, fast_copy, free_port, probe_environment,
    running_process, serve_in_thread, wait_until,
)

ROLES = ("viewer", "operator", "admin", "webhook")
TOKENS = {role: f"{role}-token-{secrets.token_hex(8)}" for role in ROLES}
STRANGER = f"stranger-token-{secrets.token_hex(8)}"
CALLERS: tuple[str | None, ...] = (None, "stranger", *ROLES)
ALLOWED = {
    "anyone": set(CALLERS),
    "viewer": {"viewer", "operator", "admin"},
    "operator": {"operator", "admin"},
    "admin": {"admin"},
    "webhook": {"webhook"},
}
ROUTES_TABLE = REPO / "SECURITY.md"


def bearer(caller: str | None) -> dict[str, str]:
    if caller is None:
        return {}
    return {"Authorization": f"Bearer {STRANGER if caller == 'stranger' else TOKENS[caller]}"}


def alert_payload(fingerprint: str, **labels: str) -> dict[str, Any]:
    """Alertmanager's webhook (version 4) with one firing alert."""
    alert_labels = {"alertname": "FlowprobeWorkflowFailing", "workflow": "user-login", "env": "prod", "severity": "critical", **labels}
    return {
        "version": "4", "groupKey": f"{{}}:{{fp={fingerprint!r}}}", "status": "firing", "receiver": "flowprobe",
        "groupLabels": {}, "commonLabels": alert_labels, "commonAnnotations": {}, "externalURL": "http://alertmanager.invalid",
        "truncatedAlerts": 0,
        "alerts": [{
            "status": "firing", "labels": alert_labels, "annotations": {"summary": "user-login fails in prod"},
            "startsAt": "2025-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": fingerprint,
        }],
    }


def with_api(service: Service, **changes: Any) -> None:
    """Change `api:` of the running config, as a reload would."""
    settings = service.config.settings
    service.config = replace(service.config, settings=settings.model_copy(update={"api": settings.api.model_copy(update=changes)}))


# ---------------------------------------------------------------- a collector in-process, with tokens of every role


@pytest.fixture
def secured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    """The shipped workflows, tokens of every role, a run history, an open alert, a report file and an analytics URL."""
    config = tmp_path / "config"
    for name, value in config_with_tokens(config, TOKENS, name="{role}-person", variable="TEST_{ROLE}_TOKEN").items():
        monkeypatch.setenv(name, value)
    with closing(demo_service(config, tmp_path / "data")) as service:
        service.live.attach()  # as service.start() does: runs and alerts reach the live stream
        service.ready = True
        # Nothing listens there: the pass-through answers 502, which is all the matrix needs to see.
        service.analytics_url = f"http://127.0.0.1:{free_port()}"

        async def history() -> None:
            for workflow in ("health-check", "user-login"):
                await service.run_pair(workflow, "prod")
            await service.reports.run(service.config.settings.reports.schedules[0])

        asyncio.run(history())
        service.store.flush()
        yield service


@pytest.fixture
def client(secured: Service) -> Iterator[TestClient]:
    with TestClient(create_app(secured)) as test_client:
        assert test_client.post("/api/alertmanager/webhook", json=alert_payload("fp-open"), headers=bearer("webhook")).status_code == 200
        yield test_client


# ---------------------------------------------------------------- the matrix


def documented_routes() -> dict[tuple[str, str], str]:
    """(method, path) -> who may call it, from SECURITY.md's <!-- routes --> table."""
    lines = ROUTES_TABLE.read_text(encoding="utf-8").splitlines()
    start = lines.index("<!-- routes -->") + 3  # the marker, the header, the |---| line
    table: dict[tuple[str, str], str] = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        method, path, needs = (re.fullmatch(r"`([^`]+)`", cell.strip()).group(1) for cell in line.strip("|").split("|")[:3])  # type: ignore[union-attr]
        assert (method, path) not in table, f"{method} {path} is listed twice"
        table[(method, path)] = needs
    return table


def app_routes(app: Any) -> set[tuple[str, str]]:
    """Every (method, path) the app serves (HEAD aside; WS for a WebSocket), routers included."""
    found: set[tuple[str, str]] = set()

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            original = getattr(route, "original_router", None)
            if original is not None:  # newer FastAPI keeps an included router whole instead of copying its routes
                walk(original.routes, prefix + route.include_context.prefix)
            elif getattr(route, "methods", None) is None:
                found.add(("WS", prefix + route.path))
            else:
                found.update((method, prefix + route.path) for method in route.methods if method != "HEAD")

    walk(app.routes, "")
    return found


def test_security_md_lists_every_route_of_the_app(secured: Service) -> None:
    documented = documented_routes()
    served = app_routes(create_app(secured))
    assert served == set(documented), f"not documented: {sorted(served - set(documented))}; not served: {sorted(set(documented) - served)}"
    assert set(documented.values()) <= {"anyone", "status", *ALLOWED}
    assert len(served) >= 30


def concrete(path: str, ids: dict[str, str]) -> str:
    """A path of the table with real values in place of its parameters."""
    if path.startswith("/api/reports/"):
        return path.replace("{name}", ids["report"])
    return (path.replace("{name}", "user-login").replace("{run_id}", ids["run"]).replace("{alert_id}", ids["alert"])
            .replace("{index}", "0").replace("{path:path}", "app.js"))


def body_for(path: str, caller: str | None) -> Any:
    if path == "/api/alertmanager/webhook":
        return alert_payload(f"fp-{caller}-{secrets.token_hex(4)}")
    if path.endswith("/acknowledge"):
        return {"comment": "matrix", "duration": "1h"}
    if path.endswith("/resolve"):
        return {"comment": "matrix"}
    return None


def call(client: TestClient, method: str, path: str, caller: str | None) -> tuple[int, str, str]:
    """The status, body (the first message of a stream) and headers of one call of a route by one caller."""
    headers = bearer(caller)
    if method == "WS":
        try:
            with client.websocket_connect(path, headers=headers) as ws:
                return 200, json.dumps(ws.receive_json()), ""
        except WebSocketDenialResponse as denied:
            return denied.status_code, denied.text, json.dumps(dict(denied.headers))
    if path == "/api/monitoring/events":
        with client.stream("GET", path, headers=headers) as response:
            body = next(response.iter_lines()) if response.status_code == 200 else response.read().decode()
            return response.status_code, body, json.dumps(dict(response.headers))
    response = client.request(method, path, headers=headers, json=body_for(path, caller))
    return response.status_code, response.text, json.dumps(dict(response.headers))


def allowed(needs: str, caller: str | None, public_reads: bool) -> bool:
    if needs == "status":
        return public_reads or caller in ALLOWED["viewer"]
    return caller in ALLOWED[needs]


@pytest.mark.parametrize("public_reads", [True, False], ids=["public reads", "private reads"])
def test_every_route_answers_every_caller_as_documented(
    secured: Service, client: TestClient, public_reads: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with_api(secured, public_reads=public_reads)
    ids = {
        "run": client.get("/api/workflows/user-login/runs", headers=bearer("viewer")).json()["items"][0]["run_id"],
        "alert": str(client.get("/api/alerts", headers=bearer("viewer")).json()["items"][0]["id"]),
        "report": client.get("/api/reports", headers=bearer("viewer")).json()["items"][0]["name"],
    }
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for (method, path), needs in documented_routes().items():
            for caller in CALLERS:
                status, text, headers = call(client, method, concrete(path, ids), caller)
                seen += [text, headers]
                where = f"{method} {path} by {caller or 'nobody'} ({needs}): {status} {text[:200]}"
                if allowed(needs, caller, public_reads):
                    assert status not in (401, 403), where
                    continue
                assert status == (401 if caller in (None, "stranger") else 403), where
                error = json.loads(text)["error"]
                if status == 401:
                    assert error == ("missing bearer token (Authorization: Bearer <token>)" if caller is None else "invalid bearer token"), where
                else:
                    assert error.startswith(f"the token '{caller}-person' has the role {caller}; this needs "), where
    # Tokens are never echoed, logged or put in an error, valid or not.
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert any(r.name == "flowprobe.alerts" for r in caplog.records)  # the webhook logged who called it, by name
    for token in (*TOKENS.values(), STRANGER):
        assert token not in logged
        assert not any(token in text for text in seen)


def next_message(ws: Any) -> dict[str, Any]:
    """The next message that is not a heartbeat."""
    while (message := ws.receive_json())["type"] == "ping":
        pass
    return message  # type: ignore[no-any-return]


def test_alerts_reach_only_live_clients_that_may_read_them(secured: Service, client: TestClient) -> None:
    with client.websocket_connect("/api/monitoring/websocket") as anonymous, \
            client.websocket_connect("/api/monitoring/websocket", headers=bearer("viewer")) as viewer:
        first = next_message(anonymous)
        assert first["type"] == "snapshot" and "alerts" not in first and first["pairs"]
        assert [a["alertname"] for a in next_message(viewer)["alerts"]] == ["FlowprobeWorkflowFailing"]
        assert client.post("/api/alertmanager/webhook", json=alert_payload("fp-new"), headers=bearer("webhook")).status_code == 200
        assert next_message(viewer)["type"] == "alert"
        run = client.portal.call(secured.run_pair, "health-check", "prod")  # type: ignore[union-attr]
        message = next_message(anonymous)  # the alert came first, for those who may see it; not here
        assert (message["type"], message["run_id"]) == ("run", run.run_id)  # type: ignore[union-attr]
    with client.stream("GET", "/api/monitoring/events") as response:
        snapshot = json.loads(next(line for line in response.iter_lines() if line.startswith("data:"))[5:])
        assert "alerts" not in snapshot
    with client.stream("GET", "/api/monitoring/events", headers=bearer("operator")) as response:
        snapshot = json.loads(next(line for line in response.iter_lines() if line.startswith("data:"))[5:])
        assert len(snapshot["alerts"]) == 2


def test_the_live_stream_caps_client_messages_and_paces_subscriptions(client: TestClient) -> None:
    with client.websocket_connect("/api/monitoring/websocket") as ws:
        assert next_message(ws)["type"] == "snapshot"
        for _ in range(30):  # each subscription costs a snapshot: bursts of 20, then 5 a second
            ws.send_json({"subscribe": {"env": ["prod"]}})
        answers = [next_message(ws) for _ in range(30)]
        refused = [a for a in answers if a["type"] == "error"]
        assert 5 <= len(refused) <= 10 and refused[0]["message"] == "too many subscriptions; at most 5 a second"
        assert sum(a["type"] == "snapshot" for a in answers) == 30 - len(refused)
    with client.websocket_connect("/api/monitoring/websocket") as ws:
        next_message(ws)
        ws.send_text(json.dumps({"subscribe": {"workflow": ["x" * 300_000]}}))
        with pytest.raises(WebSocketDisconnect) as closed:
            next_message(ws)
        assert closed.value.code == 1009


def test_admin_reloads_the_config_and_runs_a_report(secured: Service, client: TestClient) -> None:
    admin = bearer("admin")
    reloaded = client.post("/api/admin/reload", headers=admin)
    assert reloaded.json() == {"reloaded": True, "workflows": 6}
    ran = client.post("/api/admin/reports/0/run", headers=admin)
    assert ran.status_code == 200 and ran.json()["files"][0].startswith("/api/reports/")
    assert client.get(ran.json()["files"][0], headers=bearer("viewer")).json()["period"] == "daily"
    assert client.post("/api/admin/reports/1/run", headers=admin).json() == {"error": "no report schedule 1 (reports.schedules has 1)"}
    (secured.config_paths[0] / "broken.yaml").write_text("name: [\n")
    refused = client.post("/api/admin/reload", headers=admin)
    assert refused.status_code == 422 and "previous config keeps running" in refused.json()["error"]
    assert len(secured.config.workflows) == 6


def test_every_token_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every configured token is compared, with compare_digest on equal-length digests, wherever the match is."""
    configured = {f"token-number-{i}-{secrets.token_hex(8)}": (f"person-{i}", "viewer") for i in range(5)}
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    guard = TokenAuth(lambda: configured)
    for presented in [*configured, "x", "a-much-longer-token-than-any-configured-one-" * 4]:
        compared.clear()
        found = guard.identify(presented)
        assert (found is not None) == (presented in configured)
        assert compared == [(32, 32)] * len(configured), presented


def test_the_demo_and_compose_configs_keep_the_status_page_open(offline_environments: None, tmp_path: Path) -> None:
    """Public reads are the default: `flowprobe demo` (the shipped workflows, no flowprobe.yaml) serves its page and data to anyone."""
    service = Service([WORKFLOWS], data_dir=tmp_path, watch=False)
    assert service.config.settings.api == ApiSettings() and ApiSettings().public_reads
    with TestClient(create_app(service)) as anyone:
        for path in ("/", "/static/app.js", "/api/workflows", "/api/monitoring/dashboard/overview", "/api/monitoring/dashboard/health"):
            assert anyone.get(path).status_code == 200, path
    service.store.close()
    service.alerts.store.close()
    compose = tmp_path / "compose"
    compose.mkdir()
    for source in WORKFLOWS.glob("*.yaml"):
        (compose / source.name).write_text(source.read_text())
    (compose / "flowprobe.yaml").write_text((REPO / "deploy" / "collector" / "flowprobe.yaml").read_text())
    env = {"FLOWPROBE_WEBHOOK_TOKEN": "w" * 20, "FLOWPROBE_OPERATOR_TOKEN": "o" * 20, "FLOWPROBE_INFLUX_TOKEN": "i" * 20}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        assert load_config(compose).settings.api.public_reads


# ---------------------------------------------------------------- rate limits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    key = ("api", "203.0.113.1")
    assert [limiter.take(key, 2.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take(key, 2.0, 3) == pytest.approx(0.5)  # empty: one token comes in 1/rate seconds
    clock.now += 0.5
    assert limiter.take(key, 2.0, 3) == 0.0
    clock.now += 100  # refills up to the burst, no further
    assert [limiter.take(key, 2.0, 3) == 0.0 for _ in range(4)] == [True, True, True, False]
    assert limiter.take(("api", "203.0.113.2"), 2.0, 3) == 0.0  # another client has its own bucket
    assert limiter.limited == 2


def test_the_limiter_keeps_a_bounded_number_of_buckets() -> None:
    limiter = RateLimiter(max_clients=100, clock=Clock())
    for i in range(1000):
        limiter.take(("api", f"198.51.{i // 256}.{i % 256}"), 1.0, 1)
    assert len(limiter) == 100


@pytest.mark.parametrize(
    ("client", "key"),
    [
        (("203.0.113.7", 1), "203.0.113.7"),
        (("2001:db8:1:2:aaaa::1", 1), "2001:db8:1:2::/64"),
        (("2001:db8:1:2:ffff::9", 1), "2001:db8:1:2::/64"),  # the same /64: one bucket
        (("::ffff:203.0.113.7", 1), "203.0.113.7"),  # IPv4 mapped into IPv6 is the IPv4 client
        (("testclient", 50000), None),  # not an address (an in-process client)
        (None, None),  # a Unix socket
    ],
)
def test_clients_are_told_apart_by_address(client: tuple[str, int] | None, key: str | None) -> None:
    found = client_key({"client": client})
    assert (found[0] if found else None) == key


def limited_client(service: Service, address: str = "203.0.113.9") -> TestClient:
    return TestClient(create_app(service), client=(address, 40000))


def test_over_the_limit_a_client_gets_429_with_retry_after_and_prometheus_still_scrapes(secured: Service) -> None:
    with_api(secured, rate_limit=RateLimitSettings(rate=0.5, burst=3, scrape_rate=0.5, scrape_burst=5))
    with limited_client(secured) as one, limited_client(secured, "198.51.100.4") as other:
        assert [one.get("/api/workflows").status_code for _ in range(3)] == [200, 200, 200]
        refused = one.get("/api/workflows")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "2"  # 1 / 0.5 s, rounded up
        assert refused.json() == {"error": "too many requests from this address; retry after 2 s"}
        assert one.post("/api/alertmanager/webhook", json=alert_payload("fp-x"), headers=bearer("webhook")).status_code == 429
        # The scrape bucket is its own: the API's flood does not touch it.
        assert [one.get(path).status_code for path in ("/metrics", "/healthz", "/readyz", "/metrics", "/metrics")] == [200] * 5
        assert one.get("/metrics").status_code == 429
        assert other.get("/api/workflows").status_code == 200
        with pytest.raises(WebSocketDenialResponse) as denied:
            with one.websocket_connect("/api/monitoring/websocket"):
                pass
        assert denied.value.status_code == 429 and denied.value.headers["retry-after"] == "2"
        with_api(secured, rate_limit=RateLimitSettings(rate=0.5, burst=3, exempt=["203.0.113.0/24"]))
        assert all(one.get("/api/workflows").status_code == 200 for _ in range(10))
        with_api(secured, rate_limit=None)
        assert all(other.get("/api/workflows").status_code == 200 for _ in range(10))


def test_loopback_is_exempt_by_default(secured: Service) -> None:
    with_api(secured, rate_limit=RateLimitSettings(rate=0.5, burst=1))
    with limited_client(secured, "127.0.0.1") as local, limited_client(secured, "::1") as local6:
        assert all(c.get("/api/workflows").status_code == 200 for c in (local, local6) for _ in range(5))


def test_the_rate_limiter_costs_little(secured: Service) -> None:
    """The middleware's overhead on a request, against the same app with the limiter off (a figure, with a loose bound)."""
    app = create_app(secured)

    async def timed(rounds: int) -> float:
        transport = httpx.ASGITransport(app, client=("203.0.113.50", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://collector") as c:
            started = time.perf_counter()
            for _ in range(rounds):
                await c.get("/healthz")
            return (time.perf_counter() - started) / rounds

    with_api(secured, rate_limit=RateLimitSettings(rate=1e6, burst=1_000_000, scrape_rate=1e6, scrape_burst=1_000_000))
    on = min(asyncio.run(timed(300)) for _ in range(3))
    with_api(secured, rate_limit=None)
    off = min(asyncio.run(timed(300)) for _ in range(3))
    print(f"\nrate limiter: {on * 1e6:.0f} us per request with it, {off * 1e6:.0f} us without")
    assert on - off < 0.001


# ---------------------------------------------------------------- body size


def test_a_declared_body_over_the_limit_is_refused_unread(secured: Service, client: TestClient) -> None:
    with_api(secured, max_body_size=4096)
    before = client.get("/api/alerts", headers=bearer("viewer")).json()
    payload = alert_payload("fp-large")
    payload["alerts"][0]["annotations"]["description"] = "x" * 5000
    response = client.post("/api/alertmanager/webhook", json=payload, headers=bearer("webhook"))
    assert response.status_code == 413
    assert response.json() == {"error": "the request body is larger than 4096 bytes (api.max_body_size)"}
    # Chunked, with no Content-Length: counted as it is read.
    chunked = client.post("/api/alertmanager/webhook", content=iter([json.dumps(payload).encode()]), headers=bearer("webhook"))
    assert chunked.status_code == 413 and "4096 bytes" in chunked.json()["error"]
    assert client.get("/api/alerts", headers=bearer("viewer")).json() == before
    assert client.post("/api/alertmanager/webhook", json=alert_payload("fp-small"), headers=bearer("webhook")).status_code == 200


def test_an_endless_chunked_body_is_cut_off_at_the_limit(secured: Service) -> None:
    """Over a real socket: the server answers 413 and stops reading, so the body never has to end."""
    with_api(secured, max_body_size=64 * 1024)
    with serve_in_thread(create_app(secured)) as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = (f"POST /api/alertmanager/webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKENS['webhook']}\r\n"
                    "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            sock.sendall(head.encode())
            chunk = b"%x\r\n%s\r\n" % (16384, b" " * 16384)
            sent, answer, deadline = 0, b"", time.monotonic() + 20
            while sent < 256 * 1024 * 1024 and time.monotonic() < deadline:
                readable, writable, _ = select.select([sock], [sock], [], 1.0)
                if readable:
                    answer = sock.recv(65536)
                    break
                if writable:
                    try:
                        sent += sock.send(chunk)
                    except OSError:  # the server closed its side: read what it said
                        answer = sock.recv(65536)
                        break
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    # Socket buffers take some after the server stops reading; nothing like the endless body.
    assert sent < 32 * 1024 * 1024, sent


# ---------------------------------------------------------------- CORS


def test_cors_is_off_by_default(client: TestClient) -> None:
    evil = {"Origin": "https://evil.example"}
    assert "access-control-allow-origin" not in client.get("/api/workflows", headers=evil).headers
    preflight = client.options("/api/alerts/1/acknowledge", headers={**evil, "Access-Control-Request-Method": "POST",
                                                                   "Access-Control-Request-Headers": "authorization"})
    assert not any(name.startswith("access-control-") for name in preflight.headers)
    with pytest.raises(WebSocketDenialResponse) as denied:  # browsers apply no CORS to WebSockets: the origin is checked here
        with client.websocket_connect("/api/monitoring/websocket", headers=evil):
            pass
    assert denied.value.status_code == 403
    with client.websocket_connect("/api/monitoring/websocket", headers={"Origin": "http://testserver"}) as same:
        assert same.receive_json()["type"] == "snapshot"  # the page the collector served itself


def test_configured_origins_and_only_they_get_cors_headers(secured: Service, client: TestClient) -> None:
    with_api(secured, cors_origins=["https://status.example.com"])
    ours = {"Origin": "https://status.example.com"}
    response = client.get("/api/workflows", headers=ours)
    assert response.headers["access-control-allow-origin"] == "https://status.example.com"
    assert "Origin" in response.headers["vary"]
    assert "access-control-allow-origin" not in client.get("/api/workflows", headers={"Origin": "https://evil.example"}).headers
    preflight = client.options("/api/alerts/1/acknowledge", headers={**ours, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204
    assert "Authorization" in preflight.headers["access-control-allow-headers"]
    assert "POST" in preflight.headers["access-control-allow-methods"]
    refused = client.get("/api/alerts", headers=ours)  # errors carry the header too, so the page can read them
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://status.example.com"
    with client.websocket_connect("/api/monitoring/websocket", headers=ours) as ws:
        assert ws.receive_json()["type"] == "snapshot"


# ---------------------------------------------------------------- no code from config or responses


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ secrets.__class__ }}",
        "{{ base_url.__init__.__globals__ }}",
        "{{ __import__('os').system('id') }}",
        "{{ __builtins__ }}",
        "{{ config.__dict__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ 7*7 }}",
        "{{ uuid.__globals__ }}",
        "{{ now().__class__ }}",
    ],
)
def test_template_injection_payloads_fail_with_a_clear_error(payload: str) -> None:
    with pytest.raises(TemplateError) as error:
        Template.parse(payload).render({"base_url": "http://x", "secrets.X": "s"}, __import__("random").Random(0))
    message = str(error.value)
    assert message.startswith(("cannot parse {{", "{{ ")) and ("not allowed" in message or "use a name like" in message), message


def test_statements_of_other_template_languages_are_plain_text() -> None:
    text = "{% for x in ().__class__.__mro__ %}{% endfor %}{# comment #}${7*7}#{7*7}"
    assert Template.parse(text).render({}, __import__("random").Random(0)) == text


def test_a_dunder_name_in_a_workflow_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "environments.yaml").write_text("environments:\n  prod: {base_url: 'http://127.0.0.1:1'}\n")
    (tmp_path / "probe.yaml").write_text(
        'name: probe\nschedule: {every: 30s}\nsteps:\n  - name: ping\n    request: {url: "{{ base_url.__class__ }}/x"}\n')
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path)
    assert "names like __class__ are not allowed" in str(error.value)


class Hostile:
    """A target that answers with template syntax, echoes what it is sent, and records every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(routes=[
            Route("/inject", self.inject),
            Route("/echo", self.echo, methods=["POST"]),
            Route("/api/v2/write", self.influx, methods=["POST"]),
            Route("/api/v2/silences", self.silence, methods=["POST"]),
            Route("/api/v2/alerts", self.alerts, methods=["GET", "POST"]),
            Route("/api/v2/silence/{id}", self.expire, methods=["DELETE"]),
        ])

    async def record(self, request: Request) -> bytes:
        body = await request.body()
        self.requests.append({"path": request.url.path, "headers": dict(request.headers), "body": body.decode("utf-8", "replace")})
        return body

    async def inject(self, request: Request) -> Response:
        await self.record(request)
        return JSONResponse({"payload": "{{ secrets.PROBE_PASSWORD }}", "helper": "{{ uuid() }}", "nested": {"t": "{{ base_url }}"}})

    async def echo(self, request: Request) -> Response:
        body = await self.record(request)
        return JSONResponse({"echo": json.loads(body or b"{}"), "authorization": request.headers.get("authorization")})

    async def influx(self, request: Request) -> Response:
        await self.record(request)
        # A hostile (or buggy) server that puts the credential it was sent in its error.
        return JSONResponse({"code": "unauthorized", "message": f"token {request.headers.get('authorization')} is invalid"}, status_code=401)

    async def silence(self, request: Request) -> Response:
        await self.record(request)
        return JSONResponse({"silenceID": "silence-1"})

    async def alerts(self, request: Request) -> Response:
        await self.record(request)
        return JSONResponse([])

    async def expire(self, request: Request) -> Response:
        await self.record(request)
        return Response(status_code=200)


INJECTED = """\
name: injected
schedule: {every: 1s}
environments: [prod]
variables: {hostile: "HOSTILE"}
steps:
  - name: fetch
    request: {url: "{{ hostile }}/inject"}
    capture:
      payload: {json: "$.payload"}
      helper: {json: "$.helper"}
      nested: {json: "$.nested"}
    expect: {status: 200}
  - name: reuse
    request:
      method: POST
      url: "{{ hostile }}/echo"
      headers: {X-Payload: "{{ payload }}"}
      json: {payload: "{{ payload }}", helper: "{{ helper }}", text: "got {{ payload }}", nested: "{{ nested }}"}
    expect: {status: 200}
"""


def test_captured_template_syntax_is_sent_on_verbatim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = Hostile()
    with serve_in_thread(hostile.app) as url:
        config = tmp_path / "config"
        config.mkdir()
        (config / "environments.yaml").write_text((WORKFLOWS / "environments.yaml").read_text())
        (config / "injected.yaml").write_text(INJECTED.replace("HOSTILE", url))
        for name, value in probe_environment({"prod": url}).items():
            monkeypatch.setenv(name, value)
        service = Service([config], data_dir=tmp_path / "data", envs=["prod"], watch=False)
        result = asyncio.run(service.run_pair("injected", "prod"))
        service.store.close()
        service.alerts.store.close()
    assert result is not None and result.outcome == "success", result
    sent = next(r for r in hostile.requests if r["path"] == "/echo")
    assert json.loads(sent["body"]) == {
        "payload": "{{ secrets.PROBE_PASSWORD }}",
        "helper": "{{ uuid() }}",
        "text": "got {{ secrets.PROBE_PASSWORD }}",
        "nested": {"t": "{{ base_url }}"},  # a template that is one expression keeps the captured value's type
    }
    assert sent["headers"]["x-payload"] == "{{ secrets.PROBE_PASSWORD }}"
    assert PROBE_PASSWORD not in json.dumps(hostile.requests)


@pytest.mark.parametrize(
    "document",
    [
        "name: !!python/object/apply:os.system ['touch {marker}']\nschedule: {{every: 30s}}\nsteps: []\n",
        "!!python/object/apply:os.system\nargs: ['touch {marker}']\n",
        "name: !!python/object/new:subprocess.Popen [['touch', '{marker}']]\nschedule: {{every: 30s}}\nsteps: []\n",
        "name: x\nschedule: !!python/object:collections.OrderedDict {{every: 30s}}\nsteps: [{{name: '{marker}'}}]\n",
    ],
)
def test_python_tags_in_yaml_construct_nothing(tmp_path: Path, document: str) -> None:
    """YAML is read safely: a Python tag builds no object and runs nothing; the file is a config error."""
    marker = tmp_path / "executed"
    (tmp_path / "environments.yaml").write_text("environments:\n  prod: {base_url: 'http://127.0.0.1:1'}\n")
    (tmp_path / "evil.yaml").write_text(document.format(marker=marker))
    with pytest.raises(ConfigError):
        load_config(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("!!python/object/apply:os.system ['true']", "!!python/object/apply:os.system"),
        ("!!python/name:os.system", "!!python/name:os.system"),
        ("!custom x", "!custom"),
        ("!!binary aGVsbG8=", "!!binary"),
    ],
)
def test_yaml_tags_are_refused_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, tag: str) -> None:
    (tmp_path / "environments.yaml").write_text("environments:\n  prod: {base_url: 'http://127.0.0.1:1'}\n")
    (tmp_path / "evil.yaml").write_text(f"name: {value}\nschedule: {{every: 30s}}\nsteps: [{{name: a, request: {{url: 'x'}}}}]\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        load_config(".")
    assert str(error.value) == f"evil.yaml:1: name: YAML tag {tag} is not supported"


# ---------------------------------------------------------------- secrets in every output


LEAK_PROBE = """\
name: leak-probe
schedule: {every: 1s}
environments: [prod]
variables: {hostile: "HOSTILE"}
steps:
  - name: send
    request:
      method: POST
      url: "{{ hostile }}/echo"
      headers: {Authorization: "Bearer {{ secrets.PROBE_PASSWORD }}"}
      json: {email: "{{ secrets.PROBE_EMAIL }}", password: "{{ secrets.PROBE_PASSWORD }}"}
    capture:
      echoed: {json: "$.echo.password"}
      whole: {json: "$.echo"}
    expect: {status: 200}
  - name: fail-showing-it
    request:
      method: POST
      url: "{{ hostile }}/echo"
      json: {again: "{{ echoed }}", whole: "{{ whole }}"}
    expect:
      status: 200
      json: {"$.echo.again": {eq: "not the password"}}
"""


@contextlib.contextmanager
def smtp_server(password: str) -> Iterator[tuple[int, list[bytes]]]:
    """A real SMTP server (aiosmtpd) that takes AUTH LOGIN/PLAIN over plain text; yields its port and the mails."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    mails: list[bytes] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            mails.append(envelope.content)
            return "250 OK"

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        return AuthResult(success=data.password.decode() == password)

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port, authenticator=authenticate, auth_require_tls=False)
    controller.start()
    try:
        yield port, mails
    finally:
        controller.stop()


def test_no_secret_reaches_any_output(tmp_path: Path) -> None:
    planted = {
        "probe email": f"probe-{secrets.token_hex(6)}@flowprobe.invalid",
        "probe password": f"pw-{secrets.token_hex(12)}",
        "influx token": f"influx-{secrets.token_hex(12)}",
        "smtp password": f"smtp-{secrets.token_hex(12)}",
        **{f"{role} token": f"{role}-{secrets.token_hex(12)}" for role in ROLES},
    }
    hostile = Hostile()
    outputs: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(serve_in_thread(create_target(demo_email=planted["probe email"], demo_password=planted["probe password"])))
        hostile_url = stack.enter_context(serve_in_thread(hostile.app))
        smtp_port, mails = stack.enter_context(smtp_server(planted["smtp password"]))
        config = fast_copy(tmp_path / "config")
        (config / "leak-probe.yaml").write_text(LEAK_PROBE.replace("HOSTILE", hostile_url))
        settings = {
            "alerting": {
                "alertmanager_url": hostile_url,
                "tokens": [{"name": f"{role}-person", "role": role, "token": {"env": f"LEAK_{role.upper()}_TOKEN"}} for role in ROLES],
                "escalation": {"critical": [{"after": "1s", "to": "oncall"}]},
                "escalation_check": "1s",
            },
            "influx": {"url": hostile_url, "org": "o", "bucket": "b", "token": {"env": "LEAK_INFLUX_TOKEN"}, "flush_interval": "200ms",
                       "retry_initial": "200ms", "retry_max": "1s"},
            "reports": {
                "smtp": {"host": "127.0.0.1", "port": smtp_port, "sender": "flowprobe@flowprobe.invalid", "username": "flowprobe",
                         "password": {"env": "LEAK_SMTP_PASSWORD"}},
                "schedules": [{"cron": "0 6 * * *", "period": "daily", "formats": ["html", "csv", "json"], "email": ["sre@flowprobe.invalid"]}],
            },
        }
        (config / "flowprobe.yaml").write_text(json.dumps(settings))
        env = {
            **probe_environment({"prod": target}),
            "FLOWPROBE_PROBE_EMAIL": planted["probe email"],
            "FLOWPROBE_PROBE_PASSWORD": planted["probe password"],
            "LEAK_INFLUX_TOKEN": planted["influx token"],
            "LEAK_SMTP_PASSWORD": planted["smtp password"],
            **{f"LEAK_{role.upper()}_TOKEN": planted[f"{role} token"] for role in ROLES},
        }
        data = tmp_path / "data"
        base = f"http://127.0.0.1:{free_port()}"
        log = tmp_path / "collector.log"
        flowprobe = str(Path(sys.executable).with_name("flowprobe"))
        args = [flowprobe, "run", "--config", str(config), "--env", "prod", "--listen", base.removeprefix("http://"),
                "--data-dir", str(data), "--log-level", "debug", "--no-watch", "--grace", "2"]
        collector = stack.enter_context(running_process(args, env=env, log=log))
        token = {role: {"Authorization": f"Bearer {planted[f'{role} token']}"} for role in ROLES}
        api = stack.enter_context(httpx.Client(base_url=base, timeout=10))
        responses: list[httpx.Response] = []

        def get(path: str, role: str | None = "viewer", **params: Any) -> httpx.Response:
            response = api.get(path, headers=token[role] if role else {}, params=params)
            responses.append(response)
            return response

        wait_until(lambda: collector.poll() is None and get("/readyz", None).status_code == 200, timeout=30, what="the collector")
        wait_until(lambda: all(i["last_run"] for i in get("/api/workflows").json()["items"]), timeout=30, what="every workflow to run")
        wait_until(lambda: any(r["path"] == "/api/v2/write" for r in hostile.requests), what="a write to the hostile InfluxDB")
        # An alert in, acknowledged (a silence at the hostile Alertmanager), another one escalated, a report made and mailed.
        for fingerprint in ("fp-ack", "fp-escalate"):
            posted = api.post("/api/alertmanager/webhook", json=alert_payload(fingerprint), headers=token["webhook"])
            assert posted.status_code == 200, posted.text
        alert_ids = [a["id"] for a in get("/api/alerts").json()["items"]]
        ack = api.post(f"/api/alerts/{min(alert_ids)}/acknowledge", json={"comment": "looking"}, headers=token["operator"])
        assert ack.status_code == 200, ack.text
        responses.append(ack)
        report = api.post("/api/admin/reports/0/run", headers=token["admin"])
        assert report.status_code == 200, report.text
        responses.append(report)
        wait_until(lambda: mails, what="the report mail")
        wait_until(lambda: any(r["path"] == "/api/v2/alerts" and r["body"].startswith("[") for r in hostile.requests if r["body"]),
                   what="an escalation")
        # Every read of the API, with real ids; errors too.
        for item in get("/api/workflows").json()["items"]:
            for run in get(f"/api/workflows/{item['workflow']}/runs", limit=20).json()["items"]:
                get(f"/api/runs/{run['run_id']}")
        for alert_id in alert_ids:
            get(f"/api/alerts/{alert_id}")
        for path in ("overview", "executions", "alerts", "metrics", "health"):
            get(f"/api/monitoring/dashboard/{path}")
        for kind in ("runs", "metrics"):
            for form in ("csv", "json"):
                get("/api/monitoring/export", kind=kind, format=form)
        for item in get("/api/reports").json()["items"]:
            get(item["url"])
        for path in ("/metrics", "/api/monitoring/dashboard/overview", "/openapi.json", "/api/workflows/nope/runs", "/api/runs/nope"):
            get(path, None)
        get("/api/alerts", "webhook")
        api.headers["Authorization"] = "Bearer not-a-token-at-all"
        get("/api/alerts", None)
        del api.headers["Authorization"]
        with api.stream("GET", "/api/monitoring/events", headers=token["viewer"]) as sse:
            outputs["SSE snapshot"] = next(line for line in sse.iter_lines() if line.startswith("data:"))
        from websockets.sync.client import connect

        with connect(base.replace("http", "ws") + "/api/monitoring/websocket", additional_headers=token["viewer"]) as ws:
            outputs["WebSocket snapshot"] = str(ws.recv(timeout=10))
        collector.terminate()
        collector.wait(timeout=30)
    rendered = subprocess.run([flowprobe, "report", "--period", "daily", "--format", "html", "--output", "-", "--config", str(config),
                               "--data-dir", str(data)], env={**os.environ, **env}, capture_output=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    rules_file, rule_tests = tmp_path / "flowprobe.rules.yml", tmp_path / "flowprobe.test.yml"
    rules = subprocess.run([flowprobe, "rules", "--config", str(config), "--rules", str(rules_file), "--tests", str(rule_tests)],
                           env={**os.environ, **env}, capture_output=True, timeout=60)
    assert rules.returncode == 0, rules.stderr

    outputs["the collector's log"] = log.read_text(errors="replace")
    for number, response in enumerate(responses):
        outputs[f"response {number}: {response.request.method} {response.request.url}"] = response.text + json.dumps(dict(response.headers))
    outputs["flowprobe report"] = rendered.stdout.decode(errors="replace") + rendered.stderr.decode(errors="replace")
    outputs["flowprobe rules"] = rules_file.read_text() + rule_tests.read_text() + rules.stdout.decode(errors="replace")
    for number, mail in enumerate(mails):
        parts = [p.get_payload(decode=True) or b"" for p in message_from_bytes(mail).walk() if not p.is_multipart()]
        outputs[f"mail {number}"] = (mail + b"".join(parts)).decode(errors="replace")
    for request in hostile.requests:
        if request["path"].startswith(("/api/v2/alerts", "/api/v2/silence")):  # what the collector told Alertmanager
            outputs[f"to Alertmanager: {request['path']}"] = json.dumps(request)
    for path in sorted(data.rglob("*")):
        if path.is_file():
            outputs[f"file {path.relative_to(data)}"] = path.read_bytes().decode("latin-1")

    # The secrets were used where they belong (so their absence elsewhere means something): the probe sent the
    # password to the target, the sink sent its token to InfluxDB, the mail went through SMTP AUTH with the password.
    assert any(planted["probe password"] in r["body"] for r in hostile.requests if r["path"] == "/echo")
    assert any(r["headers"].get("authorization") == f"Token {planted['influx token']}" for r in hostile.requests if r["path"] == "/api/v2/write")
    if os.environ.get("FLOWPROBE_SHOW_OUTPUTS"):
        print("\n".join(f"{len(text):9d}  {where}" for where, text in outputs.items()))
    # The outputs are real: the probe ran, failed showing its value, the sink was refused, a report was mailed.
    assert "[REDACTED]" in outputs["the collector's log"] and "leak-probe" in outputs["the collector's log"]
    assert any("InfluxDB" in line or "influx" in line for line in outputs["the collector's log"].splitlines())
    assert any(name.startswith("file reports/") for name in outputs) and mails
    assert sum(1 for r in hostile.requests if r["path"] == "/echo") >= 2
    assert any("/api/runs/" in where and "[REDACTED]" in text for where, text in outputs.items())  # the echoed capture, masked
    leaks = [f"{what} in {where}" for where, text in outputs.items() for what, value in planted.items() if value in text]
    assert not leaks, "\n".join(leaks)
