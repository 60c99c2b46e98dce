"""The pattern finder on synthetic runs: recurrence, correlation, cascades, incidents and their ranked causes."""

from __future__ import annotations

import doctest
import json
import math
import pickle
import random
from collections.abc import Iterable, Sequence

import pytest

import analytics.patterns
from analytics.patterns import PatternFinder, Topology, find_period
from analytics.source import Run

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC, a Thursday
HOST = "shop.test:443"


def ok(workflow: str, t: float, env: str = "prod", host: str = HOST) -> Run:
    return Run(workflow, env, t, 0.1, "success", hosts=(host,))


def fail(workflow: str, t: float, step: str = "check", reason: str = "status", env: str = "prod", host: str = HOST) -> Run:
    return Run(workflow, env, t, 0.1, "failure", failed_step=step, reason=reason, hosts=(host,))


def skip(workflow: str, t: float, env: str = "prod") -> Run:
    return Run(workflow, env, t, 0.0, "skipped", skip_reason="dependency")


def series(workflow: str, start: float, every: float, count: int, failing: Iterable[int] = (), step: str = "check") -> list[Run]:
    """`count` runs of `workflow` every `every` seconds; those at the indices in `failing` fail at `step`."""
    bad = set(failing)
    return [fail(workflow, start + i * every, step=step) if i in bad else ok(workflow, start + i * every) for i in range(count)]


# The shipped workflows' shape: health-check under everything, user-login under the authenticated ones.
SHOP = Topology.from_api({"items": [
    {"workflow": "health-check", "env": "prod", "depends_on": [], "steps": ["health"]},
    {"workflow": "user-login", "env": "prod", "depends_on": ["health-check"], "steps": ["login", "profile"]},
    {"workflow": "product-listing", "env": "prod", "depends_on": ["health-check"], "steps": ["list-products", "get-product"]},
    {"workflow": "order-placement", "env": "prod", "depends_on": ["health-check", "user-login", "product-listing"],
     "steps": ["login", "find-product", "place-order", "check-order", "cancel-order"]},
]})


def tops(finder: PatternFinder) -> list[tuple[str, str] | None]:
    return [(i["top"]["cause"], i["top"]["kind"]) if i["top"] else None for i in finder.incidents()]


# ---------------------------------------------------------------- topology


def test_topology_from_the_collector_api_closes_depends_on_and_keys_steps() -> None:
    assert SHOP.upstream("order-placement") == {"health-check", "user-login", "product-listing"}
    assert SHOP.upstream("user-login") == {"health-check"}
    assert SHOP.upstream("health-check") == frozenset()
    assert SHOP.steps["user-login"] == ("login", "profile")
    # Named steps and requests: two names, one request, one step.
    topo = Topology.from_api([
        {"workflow": "a", "depends_on": ["b"], "steps": [{"name": "sign-in", "request": "POST /api/auth/login"}]},
        {"workflow": "b", "depends_on": ["a"], "steps": ["Log-In"], "step_requests": ["POST /api/auth/login"]},
    ])
    assert topo.step_key("a", "sign-in") == topo.step_key("b", "Log-In") == "POST /api/auth/login"
    assert topo.upstream("a") == {"b"}  # a cycle ends instead of looping
    assert Topology().step_key("x", "Log-In") == "login"


# ---------------------------------------------------------------- recurring failures


def test_a_failure_every_ten_minutes_is_found_with_its_period() -> None:
    finder = PatternFinder()
    # Runs every minute for three hours; the job that breaks it runs every 10 minutes (two failed runs each time).
    finder.observe(series("nightly-sync", T0, 60, 180, failing=[i for i in range(180) if i % 10 in (3, 4)]))
    # Another pair fails at random: no period.
    rng = random.Random(3)
    finder.observe(series("flaky", T0, 60, 180, failing=[i for i in range(180) if rng.random() < 0.1]))
    found = finder.recurring()
    periods = [p for p in found if p["kind"] == "period"]
    assert [(p["workflow"], p["env"]) for p in periods] == [("nightly-sync", "prod")]
    assert periods[0]["period_s"] == pytest.approx(600, rel=0.01)
    assert periods[0]["confidence"] >= 0.9
    assert periods[0]["occurrences"] == 18
    assert periods[0]["next_expected"] == pytest.approx(T0 + 183 * 60, abs=1)  # the last onset was at minute 173
    assert all(p["workflow"] != "flaky" for p in found)


def test_find_period_tolerates_missed_occurrences_and_jitter_and_refuses_noise() -> None:
    rng = random.Random(7)
    onsets = [T0 + k * 900 + rng.uniform(-20, 20) for k in range(20) if k % 7 != 3]  # every 15 min, some missed
    period, confidence = find_period(onsets) or (0, 0)
    assert period == pytest.approx(900, rel=0.01)
    assert confidence > 0.7
    noise = sorted(T0 + rng.uniform(0, 86400) for _ in range(30))
    assert (find_period(noise) or (0, 0))[1] < 0.5
    assert find_period(onsets[:4]) is None  # too few to say


def test_failures_at_the_same_hour_every_night_and_on_mondays() -> None:
    finder = PatternFinder()
    # Every 15 minutes for 8 days; a backup at 02:00 UTC breaks "backup-window" for half an hour each night.
    finder.observe(series("backup-window", T0, 900, 8 * 96, failing=[i for i in range(8 * 96) if (i % 96) in (8, 9)]))
    # Hourly for four weeks; "weekly-report" fails at 09:00 on Mondays (T0 is a Thursday: the first Monday is day 4).
    finder.observe(series("weekly-report", T0, 3600, 28 * 24, failing=[d * 24 + 9 for d in range(4, 28, 7)]))
    by = {(p["workflow"], p["kind"]): p for p in finder.recurring()}
    nightly = by[("backup-window", "hour_of_day")]
    assert nightly["hour"] == 2 and nightly["period_s"] == 86400 and nightly["confidence"] > 0.9
    assert ("backup-window", "period") not in by  # the daily period is the hour of the day, not said twice
    weekly = by[("weekly-report", "day_of_week")]
    assert weekly["weekday"] == "monday" and weekly["period_s"] == 7 * 86400 and weekly["occurrences"] == 4
    assert ("backup-window", "day_of_week") not in by  # every day is no particular weekday


# ---------------------------------------------------------------- correlations and cascades


def test_onsets_that_co_occur_are_correlated_with_their_lag_and_the_cascade_is_ordered() -> None:
    finder = PatternFinder(window=300)
    runs: list[Run] = []
    for k in range(6):  # six outages, an hour apart: the API first, the shop 60 s later, the report 120 s later
        base = T0 + k * 3600
        runs += [fail("api", base), ok("api", base + 600)]
        runs += [fail("shop", base + 60), ok("shop", base + 660)]
        runs += [fail("report", base + 120), ok("report", base + 720)]
        runs += [fail("unrelated", base + 1800), ok("unrelated", base + 2400)]
    finder.observe(runs)
    links = {(c["a"]["workflow"], c["b"]["workflow"]): c for c in finder.correlations()}
    assert set(links) == {("api", "shop"), ("api", "report"), ("shop", "report")}
    assert links[("api", "shop")]["lag_s"] == 60 and links[("api", "shop")]["co_occurrences"] == 6
    assert links[("api", "shop")]["score"] == 1.0 and links[("api", "shop")]["lead_consistency"] == 1.0
    assert links[("api", "report")]["lag_s"] == 120
    assert links[("api", "shop")]["lift"] > 5  # six together out of six, where chance gives less than one
    (cascade,) = finder.cascades()
    assert [(m["workflow"], m["offset_s"]) for m in cascade["members"]] == [("api", 0), ("shop", 60), ("report", 120)]


# ---------------------------------------------------------------- incidents


def test_simultaneous_failures_are_one_incident_that_resolves_after_recovery() -> None:
    finder = PatternFinder(recover_runs=3)
    finder.observe([ok("a", T0), ok("b", T0 + 5)])
    finder.observe([fail("a", T0 + 60, step="pay"), fail("b", T0 + 70, step="pay")])
    (incident,) = finder.incidents()
    assert incident["status"] == "open" and incident["ended_at"] is None
    assert incident["id"] == "20260101T000100Z-a-prod"
    assert incident["started_at"] == T0 + 60
    assert [(m["workflow"], m["lag_s"], m["failed_step"], m["reason"]) for m in incident["members"]] == [
        ("a", 0, "pay", "status"), ("b", 10, "pay", "status")]
    # Two passes are not yet a recovery; "b" failing again keeps it open.
    finder.observe([ok("a", T0 + 120), ok("a", T0 + 180), fail("b", T0 + 130), ok("b", T0 + 190)])
    assert finder.incidents()[0]["status"] == "open"
    finder.observe([ok("a", T0 + 240)] + [ok("b", T0 + 190 + 60 * i) for i in (1, 2)])
    (incident,) = finder.incidents()
    assert incident["status"] == "resolved" and incident["ended_at"] == T0 + 310
    assert finder.incidents(open_only=True) == [] and finder.root_cause_info() == []
    # The next failure is a new incident.
    finder.observe([fail("b", T0 + 400)])
    assert [i["id"] for i in finder.incidents()] == ["20260101T000640Z-b-prod", "20260101T000100Z-a-prod"]


def test_an_incident_is_found_at_its_onset_run_and_its_id_is_the_same_on_a_replay() -> None:
    runs = series("health-check", T0, 15, 40, failing=range(20, 40)) + [skip("user-login", T0 + 300 + 30 * i) for i in range(10)]
    first, second = PatternFinder(SHOP), PatternFinder(SHOP)
    for i in range(0, len(runs), 5):  # batches, as the worker reads them
        first.observe(runs[i:i + 5])
    second.observe(runs)
    assert [i["id"] for i in first.incidents()] == [i["id"] for i in second.incidents()] == ["20260101T000500Z-health-check-prod"]
    # Found in the batch that holds the onset: the onset run itself.
    finder = PatternFinder(SHOP)
    finder.observe(runs[:20])
    assert finder.incidents() == []
    finder.observe(runs[20:21])
    assert [i["members"][0]["onset"] for i in finder.incidents()] == [T0 + 300]


def test_a_blip_before_a_fault_does_not_swallow_the_fault() -> None:
    finder = PatternFinder(recover_runs=3)
    finder.observe([fail("a", T0), ok("a", T0 + 30)])  # one failed run; not yet recovered, but passing
    finder.observe([fail("b", T0 + 45), fail("b", T0 + 105)])
    assert [[m["workflow"] for m in i["members"]] for i in finder.incidents()] == [["b"], ["a"]]


def test_an_incident_with_no_failure_for_close_after_is_resolved() -> None:
    finder = PatternFinder(close_after=600)
    finder.observe([fail("gone", T0)])  # and it never runs again
    finder.observe(series("other", T0 + 60, 60, 12))
    (incident,) = finder.incidents()
    assert incident["status"] == "resolved" and incident["ended_at"] == T0 + 600  # whatever the batches


def test_runs_seen_before_are_ignored() -> None:
    finder = PatternFinder()
    runs = series("a", T0, 60, 10, failing=[3, 4])
    finder.observe(runs)
    before = finder.incidents()
    finder.observe(runs)  # a history read again after a restart
    assert finder.incidents() == before
    assert before[0]["members"][0]["failed_runs"] == 2


# ---------------------------------------------------------------- ranking


def test_a_failing_dependency_outranks_its_skipped_dependents() -> None:
    finder = PatternFinder(SHOP)
    runs = series("health-check", T0, 15, 8) + series("health-check", T0 + 120, 15, 8, failing=range(8), step="health")
    for w in ("user-login", "product-listing", "order-placement"):
        runs += [ok(w, T0 + 30), ok(w, T0 + 90)] + [skip(w, T0 + 125 + 30 * i) for i in range(4)]
    finder.observe(runs)
    (incident,) = finder.incidents()
    assert incident["top"] == {"cause": "health-check", "kind": "dependency"}
    top = incident["causes"][0]
    assert top["evidence"]["dependents"] == [{"workflow": w, "env": "prod"} for w in ("order-placement", "product-listing", "user-login")]
    assert top["evidence"]["coverage"] == 1.0 and top["evidence"]["affected"] == 4
    assert {(s["workflow"], s["runs"]) for s in incident["skipped"]} == {("user-login", 4), ("product-listing", 4), ("order-placement", 4)}
    # The host they all reach explains nothing that the others do not share: it is not the news.
    host = next(c for c in incident["causes"] if c["kind"] == "host")
    assert host["score"] < top["score"] / 2
    assert finder.root_cause_info() == [
        {"incident": incident["id"], "workflow": "health-check", "env": "prod", "cause": "health-check", "kind": "dependency"}]
    assert json.loads(json.dumps(finder.incidents())) == finder.incidents()  # JSON-ready as it is


def test_dependents_failing_on_their_own_are_explained_by_the_dependency_only_while_it_fails() -> None:
    finder = PatternFinder(SHOP)
    # product-listing fails once, then passes; order-placement fails from then on at place-order: the edge is no explanation.
    runs = series("product-listing", T0, 30, 12, failing=[2], step="list-products")
    runs += series("order-placement", T0, 60, 8, failing=range(1, 8), step="place-order")
    finder.observe(runs)
    (incident,) = finder.incidents()
    assert incident["top"] == {"cause": "place-order", "kind": "step"}
    dependency = next(c for c in incident["causes"] if c["cause"] == "product-listing")
    assert dependency["score"] < incident["causes"][0]["score"]


@pytest.mark.parametrize(("at_check", "top"), [(1, ("place-order", "step")), (5, ("order-placement", "workflow"))])
def test_a_lone_workflow_is_named_by_the_step_of_nearly_all_its_failures(at_check: int, top: tuple[str, str]) -> None:
    finder = PatternFinder(SHOP)
    finder.observe([ok("order-placement", T0)])
    finder.observe([fail("order-placement", T0 + 60 * i, step="check-order" if i <= at_check else "place-order") for i in range(1, 13)])
    assert tops(finder) == [top]


def test_a_one_step_workflow_is_named_by_itself() -> None:
    finder = PatternFinder(SHOP)
    finder.observe(series("health-check", T0, 15, 6, failing=range(2, 6), step="health"))
    assert tops(finder) == [("health-check", "workflow")]


def test_the_shared_failing_step_is_the_cause_even_under_different_names() -> None:
    # No topology: steps match by name, ignoring case and punctuation.
    finder = PatternFinder()
    finder.observe([ok(w, T0) for w in ("login-a", "login-b", "login-c", "catalogue")])
    finder.observe([fail("login-a", T0 + 60, step="login"), fail("login-b", T0 + 61, step="Log-In"),
                    fail("login-c", T0 + 62, step="log_in"), ok("catalogue", T0 + 63)])
    (incident,) = finder.incidents()
    assert incident["top"]["kind"] == "step" and incident["top"]["cause"] in {"login", "Log-In", "log_in"}
    assert incident["causes"][0]["evidence"]["workflows"] == ["login-a", "login-b", "login-c"]
    # With the topology, the same request is the same step whatever its name.
    topo = Topology.from_api([{"workflow": w, "depends_on": [], "steps": [{"name": n, "request": "POST /api/auth/login"}, "next"]}
                              for w, n in (("a", "sign-in"), ("b", "authenticate"), ("c", "login"))])
    finder = PatternFinder(topo)
    finder.observe([fail("a", T0, step="sign-in"), fail("b", T0 + 1, step="authenticate"), fail("c", T0 + 2, step="login")])
    assert finder.incidents()[0]["top"]["kind"] == "step"
    assert finder.incidents()[0]["causes"][0]["evidence"]["coverage"] == 1.0


def test_an_unreachable_host_is_the_cause_when_only_its_pairs_fail() -> None:
    finder = PatternFinder()
    down, up = "payments.test:443", "shop.test:443"
    finder.observe([ok("pay", T0, host=down), ok("refund", T0, host=down), ok("browse", T0, host=up), ok("search", T0, host=up)])
    finder.observe([fail("pay", T0 + 60, step="charge", reason="connect", host=down),
                    fail("refund", T0 + 61, step="refund", reason="connect", host=down),
                    ok("browse", T0 + 62, host=up), ok("search", T0 + 63, host=up)])
    (incident,) = finder.incidents()
    assert incident["top"] == {"cause": down, "kind": "host"}
    assert incident["causes"][0]["evidence"]["specificity"] == 1.0 and incident["causes"][0]["evidence"]["network_failures"] == 2


def test_the_earliest_onset_breaks_an_even_match() -> None:
    finder = PatternFinder(window=300)
    finder.observe([ok("first", T0, host="one:80"), ok("second", T0, host="two:80")])
    # Out of order across pairs, as batches may be.
    finder.observe([fail("second", T0 + 200, step="b", host="two:80"), fail("first", T0 + 60, step="a", host="one:80")])
    (incident,) = finder.incidents()
    assert incident["started_at"] == T0 + 60
    assert incident["top"] == {"cause": "a", "kind": "step"}
    scores = {c["cause"]: c["score"] for c in incident["causes"]}
    assert scores["a"] > scores["b"] and scores["first"] > scores["second"]


def test_an_onset_in_another_env_joins_only_within_the_window() -> None:
    finder = PatternFinder(window=120)
    finder.observe([fail("login", T0, env="prod"), fail("login", T0 + 30, env="staging"), fail("login", T0 + 600, env="dev")])
    incidents = finder.incidents()
    assert [sorted(m["env"] for m in i["members"]) for i in incidents] == [["dev"], ["prod", "staging"]]
    # One workflow failing in two envs: the workflow is the cause of both pairs.
    both = incidents[1]
    assert any(c["cause"] == "login" and c["evidence"]["coverage"] >= 0.9 for c in both["causes"])


# ---------------------------------------------------------------- state and bounds


def test_a_pickled_finder_answers_the_same_and_learns_on() -> None:
    finder = PatternFinder(SHOP)
    runs = series("health-check", T0, 15, 200, failing=[i for i in range(200) if i % 20 in (5, 6)], step="health")
    finder.observe(runs[:120])
    copy = pickle.loads(pickle.dumps(finder))
    for f in (finder, copy):
        f.observe(runs[120:])
    assert copy.incidents() == finder.incidents()
    assert copy.recurring() == finder.recurring() and copy.recurring()[0]["period_s"] == pytest.approx(300, rel=0.01)
    assert copy.correlations() == finder.correlations()
    assert copy.root_cause_info() == finder.root_cause_info()


def test_what_is_kept_and_exported_stays_bounded() -> None:
    finder = PatternFinder(keep_resolved=5, resolved_ttl=3600, max_causes=3, max_correlations=40, recover_runs=1)
    runs: list[Run] = []
    for k in range(200):  # 200 blips of 30 pairs, one every 10 minutes
        base = T0 + k * 600
        for w in range(30):
            name = f"w{w:02d}"
            runs += [fail(name, base + w, step=f"s{w}", host=f"h{w}:80"), ok(name, base + 300 + w, host=f"h{w}:80")]
    finder.observe(runs)
    assert len(finder.incidents()) == 5  # the newest resolved ones only
    assert all(len(i["causes"]) <= 3 for i in finder.incidents())
    assert all(len(s.onsets) <= 256 for s in finder._pairs.values())
    assert len(finder._co) <= 40
    finder.observe([fail("w00", T0 + 200 * 600 + 7200)])  # later than the ttl: only the open one is left
    assert [i["status"] for i in finder.incidents()] == ["open"]
    assert len(finder.root_cause_info()) == 1


@pytest.mark.parametrize("runs", [[], [skip("a", T0)], [ok("a", T0)]])
def test_nothing_failing_is_no_incident(runs: Sequence[Run]) -> None:
    finder = PatternFinder(SHOP)
    finder.observe(runs)
    assert finder.incidents() == [] and finder.root_cause_info() == [] and finder.recurring() == []
    assert finder.correlations() == [] and finder.cascades() == []
    assert math.isinf(finder.now) == (not runs)


def test_the_docstring_example_runs() -> None:
    result = doctest.testmod(analytics.patterns)
    assert result.attempted > 0 and result.failed == 0
