"""The six shipped workflows against the real demo target under uvicorn, healthy and under chaos."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from collector.config import Config, load_config
from collector.engine import AiohttpEngine
from collector.result import RunResult
from collector.runner import Runner
from collector.target import create_app
from tests.helpers import PROBE_EMAIL, PROBE_PASSWORD, WORKFLOWS, free_port, probe_environment, serve_in_thread

pytestmark = pytest.mark.e2e


@pytest.fixture
def target() -> Iterator[str]:
    with serve_in_thread(create_app(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD)) as url:
        yield url


@pytest.fixture
def config(target: str, monkeypatch: pytest.MonkeyPatch) -> Config:
    for name, value in probe_environment({"prod": target}).items():
        monkeypatch.setenv(name, value)
    return load_config(WORKFLOWS)


def run_all(config: Config, *names: str) -> dict[str, RunResult]:
    async def main() -> dict[str, RunResult]:
        engine = AiohttpEngine()
        runner = Runner(engine)
        try:
            chosen = names or tuple(config.workflows)
            results = [await runner.run(config, config.workflows[name], "prod") for name in chosen]
        finally:
            await engine.close()
        return {r.workflow: r for r in results}

    return asyncio.run(main())


def chaos(target: str, dependency: str, **state: Any) -> None:
    httpx.put(f"{target}/chaos/{dependency}", json=state).raise_for_status()


def summary(result: RunResult) -> tuple[str, str | None, str | None]:
    return result.outcome, result.failed_step, result.reason


def test_all_six_pass_against_a_healthy_target(config: Config) -> None:
    results = run_all(config)
    assert set(results) == {"health-check", "user-login", "registration", "farm-creation", "product-listing", "order-placement"}
    for name, result in results.items():
        assert result.outcome == "success", (name, result.message, [(s.name, s.message) for s in result.steps])
        assert all(s.outcome == "success" for s in result.steps), name
    # The first step of a run opens the connection; later steps reuse it.
    order = results["order-placement"].steps
    assert order[0].phases["connect"] > 0
    assert all(s.phases["connect"] == 0 for s in order[1:])
    assert all(s.phases["first_byte"] > 0 for s in order)
    # Secret captures are masked, plain ones kept.
    assert order[0].captures == {"token": "[REDACTED]"}
    assert order[2].captures["order_id"].startswith("ord_")


def test_database_outage_fails_database_steps_with_status(config: Config, target: str) -> None:
    chaos(target, "database", outage=True)
    results = run_all(config)
    assert summary(results["health-check"]) == ("failure", "health", "status")
    assert summary(results["product-listing"]) == ("failure", "list-products", "status")
    assert summary(results["registration"]) == ("failure", "register", "status")
    assert "database unavailable" not in results["health-check"].message  # messages say what was checked
    assert "expected status 200, got 503" in results["health-check"].message
    # Login needs only auth: it still works, the profile step too.
    assert results["user-login"].outcome == "success"
    # Farm creation logs in, then fails on the database; cleanup runs but has no farm to delete.
    farm = results["farm-creation"]
    assert summary(farm) == ("failure", "create-farm", "status")
    assert [s.outcome for s in farm.steps] == ["success", "failure", "skipped", "skipped"]
    assert "farm_id" in farm.steps[3].message


def test_payments_outage_fails_only_order_placement_and_runs_cleanup(config: Config, target: str) -> None:
    chaos(target, "payments", outage=True)
    results = run_all(config)
    assert summary(results["order-placement"]) == ("failure", "place-order", "status")
    steps = {s.name: s.outcome for s in results["order-placement"].steps}
    assert steps == {"login": "success", "find-product": "success", "place-order": "failure",
                     "check-order": "skipped", "cancel-order": "skipped"}
    # The API is up (health says degraded), so only the workflow that pays fails, naming its step.
    others = {name: r.outcome for name, r in results.items() if name != "order-placement"}
    assert others == dict.fromkeys(others, "success")


def test_latency_fails_max_duration_then_step_timeout(config: Config, target: str) -> None:
    chaos(target, "database", latency_ms=1200)
    result = run_all(config, "health-check")["health-check"]
    assert summary(result) == ("failure", "health", "assertion")
    assert "more than max_duration 1000ms" in result.message
    assert result.attempts == 2  # health-check retries once

    chaos(target, "database", latency_ms=2500)
    result = run_all(config, "health-check")["health-check"]
    assert summary(result) == ("failure", "health", "timeout")
    assert "step timeout (2s)" in result.message
    assert result.steps[0].duration < 2.5


def test_error_rate_fails_with_status(config: Config, target: str) -> None:
    chaos(target, "auth", error_rate=1.0)
    result = run_all(config, "user-login")["user-login"]
    assert summary(result) == ("failure", "login", "status")
    assert "got 500" in result.message


def test_target_down_fails_with_connect(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWPROBE_PROD_URL", f"http://127.0.0.1:{free_port()}")
    down = load_config(WORKFLOWS)
    result = run_all(down, "health-check")["health-check"]
    assert summary(result) == ("failure", "health", "connect")
    assert os.environ["FLOWPROBE_PROBE_PASSWORD"] not in str(result.to_dict())
