"""Bounded windows of recent values: all of them sorted, or only the largest.

`SortedWindow` keeps the whole window sorted: rolling median and quantiles in
O(1), updates in O(W). The sorted list is updated with `bisect` (a C memmove),
which for the window sizes used here (hundreds to a few thousand values) is far
cheaper than recomputing a median per point, and it keeps memory bounded by
the window size.

`TopWindow` answers one high quantile (the calibrators' 99th or 99.8th
percentile) exactly, keeping only the largest few values sorted.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from heapq import nlargest

__all__ = ["IQR_TO_SIGMA", "SortedWindow", "TopWindow"]

# For a normal distribution the interquartile range is 1.349 standard deviations.
IQR_TO_SIGMA = 1.349


class SortedWindow:
    """The last `size` values, in arrival order and sorted.

    >>> w = SortedWindow(size=5)
    >>> for v in [3.0, 1.0, 4.0, 1.0, 5.0, 9.0]:
    ...     w.add(v)
    >>> len(w), w.median(), w.quantile(0.0), w.quantile(1.0)
    (5, 4.0, 1.0, 9.0)
    >>> round(w.robust_z(20.0), 3)
    5.396
    """

    __slots__ = ("size", "_order", "_sorted")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        self.size = size
        self._order: deque[float] = deque()
        self._sorted: list[float] = []

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, x: float) -> None:
        order, ordered = self._order, self._sorted
        if len(order) == self.size:
            del ordered[bisect_left(ordered, order.popleft())]
        order.append(x)
        insort(ordered, x)

    def quantile(self, q: float) -> float:
        """The lower empirical `q`-quantile (no interpolation); the window must not be empty."""
        s = self._sorted
        n = len(s)
        return s[min(n - 1, int(q * n))]

    def median(self) -> float:
        s = self._sorted
        return s[len(s) >> 1]

    def robust_z(self, x: float) -> float:
        """|x - median| in robust standard deviations of the window (0.0 while it is empty).

        The scale is the interquartile range / 1.349 rather than the MAD: it is as
        robust for our use and costs O(1) on a sorted window, where the MAD costs a
        pass over it. It is floored at 2 % of the window's range (quantised series
        such as CPU percentages often have a zero IQR) and at a relative epsilon
        (a constant series), so a change after a flat stretch scores very high
        instead of dividing by zero.
        """
        s = self._sorted
        n = len(s)
        if not n:
            return 0.0
        med = s[n >> 1]
        scale = (s[(3 * n) >> 2] - s[n >> 2]) / IQR_TO_SIGMA
        floor = 0.02 * (s[-1] - s[0])
        if scale < floor:
            scale = floor
        floor = 1e-6 * abs(med) + 1e-9
        if scale < floor:
            scale = floor
        return abs(x - med) / scale


class TopWindow:
    """The `q`-quantile of the last `size` values, exactly, keeping only the largest ones sorted.

    The same value as ``SortedWindow(size).quantile(q)`` (the lower empirical
    quantile), for a high `q`: of a full window it is the `need`-th largest
    value, need = size - int(q * size) (20 of 2000 at q = 0.99). `_top` holds
    the largest values of the window, sorted, between `need` and `keep` (2 *
    need + 8) of them; `_order` holds every value, for expiry. A value joins
    `_top` only if it is at least `_top`'s smallest, and leaves it when it
    expires; when `_top` runs short (a falling series lets its largest values
    expire), it is refilled from the whole window with `heapq.nlargest`. So a
    point costs a few comparisons and an insert into a list of a few dozen,
    not an insert and a delete in a sorted list of `size`: the ensemble, which
    keeps four of these, spends 30 % fewer instructions a point (ANALYTICS.md).

    >>> import random
    >>> rng = random.Random(2)
    >>> top, full = TopWindow(500, q=0.99), SortedWindow(500)
    >>> same = []
    >>> for i in range(3000):
    ...     x = rng.gauss(0.0, 1.0) - i * 0.01  # a falling series: the largest values keep expiring
    ...     top.add(x)
    ...     full.add(x)
    ...     same.append(top.quantile() == full.quantile(0.99))
    >>> all(same), len(top), len(top._top) <= top.keep
    (True, 500, True)
    """

    __slots__ = ("size", "q", "keep", "_need", "_order", "_top")

    def __init__(self, size: int, q: float) -> None:
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be from 0 to 1, got {q}")
        self.size = size
        self.q = q
        self.keep = 2 * max(1, size - int(q * size)) + 8
        self._need = 1  # values _top must hold: the quantile is _top[len(_top) - _need]
        self._order: deque[float] = deque()
        self._top: list[float] = []

    def __len__(self) -> int:
        return len(self._order)

    def quantile(self) -> float:
        """The lower empirical `q`-quantile of the window; the window must not be empty."""
        top = self._top
        return top[len(top) - self._need]

    def largest(self, k: int) -> list[float]:
        """The `k` largest values of the window, ascending (all of them if it holds fewer; at most `keep`)."""
        return self._top[-k:]

    def add(self, x: float) -> None:
        order, top = self._order, self._top
        if len(order) == self.size:  # full: the steady state, kept to as few steps as it can be
            old = order.popleft()
            order.append(x)
            if old >= top[0]:  # then a value equal to it is in _top: all above _top's smallest are
                del top[bisect_left(top, old)]
                if len(top) < self._need:  # only a deletion can leave it short: refill, x among the candidates
                    self._top = sorted(nlargest(self.keep, order))
                    return
            if top and x >= top[0]:
                insort(top, x)
                if len(top) > self.keep:
                    del top[0]
            return
        whole = len(top) == len(order)
        order.append(x)
        if whole or x >= top[0]:
            insort(top, x)
            if len(top) > self.keep:
                del top[0]
        n = len(order)
        self._need = max(1, n - int(self.q * n))  # 1 at q = 1: the largest, as SortedWindow.quantile(1.0)
        if len(top) < self._need:
            self._top = sorted(nlargest(self.keep, order))
