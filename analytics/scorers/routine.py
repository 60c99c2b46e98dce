"""Daily routines: a strong anomaly at the time of day when the last days had one too is a routine, not an incident.

A nightly backup that slows the database at 02:00, a report that runs at
09:00, a cron job's daily burst of CPU: each is as far out as an incident
the first time, and the first times should alarm. Once the same hour of
the day has had one on each of the last `days` days, the next is routine
(Netdata and Datadog learn such daily patterns too). One that is much worse
than the routine's own (more than `k` times as far out) is not.
"""

from __future__ import annotations

import bisect
from collections import deque
from itertools import islice, takewhile

__all__ = ["DailyRoutine"]

DAY = 86400.0


class DailyRoutine:
    """The times and ratios of the strong anomalies (ratio >= `level`) of the last `days` + 1 days.

    `seen(t, ratio)`: whether each of the last `days` days had one within
    `tolerance` seconds of this time of day whose ratio was at least
    ratio / `k`. Times must not go backwards (a series is learned in time
    order). At most `keep` are remembered: strong anomalies are rare by
    construction (three times a series' own 99th percentile), so the bound
    only guards a pathological series.

    >>> r = DailyRoutine(level=3.0, tolerance=1800.0, days=2, k=2.0)
    >>> two_am = 2 * 3600.0
    >>> for day in range(2):
    ...     r.learn(day * DAY + two_am + 60.0 * day, 5.0)  # a routine that drifts a minute a day
    >>> r.seen(2 * DAY + two_am, 6.0), r.seen(2 * DAY + two_am + 7200.0, 6.0), r.seen(2 * DAY + two_am, 12.0)
    (True, False, False)
    """

    __slots__ = ("level", "_tolerance", "_days", "_k", "_events")

    def __init__(self, level: float = 3.0, tolerance: float = 1800.0, days: int = 2, k: float = 2.0, keep: int = 1024) -> None:
        self.level = level
        self._tolerance = tolerance
        self._days = days
        self._k = k
        self._events: deque[tuple[float, float]] = deque(maxlen=keep)

    def seen(self, t: float, ratio: float) -> bool:
        events, tolerance, least = self._events, self._tolerance, ratio / self._k
        for day in range(1, self._days + 1):
            then = t - day * DAY
            start = bisect.bisect_left(events, then - tolerance, key=_time)
            near = takewhile(lambda e: e[0] <= then + tolerance, islice(events, start, None))
            if not any(past >= least for _, past in near):
                return False
        return True

    def learn(self, t: float, ratio: float) -> None:
        """Remember a strong anomaly (the caller passes those with ratio >= `level`); forget those older than the window."""
        events = self._events
        events.append((t, ratio))
        oldest = t - (self._days + 1) * DAY
        while events[0][0] < oldest:
            events.popleft()


def _time(event: tuple[float, float]) -> float:
    return event[0]
