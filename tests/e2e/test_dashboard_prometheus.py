"""The dashboard overview from Prometheus and from the history agree, against real servers.

A real collector process runs the six shipped workflows every second in prod
against the demo target under uvicorn; a real Prometheus (Debian's binary)
scrapes it every second. In this process, two dashboards are built over a
`Service` on the collector's data directory: one reads the SQLite history
(read-only, while the collector writes it), the other asks Prometheus. Both
must give the same shape and the same figures where they are exact: the same
pairs, 100 % uptime and reachability while everything passes, every pair up;
then, once prod's database is down, health-check down in both, with the same
failing step and reason.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from collector.dashboard import Dashboard
from collector.dashboard_api import OverviewOut, dashboard_router
from collector.engine import HttpxEngine
from collector.service import Service
from collector.target import create_app
from tests.helpers import (
    PROBE_EMAIL, PROBE_PASSWORD, fast_copy, free_port, probe_environment, prometheus_config, running_process, running_prometheus,
    serve_in_thread, wait_until,
)

pytestmark = pytest.mark.e2e

WORKFLOWS = {"health-check", "user-login", "registration", "farm-creation", "product-listing", "order-placement"}
OVERVIEW = "/api/monitoring/dashboard/overview"


@dataclass
class Stack:
    target: str
    collector: str
    prometheus: str
    history: TestClient
    promql: TestClient
    logs: Path

    def overviews(self) -> tuple[dict[str, Any], dict[str, Any]]:
        history, prometheus = self.history.get(OVERVIEW), self.promql.get(OVERVIEW)
        assert history.status_code == 200 and prometheus.status_code == 200, (history.text, prometheus.text)
        return history.json(), prometheus.json()

    def tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(self.logs.glob("*.log")))


def client_for(service: Service, prometheus_url: str | None) -> TestClient:
    app = FastAPI()
    # No cache: every poll sees the newest data.
    app.include_router(dashboard_router(service, dashboard=Dashboard(service, prometheus_url=prometheus_url, ttl=0, max_stale=0, long_ttl=0)))
    return TestClient(app)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboard")
    config, data = fast_copy(tmp / "workflows"), tmp / "data"
    with serve_in_thread(create_app(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD)) as target:
        collector = f"http://127.0.0.1:{free_port()}"
        args = [sys.executable, "-m", "collector.cli", "run", "--config", str(config), "--env", "prod",
                "--listen", collector.removeprefix("http://"), "--data-dir", str(data), "--grace", "1"]
        env = probe_environment({"prod": target})
        with running_process(args, env=env, log=tmp / "collector.log"):
            wait_until(lambda: httpx.get(f"{collector}/readyz", timeout=2).status_code == 200, what="collector ready")
            with running_prometheus(tmp, prometheus_config({"flowprobe": [collector]})) as prom_url:
                # The test's own Service only reads: the same config and data directory, never started.
                with pytest.MonkeyPatch.context() as patch:
                    for name, value in env.items():
                        patch.setenv(name, value)
                    service = Service([config], data_dir=data, envs=["prod"], watch=False,
                                      engine=HttpxEngine(httpx.MockTransport(lambda r: httpx.Response(500))))
                try:
                    with client_for(service, None) as history, client_for(service, prom_url) as promql:
                        yield Stack(target, collector, prom_url, history, promql, tmp)
                finally:
                    service.store.close()


def by_pair(overview: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(i["workflow"], i["env"]): i for i in overview["items"]}


def test_both_sources_agree_on_a_healthy_stack(stack: Stack) -> None:
    def ready() -> tuple[dict[str, Any], dict[str, Any]] | None:
        history, prometheus = stack.overviews()
        every = list(history["items"]) + list(prometheus["items"])
        # Prometheus needs two scrapes around a run before increase() counts it.
        return (history, prometheus) if every and all(i["uptime"]["1h"] is not None and i["p95"] is not None for i in every) else None

    try:
        history, prometheus = wait_until(ready, timeout=45, interval=0.5, what="every pair in both sources")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.tails()}") from None
    for overview, source in ((history, "history"), (prometheus, "prometheus")):
        OverviewOut.model_validate(overview)
        assert overview["source"] == source and "source_error" not in overview
    assert set(history) == set(prometheus)
    h, p = by_pair(history), by_pair(prometheus)
    assert set(h) == set(p) == {(w, "prod") for w in WORKFLOWS}
    for pair in h:
        assert set(h[pair]) == set(p[pair])
        for item in (h[pair], p[pair]):
            assert item["status"] == "up", (item, stack.tails())
            windows = [v for v in item["uptime"].values() if v is not None]
            assert windows and all(v == 100.0 for v in windows), item
            assert all(v == 100.0 for v in item["reachability"].values() if v is not None), item
            assert 0 < item["p50"] <= item["p95"] < item["latency_slo"] if item["latency_slo"] else 0 < item["p50"] <= item["p95"]
        assert h[pair]["labels"] == p[pair]["labels"] and h[pair]["latency_slo"] == p[pair]["latency_slo"]
        # The gauge is scraped every second; the history is written within a fraction of one.
        assert abs(h[pair]["last_check"] - p[pair]["last_check"]) < 5, (h[pair], p[pair])
    assert history["totals"] == prometheus["totals"] == {"up": 6, "degraded": 0, "down": 0, "skipped": 0, "unknown": 0}


def test_both_sources_see_health_check_down(stack: Stack) -> None:
    httpx.put(f"{stack.target}/chaos/database", json={"outage": True}, timeout=5).raise_for_status()
    try:
        def down() -> tuple[dict[str, Any], dict[str, Any]] | None:
            history, prometheus = stack.overviews()
            pair = ("health-check", "prod")
            both = by_pair(history)[pair], by_pair(prometheus)[pair]
            return both if all(i["status"] == "down" for i in both) else None

        try:
            history, prometheus = wait_until(down, timeout=30, interval=0.5, what="health-check down in both sources")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.tails()}") from None
        assert history["status_reason"] == prometheus["status_reason"] == "the last run failed at step health (status)"
        assert history["uptime"]["1h"] < 100 and prometheus["uptime"]["1h"] < 100
        # A 503 is a response: the target is still reachable.
        assert history["reachability"]["1h"] == prometheus["reachability"]["1h"] == 100.0
        # Its dependents are skipped, not failed: the history sees it at their next run.
        # (Its status may say down instead: a run of its own may have failed on the database before
        # health-check's failure was known, and a failure outranks skips. Its runs are skipped.)
        wait_until(lambda: by_pair(stack.overviews()[0])[("product-listing", "prod")]["last_outcome"] == "skipped", timeout=15,
                   what="product-listing skipped in the history")
    finally:
        httpx.put(f"{stack.target}/chaos/database", json={"outage": False}, timeout=5)
