"""What the worker writes back: gauges on its own /metrics, and the scores as JSON.

Prometheus scrapes the worker like any target, so the scores can be graphed,
queried and alerted on with the workflows' own labels:

- ``flowprobe_anomaly_score{workflow,env,signal}``: the score of the latest
  point of the signal, 0 (usual) to 1 (anomalous);
- ``flowprobe_anomaly{workflow,env,signal}``: 1 while that score is at or
  above the threshold (``--threshold``), else 0;
- ``flowprobe_analytics_points_total{source}``: points scored and learned;
- ``flowprobe_analytics_errors_total``: failed source reads, detector
  failures and failed state saves;
- ``flowprobe_analytics_last_run_timestamp_seconds``: when the source was
  last read successfully (absent until then), so
  ``time() - flowprobe_analytics_last_run_timestamp_seconds`` shows a worker
  that cannot read its source;
- and the process metrics of prometheus_client.

The text is written the way collector/metrics.py writes it, with its
helpers: no global metric objects, no ``_created`` series. There are few
series here (pairs times signals), so it is rendered whole at each scrape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
from prometheus_client.process_collector import ProcessCollector

from collector.metrics import VERSION, escape_label, family, label_set, number

if TYPE_CHECKING:
    from analytics.worker import Worker

__all__ = ["create_app", "render"]


def render(worker: Worker) -> str:
    """The worker's exposition text (format 0.0.4), without the process metrics."""
    scores, flags = [], []
    for (workflow, env, signal), series in worker.current():
        score = float(series.score or 0.0)
        key = label_set(workflow=workflow, env=env, signal=signal)
        scores.append(f"flowprobe_anomaly_score{{{key}}} {number(score)}\n")
        flags.append(f"flowprobe_anomaly{{{key}}} {int(score >= worker.threshold)}\n")
    last_run = f"flowprobe_analytics_last_run_timestamp_seconds {number(worker.last_run)}\n" if worker.last_run is not None else ""
    return "".join(
        [
            family("flowprobe_anomaly_score", "gauge", "How anomalous the latest point of each signal is, from 0 (usual) to 1.", scores),
            family("flowprobe_anomaly", "gauge", "1 while the latest anomaly score is at or above the worker's threshold, else 0.", flags),
            family("flowprobe_analytics_points_total", "counter", "Points scored and learned by the analytics worker, by source.",
                    f'flowprobe_analytics_points_total{{source="{escape_label(worker.source.name)}"}} {worker.points_total}\n'),
            family("flowprobe_analytics_errors_total", "counter",
                    "Failed source reads, detector failures and failed state saves of the analytics worker.",
                    f"flowprobe_analytics_errors_total {worker.errors_total}\n"),
            family("flowprobe_analytics_last_run_timestamp_seconds", "gauge",
                    "When the analytics worker last read its source successfully, as a unix timestamp.", last_run),
        ]
    )


def create_app(worker: Worker) -> FastAPI:
    app = FastAPI(
        title="flowprobe analytics",
        version=VERSION,
        description="Anomaly scores of the workflows' latency, failure ratio and step durations.",
    )
    process = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=process)

    # Handlers only read: Worker.current copies the series first, so the learning thread adding one cannot break a scrape.
    @app.get("/metrics", summary="Prometheus exposition", response_class=Response)
    async def metrics() -> Response:
        return Response(render(worker).encode() + generate_latest(process), media_type=CONTENT_TYPE)

    @app.get("/healthz", summary="The worker is alive (it keeps running while its source is down)")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "source": worker.source.name, "source_error": worker.source_error, "last_run": worker.last_run}

    @app.get("/api/analytics/anomalies", summary="The latest score of every series, most anomalous first")
    async def anomalies() -> dict[str, Any]:
        return worker.anomalies()

    return app
