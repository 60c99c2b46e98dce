"""What the worker writes back: the exposition as golden text, promtool's lint, and the JSON API."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import httpx

from analytics.emit import create_app, render
from analytics.source import Point
from analytics.worker import Worker
from tests.helpers import require_binary

NOW = 1_800_000_000.0


class Constant:
    """Scores every point by its value, learns nothing: enough to place known scores."""

    def learn_one(self, x: float, t: float | None = None) -> None:
        pass

    def score_one(self, x: float, t: float | None = None) -> float:
        return x


class Listed:
    name = "history"

    def __init__(self, points: list[Point]) -> None:
        self.points = points

    async def read(self) -> list[Point]:
        points, self.points = self.points, []
        return points

    def resume(self, after: float) -> None:
        pass

    async def close(self) -> None:
        pass


def worker_with_scores() -> Worker:
    points = [
        Point("order-placement", "prod", "latency", NOW - 60, 0.95),
        Point("order-placement", "prod", "step:place-order", NOW - 60, 0.5),
        Point("health-check", "staging", "error_rate", NOW - 30, 0.0),
        Point('we"ird\\name', "dev", "latency", NOW - 10, 1.7),  # scores are capped at 1; labels escaped
    ]
    worker = Worker(Listed(points), Constant, threshold=0.9, clock=lambda: NOW)
    asyncio.run(worker.run_once())
    worker.errors_total = 2
    return worker


GOLDEN = """\
# HELP flowprobe_anomaly_score How anomalous the latest point of each signal is, from 0 (usual) to 1.
# TYPE flowprobe_anomaly_score gauge
flowprobe_anomaly_score{workflow="health-check",env="staging",signal="error_rate"} 0.0
flowprobe_anomaly_score{workflow="order-placement",env="prod",signal="latency"} 0.95
flowprobe_anomaly_score{workflow="order-placement",env="prod",signal="step:place-order"} 0.5
flowprobe_anomaly_score{workflow="we\\"ird\\\\name",env="dev",signal="latency"} 1.0
# HELP flowprobe_anomaly 1 while the latest anomaly score is at or above the worker's threshold, after the series' probation; else 0.
# TYPE flowprobe_anomaly gauge
flowprobe_anomaly{workflow="health-check",env="staging",signal="error_rate"} 0
flowprobe_anomaly{workflow="order-placement",env="prod",signal="latency"} 1
flowprobe_anomaly{workflow="order-placement",env="prod",signal="step:place-order"} 0
flowprobe_anomaly{workflow="we\\"ird\\\\name",env="dev",signal="latency"} 1
# HELP flowprobe_analytics_points_total Points scored and learned by the analytics worker, by source.
# TYPE flowprobe_analytics_points_total counter
flowprobe_analytics_points_total{source="history"} 4
# HELP flowprobe_analytics_errors_total Failed source reads, detector failures and failed state saves of the analytics worker.
# TYPE flowprobe_analytics_errors_total counter
flowprobe_analytics_errors_total 2
# HELP flowprobe_analytics_last_run_timestamp_seconds When the analytics worker last read its source successfully, as a unix timestamp.
# TYPE flowprobe_analytics_last_run_timestamp_seconds gauge
flowprobe_analytics_last_run_timestamp_seconds 1800000000.0
"""


def test_exposition_is_the_golden_text() -> None:
    assert render(worker_with_scores()) == GOLDEN


def test_before_the_first_read_there_are_no_scores_and_no_last_run() -> None:
    text = render(Worker(Listed([]), Constant))
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples == ['flowprobe_analytics_points_total{source="history"} 0', "flowprobe_analytics_errors_total 0"]


async def _get(app: Any, path: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://analytics") as client:
        return await client.get(path)


def test_metrics_pass_promtool_check_metrics() -> None:
    promtool = require_binary("promtool")
    response = asyncio.run(_get(create_app(worker_with_scores()), "/metrics"))
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert b"_created" not in response.content and b"process_cpu_seconds_total" in response.content
    checked = subprocess.run([promtool, "check", "metrics"], input=response.content, capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_the_anomalies_api_lists_current_scores_most_anomalous_first() -> None:
    app = create_app(worker_with_scores())
    body = asyncio.run(_get(app, "/api/analytics/anomalies")).json()
    assert body["threshold"] == 0.9 and body["source"] == "history" and body["last_run"] == NOW
    assert [(i["workflow"], i["signal"], i["score"], i["anomaly"]) for i in body["items"]] == [
        ('we"ird\\name', "latency", 1.0, True),
        ("order-placement", "latency", 0.95, True),
        ("order-placement", "step:place-order", 0.5, False),
        ("health-check", "error_rate", 0.0, False),
    ]
    assert body["items"][0] == {"workflow": 'we"ird\\name', "env": "dev", "signal": "latency", "score": 1.0, "anomaly": True,
                                "learning": False, "value": 1.7, "at": NOW - 10}
    health = asyncio.run(_get(app, "/healthz")).json()
    assert health == {"status": "ok", "source": "history", "source_error": None, "last_run": NOW}
