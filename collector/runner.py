"""Runs one workflow in one environment and returns its result.

A run is one new user: one engine session (fresh connection and cookie jar)
for all its steps. Steps run in order and share a scope of variables,
secrets and captures. After a failure the remaining steps are skipped except
``always_run`` cleanup steps. The run's ``timeout`` is a deadline: no step
runs past it. Workflow retries re-run the whole attempt with exponential
backoff and full jitter; a run that passes only after a retry is flaky.

`Runner.run` never raises for anything the target does. Our own bugs become
an ``error`` result, logged and counted, so the scheduler keeps going.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from collector.assertion import capture, check_expect, expected_names
from collector.config import Config, RetryPolicy, Step, Workflow
from collector.engine import Engine, EngineError, OutgoingRequest, Session
from collector.resilience import CircuitBreakers, CircuitOpen
from collector.result import CheckFailure, RunResult, StepResult
from collector.secret import MASK, Redactor, global_redactor
from collector.template import TemplateError, compile_value, render_value

__all__ = ["Runner"]

log = logging.getLogger("flowprobe.runner")

_NO_RETRY = RetryPolicy()

# Run ids are unique, not secret: a generator seeded once (again in a forked child) instead of
# uuid4, whose os.urandom per run let go of the GIL in the middle of the event loop's work.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def new_run_id() -> str:
    """32 hex digits: the wall clock in nanoseconds, then 64 random bits. Ids made later sort
    later, so the history's primary key grows at its end instead of taking random inserts."""
    return f"{time.time_ns():016x}{_ids.getrandbits(64):016x}"


def target_of(url: str) -> str:
    """The circuit-breaker key: host:port, bounded and free of paths and credentials."""
    # Only the part up to the end of the authority decides it: that part is parsed
    # once per target, not once per request (urlsplit is most of a step's own cost).
    start = url.find("//")
    if start < 0:
        return _target_of(url)
    end = len(url)
    for delimiter in "/?#":
        at = url.find(delimiter, start + 2)
        if 0 <= at < end:
            end = at
    return _target_of(url[:end])


@functools.lru_cache(maxsize=1024)
def _target_of(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


class _Request(NamedTuple):
    """A step's request, compiled: the parts that are empty (None or {}), and the others to render."""

    empty: dict[str, Any]
    parts: tuple[tuple[str, Any], ...]


class Runner:
    def __init__(
        self,
        engine: Engine,
        breakers: CircuitBreakers | None = None,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.breakers = breakers or CircuitBreakers()
        self.rng = rng or random.Random()
        self.sleep = sleep
        self.clock = clock
        self.wall_clock = wall_clock
        self.internal_errors = 0
        # Templates are parsed once per step object; a reload brings new objects.
        self._compiled: dict[int, tuple[Step, _Request, frozenset[str]]] = {}

    def forget_compiled(self) -> None:
        self._compiled.clear()

    def prepare(self, workflows: Iterable[Workflow]) -> None:
        """Compile every step's templates now rather than at its first run: at start they are
        then among what the service freezes out of the garbage collector's full collections
        (at 10,000 six-step workflows, 45% of the objects those collections walked)."""
        for workflow in workflows:
            for step in workflow.steps:
                try:
                    self._compile(step)
                except TemplateError:
                    pass  # its run reports it, as before

    async def run(self, config: Config, workflow: Workflow, env: str) -> RunResult:
        started_wall, started = self.wall_clock(), self.clock()
        run_id = new_run_id()
        secrets = config.secrets.get((workflow.name, env), {})
        redactor = global_redactor.child()
        redactor.add(*secrets.values())
        attempt = 0
        try:
            result = await self._attempt(config, workflow, env, redactor)
            attempt = 1
            while result.outcome == "failure" and attempt < workflow.retries.attempts:
                await self.sleep(workflow.retries.delay(attempt, self.rng.random()))
                retried = await self._attempt(config, workflow, env, redactor)
                if retried.skip_reason == "circuit_open":
                    # This run's own failures opened the breaker: report them, not a skip.
                    break
                result, attempt = retried, attempt + 1
        except Exception as exc:  # our bug, not the target's: keep the scheduler alive
            self.internal_errors += 1
            attempt = max(attempt, 1)
            # Formatted and redacted here: the exception or its traceback can hold
            # a secret capture that no process-wide log filter knows about.
            trace = redactor.text("".join(traceback.format_exception(exc)))
            log.error("internal error running %s/%s:\n%s", workflow.name, env, trace)
            result = RunResult(workflow.name, env, run_id, started_wall, "error", message=redactor.text(f"internal error: {exc!r}"))
        result.run_id = run_id
        result.started_at = started_wall
        result.duration = self.clock() - started
        result.attempts = attempt
        result.flaky = attempt > 1 and result.outcome == "success"
        return result

    async def _attempt(self, config: Config, workflow: Workflow, env: str, redactor: Redactor) -> RunResult:
        environment = config.environments[env]
        deadline = self.clock() + workflow.timeout
        scope: dict[str, Any] = {
            "base_url": environment.base_url.rstrip("/"),
            "env": env,
            "workflow": workflow.name,
            **environment.variables,
            **workflow.variables,
            **{f"secrets.{k}": v for k, v in config.secrets.get((workflow.name, env), {}).items()},
        }
        result = RunResult(workflow.name, env, "", 0.0, "success")
        session = self.engine.session()
        try:
            for step in workflow.steps:
                if result.outcome != "success" and not step.always_run:
                    why = "an earlier step failed" if result.outcome == "failure" else "circuit open"
                    result.steps.append(StepResult(step.name, "skipped", message=f"skipped: {why}"))
                    continue
                if self.clock() >= deadline:
                    result.steps.append(StepResult(step.name, "skipped", message=f"skipped: run timeout ({workflow.timeout:g}s) reached"))
                    continue
                try:
                    step_result = await self._step(step, session, scope, deadline, workflow.timeout, redactor)
                except CircuitOpen as exc:
                    # The run is skipped, unless it had already failed: that failure is
                    # the news. Cleanup steps still run (their host may be fine).
                    step_result = StepResult(step.name, "skipped", message=str(exc))
                    if result.outcome == "success":
                        result.outcome, result.skip_reason, result.message = "skipped", "circuit_open", str(exc)
                result.steps.append(step_result)
                if step_result.outcome == "failure" and result.outcome == "success":
                    result.outcome = "failure"
                    result.failed_step, result.reason = step.name, step_result.reason
                    result.message = step_result.message
        finally:
            await session.close()
        return result

    def _compile(self, step: Step) -> tuple[_Request, frozenset[str]]:
        """The step's request templates, and the names its expectations need."""
        cached = self._compiled.get(id(step))
        if cached is not None and cached[0] is step:
            return cached[1], cached[2]
        request = step.request
        compiled = compile_value(
            {
                "url": request.url,
                "headers": request.headers,
                "query": request.query,
                "json": request.json_,
                "form": request.form,
                "body": request.body,
            }
        )
        needs = frozenset(expected_names(step.expect))
        # Most of a request is empty (no headers, no body): only what can hold a template is rendered per request.
        compiled = _Request(
            {k: v for k, v in compiled.items() if v is None or v == {}},
            tuple((k, v) for k, v in compiled.items() if not (v is None or v == {})),
        )
        self._compiled[id(step)] = (step, compiled, needs)
        return compiled, needs

    async def _step(
        self, step: Step, session: Session, scope: dict[str, Any], deadline: float, run_timeout: float, redactor: Redactor
    ) -> StepResult:
        policy = step.retries or _NO_RETRY
        result = await self._try_step(step, session, scope, deadline, run_timeout, redactor)
        result.attempts = 1
        while result.outcome == "failure" and result.attempts < policy.attempts:
            pause = policy.delay(result.attempts, self.rng.random())
            if pause >= deadline - self.clock():
                # The retry could not get a moment before the deadline; its
                # timeout would only hide the real failure.
                return result
            await self.sleep(pause)
            try:
                retried = await self._try_step(step, session, scope, deadline, run_timeout, redactor)
            except CircuitOpen:
                return result  # our own failures opened it: report them
            retried.attempts = result.attempts + 1
            result = retried
        return result

    async def _try_step(
        self, step: Step, session: Session, scope: dict[str, Any], deadline: float, run_timeout: float, redactor: Redactor
    ) -> StepResult:
        compiled, needs = self._compile(step)
        try:
            rendered = dict(compiled.empty)
            for key, value in compiled.parts:
                rendered[key] = render_value(value, scope, self.rng)
            missing = sorted(needs - scope.keys())
            if missing:
                raise TemplateError(f"no value for {{{{ {missing[0]} }}}}")
        except TemplateError as exc:
            # Only cleanup steps get here: a capture they need was never made.
            return StepResult(step.name, "skipped", message=f"skipped: {exc}")
        spec = step.request
        request = OutgoingRequest(
            method=spec.method,
            url=rendered["url"],
            headers={k: _text(v) for k, v in rendered["headers"].items()},
            query={k: _text(v) for k, v in rendered["query"].items()},
            json_body=rendered["json"],
            form={k: _text(v) for k, v in rendered["form"].items()} if rendered["form"] is not None else None,
            body=None if rendered["body"] is None else _text(rendered["body"]),
            verify=spec.tls.verify,
            ca_file=spec.tls.ca_file,
            server_name=spec.tls.server_name,
            follow_redirects=spec.follow_redirects,
        )
        target = target_of(request.url)
        self.breakers.before_request(target)
        budget = min(spec.timeout, deadline - self.clock())
        started = self.clock()
        result = StepResult(step.name, "success", started_at=self.wall_clock(), host=target)
        try:
            async with asyncio.timeout(budget):
                response = await session.send(request)
        except TimeoutError:
            which = f"run timeout ({run_timeout:g}s)" if budget < spec.timeout else f"step timeout ({spec.timeout:g}s)"
            return _failed(result, self.clock() - started, CheckFailure("timeout", "timeout", f"no response within the {which}"))
        except EngineError as exc:
            # Only an unreachable host trips the breaker: a bad certificate must
            # keep failing as `tls` (and alert), not turn into skipped runs.
            if exc.reason == "connect":
                self.breakers.record_failure(target)
            return _failed(result, self.clock() - started, CheckFailure(exc.reason, exc.reason, redactor.text(exc.message)))
        self.breakers.record_success(target)

        result.status = response.status
        result.duration = response.duration
        result.phases = response.phases
        result.cert_not_after = response.cert_not_after
        # Capture first, so a secret this very response carries is known before
        # any expectation quotes the response in a message.
        values, capture_failures = capture(step.capture, response)
        for name, value in values.items():
            if step.capture[name].secret:
                redactor.add(*_texts(value))
        failures = check_expect(step.expect, response, scope, self.rng, redact=redactor.data) + capture_failures
        scope.update(values)
        result.captures = {name: MASK if step.capture[name].secret else redactor.data(v) for name, v in values.items()}
        if failures:
            result.outcome = "failure"
            result.failures = [CheckFailure(f.reason, f.check, redactor.text(f.message)) for f in failures]
            result.message = result.failures[0].message
        return result


def _failed(result: StepResult, duration: float, failure: CheckFailure) -> StepResult:
    result.outcome = "failure"
    result.duration = duration
    result.failures = [failure]
    result.message = failure.message
    return result


def _texts(value: Any) -> list[str]:
    """Every text a secret value can show up as: a captured object's strings and numbers
    are secret one by one (its true, false and null are not: masking every "true" hides nothing)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [text for v in value if v is not None and not isinstance(v, bool) for text in _texts(v)]
    return [_text(value)]


def _text(value: Any) -> str:
    """A rendered value as request text; booleans as JSON writes them, as templates do."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
