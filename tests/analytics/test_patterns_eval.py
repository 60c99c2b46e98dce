"""The root-cause benchmark's quick run against the real demo target and collector: the issue's floors hold.

Issue 5, section 4: the top-1 root cause is right in at least 90 % of the
incidents of the chaos scenarios, and each incident is found within 3 runs of
its onset. The scoring is checked on its own, on a hand-made replay.
"""

from __future__ import annotations

from typing import Any

import pytest

from analytics.source import Run
from bench.patterns_eval import SCENARIOS, T0, TICK, Replay, evaluate, score, summarise

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def quick() -> dict[str, Any]:
    return evaluate(quick=True)


def test_every_fault_is_an_incident_found_at_once_with_the_right_root_cause(quick: dict[str, Any]) -> None:
    overall = quick["overall"]
    assert set(quick["scenarios"]) == {s.name for s in SCENARIOS}
    for name, figures in quick["scenarios"].items():
        assert figures["missed"] == 0, name
        assert figures["incidents"] >= 1, name
    assert overall["top1"] >= 0.9, quick["scenarios"]
    assert overall["detect_runs_max"] <= 3, quick["replays"]
    assert overall["cause_runs_max"] is not None and overall["cause_runs_max"] <= 3
    # The causes are those of the ground truth, each through the evidence it is meant to come from.
    tops = {s["scenario"]: {(i["top"]["kind"], i["top"]["cause"]) for i in s["incidents"]} for s in quick["replays"]}
    assert tops["database-outage"] == {("dependency", "health-check")}
    assert tops["slow-database"] == {("dependency", "health-check")}
    assert tops["payments-outage"] == {("step", "place-order")}
    assert tops["auth-outage"] <= {("dependency", "user-login"), ("step", "login")}


def _report(incident_id: str, top: str, now: float, *members: tuple[str, float]) -> tuple[float, list[dict[str, Any]]]:
    listed = [{"workflow": w, "env": "prod", "onset": onset, "reason": "status"} for w, onset in members]
    started = min(onset for _, onset in members)
    return now, [{"id": incident_id, "started_at": started, "members": listed, "top": {"cause": top, "kind": "step"}, "status": "open"}]


def test_scoring_counts_runs_from_the_onset_and_tells_spurious_incidents_apart() -> None:
    scenario = next(s for s in SCENARIOS if s.name == "database-outage")
    start, end = T0 + 4 * TICK, T0 + 8 * TICK
    runs = [Run("health-check", "prod", T0 + k * TICK, 0.1, "failure" if 4 <= k < 8 else "success") for k in range(12)]
    replay = Replay(scenario, 0, "levels", (start, end), runs=runs)
    replay.reports = [
        (T0, []),
        _report("before", "health", T0 + TICK, ("product-listing", T0)),  # a blip before the fault
        _report("fault", "health", start + TICK, ("health-check", start)),  # found one run after its onset, wrong at first
        _report("fault", "health-check", start + 2 * TICK, ("health-check", start)),  # right from the third run
    ]
    scored = score(replay)
    (incident,) = scored["incidents"]
    assert incident["detect_runs"] == 2 and incident["cause_runs"] == 3
    assert incident["right"] and not incident["right_at_detection"]
    assert [s["id"] for s in scored["spurious"]] == ["before"] and not scored["missed"]
    figures = summarise([scored])
    assert figures["top1"] == 1.0 and figures["top1_at_detection"] == 0.0 and figures["detect_runs_max"] == 2
    # A fault that joins an incident opened by an earlier blip is that incident, counted from the fault's own onset.
    replay.reports = [
        _report("blip", "list-products", T0 + 3 * TICK, ("product-listing", T0 + 3 * TICK)),
        _report("blip", "health-check", start, ("product-listing", T0 + 3 * TICK), ("health-check", start)),
    ]
    scored = score(replay)
    assert [(i["id"], i["detect_runs"], i["right"]) for i in scored["incidents"]] == [("blip", 1, True)] and not scored["spurious"]
    # No incident for a fault that failed runs is a miss.
    replay.reports = [(T0, [])]
    assert score(replay)["missed"] and summarise([score(replay)])["top1"] is None
