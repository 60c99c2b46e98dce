"""The seasonal baseline: robust statistics per hour of the week, falling back to hour of day, then to all recent values."""

from __future__ import annotations

from analytics.scorers.robust import SquashedScorer
from analytics.scorers.window import IQR_TO_SIGMA, CompactWindow, SortedWindow, slot_state

__all__ = ["SeasonalScorer", "SeasonalZ"]

HOUR = 3600.0
# 1970-01-01 (unix 0) was a Thursday: shift so that hour-of-week 0 is Monday 00:00 UTC.
_EPOCH_HOUR_OF_WEEK = 3 * 24


class SeasonalZ:
    """Robust z of x against the values seen in the same hour of the week.

    Each of the 168 hour-of-week buckets and 24 hour-of-day buckets keeps its
    last `per_bucket` values, of at most `per_hour` points an hour (the first
    of each 5 minutes), so that a bucket holds weeks of its hour whether a
    point comes every 5 minutes or every 30 seconds. A bucket with fewer than `min_bucket` values
    defers to the hour of day, and that to the last `window` values of any
    hour (as does a point without `t`). The bucket's scale is floored at
    `scale_floor` times the all-hours scale: a bucket with few, close values
    would otherwise call ordinary noise an anomaly.

    Two options serve the ensemble:

    - `values`: a window of the series' last values that another member
      keeps (the ensemble's `ValueZ`), read here and not learned twice;
    - `explained`: the statistic is given (not None) only while the series
      has a daily or weekly profile: while a value's usual distance from its
      hour's median is at most `explained` times its usual distance from the
      median of all hours (both exponentially weighted means, weight
      `alpha`, updated on every fourth point, after `settle` points). Most series have no profile worth the
      name (a CPU that idles at any hour); on those the hour's few values
      would only add false alarms. Points without `t` have no hour: then it
      says nothing.

    >>> import math, random
    >>> rng = random.Random(4)
    >>> flat, daily = SeasonalZ(explained=0.5), SeasonalZ(explained=0.5)
    >>> for h in range(24 * 7 * 6):
    ...     noise = rng.gauss(0.0, 1.0)
    ...     flat.learn(100.0 + noise, t=h * 3600.0)
    ...     daily.learn(100.0 + 20.0 * math.sin(2 * math.pi * h / 24) + noise, t=h * 3600.0)
    >>> flat.statistic(100.0, t=0.0) is None  # no profile: silent
    True
    >>> daily.statistic(120.0, t=6 * 3600.0) < 1.0, daily.statistic(100.0, t=6 * 3600.0) > 3.0  # 06:00 is the peak, 120
    (True, True)
    """

    __slots__ = (
        "_week", "_day", "_all", "_own", "_per_bucket", "_min_bucket", "_warmup", "_scale_floor",
        "_explained", "_alpha", "_near", "_far", "_settle", "_open", "_tick", "_slot_seconds", "_slot",
    )
    __getstate__ = slot_state  # saved as Python saves slots, compiled or not

    def __init__(
        self,
        per_bucket: int = 32,
        min_bucket: int = 6,
        window: int = 1000,
        warmup: int = 20,
        scale_floor: float = 0.25,
        values: SortedWindow | None = None,
        explained: float | None = None,
        alpha: float = 0.04,
        settle: int = 500,
        per_hour: int = 12,
    ) -> None:
        self._week: list[SortedWindow | None] = [None] * 168
        self._day: list[SortedWindow | None] = [None] * 24
        self._own = values is None
        self._all = SortedWindow(window) if values is None else values
        self._per_bucket = per_bucket
        self._min_bucket = min_bucket
        self._warmup = warmup
        self._scale_floor = scale_floor
        self._explained = explained
        self._alpha = alpha
        self._near = 0.0  # the usual |x - its hour's median|
        self._far = 0.0  # the usual |x - the median of all hours|
        self._settle = -settle  # counts up to 0 over the first `settle` points that had a bucket
        self._open = explained is None
        self._tick = 0
        self._slot_seconds = HOUR / per_hour
        self._slot = -1

    @staticmethod
    def hour_of_week(t: float) -> int:
        return (int(t // HOUR) + _EPOCH_HOUR_OF_WEEK) % 168

    def _bucket(self, how: int) -> SortedWindow | None:
        """The hour of the week's values, else the hour of the day's, else None: too few of either yet."""
        week = self._week[how]
        if week is not None and len(week._sorted) >= self._min_bucket:
            return week
        day = self._day[how % 24]
        if day is not None and len(day._sorted) >= self._min_bucket:
            return day
        return None

    def statistic(self, x: float, t: float | None = None) -> float | None:
        if not self._open:
            return None
        everything = self._all
        if len(everything._sorted) < self._warmup:
            return None
        bucket = None if t is None else self._bucket(self.hour_of_week(t))
        if bucket is None:  # no hour to compare with: the plain robust z, or nothing where the ensemble has it already
            return everything.robust_z(x) if self._explained is None else None
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
        if self._own:
            self._all.add(x)
        if t is None:
            return
        how = (int(t // HOUR) + _EPOCH_HOUR_OF_WEEK) % 168  # hour_of_week(t), inlined: this runs on every point
        week = self._week[how]
        if week is None:
            week = self._week[how] = CompactWindow(self._per_bucket)
        young = len(week._sorted) < self._min_bucket
        if young:  # as _bucket: the hour of the day stands in, and learns only then (most points skip a second window)
            day = self._day[how % 24]
            if day is None:
                day = self._day[how % 24] = CompactWindow(self._per_bucket)
            bucket = day if len(day._sorted) >= self._min_bucket else None
        else:
            bucket = week
        explained = self._explained
        if explained is not None and bucket is not None:
            # How much of a value's distance from the median of all hours its hour's median explains: followed on every
            # fourth point (it changes slowly), a quarter of the cost.
            self._tick = tick = (self._tick + 1) & 3
            a = self._all._sorted
            if not tick and len(a) >= self._warmup:
                s = bucket._sorted
                alpha = self._alpha
                self._near += alpha * (abs(x - s[len(s) >> 1]) - self._near)
                self._far += alpha * (abs(x - a[len(a) >> 1]) - self._far)
                self._settle += 4
                self._open = self._settle > 0 and self._near <= explained * self._far
        slot = int(t // self._slot_seconds)
        if slot != self._slot:  # the first point of its slot: a bucket holds weeks of its hour, however often points come
            self._slot = slot
            week.add(x)
            if young:
                day.add(x)


class SeasonalScorer(SquashedScorer):
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
        super().__init__(SeasonalZ(), k)
