"""Daily routines: a strong anomaly at the time of day when the last days had one too is a routine, not an incident.

A nightly backup that slows the database at 02:00, a report that runs at
09:00, a cron job's daily burst of CPU: each is as far out as an incident
the first time, and the first times should alarm. Once the same hour of
the day has had one on `need` of the last `days` days (2 of 3: a job that
skips a day, or whose run on one day was too mild to count, stays a
routine), the next is routine (Netdata and Datadog learn such daily
patterns too). One that is much worse
than the routine's own (more than `k` times as far out) is not.
"""

from __future__ import annotations

import bisect
from collections import deque
from itertools import islice, takewhile
from typing import Any

from analytics.scorers.window import _restore_slots

__all__ = ["DAY", "DailyRoutine"]

DAY = 86400.0


class DailyRoutine:
    """The times and ratios of the strong anomalies (ratio >= `level`) of the last `days` + 1 days.

    `seen(t, ratio)`: whether at least `need` of the last `days` days had one
    within `tolerance` seconds of this time of day whose ratio was at least
    ratio / `k`. Times must not go backwards (a series is learned in time
    order). At most `keep` are remembered: strong anomalies are rare by
    construction (twice a series' own 99th percentile), so the bound
    only guards a pathological series.

    >>> r = DailyRoutine(level=3.0, tolerance=1800.0, days=2, k=2.0)
    >>> two_am = 2 * 3600.0
    >>> for day in range(2):
    ...     r.learn(day * DAY + two_am + 60.0 * day, 5.0)  # a routine that drifts a minute a day
    >>> r.seen(2 * DAY + two_am, 6.0), r.seen(2 * DAY + two_am + 7200.0, 6.0), r.seen(2 * DAY + two_am, 12.0)
    (True, False, False)
    >>> r = DailyRoutine()  # 2 of the last 3 days, within an hour
    >>> for day in (0, 2):  # the job skipped day 1
    ...     r.learn(day * DAY + two_am + 2400.0 * day, 5.0)  # and ran 80 minutes later on day 2
    >>> r.seen(3 * DAY + two_am + 2400.0, 6.0), r.seen(4 * DAY + two_am, 6.0)
    (True, False)
    """

    __slots__ = ("level", "_tolerance", "_days", "_need", "_k", "_events")

    def __init__(
        self, level: float = 2.0, tolerance: float = 3600.0, days: int = 3, need: int = 2, k: float = 2.0, keep: int = 1024
    ) -> None:
        if not 1 <= need <= days:
            raise ValueError(f"need must be from 1 to days ({days}), got {need}")
        self.level = level
        self._tolerance = tolerance
        self._days = days
        self._need = need
        self._k = k
        self._events: deque[tuple[float, float]] = deque(maxlen=keep)

    def __setstate__(self, state: Any) -> None:
        """A routine saved before `need` existed wanted every one of its days, and resumes so."""
        _restore_slots(self, state)
        if not hasattr(self, "_need"):
            self._need = self._days

    def seen(self, t: float, ratio: float) -> bool:
        events, tolerance, least = self._events, self._tolerance, ratio / self._k
        hits, need = 0, self._need
        for day in range(1, self._days + 1):
            then = t - day * DAY
            start = bisect.bisect_left(events, then - tolerance, key=_time)
            near = takewhile(lambda e: e[0] <= then + tolerance, islice(events, start, None))
            if any(past >= least for _, past in near):
                hits += 1
                if hits >= need:
                    return True
            elif self._days - day < need - hits:  # too few days left to reach `need`
                return False
        return False

    def learn(self, t: float, ratio: float) -> None:
        """Remember a strong anomaly (the caller passes those with ratio >= `level`); forget those older than the window."""
        events = self._events
        events.append((t, ratio))
        oldest = t - (self._days + 1) * DAY
        while events[0][0] < oldest:
            events.popleft()


def _time(event: tuple[float, float]) -> float:
    return event[0]
