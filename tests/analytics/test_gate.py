"""The onset gate's echo: the points after an alarm are damped whatever they score; old saved gates resume without it."""

from __future__ import annotations

import pickle

from analytics.scorers.calibration import OnsetGate
from analytics.scorers.ensemble import EnsembleScorer


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
