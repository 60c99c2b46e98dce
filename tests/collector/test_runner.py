"""Runner step logic over httpx.MockTransport: no sockets, injected clock, sleep and rng."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector import runner as runner_module
from collector.config import CircuitBreakerSettings, Config, Environment, HistorySettings, Workflow, load_config
from collector.engine import HttpxEngine
from collector.resilience import CircuitBreakers
from collector.result import RunResult
from collector.runner import Runner
from collector.secret import MASK

BASE = "http://api.test"
SECRET = "sk-live-5f2a9c1e77"
Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


def make_workflow(steps: list[dict[str, Any]], **extra: Any) -> Workflow:
    return Workflow.model_validate({"name": "wf", "schedule": {"every": "1m"}, "steps": steps, **extra})


def make_config(workflow: Workflow, secrets: dict[str, str] | None = None, base_url: str = BASE) -> Config:
    return Config(
        workflows={workflow.name: workflow},
        environments={"test": Environment.model_validate({"base_url": base_url})},
        circuit_breaker=CircuitBreakerSettings(),
        history=HistorySettings(),
        secrets={(workflow.name, "test"): secrets or {}},
    )


def step(name: str, url: str = "{{ base_url }}/", **extra: Any) -> dict[str, Any]:
    request = {"url": url, **extra.pop("request", {})}
    return {"name": name, "request": request, **extra}


class Sleeps:
    """An injected sleep that records each pause and returns at once."""

    def __init__(self) -> None:
        self.pauses: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)


def make_runner(handler: Handler, *, seed: int = 7, breakers: CircuitBreakers | None = None) -> tuple[Runner, Sleeps]:
    sleeps = Sleeps()
    engine = HttpxEngine(httpx.MockTransport(handler))
    return Runner(engine, breakers, rng=random.Random(seed), sleep=sleeps), sleeps


def run(runner: Runner, workflow: Workflow, config: Config | None = None) -> RunResult:
    return asyncio.run(runner.run(config or make_config(workflow), workflow, "test"))


def outcomes(result: RunResult) -> list[tuple[str, str]]:
    return [(s.name, s.outcome) for s in result.steps]


class Recorder:
    """A handler that answers from a route table and keeps every request."""

    def __init__(self, routes: dict[str, Callable[[httpx.Request], httpx.Response]]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.routes[f"{request.method} {request.url.path}"](request)

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


# ---------------------------------------------------------------- captures


def test_captures_feed_later_steps() -> None:
    target = Recorder(
        {
            "POST /login": lambda r: httpx.Response(
                201,
                json={"token": "tok-123", "user": {"id": 42}},
                headers={"X-Request-Id": "req-9", "Set-Cookie": "session=abc; Path=/"},
            ),
            "POST /users/42/orders": lambda r: httpx.Response(200, text="order ord-77 placed"),
            "GET /orders/77": lambda r: httpx.Response(200, json={"id": "77"}),
        }
    )
    workflow = make_workflow(
        [
            step(
                "login",
                request={"method": "POST", "url": "{{ base_url }}/login"},
                capture={
                    "token": {"json": "$.token"},
                    "user_id": {"json": "$.user.id"},
                    "request_id": {"header": "X-Request-Id"},
                    "session": {"cookie": "session"},
                    "code": {"status": True},
                },
                expect={"status": 201},
            ),
            step(
                "order",
                request={
                    "method": "POST",
                    "url": "{{ base_url }}/users/{{ user_id }}/orders",
                    "headers": {"Authorization": "Bearer {{ token }}", "X-Parent": "{{ request_id }}"},
                    "json": {"user": "{{ user_id }}", "label": "user-{{ user_id }}", "code": "{{ code }}"},
                },
                capture={"order_id": {"regex": r"ord-(\d+)"}, "order_ref": {"regex": r"ord-\d+"}},
            ),
            step("read", url="{{ base_url }}/orders/{{ order_id }}", expect={"json": {"$.id": {"eq": "{{ order_id }}"}}}),
        ]
    )
    runner, _ = make_runner(target)
    result = run(runner, workflow)

    assert target.paths() == ["POST /login", "POST /users/42/orders", "GET /orders/77"]
    order = target.requests[1]
    assert order.headers["authorization"] == "Bearer tok-123"
    assert order.headers["x-parent"] == "req-9"
    assert order.headers["cookie"] == "session=abc"  # the run's one session keeps its cookie jar
    # A single-expression template keeps the captured type; text around it makes a string.
    assert json.loads(order.content) == {"user": 42, "label": "user-42", "code": 201}
    assert result.steps[0].captures == {"token": "tok-123", "user_id": 42, "request_id": "req-9", "session": "abc", "code": 201}
    assert result.steps[1].captures == {"order_id": "77", "order_ref": "ord-77"}
    assert result.outcome == "success", result.message


def test_captured_text_that_looks_like_a_template_is_sent_literally() -> None:
    injected = "{{ secrets.API_KEY }}"
    target = Recorder(
        {
            "GET /profile": lambda r: httpx.Response(200, json={"name": injected}),
            "POST /echo": lambda r: httpx.Response(200, json={}),
        }
    )
    workflow = make_workflow(
        [
            step("profile", url="{{ base_url }}/profile", capture={"name": {"json": "$.name"}}),
            step("echo", request={"method": "POST", "url": "{{ base_url }}/echo", "headers": {"X-Name": "n={{ name }}"}, "json": {"n": "{{ name }}"}}),
        ],
        secrets={"API_KEY": {"env": "API_KEY"}},
    )
    runner, _ = make_runner(target)
    result = run(runner, workflow, make_config(workflow, {"API_KEY": SECRET}))

    assert result.outcome == "success"
    sent = target.requests[1]
    assert json.loads(sent.content) == {"n": injected}
    assert sent.headers["x-name"] == "n=" + injected
    assert SECRET.encode() not in sent.content + str(sent.headers).encode()


def test_a_missing_capture_fails_the_step_with_reason_capture() -> None:
    target = Recorder({"POST /login": lambda r: httpx.Response(200, json={"other": 1}), "GET /me": lambda r: httpx.Response(200)})
    workflow = make_workflow(
        [
            step("login", request={"method": "POST", "url": "{{ base_url }}/login"}, capture={"token": {"json": "$.token"}}),
            step("me", url="{{ base_url }}/me", request={"headers": {"Authorization": "Bearer {{ token }}"}}),
        ]
    )
    runner, _ = make_runner(target)
    result = run(runner, workflow)

    assert outcomes(result) == [("login", "failure"), ("me", "skipped")]
    login = result.steps[0]
    assert login.reason == "capture"
    assert login.message == "capture token: json $.token found nothing"
    assert (result.outcome, result.failed_step, result.reason, result.message) == (
        "failure",
        "login",
        "capture",
        "capture token: json $.token found nothing",
    )
    assert target.paths() == ["POST /login"]


def test_query_form_and_header_values_are_rendered_as_text() -> None:
    target = Recorder({"GET /flags": lambda r: httpx.Response(200, json={"on": True, "n": 3}), "POST /submit": lambda r: httpx.Response(200)})
    workflow = make_workflow(
        [
            step("flags", url="{{ base_url }}/flags", capture={"on": {"json": "$.on"}, "n": {"json": "$.n"}}),
            step(
                "submit",
                request={
                    "method": "POST",
                    "url": "{{ base_url }}/submit?fixed=1",
                    "query": {"on": "{{ on }}", "n": "{{ n }}"},
                    "headers": {"X-On": "{{ on }}"},
                    "form": {"on": "{{ on }}"},
                },
            ),
        ]
    )
    runner, _ = make_runner(target)
    assert run(runner, workflow).outcome == "success"
    sent = target.requests[1]
    assert dict(sent.url.params) == {"fixed": "1", "on": "true", "n": "3"}
    assert sent.headers["x-on"] == "true"
    assert sent.content == b"on=true"


# ---------------------------------------------------------------- failure reasons


def raise_(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


async def hang(request: httpx.Request) -> httpx.Response:
    await asyncio.sleep(30)
    return httpx.Response(200)


@pytest.mark.parametrize(
    ("handler", "expect", "reason", "message"),
    [
        (lambda r: httpx.Response(503), {}, "status", "expected status 200-299, got 503"),
        (lambda r: httpx.Response(200, json={"state": "open"}), {"json": {"$.state": "closed"}}, "assertion", "$.state: expected 'closed', got 'open'"),
        (hang, {}, "timeout", "no response within the step timeout (0.05s)"),
        (raise_(httpx.ConnectError("[Errno 111] Connection refused")), {}, "connect", "connection failed: [Errno 111] Connection refused"),
        (
            raise_(httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")),
            {},
            "tls",
            "connection failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
        ),
        (lambda r: httpx.Response(200, json={}), {}, "capture", "capture id: json $.id found nothing"),
    ],
    ids=["status", "assertion", "timeout", "connect", "tls", "capture"],
)
def test_failure_reasons(handler: Handler, expect: dict[str, Any], reason: str, message: str) -> None:
    capture = {"id": {"json": "$.id"}} if reason == "capture" else {}
    workflow = make_workflow(
        [step("probe", request={"timeout": "50ms"}, expect=expect, capture=capture), step("after", url="{{ base_url }}/after")]
    )
    runner, _ = make_runner(handler)
    result = run(runner, workflow)

    probe = result.steps[0]
    assert (probe.outcome, probe.reason, probe.message) == ("failure", reason, message)
    assert [f.reason for f in probe.failures] == [reason]
    assert (result.outcome, result.failed_step, result.reason, result.message) == ("failure", "probe", reason, message)
    assert outcomes(result)[1] == ("after", "skipped")
    if reason in ("status", "assertion", "capture"):
        assert probe.status is not None
    else:
        assert probe.status is None


# ---------------------------------------------------------------- retries


def flaky_target(failures: int) -> Recorder:
    """Answers 500 `failures` times, then 200."""
    calls = {"n": 0}

    def respond(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        return httpx.Response(500 if calls["n"] <= failures else 200)

    return Recorder({"GET /": respond, "GET /setup": lambda r: httpx.Response(200)})


def jittered(seed: int, initial: float, cap: float, retries: int, constant: bool = False) -> list[float]:
    """The sleeps expected: min(max, initial * 2**(n-1)) * U[0, 1), from the same seeded rng."""
    rng = random.Random(seed)
    return [min(cap, initial if constant else initial * 2 ** (n - 1)) * rng.random() for n in range(1, retries + 1)]


def test_a_pass_on_the_second_attempt_is_a_flaky_success() -> None:
    target = flaky_target(failures=1)
    workflow = make_workflow([step("setup", url="{{ base_url }}/setup"), step("probe")], retries={"attempts": 3})
    runner, sleeps = make_runner(target, seed=11)
    result = run(runner, workflow)

    assert (result.outcome, result.flaky, result.attempts) == ("success", True, 2)
    assert result.failed_step is None and result.reason is None
    # The whole attempt ran again, from its first step.
    assert target.paths() == ["GET /setup", "GET /", "GET /setup", "GET /"]
    assert sleeps.pauses == jittered(11, 0.5, 5.0, 1)


def test_workflow_retries_back_off_exponentially_with_full_jitter_and_a_cap() -> None:
    target = flaky_target(failures=99)
    workflow = make_workflow([step("probe")], retries={"attempts": 5, "initial": "1s", "max": "3s"})
    runner, sleeps = make_runner(target, seed=3)
    result = run(runner, workflow)

    assert (result.outcome, result.flaky, result.attempts, result.reason) == ("failure", False, 5, "status")
    assert len(target.requests) == 5
    expected = jittered(3, 1.0, 3.0, 4)
    assert sleeps.pauses == expected
    # The cap bites from the third retry (1, 2, 4 -> 3, 8 -> 3).
    rng = random.Random(3)
    assert expected == [1 * rng.random(), 2 * rng.random(), 3 * rng.random(), 3 * rng.random()]


def test_step_retries_stay_inside_the_step() -> None:
    target = flaky_target(failures=3)
    workflow = make_workflow(
        [step("setup", url="{{ base_url }}/setup"), step("probe", retries={"attempts": 4, "initial": "100ms", "max": "250ms"})]
    )
    runner, sleeps = make_runner(target, seed=5)
    result = run(runner, workflow)

    assert (result.outcome, result.attempts, result.flaky) == ("success", 1, False)
    assert result.steps[1].attempts == 4
    assert target.paths() == ["GET /setup"] + ["GET /"] * 4
    assert sleeps.pauses == jittered(5, 0.1, 0.25, 3)


def test_constant_backoff() -> None:
    target = flaky_target(failures=99)
    workflow = make_workflow([step("probe", retries={"attempts": 3, "backoff": "constant", "initial": "2s", "max": "1s"})])
    runner, sleeps = make_runner(target, seed=9)
    result = run(runner, workflow)

    assert (result.outcome, result.steps[0].attempts) == ("failure", 3)
    assert sleeps.pauses == jittered(9, 2.0, 1.0, 2, constant=True)
    assert all(p < 1.0 for p in sleeps.pauses)


def test_a_step_retry_that_cannot_start_before_the_deadline_keeps_the_real_failure() -> None:
    target = flaky_target(failures=99)
    workflow = make_workflow([step("probe", retries={"attempts": 3, "initial": "10s", "max": "10s"})], timeout="1s")
    # rng.random() is about 0.74 for this seed: a 7.4 s pause cannot fit in the 1 s run.
    runner, sleeps = make_runner(target, seed=1)
    result = run(runner, workflow)

    assert (result.outcome, result.reason, result.steps[0].attempts) == ("failure", "status", 1)
    assert sleeps.pauses == []


# ---------------------------------------------------------------- cleanup


def test_always_run_cleanup_runs_after_a_failure() -> None:
    target = Recorder(
        {
            "POST /orders": lambda r: httpx.Response(201, json={"id": "o-5"}),
            "POST /orders/o-5/pay": lambda r: httpx.Response(402),
            "GET /orders/o-5": lambda r: httpx.Response(200),
            "DELETE /orders/o-5": lambda r: httpx.Response(204),
        }
    )
    workflow = make_workflow(
        [
            step("create", request={"method": "POST", "url": "{{ base_url }}/orders"}, capture={"order": {"json": "$.id"}}),
            step("pay", request={"method": "POST", "url": "{{ base_url }}/orders/{{ order }}/pay"}),
            step("check", url="{{ base_url }}/orders/{{ order }}"),
            step("cleanup", request={"method": "DELETE", "url": "{{ base_url }}/orders/{{ order }}"}, always_run=True),
        ]
    )
    runner, _ = make_runner(target)
    result = run(runner, workflow)

    assert outcomes(result) == [("create", "success"), ("pay", "failure"), ("check", "skipped"), ("cleanup", "success")]
    assert result.steps[2].message == "skipped: an earlier step failed"
    assert target.paths() == ["POST /orders", "POST /orders/o-5/pay", "DELETE /orders/o-5"]
    assert (result.outcome, result.failed_step, result.reason) == ("failure", "pay", "status")


def test_a_failing_cleanup_does_not_replace_the_first_failure() -> None:
    target = Recorder({"GET /": lambda r: httpx.Response(500), "DELETE /": lambda r: httpx.Response(404)})
    workflow = make_workflow([step("probe"), step("cleanup", request={"method": "DELETE"}, always_run=True)])
    runner, _ = make_runner(target)
    result = run(runner, workflow)
    assert outcomes(result) == [("probe", "failure"), ("cleanup", "failure")]
    assert (result.failed_step, result.message) == ("probe", "expected status 200-299, got 500")


@pytest.mark.parametrize(
    "cleanup",
    [
        {"request": {"method": "DELETE", "url": "{{ base_url }}/orders/{{ order }}"}},
        # The request needs nothing, but the expectation names the missing capture.
        {"request": {"method": "DELETE", "url": "{{ base_url }}/orders"}, "expect": {"json": {"$.id": {"eq": "{{ order }}"}}}},
    ],
    ids=["in-request", "in-expect"],
)
def test_a_cleanup_missing_its_capture_is_skipped(cleanup: dict[str, Any]) -> None:
    target = Recorder({"POST /orders": lambda r: httpx.Response(500), "DELETE /orders": lambda r: httpx.Response(200, json={})})
    workflow = make_workflow(
        [
            step("create", request={"method": "POST", "url": "{{ base_url }}/orders"}, capture={"order": {"json": "$.id"}}),
            {"name": "cleanup", "always_run": True, **cleanup},
        ]
    )
    runner, _ = make_runner(target)
    result = run(runner, workflow)

    assert outcomes(result) == [("create", "failure"), ("cleanup", "skipped")]
    assert result.steps[1].message == "skipped: no value for {{ order }}"
    assert (result.outcome, result.failed_step, result.reason) == ("failure", "create", "status")
    assert target.paths() == ["POST /orders"]


# ---------------------------------------------------------------- deadline


def test_the_run_timeout_cuts_a_hanging_target() -> None:
    calls: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/slow":
            await asyncio.sleep(30)
        return httpx.Response(200)

    workflow = make_workflow(
        [
            step("fast", url="{{ base_url }}/fast"),
            step("slow", url="{{ base_url }}/slow"),
            step("later", url="{{ base_url }}/later"),
            step("cleanup", url="{{ base_url }}/cleanup", always_run=True),
        ],
        timeout="300ms",
    )
    runner, _ = make_runner(handler)
    started = time.monotonic()
    result = run(runner, workflow)
    elapsed = time.monotonic() - started

    assert 0.29 <= result.duration < 1.3
    assert elapsed < 1.3
    assert outcomes(result) == [("fast", "success"), ("slow", "failure"), ("later", "skipped"), ("cleanup", "skipped")]
    slow = result.steps[1]
    assert (slow.reason, slow.message) == ("timeout", "no response within the run timeout (0.3s)")
    assert result.steps[3].message == "skipped: run timeout (0.3s) reached"
    assert (result.outcome, result.failed_step, result.reason) == ("failure", "slow", "timeout")
    assert calls == ["/fast", "/slow"]


# ---------------------------------------------------------------- circuit breaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Switchable:
    """Refuses connections while `down`, answers 200 otherwise."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return httpx.Response(200)


def test_the_circuit_opens_skips_runs_then_lets_one_through() -> None:
    clock, target = Clock(), Switchable()
    breakers = CircuitBreakers(failures=2, cool_down=60, clock=clock)
    runner, _ = make_runner(target, breakers=breakers)
    workflow = make_workflow([step("probe"), step("cleanup", always_run=True)])

    first = run(runner, workflow)
    assert (first.outcome, first.reason) == ("failure", "connect")
    # The second connection failure (the cleanup's) opened the breaker; the run still reports its failure.
    assert breakers.states() == {"api.test:80": "open"}

    skipped = run(runner, workflow)
    assert (skipped.outcome, skipped.skip_reason) == ("skipped", "circuit_open")
    assert skipped.message.startswith("circuit open for api.test:80")
    assert target.calls == 2

    clock.now += 61
    target.down = False
    trial = run(runner, workflow)
    assert trial.outcome == "success"
    assert breakers.states() == {"api.test:80": "closed"}
    assert run(runner, workflow).outcome == "success"
    assert target.calls == 6


def test_a_failed_half_open_trial_reopens_the_circuit() -> None:
    clock, target = Clock(), Switchable()
    breakers = CircuitBreakers(failures=1, cool_down=60, clock=clock)
    runner, _ = make_runner(target, breakers=breakers)
    workflow = make_workflow([step("probe")])

    assert run(runner, workflow).reason == "connect"
    clock.now += 61
    trial = run(runner, workflow)
    assert (trial.outcome, trial.reason) == ("failure", "connect")
    assert target.calls == 2
    clock.now += 59  # a new cool-down started with the failed trial
    assert run(runner, workflow).skip_reason == "circuit_open"
    assert target.calls == 2


def test_a_run_that_opens_the_circuit_reports_its_own_failure() -> None:
    clock, target = Clock(), Switchable()
    breakers = CircuitBreakers(failures=2, cool_down=60, clock=clock)
    runner, sleeps = make_runner(target, breakers=breakers)
    workflow = make_workflow([step("probe", retries={"attempts": 5})], retries={"attempts": 3})

    result = run(runner, workflow)
    assert (result.outcome, result.reason, result.skip_reason) == ("failure", "connect", None)
    assert (result.attempts, result.steps[0].attempts) == (1, 2)
    assert target.calls == 2


def test_tls_failures_do_not_open_the_circuit() -> None:
    # A bad certificate must keep failing (and alerting) as tls, not turn into skipped runs.
    breakers = CircuitBreakers(failures=1, cool_down=60, clock=Clock())

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")

    runner, _ = make_runner(handler, breakers=breakers)
    workflow = make_workflow([step("probe")])
    assert [run(runner, workflow).reason for _ in range(3)] == ["tls", "tls", "tls"]
    assert breakers.states() == {}


def test_circuits_are_per_host() -> None:
    clock = Clock()
    breakers = CircuitBreakers(failures=1, cool_down=60, clock=clock)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down.test":
            raise httpx.ConnectError("[Errno 111] Connection refused")
        return httpx.Response(200)

    runner, _ = make_runner(handler, breakers=breakers)
    down = make_workflow([step("probe")])
    up = make_workflow([step("probe")])
    assert run(runner, down, make_config(down, base_url="http://down.test")).reason == "connect"
    assert run(runner, down, make_config(down, base_url="http://down.test")).skip_reason == "circuit_open"
    assert run(runner, up, make_config(up, base_url="http://up.test")).outcome == "success"
    assert run(runner, up, make_config(up, base_url="http://down.test:8080")).outcome == "failure"
    assert breakers.states() == {"down.test:80": "open", "down.test:8080": "open"}


def test_an_open_circuit_mid_run_still_runs_cleanup() -> None:
    clock = Clock()
    breakers = CircuitBreakers(failures=1, cool_down=60, clock=clock)
    breakers.record_failure("other.test:80")
    target = Recorder({"POST /orders": lambda r: httpx.Response(201, json={"id": 1}), "DELETE /orders/1": lambda r: httpx.Response(204)})
    workflow = make_workflow(
        [
            step("create", request={"method": "POST", "url": "{{ base_url }}/orders"}, capture={"order": {"json": "$.id"}}),
            step("notify", url="http://other.test/notify"),
            step("more", url="{{ base_url }}/more"),
            step("cleanup", request={"method": "DELETE", "url": "{{ base_url }}/orders/{{ order }}"}, always_run=True),
        ]
    )
    runner, _ = make_runner(target, breakers=breakers)
    result = run(runner, workflow)

    assert (result.outcome, result.skip_reason) == ("skipped", "circuit_open")
    assert outcomes(result) == [("create", "success"), ("notify", "skipped"), ("more", "skipped"), ("cleanup", "success")]
    assert target.paths() == ["POST /orders", "DELETE /orders/1"]


# ---------------------------------------------------------------- redaction


def write_config(tmp_path: Path, workflow: str) -> Config:
    (tmp_path / "environments.yaml").write_text(f"environments:\n  test:\n    base_url: {BASE}\n")
    (tmp_path / "wf.yaml").write_text(workflow)
    return load_config(tmp_path)


SECRET_WORKFLOW = """
name: wf
schedule: {every: 1m}
secrets:
  API_KEY: {env: FLOWPROBE_TEST_API_KEY}
steps:
  - name: login
    request:
      method: POST
      url: "{{ base_url }}/login"
      headers: {Authorization: "Bearer {{ secrets.API_KEY }}"}
    capture:
      session: {json: $.session, secret: true}
      echo: {json: $.echo}
  - name: me
    request:
      url: "{{ base_url }}/me"
      headers: {X-Session: "{{ session }}"}
    expect:
      status: 200
      body: {contains: welcome}
      headers: {X-Echo: {eq: nothing}}
"""
SESSION = "sess-9d8e7f6a5b"


def echoing_target(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/login":
        auth = request.headers["authorization"]
        return httpx.Response(200, json={"session": SESSION, "echo": f"you sent {auth}"})
    # Echo everything back, as a careless error page would.
    leak = f"denied: {request.headers['x-session']} {SECRET}"
    return httpx.Response(401, text=leak, headers={"X-Echo": leak})


def test_secrets_and_secret_captures_never_leave_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWPROBE_TEST_API_KEY", SECRET)
    config = write_config(tmp_path, SECRET_WORKFLOW)
    runner, _ = make_runner(echoing_target)
    result = run(runner, config.workflows["wf"], config)

    assert (result.outcome, result.failed_step, result.reason) == ("failure", "me", "status")
    login, me = result.steps
    assert login.captures == {"session": MASK, "echo": f"you sent Bearer {MASK}"}
    assert [f.check for f in me.failures] == ["status", "headers.X-Echo", "body"]
    assert me.failures[2].message == f"body: expected to contain 'welcome', got 'denied: {MASK} {MASK}'"
    dumped = json.dumps(result.to_dict())
    assert SECRET not in dumped and SESSION not in dumped
    assert dumped.count(MASK) >= 6


def test_secrets_in_engine_errors_are_redacted() -> None:
    workflow = make_workflow([step("probe", url="{{ base_url }}/?key={{ secrets.KEY }}")], secrets={"KEY": {"env": "KEY"}})
    runner, _ = make_runner(raise_(httpx.ConnectError(f"cannot reach http://api.test/?key={SECRET}")))
    result = run(runner, workflow, make_config(workflow, {"KEY": SECRET}))
    assert result.reason == "connect"
    assert result.message == f"connection failed: cannot reach http://api.test/?key={MASK}"
    assert SECRET not in json.dumps(result.to_dict())


def test_internal_errors_are_results_and_their_logs_are_redacted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FLOWPROBE_TEST_API_KEY", SECRET)
    config = write_config(tmp_path, SECRET_WORKFLOW)
    seen: list[str] = []

    def broken(expect: Any, response: Any, scope: dict[str, Any], rng: random.Random, **kwargs: Any) -> list[Any]:
        if "session" in scope:  # only once the secret capture exists
            seen.append(scope["session"])
            raise RuntimeError(f"bug while checking {scope['session']} with {scope['secrets.API_KEY']}")
        return []

    monkeypatch.setattr(runner_module, "check_expect", broken)
    runner, _ = make_runner(echoing_target)
    with caplog.at_level(logging.DEBUG):
        result = run(runner, config.workflows["wf"], config)

    assert seen == [SESSION]
    assert result.outcome == "error"
    assert result.message == f"internal error: RuntimeError('bug while checking {MASK} with {MASK}')"
    assert runner.internal_errors == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and "RuntimeError" in errors[0].getMessage()
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        assert SECRET not in text and SESSION not in text
    assert SECRET not in caplog.text and SESSION not in caplog.text
    assert SECRET not in json.dumps(result.to_dict())


def test_an_internal_error_never_escapes_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> list[Any]:
        raise KeyError("oops")

    monkeypatch.setattr(runner_module, "check_expect", broken)
    runner, _ = make_runner(lambda r: httpx.Response(200))
    workflow = make_workflow([step("probe")], retries={"attempts": 3})
    result = run(runner, workflow)
    assert (result.outcome, result.attempts, result.workflow, result.env) == ("error", 1, "wf", "test")
    assert result.message == "internal error: KeyError('oops')"
    assert len(result.run_id) == 32
    assert runner.internal_errors == 1


def test_a_secret_cut_by_message_truncation_is_still_redacted() -> None:
    # 70 characters of padding put the secret across the 80-character cut of a quoted value.
    padding = "x" * 70
    workflow = make_workflow(
        [step("probe", expect={"body": {"contains": "welcome"}, "headers": {"X-Token": {"eq": "{{ secrets.KEY }}"}}})],
        secrets={"KEY": {"env": "KEY"}},
    )
    runner, _ = make_runner(lambda r: httpx.Response(200, text=padding + SECRET, headers={"X-Token": padding + SECRET}))
    result = run(runner, workflow, make_config(workflow, {"KEY": SECRET}))
    messages = [f.message for f in result.steps[0].failures]
    quoted = repr(padding + MASK)
    assert messages == [
        f"header X-Token: expected '{MASK}', got {quoted[:77]}...",
        f"body: expected to contain 'welcome', got {quoted[:77]}...",
    ]
    for message in messages:
        assert SECRET[:4] not in message


def test_a_secret_capture_that_is_an_object_masks_every_string_inside() -> None:
    inner = "refresh-0c4f8e2d1a"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/login":
            return httpx.Response(200, json={"auth": {"refresh": inner, "ttl": 60, "active": True}})
        return httpx.Response(200, json={"seen": [inner], "active": True})

    workflow = make_workflow(
        [
            step("login", url="{{ base_url }}/login", capture={"auth": {"json": "$.auth", "secret": True}}),
            step("check", url="{{ base_url }}/check", expect={"json": {"$.seen": {"length": 0}, "$": {"eq": {}}}}),
        ]
    )
    runner, _ = make_runner(handler)
    result = run(runner, workflow)
    assert result.steps[0].captures == {"auth": MASK}
    assert [f.message for f in result.steps[1].failures] == [
        "$.seen: expected length 0, got 1",
        f"$: expected {{}}, got {{'seen': ['{MASK}'], 'active': True}}",
    ]
    assert inner not in json.dumps(result.to_dict())


def test_max_duration_fails_the_step_with_reason_assertion() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.03)
        return httpx.Response(200)

    workflow = make_workflow([step("probe", expect={"max_duration": "10ms"})])
    runner, _ = make_runner(slow)
    result = run(runner, workflow)
    assert (result.outcome, result.reason, result.failed_step) == ("failure", "assertion", "probe")
    assert result.steps[0].failures[0].check == "max_duration"
    assert result.steps[0].duration >= 0.03


def test_a_result_survives_its_dict_form() -> None:
    target = Recorder({"GET /": lambda r: httpx.Response(500, json={"x": 1})})
    workflow = make_workflow([step("probe", capture={"x": {"json": "$.x"}}), step("after")])
    runner, _ = make_runner(target)
    result = run(runner, workflow)
    data = json.loads(json.dumps(result.to_dict()))
    assert RunResult.from_dict(data) == result
    assert RunResult.from_dict(data).steps[0].reason == "status"
