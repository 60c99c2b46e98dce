"""The worker's findings as InfluxDB points, each at the time of what it is about.

With ``--influx-url`` (and ``--influx-org``, ``--influx-bucket``, the token in
``FLOWPROBE_INFLUX_TOKEN``) the worker writes, besides its gauges:

``flowprobe_anomaly``
    tags ``workflow``, ``env``, ``signal``; fields ``score`` (0 to 1),
    ``anomaly`` (boolean: at or above the threshold, past the series'
    probation, as ``flowprobe_anomaly``) and ``value`` (the
    point's own value). Time: the point's.
``flowprobe_prediction``
    tags ``workflow``, ``env``; fields ``failure_probability`` (only once the
    model says something) and ``latency_forecast_<horizon>`` (seconds).
    Time: the run's start.

So a backfill or a worker that was down writes the history as it would have
been scored live, not a burst at the time of writing. VictoriaMetrics names
these ``flowprobe_anomaly_score``, ``flowprobe_prediction_failure_probability``
and so on. Delivery is the collector's sink (collector/sink.py): batches,
retries with backoff, and a disk spool in ``<state-dir>/influx-spool``, so a
database that is down loses nothing up to the spool's size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from analytics.source import Point, Run
from collector.sink import InfluxSink, line, unix_ns

__all__ = ["ANOMALY_MEASUREMENT", "PREDICTION_MEASUREMENT", "TOKEN_ENV", "InfluxOutput", "anomaly_line", "prediction_line"]

ANOMALY_MEASUREMENT = "flowprobe_anomaly"
PREDICTION_MEASUREMENT = "flowprobe_prediction"
TOKEN_ENV = "FLOWPROBE_INFLUX_TOKEN"


def anomaly_line(point: Point, score: float, anomaly: bool) -> str:
    tags = {"workflow": point.workflow, "env": point.env, "signal": point.signal}
    return line(ANOMALY_MEASUREMENT, tags, {"score": float(score), "anomaly": anomaly, "value": float(point.value)}, unix_ns(point.t))


def prediction_line(run: Run, probability: float | None, forecast: dict[str, float] | None) -> str | None:
    fields: dict[str, Any] = {}
    if probability is not None:
        fields["failure_probability"] = float(probability)
    fields.update((f"latency_forecast_{horizon}", float(seconds)) for horizon, seconds in sorted((forecast or {}).items()))
    if not fields:
        return None
    return line(PREDICTION_MEASUREMENT, {"workflow": run.workflow, "env": run.env}, fields, unix_ns(run.t))


class InfluxOutput:
    """Collects the lines of one interval and hands them to the sink in one piece."""

    def __init__(self, sink: InfluxSink) -> None:
        self.sink = sink
        self.pending: list[str] = []

    @classmethod
    def open(cls, url: str, org: str, bucket: str, state_dir: Path) -> InfluxOutput:
        """The output for the command line; the token comes from FLOWPROBE_INFLUX_TOKEN. Raises ValueError, naming what is missing."""
        from collector.config import InfluxSettings

        token = os.environ.get(TOKEN_ENV)
        if not token:
            raise ValueError(f"--influx-url needs the token in the environment variable {TOKEN_ENV}, which is not set")
        settings = InfluxSettings(url=url, org=org, bucket=bucket, token={"env": TOKEN_ENV})
        return cls(InfluxSink(settings, token, Path(state_dir) / "influx-spool"))

    def anomaly(self, point: Point, score: float, anomaly: bool) -> None:
        self.pending.append(anomaly_line(point, score, anomaly))

    def prediction(self, run: Run, probability: float | None, forecast: dict[str, float] | None) -> None:
        text = prediction_line(run, probability, forecast)
        if text is not None:
            self.pending.append(text)

    def flush(self) -> None:
        lines, self.pending = self.pending, []
        self.sink.add_lines(lines)

    def start(self) -> None:
        self.sink.start()

    def close(self, grace: float = 5.0) -> None:
        self.flush()
        self.sink.close(grace)
