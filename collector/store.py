"""Run history in SQLite: a bounded number of runs per (workflow, env).

The scheduler must never wait on disk, so `add` only queues; one writer
thread commits in batches. Reads (the API) share the connection under a
lock. WAL mode lets a reader see committed rows while the writer works.
The file survives restarts; retention prunes by count per pair and by age.

`add` is on the probes' path, so it is a deque append and, only for the
first result after the writer went idle, one wake-up. The writer then
lingers `_LINGER` seconds to gather what else comes, and commits it all in
one transaction. Waking it per result (a `queue.Queue` put) cost more than
the insert: each wake-up handed the GIL to the writer thread in the middle
of the event loop's work (bench/vs_blackbox.py, about 0.1 ms per run).
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from collector.result import RunResult

__all__ = ["HistoryStore"]

log = logging.getLogger("flowprobe.store")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    workflow    TEXT NOT NULL,
    env         TEXT NOT NULL,
    started_at  REAL NOT NULL,
    duration    REAL NOT NULL,
    outcome     TEXT NOT NULL,
    reason      TEXT,
    failed_step TEXT,
    flaky       INTEGER NOT NULL,
    data        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_pair ON runs (workflow, env, started_at DESC);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (started_at);
"""

_BATCH = 500
_COLUMNS = 10
_ROWS_PER_INSERT = 90  # 900 parameters a statement: under SQLite's oldest limit (999; 32766 since 3.32)
_LINGER = 0.05  # seconds the woken writer waits for more results before committing
_PRUNE_EVERY = 60.0
_STOP = object()


@functools.lru_cache(maxsize=128)
def _insert_sql(rows: int) -> str:
    return "INSERT OR REPLACE INTO runs VALUES " + ",".join(["(" + ",".join("?" * _COLUMNS) + ")"] * rows)


class HistoryStore:
    def __init__(self, path: Path | str, *, runs_per_pair: int = 1000, max_age: float = 7 * 86400.0) -> None:
        self.path = str(path)
        self.runs_per_pair = runs_per_pair
        self.max_age = max_age
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        # Results, flush markers (threading.Event) and _STOP, in order; appended by any thread.
        self._pending: deque[Any] = deque()
        self._wake = threading.Event()
        self._hurry = threading.Event()  # a flush or close waits: commit without lingering
        self._awake = False  # a wake-up is pending or the writer is gathering: no need to set _wake
        self._last_prune = 0.0
        self.write_errors = 0
        self._writer = threading.Thread(target=self._write_loop, name="flowprobe-history", daemon=True)
        self._writer.start()

    def configure(self, *, runs_per_pair: int, max_age: float) -> None:
        self.runs_per_pair, self.max_age = runs_per_pair, max_age

    # ------------------------------------------------------------ writing

    def add(self, result: RunResult) -> None:
        """Queue a result; it is committed within a fraction of a second."""
        self._pending.append(result)
        if not self._awake:
            self._awake = True
            self._wake.set()

    def flush(self) -> None:
        """Block until everything queued so far is committed."""
        if not self._writer.is_alive():
            return
        done = threading.Event()
        self._pending.append(done)
        self._hurry.set()
        self._wake.set()
        done.wait()

    def close(self) -> None:
        if self._writer.is_alive():
            self._pending.append(_STOP)
            self._hurry.set()
            self._wake.set()
            self._writer.join()
        with self._lock:
            self._db.close()

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            self._hurry.wait(_LINGER)  # gather what comes meanwhile into this transaction, unless flushed
            self._hurry.clear()
            # From here on, a new result must wake the writer again: it may come after the drain below.
            self._awake = False
            while self._pending:
                batch: list[RunResult] = []
                marker: threading.Event | None = None
                while self._pending and len(batch) < _BATCH:
                    item = self._pending.popleft()
                    if item is _STOP:
                        self._commit(batch)
                        return
                    if isinstance(item, threading.Event):
                        marker = item  # commit what came before it, then release its waiter
                        break
                    batch.append(item)
                self._commit(batch)
                if marker is not None:
                    marker.set()

    def _commit(self, results: list[RunResult]) -> None:
        if not results:
            return
        try:
            self._insert(results)
            # Only a store that writes prunes: opening and closing one (a report,
            # a read-only tool) must not delete history by another retention.
            if time.monotonic() - self._last_prune > _PRUNE_EVERY:
                self.prune()
        except sqlite3.Error:
            self.write_errors += len(results)
            log.exception("could not write %d run(s) to the history", len(results))

    def _insert(self, results: list[RunResult]) -> None:
        rows = [
            value
            for r in results
            for value in (
                r.run_id,
                r.workflow,
                r.env,
                r.started_at,
                r.duration,
                r.outcome,
                r.reason,
                r.failed_step,
                int(r.flaky),
                json.dumps(r.to_dict(), separators=(",", ":")),
            )
        ]
        with self._lock:
            self._db.execute("BEGIN")
            # Many rows per statement: sqlite3 lets go of the GIL around every statement it
            # steps, and a row at a time made the writer and the event loop trade it per run.
            for at in range(0, len(results), _ROWS_PER_INSERT):
                count = min(_ROWS_PER_INSERT, len(results) - at)
                self._db.execute(_insert_sql(count), rows[at * _COLUMNS : (at + count) * _COLUMNS])
            self._db.execute("COMMIT")

    def prune(self, now: float | None = None) -> int:
        """Apply retention; returns the number of runs removed."""
        now = time.time() if now is None else now
        self._last_prune = time.monotonic()
        with self._lock:
            self._db.execute("BEGIN")
            old = self._db.execute("DELETE FROM runs WHERE started_at < ?", (now - self.max_age,)).rowcount
            extra = self._db.execute(
                """DELETE FROM runs WHERE run_id IN (
                       SELECT run_id FROM (
                           SELECT run_id, ROW_NUMBER() OVER (PARTITION BY workflow, env ORDER BY started_at DESC) AS n
                           FROM runs)
                       WHERE n > ?)""",
                (self.runs_per_pair,),
            ).rowcount
            self._db.execute("COMMIT")
        return old + extra

    # ------------------------------------------------------------ reading

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def runs(self, workflow: str, env: str | None = None, *, limit: int = 50, before: float | None = None) -> list[RunResult]:
        """Newest first; `before` (a started_at) pages back in time."""
        sql = "SELECT data FROM runs WHERE workflow = ?"
        args: list[Any] = [workflow]
        if env is not None:
            sql += " AND env = ?"
            args.append(env)
        if before is not None:
            sql += " AND started_at < ?"
            args.append(before)
        sql += " ORDER BY started_at DESC LIMIT ?"
        args.append(limit)
        return [RunResult.from_dict(json.loads(row[0])) for row in self._query(sql, tuple(args))]

    def get(self, run_id: str) -> RunResult | None:
        rows = self._query("SELECT data FROM runs WHERE run_id = ?", (run_id,))
        return RunResult.from_dict(json.loads(rows[0][0])) if rows else None

    def latest(self) -> dict[tuple[str, str], RunResult]:
        """The newest run of every pair, to restore state after a restart."""
        rows = self._query(
            """SELECT data FROM runs r WHERE started_at = (
                   SELECT MAX(started_at) FROM runs WHERE workflow = r.workflow AND env = r.env)""",
            (),
        )
        results = [RunResult.from_dict(json.loads(row[0])) for row in rows]
        return {(r.workflow, r.env): r for r in results}

    def failure_streaks(self) -> dict[tuple[str, str], tuple[int, str | None, str | None]]:
        """Per pair now failing: (failed or errored runs since its last success, step and reason of the newest).

        Lets a restarted collector resume `flowprobe_workflow_consecutive_failures`,
        so a firing alert does not resolve and fire again as a new one."""
        rows = self._query(
            """SELECT r.workflow, r.env, COUNT(*),
                      (SELECT failed_step FROM runs f WHERE f.workflow = r.workflow AND f.env = r.env
                         AND f.outcome IN ('failure', 'error') ORDER BY f.started_at DESC LIMIT 1),
                      (SELECT reason FROM runs f WHERE f.workflow = r.workflow AND f.env = r.env
                         AND f.outcome IN ('failure', 'error') ORDER BY f.started_at DESC LIMIT 1)
               FROM runs r
               WHERE r.outcome IN ('failure', 'error')
                 AND r.started_at > COALESCE((SELECT MAX(started_at) FROM runs s
                                              WHERE s.workflow = r.workflow AND s.env = r.env AND s.outcome = 'success'), 0)
               GROUP BY r.workflow, r.env""",
            (),
        )
        return {(w, e): (int(n), step, reason) for w, e, n, step, reason in rows}

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM runs", ())[0][0])
