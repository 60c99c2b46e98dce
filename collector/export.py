"""Exports of the run history: one row per run, or metrics per (hour, workflow, env); CSV or JSON; streamed.

Rows are read from the SQLite history page by page (keyset pagination on
``(started_at, run_id)`` for runs, one UTC hour at a time for metrics) on a
read-only connection, and written out as each page comes, so an export of
any size holds one page in memory. Each page is its own read, so a long
export never holds the history's WAL back from a checkpoint.

Formats:

- ``csv``: RFC 4180 (``csv`` module, CRLF line ends), a header row first.
  An empty cell is null; booleans are ``true`` / ``false``; numbers are
  written with ``repr``, so they read back exactly.
- ``json``: one JSON array, streamed: ``[`` then one object per line,
  separated by commas, then ``]``. A whole download is one valid JSON
  document that any JSON parser reads; it is not NDJSON.

Times: ``started_at`` and ``hour`` are ISO 8601 in UTC (``...Z``), to the
microsecond. Runs come oldest first. Metric rows cover runs started in the
hour (and inside since..until); ``uptime`` is a percentage (0..100) of
success over success + failure + error, p50 and p95 (seconds) are over runs
not skipped; an hour without runs has no row.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from collector.dashboard import HistoryReader, run_filters, percent, iso, quantile

__all__ = ["FORMATS", "KINDS", "METRIC_COLUMNS", "RUN_COLUMNS", "encode", "metric_pages", "run_pages"]

RUN_COLUMNS = ("run_id", "workflow", "env", "started_at", "duration", "outcome", "failed_step", "reason", "attempts", "flaky")
METRIC_COLUMNS = ("hour", "workflow", "env", "runs", "failures", "skipped", "uptime", "p50", "p95")
KINDS = {"runs": RUN_COLUMNS, "metrics": METRIC_COLUMNS}
FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
PAGE = 1000
HOUR = 3600.0


def run_pages(
    reader: HistoryReader,
    *,
    workflows: Sequence[str] | None = None,
    env: str | None = None,
    since: float | None = None,
    until: float | None = None,
    page_size: int = PAGE,
) -> Iterator[list[dict[str, Any]]]:
    """Pages of runs, oldest first; the connection opens at the first page and closes after the last."""
    if not reader.available:
        return
    with reader.connect() as db:
        after: tuple[float, str] | None = None
        while True:
            where, args = run_filters(workflows=workflows, env=env, since=since, until=until)
            if after is not None:
                where.append("(started_at > ? OR (started_at = ? AND run_id > ?))")
                args += [after[0], after[0], after[1]]
            rows = db.execute(
                "SELECT run_id, workflow, env, started_at, duration, outcome, failed_step, reason,"
                " json_extract(data, '$.attempts'), flaky"
                f" FROM runs{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY started_at, run_id LIMIT ?",
                (*args, page_size),
            ).fetchall()
            if not rows:
                return
            yield [
                {
                    "run_id": r[0],
                    "workflow": r[1],
                    "env": r[2],
                    "started_at": iso(r[3]),
                    "duration": r[4],
                    "outcome": r[5],
                    "failed_step": r[6],
                    "reason": r[7],
                    "attempts": r[8] if r[8] is not None else 1,
                    "flaky": bool(r[9]),
                }
                for r in rows
            ]
            if len(rows) < page_size:
                return
            after = (rows[-1][3], rows[-1][0])


def metric_pages(
    reader: HistoryReader,
    *,
    workflows: Sequence[str] | None = None,
    env: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """One page per UTC hour that has runs: a row per (workflow, env) of that hour."""
    if not reader.available:
        return
    with reader.connect() as db:
        where, args = run_filters(workflows=workflows, env=env, since=since, until=until)
        start = _next_start(db, where, args, None)
        while start is not None:
            hour = math.floor(start / HOUR) * HOUR
            low = hour if since is None else max(hour, since)
            high = hour + HOUR if until is None else min(hour + HOUR, until)
            hour_where, hour_args = run_filters(workflows=workflows, env=env, since=low, until=high)
            rows = db.execute(
                f"SELECT workflow, env, outcome, duration FROM runs WHERE {' AND '.join(hour_where)} ORDER BY workflow, env, duration",
                hour_args,
            ).fetchall()
            page: list[dict[str, Any]] = []
            group: list[tuple[Any, ...]] = []
            for row in rows:
                if group and (row[0], row[1]) != (group[0][0], group[0][1]):
                    page.append(_metric_row(hour, group))
                    group = []
                group.append(row)
            if group:
                page.append(_metric_row(hour, group))
            if page:
                yield page
            start = _next_start(db, where, args, hour + HOUR)


def _next_start(db: Any, where: list[str], args: list[Any], at_least: float | None) -> float | None:
    # runs_by_time (started_at) makes this a seek: sparse ranges skip their empty hours at once.
    clauses = [*where, "started_at >= ?"] if at_least is not None else where
    values = [*args, at_least] if at_least is not None else args
    (found,) = db.execute(f"SELECT MIN(started_at) FROM runs{' WHERE ' + ' AND '.join(clauses) if clauses else ''}", values).fetchone()
    return None if found is None else float(found)


def _metric_row(hour: float, rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    durations = [float(r[3]) for r in rows if r[2] != "skipped"]  # sorted by the query
    success = sum(r[2] == "success" for r in rows)
    failures = sum(r[2] in ("failure", "error") for r in rows)
    p50, p95 = quantile(durations, 0.5), quantile(durations, 0.95)
    return {
        "hour": iso(hour),
        "workflow": rows[0][0],
        "env": rows[0][1],
        "runs": len(rows),
        "failures": failures,
        "skipped": len(rows) - len(durations),
        "uptime": percent(success, len(durations)),
        "p50": None if p50 is None else round(p50, 6),
        "p95": None if p95 is None else round(p95, 6),
    }


# ---------------------------------------------------------------- formats


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _csv(pages: Iterable[list[dict[str, Any]]], columns: Sequence[str]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    yield buffer.getvalue()
    for page in pages:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([_cell(row[c]) for c in columns] for row in page)
        yield buffer.getvalue()


def _json(pages: Iterable[list[dict[str, Any]]], columns: Sequence[str]) -> Iterator[str]:
    yield "["
    first = True
    for page in pages:
        if not page:
            continue
        lines = ",\n".join(json.dumps({c: row[c] for c in columns}, separators=(",", ":"), allow_nan=False) for row in page)
        yield ("\n" if first else ",\n") + lines
        first = False
    yield "]\n" if first else "\n]\n"


def encode(pages: Iterable[list[dict[str, Any]]], kind: str, fmt: str) -> Iterator[bytes]:
    """The export's body, one chunk per page."""
    columns = KINDS[kind]
    chunks = _csv(pages, columns) if fmt == "csv" else _json(pages, columns)
    for chunk in chunks:
        yield chunk.encode()
