"""The ensemble's cadence: on a series checked more often than every five minutes, it learns in five-minute blocks.

So a check that runs every minute raises no more false alarms a day than one
that runs every five minutes, and a series five minutes apart or more (all of
NAB's) is scored exactly as before.
"""

from __future__ import annotations

import pickle
import random
from typing import Any

import numpy as np
import pytest

from analytics.scorers.calibration import Cadence
from analytics.scorers.ensemble import EnsembleScorer
from analytics.scorers.registry import THRESHOLD
from analytics.scorers.robust import DiffZ, MeanZ
from bench.anomaly_domain import make_set
from bench.anomaly_nab import Series, evaluate, score_series


def scores(detector: EnsembleScorer, step_seconds: float, n: int = 1500) -> list[float]:
    """A noisy series with a daily bump and a few spikes, one point every `step_seconds`."""
    rng = random.Random(4)
    out = []
    for i in range(n):
        t = 1_700_000_000.0 + i * step_seconds
        x = 100.0 + 10.0 * np.sin(t / 86400.0 * 2 * np.pi) + rng.gauss(0.0, 2.0) + (30.0 if i % 400 == 399 else 0.0)
        out.append(detector.score_one(x, t))
        detector.learn_one(x, t)
    return out


def test_points_five_minutes_apart_or_more_are_scored_as_without_a_cadence() -> None:
    for step in (300.0, 1800.0, 3600.0):
        with_cadence = scores(EnsembleScorer(alarm_level=THRESHOLD), step)
        without = scores(EnsembleScorer(alarm_level=THRESHOLD, reference_seconds=None), step)
        assert with_cadence == without, f"a point every {step:g} s"


def test_points_a_minute_apart_are_learned_in_blocks_of_five() -> None:
    detector = EnsembleScorer(alarm_level=THRESHOLD)
    scores(detector, 60.0, n=1001)
    assert detector._cadence.every == 5
    value = detector._calibrators[0]._history
    assert 190 <= len(value) <= 197, "a block of five points is one value (the first points warm the member up)"
    window = detector._members[0]._window
    assert 200 <= len(window) <= 216, "the value member's window learns one point of each block too: 1000 points are 200 blocks"
    without = EnsembleScorer(alarm_level=THRESHOLD, reference_seconds=None)
    scores(without, 60.0, n=1001)
    assert len(without._calibrators[0]._history) > 900


def test_a_member_that_follows_a_point_measures_from_it_without_learning_it() -> None:
    steps, means = DiffZ(window=50, warmup=3), MeanZ(window=50, span=3, warmup=3)
    for x in (10.0, 11.0, 10.0, 11.0, 10.0):
        steps.learn(x)
        means.learn(x)
    steps.follow(40.0)
    means.follow(40.0)
    assert len(steps._window) == 4 and len(means._window) == 3, "followed, not learned"
    assert steps.statistic(41.0) == steps._window.robust_z(1.0), "the step is from the followed point: 1, not 31"
    assert means._recent[-1] == 40.0


def test_the_cadence_follows_a_schedule_that_changes_and_ignores_the_odd_gap() -> None:
    detector = EnsembleScorer(alarm_level=THRESHOLD)
    t = 1_700_000_000.0
    for _ in range(200):
        t += 15.0
        detector.learn_one(100.0, t)
    assert detector._cadence.every == 20, "every 15 s: blocks of 20 points"
    t += 8 * 3600.0  # a night without data
    for _ in range(20):
        t += 15.0
        detector.learn_one(100.0, t)
    assert detector._cadence.every == 20
    for _ in range(200):
        t += 60.0
        detector.learn_one(100.0, t)
    assert detector._cadence.every == 5 and detector._every == 5, "every minute: blocks of 5"
    for _ in range(5):
        detector.learn_one(100.0, t)  # no time passes: no interval to learn
    assert detector._cadence.every == 5
    for _ in range(40):
        detector.learn_one(100.0)  # points without a time
    for _ in range(200):
        t += 15.0
        detector.learn_one(100.0, t)
    assert detector._cadence.every == 20, "it goes on once the times come back"


def test_a_cadence_needs_a_positive_reference() -> None:
    with pytest.raises(ValueError, match="reference must be positive, got 0"):
        Cadence(reference=0.0)


def test_a_minutely_latency_series_raises_fewer_false_alarms_and_misses_no_more_incidents() -> None:
    """Twelve of the domain set's series (bench/anomaly_domain.py, seed 7): benign slow requests, spikes, shifts, ramps, errors.

    Measured on these twelve: 33 false-alarm events without the cadence, none with it; all 24 incidents found both
    ways (on all 24: 52 and 3 events, window F1 0.65 -> 0.97 at the shipped threshold).
    """
    data: list[Series] = make_set(7, 12)[0]
    found, false_alarms = counted(data)
    found_before, false_alarms_before = counted(data, reference_seconds=None)
    assert false_alarms * 2 <= false_alarms_before, (false_alarms, false_alarms_before)
    assert found >= found_before - 1 and found >= 22, (found, found_before)


def test_an_ensemble_saved_before_the_cadence_resumes_and_gains_one() -> None:
    saved = EnsembleScorer(alarm_level=THRESHOLD, reference_seconds=None)
    scores(saved, 60.0, n=300)
    state = saved.__getstate__()
    for name in ("_cadence", "_every", "_tick", "_block", "_in_block"):
        del state[name]  # what the pickle of that version held
    resumed = EnsembleScorer.__new__(EnsembleScorer)
    resumed.__setstate__(state)
    learned = len(resumed._calibrators[0]._history)
    t0 = 1_700_000_000.0 + 300 * 60.0
    for i in range(100):
        resumed.learn_one(100.0 + (i % 7), t0 + i * 60.0)
    assert resumed._cadence.every == 5
    assert len(resumed._calibrators[0]._history) - learned < 40, "it learns blocks of five points, not every point"


def test_an_ensemble_pickled_in_the_middle_of_a_block_goes_on_exactly_as_one_that_was_not() -> None:
    rng = random.Random(8)
    points = [(1_700_000_000.0 + 60.0 * i, 100.0 + rng.gauss(0.0, 3.0) + (40.0 if i % 300 == 299 else 0.0)) for i in range(1500)]
    kept = EnsembleScorer(alarm_level=THRESHOLD)
    for t, x in points[:503]:
        kept.score_one(x, t)
        kept.learn_one(x, t)
    assert kept._every == 5 and kept._in_block, "saved with a block half learned"
    resumed = pickle.loads(pickle.dumps(kept))
    went_on, came_back = [], []
    for t, x in points[503:]:
        went_on.append(kept.score_one(x, t))
        kept.learn_one(x, t)
        came_back.append(resumed.score_one(x, t))
        resumed.learn_one(x, t)
    assert came_back == went_on


class PointStepZ(DiffZ):
    """The step member as it was before it could span blocks: it is never told the cadence."""

    blocks = None


class PointMeanZ(MeanZ):
    """The mean member as it was before it could span blocks: the mean of 3 points at any rate."""

    blocks = None


def counted(
    data: list[Series], step: DiffZ | None = None, mean: MeanZ | None = None, mature: bool = False, **settings: Any
) -> tuple[int, int]:
    """(incidents found, false-alarm events) of the shipped ensemble on `data`: as shipped, with other `settings`, one
    member swapped, or its calibrators mature from their warmup."""

    def detector() -> EnsembleScorer:
        made = EnsembleScorer(alarm_level=THRESHOLD, **settings)
        if step is not None:
            made._members[1] = pickle.loads(pickle.dumps(step))  # a fresh copy for each series
        if mean is not None:
            made._members[2] = pickle.loads(pickle.dumps(mean))
        if mature:
            for calibrator in made._calibrators:
                calibrator._mature = calibrator._warmup  # the largest value as the quantile while young, as before
        return made

    counts = evaluate([score_series(detector, s) for s in data], data, THRESHOLD)
    return counts.found, counts.fp_events


def test_the_step_member_measures_the_change_of_level_over_the_reference_time() -> None:
    steps = DiffZ(window=50, warmup=3)
    for x in (10.0, 12.0, 11.0, 13.0, 12.0):
        steps.learn(x)
    assert steps.step(20.0) == 8.0, "told nothing: point to point"
    steps.blocks(2)
    assert steps.step(20.0) is None, "it kept the last value only: not yet four to measure over"
    for x in (11.0, 13.0):
        steps.learn(x)
    assert steps.step(20.0) == ((13.0 + 20.0) - (12.0 + 11.0)) / 2, "the last two values' mean less the two before's"
    steps.blocks(3)
    steps.learn(20.0)
    assert steps.step(14.0) is None, "not yet six values to measure over"
    steps.learn(16.0)
    assert steps.step(14.0) == ((20.0 + 16.0 + 14.0) - (12.0 + 11.0 + 13.0)) / 3
    steps.blocks(1)
    assert steps.step(14.0) == -2.0, "back to point to point: from the last value"
    detector = EnsembleScorer(alarm_level=THRESHOLD)
    scores(detector, 15.0, n=100)
    assert detector._members[1]._every == 20, "every 15 s: the ensemble tells it blocks of 20 points"


def test_one_slow_request_moves_a_block_step_by_a_fifth_and_a_jump_that_stays_by_its_whole_height() -> None:
    steps = DiffZ(window=100, warmup=3)
    steps.blocks(5)
    for _ in range(9):
        steps.learn(100.0)
    assert steps.step(300.0) == 40.0, "a 3x request among five: a fifth of its 200"
    for _ in range(4):
        steps.follow(300.0)
    assert steps.step(300.0) == 200.0, "the level stayed five points: its whole height"


def test_a_minutely_latency_series_raises_fewer_false_alarms_with_steps_over_the_reference_time() -> None:
    """Twelve of the domain set's series (seed 7): point-to-point steps alarm on benign 2-3x slow requests.

    Measured on these twelve: 7 false-alarm events with point steps, none with steps over five minutes; all 24
    incidents found both ways. On all 24, the step alone (before the mean over a quarter hour and the young
    calibrators' extrapolation): 13 and 5 events, window F1 0.88 -> 0.95 at the shipped threshold.
    """
    data: list[Series] = make_set(7, 12)[0]
    found, false_alarms = counted(data)
    found_before, false_alarms_before = counted(data, step=PointStepZ())
    assert false_alarms * 3 + 1 <= false_alarms_before, (false_alarms, false_alarms_before)
    assert found >= found_before and found >= 23, (found, found_before)


def test_a_step_member_saved_before_it_could_span_blocks_resumes_and_learns_the_cadence() -> None:
    detector = EnsembleScorer(alarm_level=THRESHOLD)
    scores(detector, 60.0, n=300)
    member = detector._members[1]
    old = DiffZ.__new__(DiffZ)
    last = member._prev
    old.__setstate__((None, {"_window": member._window, "_warmup": member._warmup, "_prev": last}))  # that version's state
    assert old._every == 1 and old.step(last + 3.0) == 3.0, "alone, it resumes point to point, as it was saved"
    state = detector.__getstate__()
    state["_members"] = [old if m is member else m for m in detector._members]
    resumed = EnsembleScorer.__new__(EnsembleScorer)
    resumed.__setstate__(state)
    assert resumed._members[1]._every == 5, "in an ensemble a minute apart it measures over blocks of five from now on"
    assert resumed._members[1].step(100.0) is None, "until it has seen nine values again"
    t0 = 1_700_000_000.0 + 300 * 60.0
    for i in range(20):
        resumed.learn_one(100.0 + i % 3, t0 + 60.0 * i)
    assert resumed._members[1].step(100.0) is not None


def test_the_mean_member_averages_the_same_quarter_hour_at_any_rate() -> None:
    means = MeanZ(window=50, span=3, warmup=3)
    for x in range(1, 8):
        means.learn(float(x))
    assert means.statistic(10.0) == means._window.robust_z((6.0 + 7.0 + 10.0) / 3), "told nothing: the mean of 3 points"
    means.blocks(2)
    assert means.statistic(10.0) is None, "it holds 3 values: not yet the 6 it now averages"
    for x in (8.0, 9.0, 10.0):
        means.follow(x)
    assert means._points == 6 and list(means._recent) == [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    assert means.statistic(11.0) == means._window.robust_z((6.0 + 7.0 + 8.0 + 9.0 + 10.0 + 11.0) / 6)
    means.blocks(1)
    assert list(means._recent) == [8.0, 9.0, 10.0] and means.statistic(11.0) == means._window.robust_z(10.0)
    old = MeanZ.__new__(MeanZ)
    old.__setstate__((None, {"_window": means._window, "_warmup": 3, "_recent": means._recent, "_span": 3, "_sum": 27.0}))
    assert old.statistic(11.0) == means.statistic(11.0), "saved before it could span blocks: the mean of 3 points"


def test_a_latency_series_checked_every_30_s_raises_fewer_false_alarms_with_a_mean_over_a_quarter_hour() -> None:
    """Twelve of the domain set's series (seed 7) a point every 30 s: 6 false-alarm events with a 3-point mean, 3 now.

    All 24 incidents found both ways. On all 24 series of seeds 7, 11, 3 and 5 at 30 s: window F1 0.86 / 0.89 / 0.90 /
    0.81 -> 0.94 / 0.92 / 0.92 / 0.87 at the shipped threshold (ANALYTICS.md). Measured, as here, with every
    calibrator speaking after 20 values (`settle=0`): settled ones hide most of these false alarms either way.
    """
    data: list[Series] = make_set(7, 12, 30.0)[0]
    found, false_alarms = counted(data, settle=0)
    found_before, false_alarms_before = counted(data, mean=PointMeanZ(1000, span=3), settle=0)
    assert false_alarms * 2 <= false_alarms_before, (false_alarms, false_alarms_before)
    assert found >= found_before and found >= 23, (found, found_before)


def test_young_calibrators_raise_fewer_false_alarms_on_a_series_checked_every_15_s() -> None:
    """Twelve of the domain set's series (seed 11) a point every 15 s: after the 750 points of NAB's probation (three
    hours) each calibrator holds 37 blocks. Measured: 9 false-alarm events with the largest so far as the quantile, 4
    with the extrapolated one; all 24 incidents found both ways. Measured, as here, with every calibrator speaking after
    20 values (`settle=0`).
    """
    data: list[Series] = make_set(11, 12, 15.0)[0]
    found, false_alarms = counted(data, settle=0)
    found_before, false_alarms_before = counted(data, mature=True, settle=0)
    assert false_alarms * 2 <= false_alarms_before, (false_alarms, false_alarms_before)
    assert found >= found_before and found >= 23, (found, found_before)


def test_the_value_and_mean_calibrators_settle_before_they_speak() -> None:
    """Twelve of the domain set's series (seed 7) a point every 15 s. Their first benign slow requests, 2-3 times, come
    while the value member's calibrator holds a few dozen five-minute blocks, none of them that slow. Measured: 8
    false-alarm events when every calibrator speaks after 20 values, 1 when the value and mean members' wait for 150
    (12.5 hours of blocks); 23 of 24 incidents found both ways.
    """
    data: list[Series] = make_set(7, 12, 15.0)[0]
    found, false_alarms = counted(data)
    found_before, false_alarms_before = counted(data, settle=0)
    assert false_alarms * 3 <= false_alarms_before, (false_alarms, false_alarms_before)
    assert found >= found_before and found >= 23, (found, found_before)


def test_a_young_series_still_alarms_on_a_jump_through_its_step_member() -> None:
    """Four hours of a check every 15 s (48 blocks): the value, mean and spread members are still settling, the step
    member speaks, and a jump to three times the level alarms within its first five minutes."""
    rng = random.Random(5)
    detector = EnsembleScorer(alarm_level=THRESHOLD)
    out = []
    for i in range(1000):
        t = 1_700_000_000.0 + 15.0 * i
        x = 100.0 * (3.0 if i >= 960 else 1.0) * rng.lognormvariate(0.0, 0.1)
        out.append(detector.score_one(x, t))
        detector.learn_one(x, t)
    held = [len(c._history) for c in detector._calibrators[:4]]
    assert held[0] < 150 and held[1] >= 20, held
    assert max(out[:960]) < THRESHOLD <= max(out[960:980]), (max(out[:960]), max(out[960:980]))


def test_an_ensemble_saved_before_the_settling_resumes_as_it_was_saved() -> None:
    """Its calibrators keep the warmup they were made with (20 values for every member), so it scores on as before."""
    before = EnsembleScorer(alarm_level=THRESHOLD, settle=0)  # every calibrator speaks after 20 values, as before
    scores(before, 60.0, n=400)
    resumed = pickle.loads(pickle.dumps(before))
    assert [c._warmup for c in resumed._calibrators] == [20] * 5
    assert scores(resumed, 60.0, n=300) == scores(before, 60.0, n=300)
    assert [c._warmup for c in EnsembleScorer()._calibrators] == [150, 20, 150, 20, 20], "made now: value and mean settle"
