"""The status page in a real browser, against a real collector probing a real demo target.

Chromium (Debian's /usr/bin/chromium) runs headless under Playwright's sync
API, in the test thread; the collector runs on its own event loop in another
thread, with the six shipped workflows every second against the demo target
under uvicorn. The app is collector.api.create_app, plus page_router() if it
does not serve the page yet.

The tests find out what of the final contract the app has (the dashboard
API, the WebSocket, SSE) and skip what needs a missing part, naming it. The
others pass either way: on what is there, or on the page's fallbacks
(/api/workflows for the overview, polling for live updates).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI
from starlette.routing import Match

from collector.api import create_app
from collector.analytics_api import analytics_router
from collector.page import page_router
from collector.service import ApiServer, Service
from collector.target import create_app as create_target
from tests.helpers import PROBE_EMAIL, PROBE_PASSWORD, fast_copy, free_port, probe_environment, running_alertmanager, serve_in_thread, wait_until

try:
    from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("Playwright for Python is not installed (pip install playwright; the browser is Debian's chromium)", allow_module_level=True)

CHROMIUM = os.environ.get("FLOWPROBE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():  # pragma: no cover - depends on the environment
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; or set FLOWPROBE_CHROMIUM)", allow_module_level=True)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
AXE = REPO / "tests" / "vendor" / "axe-core" / "axe.min.js"
WORKFLOW_NAMES = {"health-check", "user-login", "registration", "farm-creation", "product-listing", "order-placement"}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
RED = "rgb(180, 35, 24)"  # --bad in app.css (light scheme)
HEALTHY = re.compile("^(up|degraded)$")

OVERVIEW = "/api/monitoring/dashboard/overview"
WEBSOCKET = "/api/monitoring/websocket"
EVENTS = "/api/monitoring/events"
POLL_SECONDS = 10  # POLL_SECONDS in collector/static/live.js


# ---------------------------------------------------------------- the stack


class Collector:
    """A collector.service.Service and its API (with the page) on an event loop in a thread."""

    def __init__(self, config: Path, data: Path) -> None:
        self.config, self.data = config, data
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.base = ""
        self.thread = threading.Thread(target=self._run, name="collector", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self.error = exc
            self.started.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        service = Service([self.config], data_dir=self.data, envs=["prod"], watch=False, grace=2.0)
        self.service = service
        app = create_app(service)
        # Asked of the routes: a request to the overview would fill its cache before the first runs.
        self.has_overview, self.has_events = _serves(app, OVERVIEW), _serves(app, EVENTS)
        if not _serves(app, "/"):
            app.include_router(page_router())  # until create_app includes it
        api = ApiServer(app, "127.0.0.1", 0)
        await api.start()
        await service.start()
        self.base = f"http://127.0.0.1:{api.port}"
        self.started.set()
        await self.stopping.wait()
        await service.stop()
        await api.stop()

    def __enter__(self) -> Collector:
        self.thread.start()
        if not self.started.wait(30) or self.error is not None:
            raise AssertionError(f"the collector did not start: {self.error!r}")
        return self

    def __exit__(self, *_: object) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stopping.set)
            self.thread.join(timeout=20)


def _serves(app: FastAPI, path: str) -> bool:
    """Whether a GET of `path` reaches a route of `app` (included routers too), without a request."""
    scope = {"type": "http", "path": path, "method": "GET", "root_path": "", "query_string": b"", "headers": []}
    return any(route.matches(scope)[0] == Match.FULL for route in app.routes)


def _websocket_answers(base: str) -> bool:
    """Whether the collector accepts a WebSocket at WEBSOCKET: a handshake answered 101.

    Also false when the route exists but uvicorn has no WebSocket library (websockets or wsproto)."""
    host, port = base.removeprefix("http://").split(":")
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = (f"GET {WEBSOCKET} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(handshake.encode())
        return sock.recv(1024).split(b"\r\n", 1)[0].split(b" ")[1:2] == [b"101"]


class Stack:
    def __init__(self, target: str, collector: Collector, alertmanager: str | None, tokens: dict[str, str]) -> None:
        self.target, self.collector, self.alertmanager, self.tokens = target, collector, alertmanager, tokens
        self.base = collector.base
        # What of the final contract this collector has: the tests that need the rest say so and skip.
        self.endpoints = {OVERVIEW: collector.has_overview, EVENTS: collector.has_events, WEBSOCKET: _websocket_answers(self.base)}

    def has(self, path: str) -> bool:
        return self.endpoints[path]

    def states(self) -> dict[str, Any]:
        items = httpx.get(f"{self.base}/api/workflows", timeout=5).json()["items"]
        return {i["workflow"]: (i["last_run"] or {}).get("outcome") for i in items}

    def wait_healthy(self) -> None:
        wait_until(lambda: self.states() == dict.fromkeys(WORKFLOW_NAMES, "success"), timeout=30, what="all six workflows to succeed")



def firing_alert(workflow: str, severity: str, fingerprint: str) -> dict[str, Any]:
    """An Alertmanager webhook (payload version 4) with one firing alert, as the rules would raise it."""
    labels = {"alertname": "FlowprobeWorkflowFailing", "workflow": workflow, "env": "prod", "severity": severity, "step": "place-order"}
    return {
        "version": "4", "groupKey": f'{{}}:{{workflow="{workflow}"}}', "status": "firing", "receiver": "flowprobe",
        "groupLabels": {}, "commonLabels": labels, "commonAnnotations": {}, "externalURL": "http://alertmanager.invalid",
        "alerts": [{
            "status": "firing", "labels": labels,
            "annotations": {"summary": f"{workflow} fails in prod at place-order"},
            "startsAt": datetime.now(timezone.utc).isoformat(), "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": fingerprint,
        }],
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("status-page")
    tokens = {role: f"{role}-{secrets.token_hex(12)}" for role in ("webhook", "viewer", "operator")}
    with contextlib.ExitStack() as stop, pytest.MonkeyPatch.context() as env:
        target = stop.enter_context(serve_in_thread(create_target(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD)))
        # A real Alertmanager where Debian's package is installed: an acknowledgement is a silence there.
        alertmanager = stop.enter_context(running_alertmanager(tmp / "alertmanager")) if shutil.which("prometheus-alertmanager") else None
        config = fast_copy(tmp / "workflows")
        alerting: dict[str, Any] = {"tokens": [{"name": f"page-{role}", "role": role, "token": {"env": f"TEST_{role.upper()}_TOKEN"}} for role in tokens]}
        if alertmanager:
            alerting["alertmanager_url"] = alertmanager
        (config / "flowprobe.yaml").write_text(yaml.safe_dump({"alerting": alerting}))
        for name, value in (probe_environment({"prod": target}) | {f"TEST_{r.upper()}_TOKEN": t for r, t in tokens.items()}).items():
            env.setenv(name, value)
        collector = stop.enter_context(Collector(config, tmp / "data"))
        stack = Stack(target, collector, alertmanager, tokens)
        stack.wait_healthy()
        webhook = {"Authorization": f"Bearer {tokens['webhook']}"}
        wait_until(lambda: httpx.post(f"{stack.base}/api/alertmanager/webhook", json=firing_alert("order-placement", "critical", "a1b2c3"),
                                      headers=webhook, timeout=5).status_code == 200, what="the webhook to take an alert")
        yield stack


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        yield browser
        browser.close()


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


class Session:
    """One browser context: uncaught errors and CSP violations in the page fail the test."""

    def __init__(self, browser: Browser, stack: Stack, viewport: dict[str, int], **options: Any) -> None:
        self.context: BrowserContext = browser.new_context(viewport=viewport, reduced_motion="reduce", color_scheme="light", **options)
        self.page: Page = self.context.new_page()
        self.problems: list[str] = []
        self.page.on("pageerror", lambda error: self.problems.append(f"uncaught: {error}"))
        self.page.on("console", self._console)
        self.stack = stack

    def _console(self, message: Any) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.problems.append(f"CSP: {message.text}")

    def open(self) -> Page:
        self.page.goto(self.stack.base + "/")
        rows = self.page.locator("#pairs-body tr")
        expect(rows).to_have_count(len(WORKFLOW_NAMES), timeout=10_000)
        return self.page

    def close(self) -> None:
        self.context.close()
        assert not self.problems, self.problems


@pytest.fixture
def session(browser: Browser, stack: Stack) -> Iterator[Session]:
    opened = Session(browser, stack, DESKTOP)
    yield opened
    opened.close()


def axe_violations(page: Page, base: str) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations (WCAG 2.x A and AA, and best practices) of the page as it is now.

    axe is served from the page's own origin (intercepted), so the page's CSP stays on while it runs."""
    page.route(f"{base}/__axe.min.js", lambda route: route.fulfill(body=AXE.read_text(), content_type="text/javascript"))
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(url=f"{base}/__axe.min.js")
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']},
                                               resultTypes: ['violations']});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
        }"""
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


def row(page: Page, workflow: str) -> Any:
    return page.locator(f'#pairs-body tr[data-workflow="{workflow}"][data-env="prod"]')


def save_artifact(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    artifacts = os.environ.get("FLOWPROBE_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    return path


# ---------------------------------------------------------------- the page's files


def test_page_and_its_files_are_served_with_types_and_cache_headers(stack: Stack) -> None:
    page = httpx.get(stack.base + "/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-cache" and page.headers["x-content-type-options"] == "nosniff"
    for name, kind in (("app.js", "text/javascript; charset=utf-8"), ("live.js", "text/javascript; charset=utf-8"), ("app.css", "text/css; charset=utf-8"),
                       ("favicon.svg", "image/svg+xml")):
        response = httpx.get(f"{stack.base}/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"] == kind, name
        assert response.headers["cache-control"] == "no-cache"
        again = httpx.get(f"{stack.base}/static/{name}", headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304 and not again.content
    assert httpx.head(f"{stack.base}/static/app.js").status_code == 200
    for bad in ("../api.py", "..%2fapi.py", "%2e%2e/page.py", "nope.js", "", "vendor", ".hidden.js"):
        assert httpx.get(f"{stack.base}/static/{bad}").status_code == 404, bad


def test_analytics_pass_through(stack: Stack) -> None:
    """With analytics_url the collector passes the worker's findings through, query and status included; 502 when it is away."""
    worker = FastAPI()
    scores = {"threshold": 0.9, "source": "history", "last_run": time.time(),
              "items": [{"workflow": "health-check", "env": "prod", "signal": "latency", "score": 0.97, "anomaly": True, "value": 0.3, "at": time.time()}]}
    worker.get("/api/analytics/anomalies")(lambda: scores)
    worker.get("/api/analytics/incidents")(lambda open: {"open_only": open, "items": []})
    with serve_in_thread(worker) as worker_url:
        app = FastAPI()
        app.include_router(analytics_router(lambda: worker_url))
        with serve_in_thread(app) as page_url:
            assert httpx.get(f"{page_url}/api/analytics/anomalies").json() == scores
            assert httpx.get(f"{page_url}/api/analytics/incidents", params={"open": "true"}).json() == {"open_only": "true", "items": []}
            missing = httpx.get(f"{page_url}/api/analytics/incidents")  # the worker's own 422 for a missing parameter
            assert missing.status_code == 422
            assert httpx.get(f"{page_url}/api/analytics/predictions").status_code == 404  # this worker has no such route
    app = FastAPI()
    app.include_router(analytics_router(lambda: f"http://127.0.0.1:{free_port()}"))
    with serve_in_thread(app) as page_url:
        away = httpx.get(f"{page_url}/api/analytics/anomalies")
        assert away.status_code == 502 and "127.0.0.1" not in away.text
    # The collector of these tests has no analytics_url: 404 with the reason, and the page hides its badges.
    none = httpx.get(f"{stack.base}/api/analytics/anomalies")
    assert none.status_code == 404 and "analytics_url" in none.json()["error"]


# ---------------------------------------------------------------- in the browser


def test_page_loads_with_the_six_workflows(session: Session) -> None:
    page = session.open()
    names = {page.locator("#pairs-body tr th .name").nth(i).inner_text() for i in range(len(WORKFLOW_NAMES))}
    assert names == WORKFLOW_NAMES
    for heading in ("System health", "Workflow executions", "Alerts", "Performance"):
        expect(page.get_by_role("heading", level=2, name=heading)).to_be_visible()
    # degraded is healthy too: a run slower than its latency SLO (on a busy test machine) is degraded, not down.
    for name in WORKFLOW_NAMES:
        expect(row(page, name)).to_have_attribute("data-status", HEALTHY, timeout=15_000)
    expect(page.locator("#health")).to_have_attribute("data-state", HEALTHY)
    # The charts are drawn from the runs: bars, heatmap cells, the latency line and one sparkline per workflow.
    expect(page.locator("#outcomes-chart rect.bar-ok").first).to_be_attached()
    expect(page.locator("#heatmap rect.heat:not(.heat-0)").first).to_be_attached()
    expect(page.locator("#latency-chart path.line")).to_be_attached()
    expect(page.locator("#pairs-body svg.sparkline path.line")).to_have_count(len(WORKFLOW_NAMES))
    expect(page.locator("#recent-runs li").first).to_be_visible()
    # No analytics worker configured: no anomaly badge; the prediction place is there and hidden.
    expect(page.locator(".badge.anomaly")).to_have_count(0)
    expect(page.locator("[data-prediction]").first).to_be_hidden()
    # The collector's own figures, from the dashboard API or else its Prometheus exposition.
    expect(page.locator("#stat-memory")).not_to_have_text("—")
    expect(page.locator("#stat-health")).not_to_have_text("—")
    expected_source = "overview" if session.stack.has(OVERVIEW) else "workflows"
    expect(page.locator("body")).to_have_attribute("data-source", expected_source)


def test_the_dashboard_api_feeds_the_page(session: Session) -> None:
    if not session.stack.has(OVERVIEW):
        pytest.skip(f"needs GET {OVERVIEW} (collector/dashboard_api.py), not in create_app yet; the page falls back to /api/workflows meanwhile")
    page = session.open()
    expect(page.locator("body")).to_have_attribute("data-source", "overview")
    expect(page.locator('#pairs-body td[data-label="Uptime"]').first).to_contain_text("%")
    expect(page.locator("#stat-cpu")).not_to_have_text("—", timeout=20_000)


def test_updates_arrive_over_the_websocket(session: Session) -> None:
    if not session.stack.has(WEBSOCKET):
        pytest.skip(f"needs WS {WEBSOCKET} (collector/live.py in create_app, and uvicorn with the websockets library); "
                    "the page falls back to SSE, then polling, meanwhile")
    page = session.open()
    expect(page.locator("body")).to_have_attribute("data-transport", "websocket", timeout=10_000)
    page.evaluate("window.__notReloaded = true")
    first = page.locator("#recent-runs li button").first.get_attribute("data-run")
    expect(page.locator("#recent-runs li button").first).not_to_have_attribute("data-run", first or "", timeout=10_000)
    assert page.evaluate("window.__notReloaded === true")


def test_falls_back_to_server_sent_events_when_the_websocket_fails(session: Session) -> None:
    if not session.stack.has(EVENTS):
        pytest.skip(f"needs GET {EVENTS} (collector/live.py), not in create_app yet; the page polls meanwhile")
    # The upgrade is accepted and closed at once, as a proxy that does not pass WebSockets would.
    session.page.route_web_socket(re.compile(f".*{WEBSOCKET}$"), lambda ws: ws.close())
    page = session.open()
    expect(page.locator("body")).to_have_attribute("data-transport", "sse", timeout=10_000)
    page.evaluate("window.__notReloaded = true")
    newest = page.locator("#recent-runs li button").first
    expect(newest).to_be_visible()
    expect(newest).not_to_have_attribute("data-run", newest.get_attribute("data-run") or "", timeout=10_000)
    assert page.evaluate("window.__notReloaded === true")


def test_run_detail_shows_steps_phases_and_redacted_captures(session: Session) -> None:
    page = session.open()
    opener = row(page, "user-login").get_by_role("button", name="Last run of user-login in prod")
    # The row can arrive before its runs, with the button still disabled; a disabled button takes no focus.
    expect(opener).to_be_enabled()
    opener.focus()
    expect(opener).to_be_focused()
    page.keyboard.press("Enter")  # the keyboard opens it, and Escape below closes it
    dialog = page.get_by_role("dialog", name="user-login · prod")
    expect(dialog).to_be_visible()
    steps = dialog.locator("li.step")
    expect(steps).to_have_count(2)
    expect(steps.nth(0).locator("h4")).to_have_text("login")
    expect(steps.nth(1).locator("h4")).to_have_text("profile")
    expect(steps.nth(0).locator(".phases dt")).to_have_count(5)
    expect(steps.nth(0).locator(".phases svg rect").first).to_be_attached()
    captures = steps.nth(0).locator(".captures")
    expect(captures.locator("dt")).to_have_text(["token", "user_id"])
    expect(captures.locator("dd").nth(0)).to_have_text("redacted")
    text = dialog.inner_text()
    assert PROBE_PASSWORD not in text and "Bearer" not in text
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(opener).to_be_focused()  # the keyboard user is back where they were


def test_anomaly_badges_from_the_analytics_worker(session: Session) -> None:
    scores = {"threshold": 0.9, "source": "history", "last_run": time.time(), "items": [
        {"workflow": "health-check", "env": "prod", "signal": "latency", "score": 0.97, "anomaly": True, "value": 0.3, "at": time.time()},
        {"workflow": "user-login", "env": "prod", "signal": "latency", "score": 0.2, "anomaly": False, "value": 0.01, "at": time.time()},
        # Still in its probation: a high score is not flagged, and the row says the detector is learning.
        {"workflow": "registration", "env": "prod", "signal": "latency", "score": 0.95, "anomaly": False, "learning": True, "value": 0.2,
         "at": time.time()},
    ]}
    # Stands in for the collector's pass-through (tested above), as configured with analytics_url.
    session.page.route("**/api/analytics/anomalies", lambda route: route.fulfill(json=scores))
    page = session.open()
    expect(row(page, "health-check").locator(".badge.anomaly")).to_have_text("Anomaly: latency")
    expect(page.locator(".badge.anomaly")).to_have_count(1)
    expect(row(page, "registration").locator(".learning")).to_have_text("Anomaly detection: learning")
    expect(page.locator("#pairs-body .learning")).to_have_count(1)


def test_chaos_turns_the_health_widget_red_without_a_reload(session: Session, stack: Stack) -> None:
    live = stack.has(WEBSOCKET)
    if not live:
        session.page.clock.install()  # polling: the test moves the page's clock on instead of waiting 10 s
    page = session.open()
    expect(page.locator("#health")).to_have_attribute("data-state", HEALTHY, timeout=15_000)
    expect(page.locator("body")).to_have_attribute("data-transport", "websocket" if live else re.compile("^(sse|poll)$"), timeout=10_000)
    page.evaluate("window.__notReloaded = true")
    httpx.put(f"{stack.target}/chaos/database", json={"outage": True}).raise_for_status()
    try:
        if page.locator("body").get_attribute("data-transport") == "poll":
            wait_until(lambda: stack.states()["health-check"] in ("failure", "error"), timeout=10, what="health-check to fail")
            page.clock.fast_forward(POLL_SECONDS * 1000)
        expect(page.locator("#health")).to_have_attribute("data-state", "down", timeout=10_000)
        expect(row(page, "health-check")).to_have_attribute("data-status", "down")
        assert page.evaluate("getComputedStyle(document.getElementById('health-pill')).backgroundColor") == RED
        assert page.evaluate("getComputedStyle(document.querySelector('#health .status-down')).backgroundColor") == RED
        assert page.evaluate("window.__notReloaded === true"), "the page reloaded"
        expect(page.locator("#health-summary")).to_contain_text("health-check in prod")
        # The failed run explains itself: the expectation that failed, and why.
        row(page, "health-check").get_by_role("button", name="Last run of health-check in prod").click()
        dialog = page.get_by_role("dialog", name="health-check · prod")
        expect(dialog.locator(".failures li").first).to_be_visible()
        expect(dialog.locator(".meta")).to_contain_text("failure")
        page.keyboard.press("Escape")
    finally:
        httpx.delete(f"{stack.target}/chaos").raise_for_status()
    stack.wait_healthy()  # the tests after this one see every workflow up again


def test_operator_acknowledges_an_alert_with_a_token(session: Session, stack: Stack) -> None:
    if stack.alertmanager is None:
        pytest.skip("prometheus-alertmanager is not installed: an acknowledgement is a silence there (make test installs it)")
    page = session.open()
    alert = page.locator('#alert-list li[data-status="ACTIVE"]')
    if not stack.has(WEBSOCKET):  # the WebSocket's snapshot may carry alerts; the HTTP endpoints need a token
        expect(page.locator("#alerts-message")).to_contain_text("token")
        expect(alert).to_have_count(0)

    # A viewer token reads alerts but may not acknowledge them.
    page.get_by_label("API token").fill(stack.tokens["viewer"])
    page.get_by_role("button", name="Use token").click()
    expect(alert).to_have_count(1)
    expect(page.locator("#alerts")).to_have_attribute("data-state", "down")
    expect(alert).to_contain_text("order-placement fails in prod at place-order")
    alert.get_by_role("button", name="Acknowledge FlowprobeWorkflowFailing (order-placement · prod)").click()
    ack = page.get_by_role("dialog", name="Acknowledge alert")
    ack.get_by_label("Comment").fill("payments team is on it")
    ack.get_by_role("button", name="Acknowledge").click()
    expect(ack.get_by_role("alert")).to_contain_text("Not allowed")
    ack.get_by_role("button", name="Cancel").click()

    # The token lives in sessionStorage only: not in localStorage, cookies or the URL.
    page.get_by_label("API token").fill(stack.tokens["operator"])
    page.get_by_role("button", name="Use token").click()
    stored = page.evaluate("() => ({session: {...sessionStorage}, local: localStorage.length, cookie: document.cookie, url: location.href})")
    assert stored["session"] == {"flowprobe.apiToken": stack.tokens["operator"]}
    assert stored["local"] == 0 and stored["cookie"] == "" and stack.tokens["operator"] not in stored["url"]
    expect(page.locator("#token")).to_have_value("")

    alert.get_by_role("button", name="Acknowledge FlowprobeWorkflowFailing (order-placement · prod)").click()
    ack.get_by_label("Comment").fill("payments team is on it")
    ack.get_by_label("Silence for").select_option("1h")
    with page.expect_request(lambda r: r.url.endswith("/acknowledge")) as sent:
        ack.get_by_role("button", name="Acknowledge").click()
    assert sent.value.headers["authorization"] == f"Bearer {stack.tokens['operator']}"
    assert json.loads(sent.value.post_data or "{}") == {"comment": "payments team is on it", "duration": "1h"}
    expect(ack).to_be_hidden()
    expect(page.locator('#alert-list li[data-status="ACKNOWLEDGED"]')).to_have_count(1)
    alerts = httpx.get(f"{stack.base}/api/alerts", headers={"Authorization": f"Bearer {stack.tokens['viewer']}"}).json()["items"]
    assert [(a["status"], a["acknowledged_by"]) for a in alerts] == [("ACKNOWLEDGED", "page-operator")]


def test_no_serious_or_critical_accessibility_violations(session: Session, stack: Stack) -> None:
    page = session.open()
    page.evaluate("t => sessionStorage.setItem('flowprobe.apiToken', t)", stack.tokens["viewer"])
    page.reload()
    expect(page.locator("#alert-list li")).to_have_count(1)
    expect(page.locator("#recent-runs li").first).to_be_visible()
    assert axe_violations(page, stack.base) == []
    page.emulate_media(color_scheme="dark")  # the dark scheme has its own colours, and its own contrast to check
    assert axe_violations(page, stack.base) == []
    page.emulate_media(color_scheme="light")
    row(page, "order-placement").get_by_role("button", name="Last run of order-placement in prod").click()
    expect(page.locator("#run-dialog li.step").first).to_be_visible()
    assert axe_violations(page, stack.base) == []


def test_phone_width_has_no_horizontal_scroll(browser: Browser, stack: Stack, tmp_path: Path) -> None:
    phone = Session(browser, stack, PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    try:
        page = phone.open()
        expect(page.locator("#recent-runs li").first).to_be_visible()
        overflow = "() => [document.documentElement.scrollWidth, document.body.scrollWidth, window.innerWidth]"
        scroll, body, width = page.evaluate(overflow)
        assert width == PHONE["width"] and scroll <= width and body <= width, (scroll, body, width)
        # Nothing sticks out of the viewport either (an overflow hidden by a parent still cuts content off).
        wide = page.evaluate("""w => [...document.querySelectorAll('main *')].filter(e => e.getBoundingClientRect().right > w + 0.5 && e.checkVisibility())
                                      .slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className)""", PHONE["width"])
        assert wide == []
        save_artifact(page, tmp_path, "flowprobe-status-phone.png")
        row(page, "order-placement").get_by_role("button", name="Last run of order-placement in prod").click()
        expect(page.locator("#run-dialog li.step").first).to_be_visible()
        scroll, body, width = page.evaluate(overflow)
        assert scroll <= width and body <= width, (scroll, body, width)
    finally:
        phone.close()


def test_screenshot_is_saved_as_an_artifact(session: Session, stack: Stack, tmp_path: Path) -> None:
    session.page.add_init_script(f"sessionStorage.setItem('flowprobe.apiToken', {json.dumps(stack.tokens['viewer'])})")
    page = session.open()
    expect(page.locator("#alert-list li")).to_have_count(1)  # every widget filled in, for whoever looks at it
    expect(page.locator("#recent-runs li").first).to_be_visible()
    expect(page.locator("#latency-chart path.line")).to_be_attached()
    path = save_artifact(page, tmp_path, "flowprobe-status.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
