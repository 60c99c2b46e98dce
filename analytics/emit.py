"""What the worker writes back: gauges on its own /metrics, and the scores as JSON.

Prometheus scrapes the worker like any target, so the scores can be graphed,
queried and alerted on with the workflows' own labels:

- ``flowprobe_anomaly_score{workflow,env,signal}``: the score of the latest
  point of the signal, 0 (usual) to 1 (anomalous);
- ``flowprobe_anomaly{workflow,env,signal}``: 1 while that score is at or
  above the threshold (``--threshold``), else 0; always 0 on the series'
  first ``--probation`` points;
- ``flowprobe_failure_probability{workflow,env}``: the probability that the
  pair fails within its next K runs (analytics/predict.py), once the model
  has learned enough to say;
- ``flowprobe_latency_forecast_seconds{workflow,env,horizon}``: the run
  latency forecast at each horizon (analytics/forecast.py);
- ``flowprobe_root_cause_info{incident,workflow,env,cause,kind}``: 1 for each
  failing member of each open incident, with the incident's top cause
  (analytics/patterns.py); gone when the incident resolves;
- ``flowprobe_failure_recurrence_seconds{workflow,env,kind}``: the period
  of a pair's recurring failures (``kind``: ``period``, ``hour_of_day``
  (86400) or ``day_of_week`` (604800));
- ``flowprobe_analytics_points_total{source}``: points scored and learned;
- ``flowprobe_analytics_runs_total{source}``: runs learned by the run-level models;
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

from fastapi import FastAPI, Query, Response
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
        flags.append(f"flowprobe_anomaly{{{key}}} {int(worker.flagged(series))}\n")
    last_run = f"flowprobe_analytics_last_run_timestamp_seconds {number(worker.last_run)}\n" if worker.last_run is not None else ""
    findings = render_findings(worker) if worker.findings is not None else []
    return "".join(
        [
            family("flowprobe_anomaly_score", "gauge", "How anomalous the latest point of each signal is, from 0 (usual) to 1.", scores),
            family("flowprobe_anomaly", "gauge", "1 while the latest anomaly score is at or above the worker's threshold, after the series' probation; else 0.", flags),
            *findings,
            family("flowprobe_analytics_points_total", "counter", "Points scored and learned by the analytics worker, by source.",
                    f'flowprobe_analytics_points_total{{source="{escape_label(worker.source.name)}"}} {worker.points_total}\n'),
            family("flowprobe_analytics_errors_total", "counter",
                    "Failed source reads, detector failures and failed state saves of the analytics worker.",
                    f"flowprobe_analytics_errors_total {worker.errors_total}\n"),
            family("flowprobe_analytics_last_run_timestamp_seconds", "gauge",
                    "When the analytics worker last read its source successfully, as a unix timestamp.", last_run),
        ]
    )


def render_findings(worker: Worker) -> list[str]:
    """The families of the run-level models: predictions, forecasts, root causes, recurrences, runs learned."""
    assert worker.findings is not None
    probabilities, forecasts = [], []
    for item in worker.predictions()["items"]:
        pair = label_set(workflow=item["workflow"], env=item["env"])
        if item["failure_probability"] is not None:
            probabilities.append(f"flowprobe_failure_probability{{{pair}}} {number(item['failure_probability'])}\n")
        for horizon, seconds in sorted((item["latency_forecast_seconds"] or {}).items()):
            forecasts.append(f'flowprobe_latency_forecast_seconds{{{pair},horizon="{escape_label(horizon)}"}} {number(seconds)}\n')
    causes = [f"flowprobe_root_cause_info{{{label_set(**row)}}} 1\n" for row in worker.findings.root_causes()]
    periods = [
        f"flowprobe_failure_recurrence_seconds{{{label_set(workflow=r['workflow'], env=r['env'], kind=r['kind'])}}} {number(r['period_s'])}\n"
        for r in worker.incidents()["recurring"]
    ]
    return [
        family("flowprobe_failure_probability", "gauge", "Probability that the pair fails within its next K runs, from 0 to 1.", probabilities),
        family("flowprobe_latency_forecast_seconds", "gauge", "Forecast run latency of the pair at each horizon, in seconds.", forecasts),
        family("flowprobe_root_cause_info", "gauge", "The top root cause of each open incident, one series per failing member.", causes),
        family("flowprobe_failure_recurrence_seconds", "gauge", "The period of a pair's recurring failures, in seconds.", periods),
        family("flowprobe_analytics_runs_total", "counter", "Runs learned by the failure predictor, the forecaster and the pattern finder.",
               f'flowprobe_analytics_runs_total{{source="{escape_label(worker.source.name)}"}} {worker.findings.runs_total}\n'),
    ]


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

    @app.get("/api/analytics/predictions", summary="The failure probability and latency forecast of every (workflow, env), most at risk first")
    async def predictions() -> dict[str, Any]:
        return worker.predictions()

    @app.get("/api/analytics/incidents", summary="Incidents with their ranked root causes (open first), and recurring, correlated and cascading failures")
    async def incidents(open: bool = Query(False, description="Only the incidents still open")) -> dict[str, Any]:
        return worker.incidents(open_only=open)

    return app
