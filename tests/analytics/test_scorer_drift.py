"""The ensemble's shift watch: its Page-Hinkley test is river's, it answers a shift, not a spike, and its boost skips the step member."""

from __future__ import annotations

import pickle
import random

import pytest

from analytics.scorers.drift import PageHinkley, ShiftWatch
from analytics.scorers.ensemble import EnsembleScorer
from analytics.scorers.registry import THRESHOLD
from analytics.scorers.robust import DiffZ, ValueZ


def stream(seed: int, n: int = 3000) -> list[float]:
    rng = random.Random(seed)
    out, level = [], 0.0
    for i in range(n):
        if i % 400 == 399:
            level = rng.choice((-3.0, 0.0, 2.0, 4.0))
        out.append(max(-5.0, min(5.0, level + rng.gauss(0.0, 1.0))))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_page_hinkley_signals_where_rivers_does(seed: int) -> None:
    drift = pytest.importorskip("river.drift")
    theirs = drift.PageHinkley(threshold=30.0, delta=1.0)
    ours = PageHinkley(threshold=30.0, delta=1.0)
    want, got = [], []
    for i, x in enumerate(stream(seed)):
        theirs.update(x)
        if theirs.drift_detected:
            want.append(i)
        if ours.update(x):
            got.append(i)
    assert want, "the stream must contain changes for the comparison to mean anything"
    assert got == want


def watch_run(values: list[float]) -> list[bool]:
    value = ValueZ(1000)
    watch = ShiftWatch(value, 0)
    active = []
    for x in values:
        active.append(watch.active)
        watch.learn(x, [value.statistic(x)])
        value.learn(x)
    return active


def test_a_lone_spike_does_not_set_it_off_a_shift_does() -> None:
    rng = random.Random(5)
    base = [100.0 + rng.gauss(0.0, 1.0) for _ in range(1500)]
    spikes = list(base)
    for i in (600, 900, 1200):
        spikes[i] += 40.0
    assert not any(watch_run(spikes))

    shifted = base[:1000] + [x - 6.0 for x in base[1000:]]
    active = watch_run(shifted)
    assert not any(active[:1000])
    first = active.index(True)
    assert 1000 < first <= 1030  # within a few tens of points of the drop
    assert sum(active) <= 3 * 10  # one signal per change and then the test starts afresh, not an alarm per row


def two_members(shift_boost: float) -> EnsembleScorer:
    return EnsembleScorer(members=[ValueZ(), DiffZ()], q=(0.998, 0.99), shift_boost=shift_boost, alarm_level=THRESHOLD)


def test_the_boost_after_a_shift_leaves_the_step_member_alone() -> None:
    """A one-point jump is not the sustained change the watch signals: the step member's ratio is not multiplied."""
    rng = random.Random(3)
    quiet = [100.0 + rng.gauss(0.0, 1.0) for _ in range(1200)] + [96.5]  # a low point: the jump from it ends near the median
    watched, plain, old = two_members(1.5), two_members(1.0), two_members(1.5)
    old._boosted = [True, True]  # an ensemble saved when the watch boosted every member
    for detector in (watched, plain, old):
        for x in quiet:
            detector.score_one(x)
            detector.learn_one(x)
        assert detector._shift is None or not detector._shift.active
    for detector in (watched, old):
        assert detector._shift is not None
        detector._shift._left = 10  # as if it had just signalled a change
    jump = 101.5  # the step is far out (a ratio of about 1.4), the value is not
    assert watched.score_one(jump) == plain.score_one(jump) < THRESHOLD
    assert old.score_one(jump) >= THRESHOLD, "boosted, the same jump alarms: the test tells the two apart"


def test_an_ensemble_saved_before_the_step_member_went_unboosted_resumes_boosting_it() -> None:
    state = two_members(1.5).__getstate__()
    del state["_boosted"]  # what an ensemble pickled before then held
    detector = EnsembleScorer.__new__(EnsembleScorer)
    detector.__setstate__(state)
    assert pickle.loads(pickle.dumps(detector))._boosted == [True, True]
    assert pickle.loads(pickle.dumps(two_members(1.5)))._boosted == [True, False]
