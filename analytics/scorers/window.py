"""A bounded window of recent values kept sorted: rolling median and quantiles in O(1), updates in O(W).

The sorted list is updated with `bisect` (a C memmove), which for the window sizes
used here (hundreds to a few thousand values) is far cheaper than recomputing a
median per point, and it keeps memory bounded by the window size.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque

__all__ = ["IQR_TO_SIGMA", "SortedWindow"]

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
