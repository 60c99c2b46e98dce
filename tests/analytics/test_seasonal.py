"""The ensemble's seasonal member: silent on series without a daily or weekly profile, and it learns the value window only once."""

from __future__ import annotations

import math
import random

from analytics.scorers.seasonal import SeasonalZ
from analytics.scorers.window import SortedWindow

HOUR = 3600.0


def hours(n: int, profile: float, seed: int = 4) -> list[tuple[float, float]]:
    """(t, x) a point an hour: 100 plus a daily sine of amplitude `profile`, plus noise of 1."""
    rng = random.Random(seed)
    return [(h * HOUR, 100.0 + profile * math.sin(2 * math.pi * h / 24) + rng.gauss(0.0, 1.0)) for h in range(n)]


def learned(member: SeasonalZ, points: list[tuple[float, float]], values: SortedWindow | None = None) -> SeasonalZ:
    for t, x in points:
        if values is not None:
            values.add(x)  # what the ensemble's value member does first
        member.learn(x, t)
    return member


def test_it_speaks_only_where_the_hour_explains_the_values() -> None:
    weeks = 24 * 7 * 6
    daily = learned(SeasonalZ(explained=0.5), hours(weeks, profile=20.0))
    flat = learned(SeasonalZ(explained=0.5), hours(weeks, profile=0.0))
    assert flat.statistic(130.0, 6 * HOUR) is None, "no profile: the value member speaks for such a series"
    z_peak = daily.statistic(120.0, 6 * HOUR)  # 06:00 is the daily peak: 120 is usual there
    z_dip = daily.statistic(120.0, 18 * HOUR)  # and far out at 18:00, the trough (80)
    assert z_peak is not None and z_dip is not None
    assert z_peak < 1.0 < 5.0 < z_dip
    assert daily.statistic(120.0, None) is None, "a point without a time has no hour"


def test_a_profile_that_fades_closes_it_again() -> None:
    member = learned(SeasonalZ(explained=0.5), hours(24 * 7 * 6, profile=20.0))
    assert member.statistic(100.0, 6 * HOUR) is not None
    later = [(t + 24 * 7 * 6 * HOUR, x) for t, x in hours(24 * 7 * 4, profile=0.0, seed=5)]
    assert learned(member, later).statistic(100.0, 6 * HOUR) is None


def test_it_reads_a_shared_value_window_without_learning_it() -> None:
    values = SortedWindow(1000)
    shared = learned(SeasonalZ(values=values, explained=0.5), hours(24 * 7 * 6, profile=20.0), values)
    own = learned(SeasonalZ(explained=0.5), hours(24 * 7 * 6, profile=20.0))
    assert len(values) == 1000, "added once a point, by its owner"
    assert shared.statistic(120.0, 18 * HOUR) == own.statistic(120.0, 18 * HOUR)


def test_a_point_a_minute_still_compares_with_last_weeks_hour() -> None:
    """At most 12 values an hour join a bucket, so its 32 hold weeks of that hour, not the last half hour."""
    member = SeasonalZ(explained=0.5)
    minutes = [(m * 60.0, 100.0 + (50.0 if m // 60 == 9 else 0.0)) for m in range(60 * 24 * 7)]  # one week, 09:00 on day 0 busy
    learned(member, minutes)
    last_monday_nine = member._week[SeasonalZ.hour_of_week(9 * HOUR)]
    assert last_monday_nine is not None and len(last_monday_nine) == 12, "12 of its 60 points, one each 5 minutes"
    learned(member, [(t + 7 * 86400.0, 100.0) for t, _ in minutes[: 60 * 10]])  # the same day a week later, quiet to 10:00
    assert len(last_monday_nine) == 24 and last_monday_nine.quantile(1.0) == 150.0, "last week's busy hour is still there"
