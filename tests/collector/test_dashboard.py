"""The dashboard's figures: uptime and reachability by hand, statuses, quantiles, the Prometheus source, the cache, exports."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.dashboard import (
    Dashboard,
    HistoryReader,
    PairFacts,
    PrometheusAggregates,
    ProcessSampler,
    TTLCache,
    classify,
    decode_cursor,
    encode_cursor,
    parse_time,
    quantile,
)
from collector.engine import HttpxEngine
from collector.export import METRIC_COLUMNS, RUN_COLUMNS, encode, metric_pages, run_pages
from collector.result import RunResult
from collector.service import Service
from tests.helpers import WORKFLOWS

pytestmark = pytest.mark.usefixtures("offline_environments")

NOW = float(int(time.time()))  # the history prunes by real time: stay near it
MIN, HOUR, DAY = 60.0, 3600.0, 86400.0


def run(workflow: str, env: str, ago: float, outcome: str = "success", duration: float = 0.1, **fields: Any) -> RunResult:
    result = RunResult(workflow, env, fields.pop("run_id", f"{workflow}-{env}-{ago:g}"), NOW - ago, outcome, duration, **fields)  # type: ignore[arg-type]
    return result


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    service = Service([WORKFLOWS], data_dir=tmp_path, engine=HttpxEngine(httpx.MockTransport(lambda r: httpx.Response(200))), watch=False)
    service.store.configure(runs_per_pair=100_000, max_age=400 * DAY)  # keep the 40-day-old run
    yield service
    service.store.close()


def seed(service: Service, *results: RunResult) -> None:
    for result in results:
        service.store.add(result)
    service.store.flush()


# user-login in prod, worked out by hand below.
LOGIN = [
    run("user-login", "prod", 10 * MIN, "success", 0.1),
    run("user-login", "prod", 20 * MIN, "failure", 0.2, failed_step="login", reason="status"),
    run("user-login", "prod", 30 * MIN, "failure", 0.3, failed_step="login", reason="connect"),
    run("user-login", "prod", 40 * MIN, "skipped", 0.0, skip_reason="dependency"),
    run("user-login", "prod", 2 * HOUR, "success", 0.4),
    run("user-login", "prod", 2 * DAY, "error", 0.5),
    run("user-login", "prod", 10 * DAY, "failure", 0.6, failed_step="login", reason="timeout"),
    run("user-login", "prod", 40 * DAY, "success", 0.7),  # outside every window
]
STATUS_CASES = [
    run("health-check", "prod", 1 * MIN, "failure", 0.05, failed_step="health", reason="status"),
    run("health-check", "prod", 2 * MIN, "success", 0.05),
    run("product-listing", "prod", 1 * MIN, "skipped", skip_reason="dependency", message="skipped: health-check is failing in prod"),
    run("product-listing", "prod", 5 * MIN, "success", 0.1),
    *[run("order-placement", "prod", i * MIN, "success", 2.0) for i in range(1, 4)],  # latency_slo 1s
    run("farm-creation", "prod", 5 * MIN, "success", 0.3, flaky=True, attempts=2),
    run("farm-creation", "prod", 30 * MIN, "success", 0.3),
    # staging: the target went away, then its circuit opened: down, not skipped
    run("health-check", "staging", 1 * MIN, "skipped", skip_reason="circuit_open"),
    run("health-check", "staging", 2 * MIN, "failure", 0.01, failed_step="health", reason="connect"),
    run("user-login", "staging", 30 * MIN, "error", 0.2),
    # an old flaky pass does not count
    run("user-login", "dev", 1 * MIN, "success", 0.1),
    run("user-login", "dev", 2 * HOUR, "success", 0.1, flaky=True, attempts=2),
]


def dashboard(service: Service, **kwargs: Any) -> Dashboard:
    return Dashboard(service, clock=lambda: NOW, **kwargs)


def overview(board: Dashboard) -> dict[str, Any]:
    return asyncio.run(board.overview())


def item(data: dict[str, Any], workflow: str, env: str) -> dict[str, Any]:
    return next(i for i in data["items"] if (i["workflow"], i["env"]) == (workflow, env))


# ---------------------------------------------------------------- small pieces


def test_quantile_interpolates_between_ranks() -> None:
    assert quantile([], 0.5) is None
    assert quantile([3.0], 0.95) == 3.0
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert quantile([0.1, 0.2, 0.3, 0.4, 10.0], 0.95) == pytest.approx(8.08)
    assert quantile([1.0, 2.0], 1.0) == 2.0


def test_times_and_cursors_parse_or_say_why() -> None:
    assert parse_time("1714560000", NOW) == 1714560000.0
    assert parse_time("2024-05-01T10:00:00Z", NOW) == 1714557600.0
    assert parse_time("2024-05-01T10:00:00", NOW) == 1714557600.0  # no zone: UTC
    assert parse_time("2024-05-01T12:00:00+02:00", NOW) == 1714557600.0
    assert parse_time("24h", NOW) == NOW - DAY
    assert parse_time("1h30m", NOW) == NOW - 5400
    for bad in ("yesterday", "nan", "", "-1h"):
        with pytest.raises(ValueError, match="invalid time"):
            parse_time(bad, NOW)
    assert decode_cursor(encode_cursor(1714560000.25, "abc")) == (1714560000.25, "abc")
    assert decode_cursor("1714560000.5") == (1714560000.5, None)
    with pytest.raises(ValueError, match="invalid cursor"):
        decode_cursor("abc:def")


def test_classify_in_order_down_skipped_degraded_up() -> None:
    assert classify(PairFacts(), None) == ("unknown", "no run yet")
    down = PairFacts(last_outcome="skipped", last_failed=True, failed_step="login", reason="connect")
    assert classify(down, None) == ("down", "the last run failed at step login (connect)")
    assert classify(PairFacts(last_outcome="error", last_failed=True, last_error=True), None)[0] == "down"
    skipped = PairFacts(last_outcome="skipped", last_failed=False, skip_reason="dependency")
    assert classify(skipped, None) == ("skipped", "the last run was skipped (dependency)")
    assert classify(PairFacts(last_outcome="skipped"), None)[0] == "skipped"  # never a run that was not skipped
    slow = PairFacts(last_outcome="success", last_failed=False, p95_recent=0.8)
    assert classify(slow, 0.5) == ("degraded", "p95 over the last 1h is 0.8s, above the latency SLO of 0.5s")
    assert classify(slow, 1.0) == ("up", None)
    assert classify(slow, None) == ("up", None)
    assert classify(PairFacts(last_outcome="success", last_failed=False, flaky_recent=True), None)[0] == "degraded"


# ---------------------------------------------------------------- the history


def test_uptime_and_reachability_by_hand(svc: Service) -> None:
    seed(svc, *LOGIN)
    login = item(overview(dashboard(svc)), "user-login", "prod")
    # 1h: success, failure (status), failure (connect); the skipped run counts in neither.
    # 24h: + the success 2h ago. 7d: + the error 2 days ago (no reason: it reached). 30d: + the timeout 10 days ago.
    assert login["uptime"] == {"1h": pytest.approx(100 / 3, abs=1e-3), "24h": 50.0, "7d": 40.0, "30d": pytest.approx(100 / 3, abs=1e-3)}
    assert login["reachability"] == {"1h": pytest.approx(200 / 3, abs=1e-3), "24h": 75.0, "7d": 80.0, "30d": pytest.approx(200 / 3, abs=1e-3)}
    # 24h durations of runs not skipped: 0.1 0.2 0.3 0.4 -> p50 0.25, p95 at rank 2.85 -> 0.385
    assert login["p50"] == pytest.approx(0.25)
    assert login["p95"] == pytest.approx(0.385)
    # 1h p95 = 0.29, under the 0.5 s SLO: up
    assert (login["status"], login["status_reason"], login["last_outcome"]) == ("up", None, "success")
    assert login["last_check"] == pytest.approx(NOW - 10 * MIN + 0.1)
    assert login["latency_slo"] == 0.5 and login["labels"] == {"team": "identity"}


def test_statuses_from_the_history(svc: Service) -> None:
    seed(svc, *STATUS_CASES)
    data = overview(dashboard(svc))
    status = {(i["workflow"], i["env"]): (i["status"], i["status_reason"]) for i in data["items"]}
    assert status[("health-check", "prod")] == ("down", "the last run failed at step health (status)")
    assert status[("product-listing", "prod")] == ("skipped", "the last run was skipped (dependency)")
    assert status[("order-placement", "prod")] == ("degraded", "p95 over the last 1h is 2s, above the latency SLO of 1s")
    assert status[("farm-creation", "prod")] == ("degraded", "a run passed only after a retry in the last 15m")
    assert status[("health-check", "staging")] == ("down", "the last run failed at step health (connect)")
    assert status[("user-login", "staging")] == ("down", "the last run errored inside flowprobe")
    assert status[("user-login", "dev")] == ("up", None)
    assert status[("registration", "prod")] == ("unknown", "no run yet")
    assert item(data, "registration", "prod")["uptime"] == {"1h": None, "24h": None, "7d": None, "30d": None}
    assert item(data, "health-check", "staging")["reachability"]["1h"] == 0.0
    assert data["source"] == "history" and data["generated_at"] == NOW
    assert len(data["items"]) == 18  # six workflows in three environments
    assert data["totals"] == {"up": 1, "degraded": 2, "down": 3, "skipped": 1, "unknown": 11}
    assert sum(data["totals"].values()) == len(data["items"])


def test_long_windows_are_counted_every_five_minutes_plus_the_runs_since(svc: Service) -> None:
    seed(svc, *LOGIN)
    now = [NOW - 120]
    board = Dashboard(svc, clock=lambda: now[0])
    first = item(overview(board), "user-login", "prod")
    assert first["uptime"]["7d"] == 40.0  # 2 of 5, as in the case above
    # two new runs after the long count: a success and a connection failure
    seed(svc, run("user-login", "prod", 60, "success", 0.1), run("user-login", "prod", 30, "failure", 0.1, reason="connect"))
    now[0] = NOW
    board.cache.clear()
    second = item(overview(board), "user-login", "prod")
    assert board._long_counts.computations == 1  # not counted again...
    assert second["uptime"]["7d"] == pytest.approx(300 / 7, abs=1e-3)  # ...yet 3 of 7 runs passed
    assert second["reachability"]["7d"] == pytest.approx(500 / 7, abs=1e-3)
    assert second["uptime"]["24h"] == 50.0  # 3 of 6, counted now
    fresh = item(overview(Dashboard(svc, clock=lambda: NOW)), "user-login", "prod")
    assert (fresh["uptime"], fresh["reachability"]) == (second["uptime"], second["reachability"])


def test_a_missing_history_is_no_runs(svc: Service, tmp_path: Path) -> None:
    reader = HistoryReader(tmp_path / "nope.sqlite3")
    assert not reader.available
    assert reader.facts([("health-check", "prod")], NOW)[("health-check", "prod")] == PairFacts()
    assert reader.runs() == [] and reader.last_minute(NOW) == {} and reader.stats()["rows"] is None
    assert list(run_pages(reader)) == [] and list(metric_pages(reader)) == []


# ---------------------------------------------------------------- Prometheus


def prometheus_transport(answers: dict[str, list[tuple[dict[str, str], float]]], seen: list[dict[str, str]] | None = None) -> httpx.MockTransport:
    by_expr = {expr: answers.get(name, []) for name, expr in PrometheusAggregates.queries().items()}

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query"
        form = dict(httpx.QueryParams(request.content.decode()))
        if seen is not None:
            seen.append(form)
        if form["query"] not in by_expr:
            return httpx.Response(400, json={"status": "error", "errorType": "bad_data", "error": "unexpected query"})
        result = [{"metric": labels, "value": [float(form["time"]), repr(value)]} for labels, value in by_expr[form["query"]]]
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector", "result": result}})

    return httpx.MockTransport(handler)


def pair(workflow: str, env: str, **extra: str) -> dict[str, str]:
    return {"workflow": workflow, "env": env, **extra}


def test_prometheus_gives_the_same_shape_and_figures(svc: Service) -> None:
    seed(svc, *LOGIN)
    login = pair("user-login", "prod")
    hc = pair("health-check", "prod")
    answers: dict[str, list[tuple[dict[str, str], float]]] = {
        # the same counts as the history case above
        "completed:1h": [(login, 3.0)], "success:1h": [(login, 1.0)], "unreachable:1h": [(login, 1.0)],
        "completed:24h": [(login, 4.0), (hc, 10.0)], "success:24h": [(login, 2.0), (hc, 10.0)], "unreachable:24h": [(login, 1.0)],
        "completed:7d": [(login, 5.0)], "success:7d": [(login, 2.0)], "unreachable:7d": [(login, 1.0)],
        "completed:30d": [(login, 6.0)], "success:30d": [(login, 2.0)], "unreachable:30d": [(login, 2.0)],
        "completed:5m": [(login, 0.0), (hc, 0.0)], "skipped:5m": [(hc, 3.0)],
        "p50": [(login, 0.25), (hc, float("nan"))], "p95": [(login, 0.385)], "p95_recent": [(login, 0.29)],
        "flaky": [(login, 0.0)],
        "last_check": [(login, NOW - 10 * MIN + 0.1), (hc, NOW - 30)],
        "success_now": [(login, 1.0), (hc, 1.0)],
    }
    seen: list[dict[str, str]] = []
    data = overview(dashboard(svc, prometheus_url="http://prometheus.test/", transport=prometheus_transport(answers, seen)))
    history = overview(dashboard(svc))
    assert data["source"] == "prometheus" and "source_error" not in data
    assert {k: type(v) for k, v in data.items()} == {k: type(v) for k, v in history.items()}
    assert [(i["workflow"], i["env"]) for i in data["items"]] == [(i["workflow"], i["env"]) for i in history["items"]]
    assert item(data, "user-login", "prod") == item(history, "user-login", "prod")
    skipped = item(data, "health-check", "prod")
    assert (skipped["status"], skipped["uptime"]["24h"], skipped["uptime"]["1h"], skipped["p50"]) == ("skipped", 100.0, None, None)
    assert {form["time"] for form in seen} == {repr(NOW)}  # one evaluation time for every query


def test_prometheus_long_windows_are_asked_every_five_minutes(svc: Service) -> None:
    seen: list[dict[str, str]] = []
    board = dashboard(svc, prometheus_url="http://prometheus.test", transport=prometheus_transport({}, seen))
    overview(board)
    board.cache.clear()
    overview(board)
    asked = [form["query"] for form in seen]
    assert len([q for q in asked if "[30d]" in q]) == 3 and len([q for q in asked if "[1h]" in q]) == 2 * 4
    assert all(item["uptime"] == {"1h": None, "24h": None, "7d": None, "30d": None} for item in overview(board)["items"])


def test_prometheus_down_and_failure_info(svc: Service) -> None:
    hc = pair("health-check", "prod")
    answers = {
        "completed:1h": [(hc, 4.0)], "success:1h": [(hc, 0.0)], "unreachable:1h": [(hc | {"step": "health", "reason": "connect"}, 9.0)],
        "success_now": [(hc, 0.0)], "last_check": [(hc, NOW - 5)],
        "failure_info": [(hc | {"step": "health", "reason": "connect", "__name__": "flowprobe_workflow_failure_info"}, 1.0)],
    }
    data = overview(dashboard(svc, prometheus_url="http://prometheus.test", transport=prometheus_transport(answers)))
    found = item(data, "health-check", "prod")
    assert (found["status"], found["status_reason"]) == ("down", "the last run failed at step health (connect)")
    assert found["uptime"]["1h"] == 0.0 and found["reachability"]["1h"] == 0.0  # more step failures than runs: clamped


def test_this_collectors_own_last_run_beats_a_scrape(svc: Service) -> None:
    answers = {"success_now": [(pair("health-check", "prod"), 1.0)], "last_check": [(pair("health-check", "prod"), NOW - 60)]}
    svc.state.record(run("health-check", "prod", 1.0, "failure", 0.05, failed_step="health", reason="timeout"))
    data = overview(dashboard(svc, prometheus_url="http://prometheus.test", transport=prometheus_transport(answers)))
    found = item(data, "health-check", "prod")
    assert (found["status"], found["status_reason"]) == ("down", "the last run failed at step health (timeout)")
    assert found["last_check"] == pytest.approx(NOW - 1.0 + 0.05)


def test_prometheus_unreachable_falls_back_to_the_history(svc: Service) -> None:
    seed(svc, *LOGIN)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    data = overview(dashboard(svc, prometheus_url="http://prometheus.test", transport=httpx.MockTransport(refuse)))
    assert data["source"] == "history"
    assert data["source_error"].startswith("Prometheus at http://prometheus.test cannot be reached: ConnectError")
    assert item(data, "user-login", "prod")["uptime"]["24h"] == 50.0

    def bad_query(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"status": "error", "error": "parse error"})

    data = overview(dashboard(svc, prometheus_url="http://prometheus.test", transport=httpx.MockTransport(bad_query)))
    assert data["source"] == "history" and "answered 400" in data["source_error"] and "parse error" in data["source_error"]


# ---------------------------------------------------------------- the cache and the process


def test_cache_computes_once_per_ttl_and_answers_stale_while_refreshing() -> None:
    now = [0.0]
    calls: list[int] = []

    async def compute() -> int:
        calls.append(len(calls))
        await asyncio.sleep(0.01)
        return len(calls)

    cache: TTLCache[int] = TTLCache(compute, 10.0, max_stale=60.0, clock=lambda: now[0])

    async def main() -> list[int]:
        seen = list(await asyncio.gather(*(cache.get() for _ in range(50))))  # single flight
        now[0] = 5.0
        seen.append(await cache.get())  # fresh
        now[0] = 15.0
        seen.append(await cache.get())  # stale: answered at once, refreshed behind
        await asyncio.sleep(0.05)
        seen.append(await cache.get())
        now[0] = 200.0
        seen.append(await cache.get())  # too old: waits for a new value
        return seen

    assert asyncio.run(main()) == [1] * 51 + [1, 2, 3]
    assert cache.computations == 3


def test_cache_failure_reaches_the_caller_then_retries() -> None:
    outcomes = [RuntimeError("boom"), 7]

    async def compute() -> int:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    cache: TTLCache[int] = TTLCache(compute, 10.0)

    async def main() -> int:
        with pytest.raises(RuntimeError, match="boom"):
            await cache.get()
        return await cache.get()

    assert asyncio.run(main()) == 7


def test_process_sampler_rates_cpu_over_the_window() -> None:
    clock, cpu = [100.0], [1.0]
    sampler = ProcessSampler(60.0, clock=lambda: clock[0], cpu=lambda: cpu[0])
    clock[0], cpu[0] = 130.0, 16.0
    first = sampler.sample()
    assert first["cpu_percent"] == 50.0 and first["cpu_window_seconds"] == 30.0 and first["cpu_seconds_total"] == 16.0
    clock[0], cpu[0] = 190.0, 22.0  # the first sample is now out of the window: from 130 s
    assert sampler.sample()["cpu_percent"] == 10.0
    sample = sampler.sample()
    assert sample["rss_bytes"] > 10_000_000 and sample["max_rss_bytes"] >= sample["rss_bytes"] // 2
    assert sample["threads"] >= 1 and sample["open_fds"] >= 3


# ---------------------------------------------------------------- exports


def test_run_export_pages_and_csv_round_trip(svc: Service) -> None:
    seed(svc, *LOGIN, *STATUS_CASES)
    reader = HistoryReader(svc.store.path)
    pages = list(run_pages(reader, page_size=4))
    assert [len(p) for p in pages] == [4, 4, 4, 4, 4, 2]
    rows = [r for p in pages for r in p]
    assert [r["started_at"] for r in rows] == sorted(r["started_at"] for r in rows)  # oldest first

    text = b"".join(encode(run_pages(reader, page_size=4), "runs", "csv")).decode()
    parsed = list(csv.DictReader(io.StringIO(text, newline="")))
    assert list(parsed[0]) == list(RUN_COLUMNS)
    expected = {r.run_id: r for r in [*LOGIN, *STATUS_CASES]}
    assert len(parsed) == len(expected)
    for row in parsed:
        original = expected[row["run_id"]]
        assert (row["workflow"], row["env"], row["outcome"]) == (original.workflow, original.env, original.outcome)
        assert float(row["duration"]) == original.duration  # repr: exact
        started = parse_time(row["started_at"], NOW)
        assert started == pytest.approx(original.started_at, abs=1e-6) and row["started_at"].endswith("Z")
        assert (row["failed_step"] or None, row["reason"] or None) == (original.failed_step, original.reason)
        assert int(row["attempts"]) == original.attempts and row["flaky"] == ("true" if original.flaky else "false")


def test_run_export_filters_and_json_array(svc: Service) -> None:
    seed(svc, *LOGIN, *STATUS_CASES)
    reader = HistoryReader(svc.store.path)
    body = b"".join(encode(run_pages(reader, workflows=["user-login"], env="prod", since=NOW - DAY, until=NOW - 15 * MIN, page_size=2), "runs", "json"))
    rows = json.loads(body)
    assert [r["run_id"] for r in rows] == ["user-login-prod-7200", "user-login-prod-2400", "user-login-prod-1800", "user-login-prod-1200"]
    assert set(rows[0]) == set(RUN_COLUMNS) and rows[0]["flaky"] is False and rows[0]["attempts"] == 1
    assert json.loads(b"".join(encode(iter([]), "runs", "json"))) == []
    assert b"".join(encode(iter([]), "metrics", "csv")).decode() == ",".join(METRIC_COLUMNS) + "\r\n"


def test_metric_export_per_hour(svc: Service) -> None:
    hour = (NOW // HOUR - 30) * HOUR  # a whole hour, 30 hours ago
    seed(
        svc,
        run("user-login", "prod", NOW - hour - 60, "success", 0.1, run_id="a"),
        run("user-login", "prod", NOW - hour - 120, "failure", 0.3, run_id="b", reason="status", failed_step="login"),
        run("user-login", "prod", NOW - hour - 180, "skipped", 0.0, run_id="c"),
        run("user-login", "prod", NOW - hour - 240, "success", 0.2, run_id="d"),
        run("health-check", "prod", NOW - hour - 300, "error", 0.5, run_id="e"),
        run("user-login", "prod", NOW - hour - 3 * HOUR - 10, "success", 1.0, run_id="f"),  # three hours later
    )
    pages = list(metric_pages(HistoryReader(svc.store.path)))
    assert [[(r["workflow"], r["hour"]) for r in p] for p in pages] == [
        [("health-check", pages[0][0]["hour"]), ("user-login", pages[0][0]["hour"])],
        [("user-login", pages[1][0]["hour"])],
    ]
    assert parse_time(pages[0][0]["hour"], NOW) == hour and parse_time(pages[1][0]["hour"], NOW) == hour + 3 * HOUR
    login = pages[0][1]
    assert login == {
        "hour": login["hour"], "workflow": "user-login", "env": "prod", "runs": 4, "failures": 1, "skipped": 1,
        "uptime": pytest.approx(200 / 3, abs=1e-3), "p50": 0.2, "p95": pytest.approx(0.29),
    }
    assert pages[0][0]["uptime"] == 0.0 and pages[0][0]["failures"] == 1
    # since inside the hour: only what started after it
    clipped = list(metric_pages(HistoryReader(svc.store.path), workflows=["user-login"], since=hour + 150, until=hour + HOUR))
    assert [(r["runs"], r["skipped"]) for p in clipped for r in p] == [(2, 1)]
