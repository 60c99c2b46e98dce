"""The seasonal baseline: robust statistics per hour of the week, falling back to hour of day, then to all recent values."""

from __future__ import annotations

from analytics.scorers.robust import squash
from analytics.scorers.window import IQR_TO_SIGMA, SortedWindow

__all__ = ["SeasonalScorer", "SeasonalZ"]

HOUR = 3600.0
# 1970-01-01 (unix 0) was a Thursday: shift so that hour-of-week 0 is Monday 00:00 UTC.
_EPOCH_HOUR_OF_WEEK = 3 * 24


class SeasonalZ:
    """Robust z of x against the values seen in the same hour of the week.

    Each of the 168 hour-of-week buckets and 24 hour-of-day buckets keeps its
    last `per_bucket` values. A bucket with fewer than `min_bucket` values
    defers to the hour of day, and that to the last `window` values of any
    hour (as does a point without `t`). The bucket's scale is floored at
    `scale_floor` times the all-hours scale: a bucket with few, close values
    would otherwise call ordinary noise an anomaly.
    """

    __slots__ = ("_week", "_day", "_all", "_per_bucket", "_min_bucket", "_warmup", "_scale_floor")

    def __init__(
        self, per_bucket: int = 32, min_bucket: int = 6, window: int = 1000, warmup: int = 20, scale_floor: float = 0.25
    ) -> None:
        self._week: dict[int, SortedWindow] = {}
        self._day: dict[int, SortedWindow] = {}
        self._all = SortedWindow(window)
        self._per_bucket = per_bucket
        self._min_bucket = min_bucket
        self._warmup = warmup
        self._scale_floor = scale_floor

    @staticmethod
    def hour_of_week(t: float) -> int:
        return (int(t // HOUR) + _EPOCH_HOUR_OF_WEEK) % 168

    def _bucket(self, t: float | None) -> SortedWindow:
        if t is not None:
            how = self.hour_of_week(t)
            week = self._week.get(how)
            if week is not None and len(week) >= self._min_bucket:
                return week
            day = self._day.get(how % 24)
            if day is not None and len(day) >= self._min_bucket:
                return day
        return self._all

    def statistic(self, x: float, t: float | None = None) -> float | None:
        everything = self._all
        if len(everything._sorted) < self._warmup:
            return None
        bucket = self._bucket(t)
        if bucket is everything:
            return everything.robust_z(x)
        s = bucket._sorted
        n = len(s)
        med = s[n >> 1]
        scale = (s[(3 * n) >> 2] - s[n >> 2]) / IQR_TO_SIGMA
        a = everything._sorted
        floor = self._scale_floor * max((a[(3 * len(a)) >> 2] - a[len(a) >> 2]) / IQR_TO_SIGMA, 0.02 * (a[-1] - a[0]))
        if scale < floor:
            scale = floor
        floor = 1e-6 * abs(med) + 1e-9
        if scale < floor:
            scale = floor
        return abs(x - med) / scale

    def learn(self, x: float, t: float | None = None) -> None:
        self._all.add(x)
        if t is None:
            return
        how = self.hour_of_week(t)
        week = self._week.get(how)
        if week is None:
            week = self._week[how] = SortedWindow(self._per_bucket)
        week.add(x)
        day = self._day.get(how % 24)
        if day is None:
            day = self._day[how % 24] = SortedWindow(self._per_bucket)
        day.add(x)


class SeasonalScorer:
    """score = z / (z + k) for the hour-of-week robust z (see `SeasonalZ`); without `t`, the robust baseline.

    Deterministic, so `seed` is accepted only for a uniform signature.

    >>> import math, random
    >>> rng = random.Random(3)
    >>> d = SeasonalScorer()
    >>> hours = 24 * 7 * 4
    >>> scores = []
    >>> for h in range(hours):
    ...     daily = 10.0 * math.sin(2 * math.pi * h / 24)
    ...     x = 100.0 + daily + rng.gauss(0.0, 0.5) + (-12.0 if h == hours - 7 else 0.0)
    ...     scores.append(d.score_one(x, t=h * 3600.0))
    ...     d.learn_one(x, t=h * 3600.0)
    >>> max(range(hours), key=scores.__getitem__) == hours - 7
    True
    >>> round(scores[hours - 7], 2)
    0.44
    """

    def __init__(self, k: float = 6.0, seed: int | None = None) -> None:
        self._z = SeasonalZ()
        self._k = k

    def score_one(self, x: float, t: float | None = None) -> float:
        z = self._z.statistic(x, t)
        return 0.0 if z is None else squash(z, self._k)

    def learn_one(self, x: float, t: float | None = None) -> None:
        self._z.learn(x, t)
