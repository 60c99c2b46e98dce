"""Where the worker's series come from: the collector's history, or Prometheus.

A source turns what it reads into points: one value of one signal of one
(workflow, env) at one time. The signals, the ``signal`` label of
``flowprobe_anomaly_score``:

- ``latency``: how long a whole run took, in seconds;
- ``error_rate``: the share of runs that failed (failure or error, not
  skipped): over the last ``error_window`` runs from the history, over the
  last ``error_window`` of time from Prometheus;
- ``step:<name>``: how long the step took, in seconds. The step names come
  from the workflow files, so the label stays as bounded as the
  ``step`` label of ``flowprobe_step_duration_seconds``; the prefix keeps the
  metric's labels to the three of the contract.

``history:PATH`` (embedded mode) reads the collector's SQLite file read-only,
one point per run, while the collector writes it. ``prometheus:URL`` (stack
mode) asks ``query_range`` for the same signals as ratios of rates, one point
per step of the range. A source that cannot be read this time raises
`SourceError`; the worker logs it and tries again at its next interval.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

__all__ = [
    "ERROR_RATE",
    "LATENCY",
    "STEP_PREFIX",
    "HistorySource",
    "Point",
    "PrometheusSource",
    "Run",
    "SeriesKey",
    "Source",
    "SourceError",
    "open_source",
]

log = logging.getLogger("flowprobe.analytics.source")

LATENCY = "latency"
ERROR_RATE = "error_rate"
STEP_PREFIX = "step:"

SeriesKey = tuple[str, str, str]  # (workflow, env, signal)


@dataclass(frozen=True)
class Point:
    workflow: str
    env: str
    signal: str
    t: float  # unix time the value belongs to: the run's start, or the step of the range
    value: float

    @property
    def key(self) -> SeriesKey:
        return (self.workflow, self.env, self.signal)


@dataclass(frozen=True)
class Run:
    """One run of a (workflow, env), as the failure predictor and the pattern finder see it.

    From the history each run is one `Run`. From Prometheus a `Run` stands for
    what one step of the range saw: ``outcome`` is ``failure`` if any run in
    it failed, and ``failed_step``/``reason`` come from
    ``flowprobe_workflow_failure_info``.
    """

    workflow: str
    env: str
    t: float  # unix time the run started
    duration: float  # seconds, retries included
    outcome: str  # success, failure, error or skipped
    failed_step: str | None = None
    reason: str | None = None  # status, assertion, timeout, connect, tls, capture
    attempts: int = 1
    flaky: bool = False  # passed only after a retry
    hosts: tuple[str, ...] = ()  # the target hosts its steps reached, when known
    skip_reason: str | None = None

    @property
    def failed(self) -> bool:
        return self.outcome in ("failure", "error")

    @property
    def pair(self) -> tuple[str, str]:
        return (self.workflow, self.env)


class SourceError(Exception):
    """The source could not be read this time: logged, counted and tried again at the next interval."""


class Source(Protocol):
    name: str  # the `source` label of flowprobe_analytics_points_total

    async def read(self) -> list[Point]:
        """The points that arrived since the last read, oldest first within each series."""

    def take_runs(self) -> list[Run]:
        """The runs read since the last call, oldest first within each pair; the list is emptied."""

    def resume(self, after: float) -> None:
        """Skip what lies at or before `after` (unix time): a restarted worker has already learned it."""

    async def close(self) -> None: ...


def open_source(spec: str, **options: Any) -> HistorySource | PrometheusSource:
    """``history:PATH`` or ``prometheus:URL``."""
    kind, _, where = spec.partition(":")
    if kind == "history" and where:
        return HistorySource(Path(where), **options)
    if kind == "prometheus" and where.startswith(("http://", "https://")):
        return PrometheusSource(where, **options)
    raise ValueError(f"expected history:PATH or prometheus:URL, got {spec!r}")


# ---------------------------------------------------------------- the collector's history


class HistorySource:
    """The collector's SQLite run history, read-only, while the collector writes it.

    Rows are read in insertion order (rowid), not by start time: a long run is
    written after shorter runs of other pairs that started later. Within a
    pair runs never overlap, so rowid order is start order there. The first
    read after a start reads the whole history again, so the error window
    has its previous runs; the worker drops the points it had already learned.
    """

    name = "history"

    def __init__(self, path: Path | str, *, error_window: int = 10, batch: int = 5000, busy_timeout: float = 1.0) -> None:
        self.path = Path(path)
        self.error_window = error_window
        self.batch = batch
        self.busy_timeout = busy_timeout
        self._rowid = 0
        self._outcomes: dict[tuple[str, str], deque[int]] = {}
        self._runs: list[Run] = []

    def take_runs(self) -> list[Run]:
        runs, self._runs = self._runs, []
        return runs

    def resume(self, after: float) -> None:
        # Nothing to skip here: the previous runs are needed for the error window.
        pass

    async def close(self) -> None:
        pass

    async def read(self) -> list[Point]:
        return await asyncio.to_thread(self._read)

    def _read(self) -> list[Point]:
        if not self.path.is_file():
            raise SourceError(f"the history {self.path} does not exist (yet)")
        try:
            # mode=ro: never create, migrate or lock the collector's file for writing.
            # WAL lets this reader see committed rows while the collector writes.
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            raise SourceError(f"cannot open the history {self.path}: {exc}") from None
        try:
            rows = self._rows(db)
        except sqlite3.Error as exc:
            raise SourceError(f"cannot read the history {self.path}: {exc}") from None
        finally:
            db.close()
        points: list[Point] = []
        for row in rows:
            points.extend(self._points(*row[1:]))
        if rows:
            self._rowid = rows[-1][0]
        return points

    def _rows(self, db: sqlite3.Connection) -> list[tuple[Any, ...]]:
        """Every row after the cursor; nothing moves until all of them are read."""
        (top,) = db.execute("SELECT COALESCE(MAX(rowid), 0) FROM runs").fetchone()
        cursor = self._rowid
        if top < cursor:
            # The file was replaced or emptied: start over (the worker drops what it learned).
            log.warning("the history %s starts over; reading it from the beginning", self.path)
            cursor, self._rowid = 0, 0
            self._outcomes.clear()
        rows: list[tuple[Any, ...]] = []
        while True:
            chunk = db.execute(
                "SELECT rowid, workflow, env, started_at, duration, outcome, data FROM runs WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (cursor, self.batch),
            ).fetchall()
            rows.extend(chunk)
            if len(chunk) < self.batch:
                return rows
            cursor = chunk[-1][0]

    def _points(self, workflow: str, env: str, started_at: float, duration: float, outcome: str, data: str) -> list[Point]:
        try:
            run = json.loads(data)
            if not isinstance(run, dict):
                raise TypeError("a run is not an object")
        except (ValueError, TypeError) as exc:
            log.warning("a run of %s in %s is unreadable: %s", workflow, env, exc)
            run = {}
        self._runs.append(
            Run(
                workflow, env, float(started_at), float(duration), outcome,
                failed_step=run.get("failed_step"), reason=run.get("reason"),
                attempts=int(run.get("attempts") or 1), flaky=bool(run.get("flaky")),
                hosts=tuple(sorted({str(s["host"]) for s in run.get("steps") or [] if isinstance(s, dict) and s.get("host")})),
                skip_reason=run.get("skip_reason"),
            )
        )
        if outcome == "skipped":  # not a run of the target: no latency, and no part of the failure ratio
            return []
        outcomes = self._outcomes.setdefault((workflow, env), deque(maxlen=self.error_window))
        outcomes.append(int(outcome in ("failure", "error")))
        points = [
            Point(workflow, env, LATENCY, started_at, float(duration)),
            Point(workflow, env, ERROR_RATE, started_at, sum(outcomes) / len(outcomes)),
        ]
        try:
            steps = run.get("steps") or []
            points.extend(
                Point(workflow, env, STEP_PREFIX + str(step["name"]), started_at, float(step["duration"]))
                for step in steps
                if step.get("outcome") != "skipped"
            )
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("a run of %s in %s has unreadable steps: %s", workflow, env, exc)
        return points


# ---------------------------------------------------------------- Prometheus


def _ratio(metric: str, by: str, window: str, numerator: str = "", denominator: str = "") -> str:
    return (
        f"sum by ({by}) (rate({metric}{numerator}[{window}]))"
        f" / sum by ({by}) (rate({metric.replace('_sum', '_count')}{denominator}[{window}]))"
    )


class PrometheusSource:
    """``query_range`` over HTTP for the signals of every (workflow, env).

    Latency and step durations are the mean over the rate window (the sum's
    rate over the count's rate); the failure ratio is failed runs over runs
    that were not skipped, over `error_window`. A window without runs gives
    NaN (0/0), which is no point rather than a zero. Each read asks for the
    steps from the last one up to `settle` seconds ago, so a point is not
    read before the scrapes it depends on have landed.
    """

    name = "prometheus"

    def __init__(
        self,
        url: str,
        *,
        step: float = 15.0,
        window: str = "1m",
        error_window: str = "10m",
        lookback: float = 3600.0,
        settle: float | None = None,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url.rstrip("/")
        self.step = step
        self.settle = step if settle is None else settle
        self.clock = clock
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._own_client = client is None
        self._cursor = self._align(clock() - lookback)
        self._runs: list[Run] = []
        self.queries: dict[str, str] = {
            LATENCY: _ratio("flowprobe_workflow_duration_seconds_sum", "workflow, env", window),
            ERROR_RATE: (
                f'sum by (workflow, env) (rate(flowprobe_workflow_runs_total{{result=~"failure|error"}}[{error_window}]))'
                f' / sum by (workflow, env) (rate(flowprobe_workflow_runs_total{{result!="skipped"}}[{error_window}]))'
            ),
            STEP_PREFIX: _ratio("flowprobe_step_duration_seconds_sum", "workflow, env, step", window),
        }

    def _run_queries(self) -> dict[str, str]:
        # What each counter gained since the previous step: exact counts per step, whatever the scrape
        # interval (a range as short as one step may hold a single sample, where increase() gives nothing).
        # A counter reset gives a negative difference, clamped to nothing.
        def gained(metric: str, by: str) -> str:
            return f"sum by ({by}) (clamp_min({metric} - {metric} offset {self.step:g}s, 0))"

        return {
            "runs": gained("flowprobe_workflow_runs_total", "workflow, env, result"),
            "failure": "max by (workflow, env, step, reason) (flowprobe_workflow_failure_info)",
            "retries": gained("flowprobe_workflow_retries_total", "workflow, env"),
            "flaky": gained("flowprobe_workflow_flaky_total", "workflow, env"),
        }

    def take_runs(self) -> list[Run]:
        runs, self._runs = self._runs, []
        return runs

    def _align(self, t: float) -> float:
        # Steps on a fixed grid, so a series' points line up from one read to the next.
        return math.floor(t / self.step) * self.step

    def resume(self, after: float) -> None:
        self._cursor = max(self._cursor, self._align(after))

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def read(self) -> list[Point]:
        start = self._cursor + self.step
        end = self._align(self.clock() - self.settle)
        # Prometheus answers at most 11000 points per series: keep the newest part of a long gap.
        start = max(start, end - 10000 * self.step)
        if end < start:
            return []
        points: list[Point] = []
        for signal, query in self.queries.items():
            for series in await self._query_range(query, start, end):
                labels = series.get("metric", {})
                workflow, env = labels.get("workflow"), labels.get("env")
                if not workflow or not env:
                    continue
                name = signal if signal != STEP_PREFIX else STEP_PREFIX + labels.get("step", "")
                for t, value in series.get("values", []):
                    x = float(value)
                    if math.isfinite(x):
                        points.append(Point(workflow, env, name, float(t), x))
        runs = await self._read_runs(start, end, points)
        self._cursor = end  # only once every query answered: a failed read is asked again whole
        self._runs.extend(runs)
        return points

    async def _read_runs(self, start: float, end: float, points: list[Point]) -> list[Run]:
        """One `Run` per step of the range in which a pair ran: failed if any run in it failed."""
        answers = {name: await self._query_range(query, start, end) for name, query in self._run_queries().items()}
        counts: dict[tuple[str, str, float], dict[str, float]] = {}
        for name, series_list in answers.items():
            for series in series_list:
                labels = series.get("metric", {})
                workflow, env = labels.get("workflow"), labels.get("env")
                if not workflow or not env:
                    continue
                for t, value in series.get("values", []):
                    x = float(value)
                    if not math.isfinite(x):
                        continue
                    slot = counts.setdefault((workflow, env, float(t)), {})
                    if name == "runs":
                        slot[labels.get("result", "")] = slot.get(labels.get("result", ""), 0.0) + x
                    elif name == "failure":
                        slot["step=" + labels.get("step", "")] = x
                        slot["reason=" + labels.get("reason", "")] = x
                    else:
                        slot[name] = x
        latency = {(p.workflow, p.env, p.t): p.value for p in points if p.signal == LATENCY}
        runs = []
        for (workflow, env, t), slot in sorted(counts.items(), key=lambda item: item[0][2]):
            failed = slot.get("failure", 0.0) + slot.get("error", 0.0)
            ran = failed + slot.get("success", 0.0)
            if ran + slot.get("skipped", 0.0) < 0.5:
                continue  # no run in this step
            outcome = "failure" if failed >= 0.5 else "success" if ran >= 0.5 else "skipped"
            step = next((k[5:] for k in slot if k.startswith("step=")), None) if outcome == "failure" else None
            reason = next((k[7:] for k in slot if k.startswith("reason=")), None) if outcome == "failure" else None
            runs.append(Run(workflow, env, t, latency.get((workflow, env, t), 0.0), outcome, failed_step=step, reason=reason,
                            attempts=1 + round(slot.get("retries", 0.0) / max(ran, 1.0)), flaky=slot.get("flaky", 0.0) >= 0.5))
        return runs

    async def topology(self) -> Any:
        """The workflows' depends_on (the ``dependencies`` label of flowprobe_workflow_info) and step names, for the root causes."""
        from analytics.patterns import Topology

        now = self.clock()
        infos = await self._query_range("flowprobe_workflow_info", now, now)
        steps = await self._query_range("group by (workflow, step) (flowprobe_step_success)", now, now)
        items: dict[str, dict[str, Any]] = {}
        for series in infos:
            labels = series.get("metric", {})
            if labels.get("workflow"):
                depends = [d for d in labels.get("dependencies", "").split(",") if d]
                items[labels["workflow"]] = {"workflow": labels["workflow"], "depends_on": depends, "steps": []}
        for series in steps:
            labels = series.get("metric", {})
            item = items.get(labels.get("workflow", ""))
            if item is not None and labels.get("step"):
                item["steps"].append(labels["step"])
        return Topology.from_api(list(items.values())) if items else None

    async def _query_range(self, query: str, start: float, end: float) -> list[dict[str, Any]]:
        params = {"query": query, "start": repr(start), "end": repr(end), "step": repr(self.step)}
        try:
            response = await self._client.post(f"{self.url}/api/v1/query_range", data=params)
        except httpx.HTTPError as exc:
            raise SourceError(f"Prometheus at {self.url} cannot be reached: {type(exc).__name__}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or body.get("status") != "success":
            reason = body.get("error") or response.text[:200]
            raise SourceError(f"Prometheus at {self.url} answered {response.status_code}: {reason}")
        result = body.get("data", {}).get("result", [])
        return result if isinstance(result, list) else []
