"""Daily routines: a strong anomaly at the hour the last days had one too is capped; another hour, or a much worse one, still alarms."""

from __future__ import annotations

import pickle
import random

import pytest

from analytics.scorers.ensemble import EnsembleScorer
from analytics.scorers.registry import THRESHOLD
from analytics.scorers.routine import DAY, DailyRoutine

STEP = 300.0  # a point every 5 minutes
PER_DAY = int(DAY / STEP)
MIDNIGHT = 1_700_006_400.0  # a UTC midnight
TWO_AM, TWO_PM = 24, 168  # points into the day


def nightly_backup(days: int = 8) -> list[float]:
    """A quiet series whose value jumps at 02:00 every day (a backup), one same-height jump at 14:00 on day 6 and a five times taller one at 02:00 on day 7."""
    rng = random.Random(1)
    values = [40.0 + rng.gauss(0.0, 2.0) + (60.0 if i % PER_DAY == TWO_AM else 0.0) for i in range(days * PER_DAY)]
    values[6 * PER_DAY + TWO_PM] += 60.0
    values[7 * PER_DAY + TWO_AM] += 240.0
    return values


def alarms(detector: EnsembleScorer, values: list[float], start: int = 0) -> list[tuple[int, int]]:
    """(day, hour) of every score at or above the shipped threshold; `values` begin `start` points after MIDNIGHT."""
    out = []
    for i, x in enumerate(values, start):
        t = MIDNIGHT + i * STEP
        if detector.score_one(x, t) >= THRESHOLD:
            out.append((i // PER_DAY, (i % PER_DAY) * 5 // 60))
        detector.learn_one(x, t)
    return out


def test_the_third_nightly_backup_is_routine_but_another_hour_and_a_much_worse_one_alarm() -> None:
    assert alarms(EnsembleScorer(alarm_level=THRESHOLD), nightly_backup()) == [(1, 2), (2, 2), (6, 14), (7, 2)]


def test_without_the_routine_every_nightly_backup_alarms() -> None:
    assert alarms(EnsembleScorer(alarm_level=THRESHOLD, routine=False), nightly_backup()) == [(day, 2) for day in range(1, 7)] + [(6, 14), (7, 2)]


def office_hours(days: int = 14, noise: float = 5.0, skip: int | None = None) -> list[float]:
    """20 at night and 70 from 09:00 to 18:00 every day (a noisy square wave, as NAB's art_daily_small_noise), but on day `skip`."""
    rng = random.Random(3)
    nine, six = 9 * 12, 18 * 12
    return [
        (70.0 if nine <= i % PER_DAY < six and i // PER_DAY != skip else 20.0) + rng.gauss(0.0, noise)
        for i in range(days * PER_DAY)
    ]


def test_a_daily_jump_only_twice_its_usual_worst_becomes_routine_too() -> None:
    """The jump at 09:00 sits at 2-4 times the step member's 99th percentile. A routine that learned only ratios of 3
    or more (until 2026-12) let every day under 3 alarm, for good."""
    later = [a for a in alarms(EnsembleScorer(alarm_level=THRESHOLD), office_hours()) if a[0] >= 3]
    old = EnsembleScorer(alarm_level=THRESHOLD)
    old._routine = DailyRoutine(level=3.0)
    before = [a for a in alarms(old, office_hours()) if a[0] >= 3]
    assert len(later) <= 3, later  # measured: 2 (days 8 and 13, a jump under twice the usual worst)
    assert len(before) >= 12, before  # measured: 17, on every one of days 3-13


def test_the_daily_jump_that_does_not_come_alarms_though_the_jump_is_routine() -> None:
    """Day 10 stays at night level all day. The hour-of-week member sees 20 where its 09:00 has 70; no routine of
    09:00 mutes it, since what it measures is already against its hour."""
    values = office_hours(noise=2.0, skip=10)
    assert (10, 9) in alarms(EnsembleScorer(alarm_level=THRESHOLD), values)
    muted = EnsembleScorer(alarm_level=THRESHOLD)
    muted._outside = []  # the routine over every member, as before 2026-12
    assert (10, 9) not in alarms(muted, values)


def test_it_needs_one_on_each_of_the_last_days_near_this_time_and_not_much_smaller() -> None:
    routine = DailyRoutine(level=3.0, tolerance=1800.0, days=2, k=2.0)
    routine.learn(2 * 3600.0, 4.0)  # day 0, 02:00
    assert not routine.seen(DAY + 2 * 3600.0, 4.0), "one day is not a routine"
    routine.learn(DAY + 2 * 3600.0 + 1500.0, 4.0)  # day 1, 02:25
    assert routine.seen(2 * DAY + 2 * 3600.0, 4.0)
    assert routine.seen(2 * DAY + 2 * 3600.0, 8.0), "twice as far out as the routine's own: still routine"
    assert not routine.seen(2 * DAY + 2 * 3600.0, 8.5), "more than twice: an incident at the routine's hour"
    assert not routine.seen(2 * DAY + 3 * 3600.0, 4.0), "an hour later than day 0's: outside the half-hour tolerance"
    assert not routine.seen(3 * DAY + 2 * 3600.0, 4.0), "day 2 had none"


def test_by_default_two_of_the_last_three_days_within_an_hour_make_a_routine() -> None:
    """A job that skips a day, or runs 50 minutes late one day, is still the routine; one day of three is not."""
    routine = DailyRoutine()
    routine.learn(2 * 3600.0, 4.0)  # day 0, 02:00
    routine.learn(2 * DAY + 2 * 3600.0 + 3000.0, 4.0)  # none on day 1; day 2 at 02:50
    assert routine.seen(3 * DAY + 2 * 3600.0 + 1500.0, 4.0), "days 2 and 0, 25 minutes either side"
    assert not routine.seen(4 * DAY + 2 * 3600.0 + 3000.0, 4.0), "only day 2 of the last three (day 1 had none, day 0 is four days back)"
    assert not routine.seen(3 * DAY + 4 * 3600.0, 4.0), "two hours off"
    with pytest.raises(ValueError):
        DailyRoutine(days=2, need=3)


def test_a_routine_saved_before_it_counted_days_wants_every_one_of_them() -> None:
    routine = DailyRoutine(level=3.0, tolerance=1800.0, days=2, k=2.0)
    routine.learn(2 * 3600.0, 4.0)
    state = routine.__reduce_ex__(2)[2]
    del state[1]["_need"]  # what a routine pickled before then held
    old = DailyRoutine.__new__(DailyRoutine)
    old.__setstate__(state)
    assert old._need == 2
    old.learn(DAY + 2 * 3600.0, 4.0)
    assert old.seen(2 * DAY + 2 * 3600.0, 4.0) and not old.seen(3 * DAY + 2 * 3600.0, 4.0)


def test_it_forgets_what_is_older_than_its_days_and_keeps_a_bounded_number() -> None:
    routine = DailyRoutine(days=2, keep=5)
    for i in range(100):
        routine.learn(i * 600.0, 4.0)
    assert len(routine._events) == 5
    routine.learn(10 * DAY, 4.0)
    assert list(routine._events) == [(10 * DAY, 4.0)]


@pytest.mark.parametrize("routine", [True, False])
def test_a_saved_ensemble_resumes_as_it_was_saved(routine: bool) -> None:
    values = nightly_backup()
    detector = EnsembleScorer(alarm_level=THRESHOLD, routine=routine)
    alarms(detector, values[: 3 * PER_DAY])
    if not routine:
        del detector._routine  # what an ensemble pickled before the daily routine held
    resumed = pickle.loads(pickle.dumps(detector))
    assert (resumed._routine is not None) is routine
    expected = EnsembleScorer(alarm_level=THRESHOLD, routine=routine)
    alarms(expected, values[: 3 * PER_DAY])
    assert alarms(resumed, values[3 * PER_DAY :]) == alarms(expected, values[3 * PER_DAY :])


def test_an_ensemble_saved_while_its_routine_covered_every_member_resumes_so() -> None:
    values = office_hours(noise=2.0, skip=10)
    saved = EnsembleScorer(alarm_level=THRESHOLD)
    alarms(saved, values[: 9 * PER_DAY])
    state = saved.__getstate__()
    del state["_outside"]  # what an ensemble pickled before the hour-of-week member left the routine held
    resumed = EnsembleScorer.__new__(EnsembleScorer)
    resumed.__setstate__(pickle.loads(pickle.dumps(state)))
    assert resumed._outside == []
    assert (10, 9) not in alarms(resumed, values[9 * PER_DAY :], 9 * PER_DAY)  # muted, as it was saved
    fresh = pickle.loads(pickle.dumps(saved))
    assert (10, 9) in alarms(fresh, values[9 * PER_DAY :], 9 * PER_DAY)
