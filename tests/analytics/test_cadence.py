"""The ensemble's cadence: on a series checked more often than every five minutes, it learns in five-minute blocks.

So a check that runs every minute raises no more false alarms a day than one
that runs every five minutes, and a series five minutes apart or more (all of
NAB's) is scored exactly as before.
"""

from __future__ import annotations

import pickle
import random

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

    Measured on these twelve: 33 false-alarm events without the cadence, 8 with it; all 24 incidents found both ways
    (on all 24: 52 and 13 events, window F1 0.65 -> 0.88 at the shipped threshold).
    """
    data: list[Series] = make_set(7, 12)[0]

    def counted(**kwargs: object) -> tuple[int, int]:
        all_scores = [score_series(lambda: EnsembleScorer(alarm_level=THRESHOLD, **kwargs), s) for s in data]
        counts = evaluate(all_scores, data, THRESHOLD)
        return counts.found, counts.fp_events

    found, false_alarms = counted()
    found_before, false_alarms_before = counted(reference_seconds=None)
    assert false_alarms * 2 <= false_alarms_before, (false_alarms, false_alarms_before)
    assert found >= found_before - 1 and found >= 22, (found, found_before)


def test_an_ensemble_saved_before_the_cadence_resumes_and_gains_one() -> None:
    saved = EnsembleScorer(alarm_level=THRESHOLD, reference_seconds=None)
    scores(saved, 60.0, n=300)
    state = dict(saved.__dict__)
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
