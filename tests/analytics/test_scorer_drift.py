"""The ensemble's shift watch: its Page-Hinkley test is river's, and it answers a shift, not a spike."""

from __future__ import annotations

import random

import pytest

from analytics.scorers.drift import PageHinkley, ShiftWatch
from analytics.scorers.robust import ValueZ


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
