"""The SQLite run history: batching writer, pagination, retention, restart."""

from __future__ import annotations

import time
from pathlib import Path

from collector.result import CheckFailure, RunResult, StepResult
from collector.store import HistoryStore

NOW = time.time()  # the writer applies the 7-day retention: keep test runs recent


def result(workflow: str, env: str, started_at: float, outcome: str = "success", run_id: str | None = None) -> RunResult:
    step = StepResult("login", outcome, status=200, duration=0.01, phases={"connect": 0.001},
                      failures=[CheckFailure("status", "status", "expected status 200, got 500")] if outcome == "failure" else [],
                      captures={"token": "[REDACTED]"})
    return RunResult(workflow, env, run_id or f"{workflow}-{env}-{started_at}", started_at, outcome, duration=0.02, steps=[step],
                     failed_step="login" if outcome == "failure" else None, reason="status" if outcome == "failure" else None)


def test_results_round_trip_and_page_newest_first(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    for i in range(7):
        store.add(result("wf", "prod", NOW + i, "failure" if i == 3 else "success"))
    store.add(result("wf", "dev", NOW + 100))
    store.flush()
    page = store.runs("wf", "prod", limit=3)
    assert [r.started_at for r in page] == [NOW + 6, NOW + 5, NOW + 4]
    older = store.runs("wf", "prod", limit=3, before=page[-1].started_at)
    assert [r.started_at for r in older] == [NOW + 3, NOW + 2, NOW + 1]
    assert older[0].steps[0].failures == [CheckFailure("status", "status", "expected status 200, got 500")]
    assert len(store.runs("wf", limit=100)) == 8
    assert store.get(older[0].run_id) == older[0]
    assert store.get("nope") is None
    store.close()


def test_history_survives_a_restart(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    store.add(result("a", "prod", NOW + 1))
    store.add(result("a", "prod", NOW + 2, "failure"))
    store.add(result("b", "prod", NOW + 3))
    store.close()  # close drains the queue
    reopened = HistoryStore(tmp_path / "h.sqlite3")
    latest = reopened.latest()
    assert {k: v.outcome for k, v in latest.items()} == {("a", "prod"): "failure", ("b", "prod"): "success"}
    assert reopened.count() == 3
    reopened.close()


def test_retention_keeps_the_newest_runs_per_pair_and_drops_old_ones(tmp_path: Path) -> None:
    # NOW is taken when the module loads, minutes before this test may run in a full suite:
    # the ages here stay far from max_age, so the writer's own pruning (at real time) agrees.
    store = HistoryStore(tmp_path / "h.sqlite3", runs_per_pair=3, max_age=10_000.0)
    for i in range(10):
        store.add(result("a", "prod", NOW - 50 + i))
        store.add(result("b", "prod", NOW - 50 + i))
    store.add(result("c", "prod", NOW - 50_000))  # older than max_age
    store.flush()
    store.prune(now=NOW)
    assert [r.started_at for r in store.runs("a", "prod", limit=10)] == [NOW - 41, NOW - 42, NOW - 43]
    assert store.count() == 6
    assert store.runs("c", limit=10) == []
    store.close()


def test_failure_streaks_count_failures_since_the_last_success(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3")
    for i, outcome in enumerate(["failure", "success", "failure", "skipped", "failure", "error"]):
        store.add(result("a", "prod", NOW + i, outcome))
    store.add(result("b", "prod", NOW, "failure"))
    store.add(result("c", "prod", NOW, "success"))
    store.flush()
    # a's newest failure errored inside flowprobe: no failing step to name, as in the live metrics.
    assert store.failure_streaks() == {("a", "prod"): (3, None, None), ("b", "prod"): (1, "login", "status")}
    store.close()
