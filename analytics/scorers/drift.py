"""A sustained shift of the level, found by a Page-Hinkley test on the value's robust z (river's test, inlined)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from analytics.scorers.window import slot_state

if TYPE_CHECKING:
    from analytics.scorers.robust import ValueZ

__all__ = ["PageHinkley", "ShiftWatch"]


class PageHinkley:
    """The two-sided Page-Hinkley test exactly as river.drift.PageHinkley runs it (mode "both"), inlined.

    river's costs about 1 us a point through its running-mean object and
    dispatch; this one, the same arithmetic in the same order, a third of
    that, which keeps the ensemble above 100,000 points/s. `update(x)` returns
    whether a change is signalled at x; the next update starts afresh, as
    river's does. tests/analytics/test_scorer_drift.py checks that both signal
    at the same points.

    >>> ph = PageHinkley(threshold=5.0, delta=0.1)
    >>> [i for i, x in enumerate([0.0] * 40 + [1.0] * 20) if ph.update(x)]
    [46]
    """

    __slots__ = ("threshold", "delta", "alpha", "min_instances", "_n", "_mean", "_up", "_down", "_min_up", "_max_down", "_fired")
    __getstate__ = slot_state  # saved as Python saves slots, compiled or not

    def __init__(self, threshold: float = 50.0, delta: float = 0.005, alpha: float = 1 - 0.0001, min_instances: int = 30) -> None:
        self.threshold = threshold
        self.delta = delta
        self.alpha = alpha
        self.min_instances = min_instances
        self._fired = False
        self._reset()

    def _reset(self) -> None:
        self._n = 0.0
        self._mean = 0.0
        self._up = 0.0
        self._down = 0.0
        self._min_up = float("inf")
        self._max_down = -1.0
        self._fired = False

    def update(self, x: float) -> bool:
        if self._fired:
            self._reset()
        self._n += 1.0
        self._mean += (1.0 / self._n) * (x - self._mean)
        dev = x - self._mean
        up = self.alpha * self._up + dev - self.delta
        down = self.alpha * self._down + dev + self.delta
        self._up, self._down = up, down
        if up < self._min_up:
            self._min_up = up
        if down > self._max_down:
            self._max_down = down
        if self._n >= self.min_instances:
            self._fired = up - self._min_up > self.threshold or self._max_down - down > self.threshold
        return self._fired


class ShiftWatch:
    """Page-Hinkley over the signed robust z of each value, clipped to +-`clip`; `active` for `span` points after a change.

    The test accumulates (z - its running mean - `delta`) in both directions
    and signals when the excursion passes `threshold` (in z units), then starts
    afresh. Clipping makes one spike count as a few points of a shift, never as
    one: a lone 2-3x slow request moves the sum by at most `clip`, a level that
    stays a few robust sigmas away passes 30 in ten points or so. The z is the
    one the ensemble's value member measured (its window, before x is learned),
    so the watch keeps no window of its own.

    >>> import random
    >>> from analytics.scorers.robust import ValueZ
    >>> rng = random.Random(3)
    >>> value = ValueZ(1000)
    >>> watch = ShiftWatch(value, 0)
    >>> active = []
    >>> for i in range(600):
    ...     x = 10.0 + rng.gauss(0.0, 1.0) - (4.0 if i >= 500 else 0.0)
    ...     active.append(watch.active)
    ...     watch.learn(x, [value.statistic(x)])
    ...     value.learn(x)
    >>> [i for i in range(500) if active[i]], min(i for i in range(500, 600) if active[i])
    ([], 510)
    """

    __slots__ = ("_value", "_index", "_span", "_clip", "_test", "_left")
    __getstate__ = slot_state  # saved as Python saves slots, compiled or not

    def __init__(self, value: ValueZ, index: int, span: int = 10, threshold: float = 30.0, delta: float = 1.0, clip: float = 5.0) -> None:
        self._value = value
        self._index = index
        self._span = span
        self._clip = clip
        self._test = PageHinkley(threshold=threshold, delta=delta)
        self._left = 0

    @property
    def active(self) -> bool:
        """Whether a change was signalled in the last `span` points (x excluded)."""
        return self._left > 0

    def learn(self, x: float, raws: list[float | None]) -> None:
        """Feed x, given the members' statistics for it (raws[index] is its |robust z|, None while warming up)."""
        z = raws[self._index]
        if z is not None:
            s = self._value._window._sorted
            if x < s[len(s) >> 1]:
                z = -z
            clip = self._clip
            if self._test.update(z if -clip < z < clip else (clip if z > 0 else -clip)):
                self._left = self._span
                return
        if self._left:
            self._left -= 1
