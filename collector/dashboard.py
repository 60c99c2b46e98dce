"""What the dashboard API reports: status, uptime and latency per pair, from the history or from Prometheus.

Two sources give the same facts per (workflow, env), so the API has one shape:

- ``HistoryReader`` (embedded mode) reads the collector's SQLite history on
  its own connection, opened read-only (``mode=ro``): it never writes, locks
  or migrates the file, and WAL lets it read while the store's writer commits.
  Counts are exact, quantiles are exact (linear interpolation between ranks).
  Windows are limited by the history's retention (``history.runs_per_pair``
  and ``history.max_age``): a 30 d window covers what the history still holds.
- ``PrometheusAggregates`` (stack mode) asks Prometheus' ``query`` API, at one
  evaluation time, with ``increase`` over the counters of METRICS.md: counts
  are Prometheus' extrapolated increases, quantiles are bucket estimates
  (``histogram_quantile``), and every collector Prometheus scrapes (all
  shards) is seen. Prometheus keeps no per-run reason, so the runs that got
  no response are estimated from ``flowprobe_step_failures_total``: the
  largest connect/tls/timeout count of one step of the pair (a run that
  cannot reach its target fails its first step, and its ``always_run``
  cleanup the same way; taking the largest step, not the sum, counts such a
  run once). The facts about the last run come from this collector's own
  state when it runs the pair, else from ``flowprobe_workflow_success`` and
  the last five minutes of ``flowprobe_workflow_runs_total``.

Statuses, in this order (`classify`):

- ``down``: the last run that was not skipped failed or errored (also when
  later runs were skipped: a target whose circuit is open is still down);
- ``skipped``: the last run was skipped (a failing dependency, an open circuit);
- ``degraded``: the last run passed, but the p95 run duration over the last
  hour is above the workflow's ``alert.latency_slo``, or a run passed only
  after a workflow retry (flaky) in the last 15 minutes;
- ``up``: the last run passed, and neither of the above;
- ``unknown``: no run yet.

Uptime is success / (success + failure + error) runs; reachability is the
runs that got a response from the target (no ``connect``, ``tls`` or
``timeout`` failure) / runs not skipped. Both are percentages (0..100), or
None for a window without runs. p50 and p95 are over 24 h, of runs not skipped.

The 7 d and 30 d windows read a month of data, so they are counted at most
every 5 minutes (``long_ttl``). From the history, the runs since that count
are added to it at every refresh, so only the oldest edge of those windows
lags; from Prometheus, those two windows lag by up to 5 minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import resource
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import httpx

from collector.config import parse_duration

if TYPE_CHECKING:
    from collector.config import Config, Workflow
    from collector.service import Service

__all__ = [
    "DEGRADED_WINDOW",
    "FLAKY_WINDOW",
    "STATUSES",
    "UNREACHABLE_REASONS",
    "WINDOWS",
    "Dashboard",
    "HistoryReader",
    "PairFacts",
    "Prometheus",
    "PrometheusAggregates",
    "PrometheusError",
    "ProcessSampler",
    "TTLCache",
    "classify",
    "decode_cursor",
    "encode_cursor",
    "iso",
    "parse_time",
    "percent",
    "run_filters",
    "quantile",
    "totals",
]

log = logging.getLogger("flowprobe.dashboard")

Pair = tuple[str, str]
T = TypeVar("T")

WINDOWS: dict[str, float] = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}
QUANTILE_WINDOW = ("24h", 86400.0)  # p50 and p95 of the overview
DEGRADED_WINDOW = ("1h", 3600.0)  # p95 against the latency SLO
FLAKY_WINDOW = ("15m", 900.0)  # a flaky pass this recent makes a pair degraded
LONG_WINDOWS = ("7d", "30d")  # counted at most every 5 minutes: they read a month of data
SHORT_WINDOWS = tuple(w for w in WINDOWS if w not in LONG_WINDOWS)
SKIP_WINDOW = ("5m", 300.0)  # Prometheus only: all runs skipped over this window = skipped
UNREACHABLE_REASONS = ("connect", "tls", "timeout")
STATUSES = ("up", "degraded", "down", "skipped", "unknown")


# ---------------------------------------------------------------- small pieces


def quantile(sorted_values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None when empty.

    >>> quantile([1.0, 2.0, 3.0, 4.0], 0.5)
    2.5
    >>> quantile([0.1, 0.2, 0.3, 0.4, 10.0], 0.95)
    8.08
    """
    if not sorted_values:
        return None
    h = (len(sorted_values) - 1) * q
    lo = int(h)
    if lo + 1 >= len(sorted_values):
        return float(sorted_values[-1])
    return float(sorted_values[lo] + (h - lo) * (sorted_values[lo + 1] - sorted_values[lo]))


def percent(numerator: float, denominator: float) -> float | None:
    if not denominator or denominator <= 0 or not math.isfinite(denominator) or not math.isfinite(numerator):
        return None
    return round(min(100.0, max(0.0, 100.0 * numerator / denominator)), 4)


def parse_time(value: str, now: float) -> float:
    """Unix seconds (``1714560000``), ISO 8601 (``2024-05-01T10:00:00Z``; no zone is UTC) or a duration ago (``24h``)."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError(f"invalid time {value!r}")
        return seconds
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        pass
    else:
        return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).timestamp()
    try:
        return now - parse_duration(text)
    except ValueError:
        raise ValueError(f"invalid time {value!r}: use unix seconds, ISO 8601 (2024-05-01T10:00:00Z) or a duration ago (24h)") from None


def encode_cursor(started_at: float, run_id: str) -> str:
    """The `before` of the next page: ``<started_at>:<run_id>``, so runs that started at the same instant are not skipped."""
    return f"{started_at!r}:{run_id}"


def decode_cursor(value: str) -> tuple[float, str | None]:
    """``<started_at>:<run_id>`` (from next_before) or a plain started_at (runs strictly before it)."""
    at, _, run_id = value.partition(":")
    try:
        started_at = float(at)
    except ValueError:
        raise ValueError(f"invalid cursor {value!r}: pass next_before from the previous page, or a unix time") from None
    if not math.isfinite(started_at):
        raise ValueError(f"invalid cursor {value!r}")
    return started_at, (run_id or None)


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- facts and statuses


@dataclass
class PairFacts:
    """What a source knows of one (workflow, env)."""

    last_check: float | None = None  # when the last run finished (unix seconds)
    last_outcome: str | None = None
    skip_reason: str | None = None
    last_failed: bool | None = None  # the last run that was not skipped failed or errored
    last_error: bool = False  # ... and it was an error (flowprobe's), not a failure
    failed_step: str | None = None
    reason: str | None = None
    success: dict[str, float] = field(default_factory=dict)  # per window label
    completed: dict[str, float] = field(default_factory=dict)  # success + failure + error
    reachable: dict[str, float] = field(default_factory=dict)
    p50: float | None = None
    p95: float | None = None
    p95_recent: float | None = None  # over DEGRADED_WINDOW
    flaky_recent: bool = False


def classify(facts: PairFacts, latency_slo: float | None) -> tuple[str, str | None]:
    """(status, why) by the rules in the module docstring."""
    if facts.last_failed:
        if facts.last_error:
            return "down", "the last run errored inside flowprobe"
        if facts.failed_step:
            return "down", f"the last run failed at step {facts.failed_step}" + (f" ({facts.reason})" if facts.reason else "")
        return "down", "the last run failed"
    if facts.last_outcome == "skipped":
        return "skipped", f"the last run was skipped ({facts.skip_reason})" if facts.skip_reason else "the last run was skipped"
    if facts.last_outcome is None and facts.last_failed is None:
        return "unknown", "no run yet"
    if latency_slo is not None and facts.p95_recent is not None and facts.p95_recent > latency_slo:
        return "degraded", f"p95 over the last {DEGRADED_WINDOW[0]} is {facts.p95_recent:.3g}s, above the latency SLO of {latency_slo:g}s"
    if facts.flaky_recent:
        return "degraded", f"a run passed only after a retry in the last {FLAKY_WINDOW[0]}"
    return "up", None


# ---------------------------------------------------------------- the SQLite history, read-only


class HistoryReader:
    """Read-only queries over the collector's run history (collector.store's `runs` table)."""

    def __init__(self, path: Path | str, *, busy_timeout: float = 2.0) -> None:
        self.path = str(path)
        self.busy_timeout = busy_timeout

    @property
    def available(self) -> bool:
        return self.path != ":memory:" and Path(self.path).is_file()

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection; usable from one thread at a time (exports hop threads between pages)."""
        uri = f"{Path(self.path).resolve().as_uri()}?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, check_same_thread=False)
        try:
            yield db
        finally:
            db.close()

    # ------------------------------------------------------------ overview

    def facts(self, pairs: Sequence[Pair], now: float, *, windows: Mapping[str, float] | None = None) -> dict[Pair, PairFacts]:
        """Everything the overview needs. `windows` (label: from when) replaces the counts' windows (default: WINDOWS up to now)."""
        found: dict[Pair, PairFacts] = {pair: PairFacts() for pair in pairs}
        if not self.available:
            return found
        with self.connect() as db:
            self._window_counts(db, found, now, windows if windows is not None else {w: now - seconds for w, seconds in WINDOWS.items()})
            for (workflow, env), facts in found.items():
                self._last_runs(db, workflow, env, now, facts)
            for (workflow, env), values in self._quantiles(db, now - QUANTILE_WINDOW[1], now, (0.5, 0.95)).items():
                if (workflow, env) in found:
                    found[(workflow, env)].p50, found[(workflow, env)].p95 = values
            for (workflow, env), values in self._quantiles(db, now - DEGRADED_WINDOW[1], now, (0.95,)).items():
                if (workflow, env) in found:
                    found[(workflow, env)].p95_recent = values[0]
        return found

    def counts(self, pairs: Sequence[Pair], now: float, windows: Sequence[str]) -> dict[Pair, PairFacts]:
        """Only the run counts of `windows` (and the flaky flag)."""
        found: dict[Pair, PairFacts] = {pair: PairFacts() for pair in pairs}
        if self.available:
            with self.connect() as db:
                self._window_counts(db, found, now, {w: now - WINDOWS[w] for w in windows})
        return found

    def _window_counts(self, db: sqlite3.Connection, found: dict[Pair, PairFacts], now: float, windows: Mapping[str, float]) -> None:
        """Counts of runs started from each window's start (inclusive) up to `now`."""
        reached = f"(reason IS NULL OR reason NOT IN ({', '.join(repr(r) for r in UNREACHABLE_REASONS)}))"
        columns, args = [], []
        for start in windows.values():
            columns += [
                "SUM(started_at >= ? AND outcome = 'success')",
                "SUM(started_at >= ? AND outcome != 'skipped')",
                f"SUM(started_at >= ? AND outcome != 'skipped' AND {reached})",
            ]
            args += [start] * 3
        columns.append("SUM(started_at >= ? AND outcome = 'success' AND flaky)")
        args.append(now - FLAKY_WINDOW[1])
        # From the oldest start asked: short windows read only recent rows, through runs_by_time.
        oldest = min([now - FLAKY_WINDOW[1], *windows.values()])
        sql = f"SELECT workflow, env, {', '.join(columns)} FROM runs WHERE started_at >= ? AND started_at <= ? GROUP BY workflow, env"
        for workflow, env, *sums in db.execute(sql, (*args, oldest, now)):
            facts = found.get((workflow, env))
            if facts is None:
                continue
            for index, label in enumerate(windows):
                success, completed, reachable = sums[3 * index : 3 * index + 3]
                facts.success[label], facts.completed[label], facts.reachable[label] = float(success), float(completed), float(reachable)
            facts.flaky_recent = bool(sums[-1])

    @staticmethod
    def _last_runs(db: sqlite3.Connection, workflow: str, env: str, now: float, facts: PairFacts) -> None:
        # The index runs_by_pair (workflow, env, started_at DESC) makes each of these a seek.
        base = (
            "SELECT started_at + duration, outcome, json_extract(data, '$.skip_reason'), failed_step, reason"
            " FROM runs WHERE workflow = ? AND env = ? AND started_at <= ?"
        )
        last = db.execute(base + " ORDER BY started_at DESC LIMIT 1", (workflow, env, now)).fetchone()
        if last is None:
            return
        facts.last_check, facts.last_outcome, facts.skip_reason = float(last[0]), last[1], last[2]
        done = last if last[1] != "skipped" else db.execute(
            base + " AND outcome != 'skipped' ORDER BY started_at DESC LIMIT 1", (workflow, env, now)
        ).fetchone()
        if done is not None:
            facts.last_failed = done[1] in ("failure", "error")
            facts.last_error = done[1] == "error"
            if facts.last_failed:
                facts.failed_step, facts.reason = done[3], done[4]

    @staticmethod
    def _quantiles(db: sqlite3.Connection, since: float, until: float, qs: Sequence[float]) -> dict[Pair, list[float | None]]:
        """Per pair, the quantiles of the durations of runs not skipped, in SQL: only the ranks needed come back."""
        ranks = ", ".join(f"CAST((n - 1) * {q!r} AS INTEGER), CAST((n - 1) * {q!r} AS INTEGER) + 1" for q in qs)
        rows = db.execute(
            f"""WITH d AS (
                    SELECT workflow, env, duration,
                           ROW_NUMBER() OVER (PARTITION BY workflow, env ORDER BY duration) - 1 AS i,
                           COUNT(*) OVER (PARTITION BY workflow, env) AS n
                    FROM runs WHERE started_at >= ? AND started_at <= ? AND outcome != 'skipped')
                SELECT workflow, env, n, i, duration FROM d WHERE i IN ({ranks})""",
            (since, until),
        ).fetchall()
        picked: dict[Pair, tuple[int, dict[int, float]]] = {}
        for workflow, env, n, i, duration in rows:
            picked.setdefault((workflow, env), (int(n), {}))[1][int(i)] = float(duration)
        out: dict[Pair, list[float | None]] = {}
        for pair, (n, values) in picked.items():
            result: list[float | None] = []
            for q in qs:
                h = (n - 1) * q
                lo = int(h)
                low = values[lo]
                result.append(low if lo + 1 >= n else low + (h - lo) * (values[lo + 1] - low))
            out[pair] = result
        return out

    # ------------------------------------------------------------ runs

    def runs(
        self,
        *,
        workflows: Sequence[str] | None = None,
        env: str | None = None,
        outcomes: Sequence[str] | None = None,
        since: float | None = None,
        until: float | None = None,
        before: tuple[float, str | None] | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Run summaries, newest first (started_at, then run_id, descending)."""
        if not self.available:
            return []
        where, args = run_filters(workflows=workflows, env=env, outcomes=outcomes, since=since, until=until)
        if before is not None:
            at, run_id = before
            if run_id is None:
                where.append("started_at < ?")
                args.append(at)
            else:
                where.append("(started_at < ? OR (started_at = ? AND run_id < ?))")
                args += [at, at, run_id]
        sql = (
            "SELECT run_id, workflow, env, started_at, duration, outcome, failed_step, reason, flaky,"
            " json_extract(data, '$.attempts'), json_extract(data, '$.message'), json_extract(data, '$.skip_reason')"
            f" FROM runs{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY started_at DESC, run_id DESC LIMIT ?"
        )
        with self.connect() as db:
            rows = db.execute(sql, (*args, limit)).fetchall()
        return [
            {
                "run_id": r[0],
                "workflow": r[1],
                "env": r[2],
                "started_at": r[3],
                "duration": r[4],
                "outcome": r[5],
                "failed_step": r[6],
                "reason": r[7],
                "flaky": bool(r[8]),
                "attempts": r[9] if r[9] is not None else 1,
                "message": r[10] or "",
                "skip_reason": r[11],
            }
            for r in rows
        ]

    def last_minute(self, now: float, window: float = 60.0) -> dict[str, int]:
        """Runs by outcome that started in the last `window` seconds (and are written)."""
        if not self.available:
            return {}
        with self.connect() as db:
            rows = db.execute("SELECT outcome, COUNT(*) FROM runs WHERE started_at > ? AND started_at <= ? GROUP BY outcome", (now - window, now))
            return {outcome: int(n) for outcome, n in rows}

    def stats(self) -> dict[str, Any]:
        """The file, its WAL and its rows."""
        path = Path(self.path)
        out: dict[str, Any] = {"path": self.path, "file_bytes": _size(path), "wal_bytes": _size(Path(self.path + "-wal")), "rows": None}
        if not self.available:
            return out
        with self.connect() as db:
            rows, oldest, newest = db.execute("SELECT COUNT(*), MIN(started_at), MAX(started_at) FROM runs").fetchone()
            (page_size,) = db.execute("PRAGMA page_size").fetchone()
            (pages,) = db.execute("PRAGMA page_count").fetchone()
            (free,) = db.execute("PRAGMA freelist_count").fetchone()
        out.update(rows=int(rows), oldest_run=oldest, newest_run=newest, page_size=int(page_size), pages=int(pages), free_pages=int(free))
        return out


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def run_filters(
    *,
    workflows: Sequence[str] | None = None,
    env: str | None = None,
    outcomes: Sequence[str] | None = None,
    since: float | None = None,
    until: float | None = None,
) -> tuple[list[str], list[Any]]:
    """WHERE clauses over the runs table; `until` is exclusive."""
    where: list[str] = []
    args: list[Any] = []
    if workflows is not None:
        where.append(f"workflow IN ({', '.join('?' * len(workflows))})" if workflows else "0")
        args += list(workflows)
    if env is not None:
        where.append("env = ?")
        args.append(env)
    if outcomes:
        where.append(f"outcome IN ({', '.join('?' * len(outcomes))})")
        args += list(outcomes)
    if since is not None:
        where.append("started_at >= ?")
        args.append(since)
    if until is not None:
        where.append("started_at < ?")
        args.append(until)
    return where, args


# ---------------------------------------------------------------- Prometheus


class PrometheusError(Exception):
    """Prometheus could not be reached or refused a query; the message says which."""


class Prometheus:
    """Instant queries (``/api/v1/query``). A client per batch of queries: no connection outlives it,
    so nothing is left to close whatever event loop the API runs on."""

    def __init__(self, url: str, *, timeout: float = 5.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.transport = transport

    async def query_all(self, queries: Mapping[str, str], at: float) -> dict[str, list[tuple[dict[str, str], float]]]:
        """Every query at the same evaluation time; (labels, value) per series."""
        async with httpx.AsyncClient(timeout=self.timeout, transport=self.transport) as client:
            answers = await asyncio.gather(*(self._query(client, expr, at) for expr in queries.values()))
        return dict(zip(queries, answers))

    async def _query(self, client: httpx.AsyncClient, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
        try:
            response = await client.post(f"{self.url}/api/v1/query", data={"query": expr, "time": repr(at)})
        except httpx.HTTPError as exc:
            raise PrometheusError(f"Prometheus at {self.url} cannot be reached: {type(exc).__name__}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            reason = body.get("error") if isinstance(body, dict) and body.get("error") else response.text[:200]
            raise PrometheusError(f"Prometheus at {self.url} answered {response.status_code} to {expr!r}: {reason}")
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise PrometheusError(f"Prometheus at {self.url} answered a {data.get('resultType')} to {expr!r}, not a vector")
        out = []
        for series in data.get("result") or []:
            try:
                out.append((dict(series["metric"]), float(series["value"][1])))
            except (KeyError, IndexError, TypeError, ValueError):
                continue
        return out


def _by_pair(series: list[tuple[dict[str, str], float]]) -> dict[Pair, float]:
    """Finite values keyed by (workflow, env); NaN (0/0, no runs) is left out."""
    out: dict[Pair, float] = {}
    for labels, value in series:
        workflow, env = labels.get("workflow"), labels.get("env")
        if workflow and env and math.isfinite(value):
            out[(workflow, env)] = value
    return out


class PrometheusAggregates:
    """The overview facts from PromQL over the metrics of METRICS.md.

    The 7 d and 30 d windows make Prometheus read every sample of a month per
    series; they move slowly, so they are asked at most every `long_ttl`
    seconds (5 minutes), the rest at every refresh.
    """

    def __init__(self, prometheus: Prometheus, *, long_ttl: float = 300.0, clock: Callable[[], float] = time.time) -> None:
        self.prometheus = prometheus
        self.clock = clock
        self._long: TTLCache[dict[str, list[tuple[dict[str, str], float]]]] = TTLCache(self._query_long, long_ttl, max_stale=2 * long_ttl)

    @staticmethod
    def _is_long(name: str) -> bool:
        return name.rpartition(":")[2] in LONG_WINDOWS

    async def _query_long(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        return await self.prometheus.query_all({k: v for k, v in self.queries().items() if self._is_long(k)}, self.clock())

    @staticmethod
    def queries() -> dict[str, str]:
        runs = "flowprobe_workflow_runs_total"
        reasons = "|".join(UNREACHABLE_REASONS)
        out: dict[str, str] = {}
        for label in (*WINDOWS, SKIP_WINDOW[0]):
            out[f"completed:{label}"] = f'sum by (workflow, env) (increase({runs}{{result=~"success|failure|error"}}[{label}]))'
        for label in WINDOWS:
            out[f"success:{label}"] = f'sum by (workflow, env) (increase({runs}{{result="success"}}[{label}]))'
            out[f"unreachable:{label}"] = f'max by (workflow, env) (increase(flowprobe_step_failures_total{{reason=~"{reasons}"}}[{label}]))'
        out[f"skipped:{SKIP_WINDOW[0]}"] = f'sum by (workflow, env) (increase({runs}{{result="skipped"}}[{SKIP_WINDOW[0]}]))'
        buckets = "sum by (workflow, env, le) (rate(flowprobe_workflow_duration_seconds_bucket[{}]))"
        out["p50"] = f"histogram_quantile(0.5, {buckets.format(QUANTILE_WINDOW[0])})"
        out["p95"] = f"histogram_quantile(0.95, {buckets.format(QUANTILE_WINDOW[0])})"
        out["p95_recent"] = f"histogram_quantile(0.95, {buckets.format(DEGRADED_WINDOW[0])})"
        out["flaky"] = f"sum by (workflow, env) (increase(flowprobe_workflow_flaky_total[{FLAKY_WINDOW[0]}]))"
        out["last_check"] = "max by (workflow, env) (flowprobe_workflow_last_run_timestamp_seconds)"
        out["success_now"] = "min by (workflow, env) (flowprobe_workflow_success)"
        out["failure_info"] = "flowprobe_workflow_failure_info"
        return out

    async def facts(self, pairs: Sequence[Pair], now: float) -> dict[Pair, PairFacts]:
        short = {k: v for k, v in self.queries().items() if not self._is_long(k)}
        recent, long = await asyncio.gather(self.prometheus.query_all(short, now), self._long.get())
        answers = {**recent, **long}
        values = {name: _by_pair(series) for name, series in answers.items()}
        failure_info = {(lbl.get("workflow", ""), lbl.get("env", "")): lbl for lbl, _ in answers["failure_info"]}
        found: dict[Pair, PairFacts] = {}
        for pair in pairs:
            facts = found[pair] = PairFacts()
            for label in WINDOWS:
                completed = values[f"completed:{label}"].get(pair)
                if completed is None:
                    continue
                facts.completed[label] = completed
                facts.success[label] = values[f"success:{label}"].get(pair, 0.0)
                facts.reachable[label] = max(0.0, completed - values[f"unreachable:{label}"].get(pair, 0.0))
            facts.p50, facts.p95, facts.p95_recent = (values[k].get(pair) for k in ("p50", "p95", "p95_recent"))
            facts.flaky_recent = values["flaky"].get(pair, 0.0) > 0
            facts.last_check = values["last_check"].get(pair)
            success_now = values["success_now"].get(pair)
            if success_now is not None:
                facts.last_failed = success_now == 0
                facts.last_outcome = "failure" if facts.last_failed else "success"
                info = failure_info.get(pair)
                if facts.last_failed and info is not None:
                    facts.failed_step, facts.reason = info.get("step"), info.get("reason")
            recent_skips = values[f"skipped:{SKIP_WINDOW[0]}"].get(pair, 0.0)
            if recent_skips > 0 and values[f"completed:{SKIP_WINDOW[0]}"].get(pair, 0.0) == 0:
                facts.last_outcome = "skipped"
        return found


def _local_last_run(facts: PairFacts, state: Any) -> None:
    """This collector's own knowledge of the pair's last run (a `PairState`): exact, and without a scrape's delay."""
    last = state.last_result
    if last is None:
        return
    facts.last_check = state.last_run
    facts.last_outcome, facts.skip_reason = last.outcome, last.skip_reason
    if state.success is None:
        return
    facts.last_failed = state.success == 0
    facts.last_error, facts.failed_step, facts.reason = False, None, None
    if facts.last_failed:
        if last.outcome in ("failure", "error"):
            facts.last_error = last.outcome == "error"
            facts.failed_step, facts.reason = last.failed_step, last.reason
        elif state.failure is not None:
            facts.failed_step, facts.reason = state.failure


# ---------------------------------------------------------------- cache


class TTLCache(Generic[T]):
    """One value, computed at most once per `ttl`, by one caller at a time.

    Callers that come while it is computed wait for that computation (single
    flight). Once older than `ttl` and younger than `max_stale`, the old value
    is answered at once while a refresh runs in the background, so a busy
    dashboard never waits on a recomputation.
    """

    def __init__(self, compute: Callable[[], Awaitable[T]], ttl: float, *, max_stale: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.compute = compute
        self.ttl = ttl
        self.max_stale = max(ttl, max_stale if max_stale is not None else 6 * ttl)
        self.clock = clock
        self._value: tuple[float, T] | None = None
        self._task: asyncio.Task[T] | None = None
        self.computations = 0

    def clear(self) -> None:
        self._value = None

    def _refresh(self) -> asyncio.Task[T]:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run())
        return self._task

    async def _run(self) -> T:
        self.computations += 1
        value = await self.compute()
        self._value = (self.clock(), value)
        return value

    async def get(self) -> T:
        cached = self._value
        if cached is not None:
            age = self.clock() - cached[0]
            if age < self.ttl:
                return cached[1]
            if age < self.max_stale:
                task = self._refresh()
                task.add_done_callback(_log_failure)
                return cached[1]
        return await asyncio.shield(self._refresh())


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("dashboard refresh failed; answering the previous value", exc_info=task.exception())


# ---------------------------------------------------------------- the process


class ProcessSampler:
    """The collector's own CPU use over the last minute, RSS, threads and open files (Linux /proc, else `resource`)."""

    def __init__(self, window: float = 60.0, *, clock: Callable[[], float] = time.monotonic, cpu: Callable[[], float] = time.process_time) -> None:
        self.window = window
        self.clock = clock
        self.cpu = cpu
        self._lock = threading.Lock()
        self._samples: deque[tuple[float, float]] = deque([(clock(), cpu())])

    def sample(self) -> dict[str, Any]:
        now, cpu = self.clock(), self.cpu()
        with self._lock:
            samples = self._samples
            # Keep one sample at or before the window's start, so the rate covers the whole minute.
            while len(samples) > 1 and samples[1][0] <= now - self.window:
                samples.popleft()
            start, start_cpu = samples[0]
            if now - samples[-1][0] >= 1.0:
                samples.append((now, cpu))
        elapsed = now - start
        rate = (cpu - start_cpu) / elapsed if elapsed > 0 else None
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "cpu_seconds_total": round(cpu, 6),
            "cpu_percent": round(100.0 * rate, 3) if rate is not None else None,
            "cpu_window_seconds": round(elapsed, 3),
            "rss_bytes": _rss_bytes(),
            "max_rss_bytes": usage.ru_maxrss * 1024,  # KiB on Linux
            "threads": _proc_status("Threads") or threading.active_count(),
            "open_fds": _open_fds(),
        }


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _proc_status(key: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


# ---------------------------------------------------------------- the dashboard


class Dashboard:
    """The data behind the dashboard API, for one collector `Service`.

    With `prometheus_url`, aggregates come from Prometheus; should it fail,
    from the history, and the answer says so (``source``, ``source_error``).
    """

    def __init__(
        self,
        service: Service,
        *,
        prometheus_url: str | None = None,
        ttl: float = 10.0,
        max_stale: float = 60.0,
        long_ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.service = service
        self.clock = clock
        self.reader = HistoryReader(service.store.path)
        prometheus = Prometheus(prometheus_url, transport=transport) if prometheus_url else None
        self.prometheus = PrometheusAggregates(prometheus, long_ttl=long_ttl, clock=clock) if prometheus else None
        self.sampler = ProcessSampler()
        self.cache: TTLCache[dict[str, Any]] = TTLCache(self._compute_overview, ttl, max_stale=max_stale)
        self._long_counts: TTLCache[tuple[float, dict[Pair, PairFacts]]] = TTLCache(self._count_long, long_ttl, max_stale=2 * long_ttl)

    # ------------------------------------------------------------ pairs

    @property
    def config(self) -> Config:
        return self.service.config

    def pairs(self) -> list[Pair]:
        """What the overview lists: the pairs this collector runs; from Prometheus, every shard's (still within --env)."""
        if self.prometheus is None:
            return sorted(self.service.selected(self.config))
        envs = self.service.envs
        return sorted((wf.name, env) for wf, env in self.config.pairs() if envs is None or env in envs)

    def workflow(self, name: str) -> Workflow | None:
        return self.config.workflows.get(name)

    # ------------------------------------------------------------ overview

    async def overview(self) -> dict[str, Any]:
        return await self.cache.get()

    async def _compute_overview(self) -> dict[str, Any]:
        now = self.clock()
        pairs = self.pairs()
        source, source_error = "history", None
        if self.prometheus is not None:
            try:
                facts = await self.prometheus.facts(pairs, now)
                source = "prometheus"
                for pair, pair_facts in facts.items():
                    state = self.service.state.pairs.get(pair)
                    if state is not None:
                        _local_last_run(pair_facts, state)
            except PrometheusError as exc:
                log.warning("Prometheus failed; the dashboard reads the history instead", extra={"fields": {"error": str(exc)}})
                source_error = str(exc)
                facts = await self._history_facts(pairs, now)
        else:
            facts = await self._history_facts(pairs, now)
        items = [self._item(pair, facts[pair]) for pair in pairs]
        overview: dict[str, Any] = {"generated_at": now, "source": source, "items": items, "totals": totals(items)}
        if source_error is not None:
            overview["source_error"] = source_error
        return overview

    async def _history_facts(self, pairs: Sequence[Pair], now: float) -> dict[Pair, PairFacts]:
        """The long windows' counts as of their last count (at most `long_ttl` ago), plus the runs since, counted now."""
        counted_at, long = await self._long_counts.get()
        since = "since_long_count"
        windows = {**{w: now - WINDOWS[w] for w in SHORT_WINDOWS}, since: math.nextafter(counted_at, math.inf)}
        facts = await asyncio.to_thread(self.reader.facts, pairs, now, windows=windows)
        for pair, pair_facts in facts.items():
            counted = long.get(pair, PairFacts())
            for totals_of in ("success", "completed", "reachable"):
                mine, theirs = getattr(pair_facts, totals_of), getattr(counted, totals_of)
                recent = mine.pop(since, 0.0)
                for w in LONG_WINDOWS:
                    if w in theirs or recent:
                        mine[w] = theirs.get(w, 0.0) + recent
        return facts

    async def _count_long(self) -> tuple[float, dict[Pair, PairFacts]]:
        now = self.clock()
        return now, await asyncio.to_thread(self.reader.counts, self.pairs(), now, LONG_WINDOWS)

    def _item(self, pair: Pair, facts: PairFacts) -> dict[str, Any]:
        workflow = self.workflow(pair[0])
        slo = workflow.alert.latency_slo if workflow is not None else None
        status, why = classify(facts, slo)
        return {
            "workflow": pair[0],
            "env": pair[1],
            "status": status,
            "status_reason": why,
            "last_check": facts.last_check,
            "last_outcome": facts.last_outcome,
            "uptime": {w: percent(facts.success.get(w, 0.0), facts.completed.get(w, 0.0)) for w in WINDOWS},
            "reachability": {w: percent(facts.reachable.get(w, 0.0), facts.completed.get(w, 0.0)) for w in WINDOWS},
            "p50": _round(facts.p50),
            "p95": _round(facts.p95),
            "latency_slo": slo,
            "labels": dict(workflow.labels) if workflow is not None else {},
        }

    # ------------------------------------------------------------ health history

    def roots(self) -> list[str]:
        """The workflows a health history shows: health-check and every workflow without depends_on."""
        return sorted(name for name, wf in self.config.workflows.items() if name == "health-check" or not wf.depends_on)

    def health(self, *, env: str | None, limit: int) -> list[dict[str, Any]]:
        roots = set(self.roots())
        items = []
        for workflow, pair_env in sorted(self.service.selected(self.config)):
            if workflow not in roots or (env is not None and pair_env != env):
                continue
            runs = self.reader.runs(workflows=[workflow], env=pair_env, limit=limit)
            completed = [r for r in runs if r["outcome"] != "skipped"]
            items.append(
                {
                    "workflow": workflow,
                    "env": pair_env,
                    "runs": [
                        {k: r[k] for k in ("run_id", "started_at", "duration", "outcome", "failed_step", "reason", "message", "skip_reason")}
                        for r in runs
                    ],
                    "passed": sum(r["outcome"] == "success" for r in completed),
                    "failed": sum(r["outcome"] != "success" for r in completed),
                }
            )
        return items

    # ------------------------------------------------------------ the collector itself

    def collector_metrics(self, now: float, window: float = 60.0) -> dict[str, Any]:
        by_outcome = self.reader.last_minute(now, window)
        total = sum(by_outcome.values())
        completed = sum(n for outcome, n in by_outcome.items() if outcome != "skipped")
        failed = by_outcome.get("failure", 0) + by_outcome.get("error", 0)
        history = self.reader.stats()
        history.update(write_errors=self.service.store.write_errors, runs_per_pair=self.service.store.runs_per_pair, max_age=self.service.store.max_age)
        return {
            "generated_at": now,
            "process": self.sampler.sample(),
            "runs": {
                "window_seconds": window,
                "total": total,
                "per_second": round(total / window, 4),
                "by_outcome": {outcome: by_outcome.get(outcome, 0) for outcome in ("success", "failure", "error", "skipped")},
                "error_rate_percent": percent(failed, completed),
            },
            "history": history,
            "alert_database": self._alert_database(),
        }

    def _alert_database(self) -> dict[str, Any]:
        alerts = self.service.alerts
        out: dict[str, Any] = {"ready": alerts.ready, "backend": None, "pool": None}
        try:
            engine = alerts.store.engine
            out["backend"] = engine.url.get_backend_name()
            pool = engine.pool
            details: dict[str, Any] = {"class": type(pool).__name__, "status": pool.status()}
            # QueuePool has all of these; SingletonThreadPool and NullPool some or none.
            for name, method in (("size", "size"), ("checked_in", "checkedin"), ("checked_out", "checkedout"), ("overflow", "overflow")):
                found = getattr(pool, method, None)
                if callable(found):
                    details[name] = found()
            out["pool"] = details
        except Exception as exc:  # a diagnostic: never fail the endpoint over it
            out["pool_error"] = f"{type(exc).__name__}: {exc}"
        return out


def totals(items: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for item in items:
        counts[item["status"]] += 1
    return counts


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)
