"""The onset gate: its echo (the points after an alarm, damped whatever they score) and its rest, which lasts at most a day.

A gate saved before either resumes as it was saved.
"""

from __future__ import annotations

import pickle
import random

from analytics.scorers.calibration import OnsetGate
from analytics.scorers.ensemble import EnsembleScorer
from analytics.scorers.registry import THRESHOLD
from analytics.scorers.routine import DAY


def emitted(gate: OnsetGate, scores: list[float]) -> list[float]:
    out = []
    for s in scores:
        out.append(gate.gated(s))
        gate.learn(out[-1])
    return out


def test_an_alarm_damps_the_next_echo_points_even_higher_ones() -> None:
    gate = OnsetGate(damp=0.5, decay=0.5, echo_level=0.6, echo=3)
    out = emitted(gate, [0.7, 0.8, 0.9, 0.95, 0.99])
    assert out == [0.7, 0.4, 0.45, 0.475, 0.99], "the rise of a spike alarms; three points of echo; then it alarms again"


def test_a_score_under_the_alarm_level_starts_no_echo() -> None:
    gate = OnsetGate(damp=0.5, decay=0.5, echo_level=0.6, echo=3)
    assert emitted(gate, [0.55, 0.58, 0.7]) == [0.55, 0.58, 0.7]


def test_the_alarm_level_is_what_the_caller_alarms_at() -> None:
    ensemble = EnsembleScorer(alarm_level=0.62)
    ensemble.set_alarm_level(0.8)
    gate = ensemble._gate
    assert emitted(gate, [0.7, 0.75]) == [0.7, 0.75], "0.7 is no alarm at 0.8: no echo"
    assert emitted(gate, [0.85, 0.9])[1] == 0.45


def test_a_gate_saved_before_the_echo_resumes_without_one_and_a_new_one_keeps_it() -> None:
    old_slots = ("_peak", "_damp", "_decay", "_rest_level", "_rest", "_resting", "_alarm")
    before = OnsetGate(damp=0.5, decay=0.5)
    state = (None, {name: getattr(before, name) for name in old_slots})  # what pickle held for a gate of that version
    resumed = OnsetGate.__new__(OnsetGate)
    resumed.__setstate__(state)
    assert emitted(resumed, [0.7, 0.8, 0.9]) == [0.7, 0.8, 0.9]

    kept = pickle.loads(pickle.dumps(OnsetGate(damp=0.5, decay=0.5, echo_level=0.6, echo=2)))
    assert emitted(kept, [0.7, 0.8, 0.9, 0.95]) == [0.7, 0.4, 0.45, 0.95]


def spikes_alarmed(step_seconds: float, rest_seconds: float | None) -> list[bool]:
    """A noisy series, one point every `step_seconds`, with a spike at 1200 and a slightly smaller one 30 points later."""
    rng = random.Random(3)
    ensemble = EnsembleScorer(alarm_level=THRESHOLD, rest_seconds=rest_seconds)
    alarmed = []
    for i in range(1240):
        x = 100.0 + rng.gauss(0.0, 1.0) + {1200: 12.0, 1230: 11.0}.get(i, 0.0)
        t = 1_700_000_000.0 + i * step_seconds
        if i in (1200, 1230):
            alarmed.append(ensemble.score_one(x, t) >= THRESHOLD)
        ensemble.learn_one(x, t)
    return alarmed


def test_the_rest_after_an_alarm_lasts_at_most_a_day() -> None:
    hourly, five_minutes = 3600.0, 300.0
    assert spikes_alarmed(hourly, DAY) == [True, True], "30 hours later the rest is over: the second spike alarms"
    assert spikes_alarmed(hourly, None) == [True, False], "a rest of 150 points: six days of an hourly series"
    assert spikes_alarmed(five_minutes, DAY) == [True, False], "2.5 hours later the rest still holds: not worse, not alarmed"


def test_a_rest_given_no_times_counts_points_only() -> None:
    gate = OnsetGate(damp=0.5, decay=0.5, rest_level=0.7, rest=2, rest_seconds=1.0)
    assert emitted(gate, [0.8, 0.75, 0.75, 0.75]) == [0.8, 0.375, 0.375, 0.75]


def test_a_gate_saved_before_its_rest_could_end_in_time_rests_for_its_points() -> None:
    before = OnsetGate(damp=0.5, decay=0.5, rest_level=0.7, rest=3)
    state = (None, {name: getattr(before, name) for name in OnsetGate.__slots__[:10]})  # that version's slots
    resumed = OnsetGate.__new__(OnsetGate)
    resumed.__setstate__(state)
    out = []
    for t, s in enumerate((0.8, 0.75, 0.75, 0.75, 0.75), start=1):
        out.append(resumed.gated(s, t * 86400.0))
        resumed.learn(out[-1], t * 86400.0)
    assert out == [0.8, 0.375, 0.375, 0.375, 0.75], "a day apart, yet three points of rest, as it was saved"
