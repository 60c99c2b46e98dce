"""Bounded windows of recent values: all of them sorted, or only the largest.

`SortedWindow` keeps the whole window sorted: rolling median and quantiles in
O(1), updates in O(W). The sorted list is updated with `bisect` (a C memmove),
which for the window sizes used here (hundreds to a few thousand values) is far
cheaper than recomputing a median per point, and it keeps memory bounded by
the window size.

`TopWindow` answers one high quantile (the calibrators' 99th or 99.8th
percentile) exactly, keeping only the largest few values sorted.

`CompactWindow` is a `SortedWindow` on arrays of doubles, for the many small
windows a detector keeps (the seasonal member's 192 buckets of 32 values):
8 bytes a value, not a float object of 24 and two pointers to it.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Iterator
from heapq import nlargest
from itertools import chain
from typing import Any

__all__ = ["CompactWindow", "IQR_TO_SIGMA", "SortedWindow", "TopWindow", "slot_state"]

# For a normal distribution the interquartile range is 1.349 standard deviations.
IQR_TO_SIGMA = 1.349


def slot_state(obj: object) -> tuple[None, dict[str, Any]]:
    """What pickle saves of a __slots__ object, (None, {slot: value}), compiled or not (setup.py): a class's `__getstate__`.

    Python saves a pure-Python instance so by itself; an extension type has no slots of its own to save. Given to
    every class the build compiles, this saves both alike, so a state file moves between the two.
    """
    return None, {name: getattr(obj, name) for klass in type(obj).__mro__ for name in vars(klass).get("__slots__", ()) if hasattr(obj, name)}


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
    __getstate__ = slot_state  # saved as Python saves slots, compiled or not

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


class CompactWindow(SortedWindow):
    """A `SortedWindow` whose values are kept as doubles in two arrays: a third of the memory, for small windows.

    The same answers as a `SortedWindow` of the same size, fed the same floats. Each read makes a float of a double,
    so a comparison costs more: meant for windows of a few dozen values that learn rarely (the seasonal member's
    buckets: one value every five minutes), not for the members' windows of 1000 that learn every point. Its
    arrival order is an array too, whose oldest value is popped from the front (a move of `size` doubles).

    >>> w, same = CompactWindow(size=4), SortedWindow(size=4)
    >>> for v in [3.0, 1.0, 4.0, 1.0, 5.0, 9.0]:
    ...     w.add(v)
    ...     same.add(v)
    >>> list(w._sorted) == same._sorted, w.median(), round(w.robust_z(20.0), 6) == round(same.robust_z(20.0), 6)
    (True, 5.0, True)
    """

    __slots__ = ()

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._order: array[float] = array("d")  # type: ignore[assignment]
        self._sorted: array[float] = array("d")  # type: ignore[assignment]

    def add(self, x: float) -> None:
        order, ordered = self._order, self._sorted
        if len(order) == self.size:
            del ordered[bisect_left(ordered, order.pop(0))]
        order.append(x)
        insort(ordered, x)


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
    Its values wait for expiry as doubles in an array (`_old`), 8 bytes
    each where a deque of floats took 32, and a calibrator keeps 2000: only
    the `CHUNK` newest and the `CHUNK` next to expire are floats, moved in and
    out of the array `CHUNK` at a time, so a point costs a list's pop and
    append, as the deque's did.

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

    __slots__ = ("size", "q", "keep", "_need", "_count", "_old", "_expiring", "_recent", "_top")
    __getstate__ = slot_state  # saved as Python saves slots, compiled or not

    def __init__(self, size: int, q: float) -> None:
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be from 0 to 1, got {q}")
        self.size = size
        self.q = q
        self.keep = 2 * max(1, size - int(q * size)) + 8
        self._need = 1  # values _top must hold: the quantile is _top[len(_top) - _need]
        self._count = 0  # values in the window: `size` once full
        # The window, oldest first, is reversed(_expiring) + _old + _recent: its bulk as doubles, its ends as floats.
        self._old: array[float] = array("d")
        self._expiring: list[float] = []  # its next `CHUNK` to expire, newest first: each point pops one off the end
        self._recent: list[float] = []  # its newest, oldest first: they join _old `CHUNK` at a time
        self._top: list[float] = []

    def __len__(self) -> int:
        return self._count

    def quantile(self) -> float:
        """The lower empirical `q`-quantile of the window; the window must not be empty."""
        top = self._top
        return top[len(top) - self._need]

    def largest(self, k: int) -> list[float]:
        """The `k` largest values of the window, ascending (all of them if it holds fewer; at most `keep`)."""
        return self._top[-k:]

    def values(self) -> Iterator[float]:
        """Every value of the window, oldest first."""
        return chain(reversed(self._expiring), self._old, self._recent)

    def add(self, x: float) -> None:
        top = self._top
        if self._count == self.size:  # full: the steady state, kept to as few steps as it can be
            expiring = self._expiring
            old = expiring.pop() if expiring else self._take()
            self._recent.append(x)
            if old >= top[0]:  # then a value equal to it is in _top: all above _top's smallest are
                del top[bisect_left(top, old)]
                if len(top) < self._need:  # only a deletion can leave it short: refill, x among the candidates
                    self._top = sorted(nlargest(self.keep, self.values()))
                    return
            if top and x >= top[0]:
                insort(top, x)
                if len(top) > self.keep:
                    del top[0]
            return
        whole = len(top) == self._count
        recent = self._recent
        recent.append(x)
        if len(recent) == CHUNK:
            self._old.extend(recent)
            recent.clear()
        self._count = n = self._count + 1
        if whole or x >= top[0]:
            insort(top, x)
            if len(top) > self.keep:
                del top[0]
        self._need = max(1, n - int(self.q * n))  # 1 at q = 1: the largest, as SortedWindow.quantile(1.0)
        if len(top) < self._need:
            self._top = sorted(nlargest(self.keep, self.values()))

    def _take(self) -> float:
        """The oldest value, taken off the window; the next `CHUNK` - 1 to expire wait in _expiring, as floats."""
        old, recent = self._old, self._recent
        old.extend(recent)  # the window's newest go to the back of _old first: a window smaller than CHUNK is all there
        recent.clear()
        chunk = old[:CHUNK].tolist()
        del old[:CHUNK]
        chunk.reverse()
        self._expiring = chunk
        return chunk.pop()

    def __setstate__(self, state: Any) -> None:
        """A window pickled while its values were a deque of floats (`_order`, oldest first): the same values, moved."""
        _, slots = state
        order = slots.pop("_order", None)
        _restore_slots(self, state)
        if order is not None:
            self._old, self._expiring, self._recent, self._count = array("d", order), [], [], len(order)


CHUNK = 64  # the values a `TopWindow` moves between its floats and its array of doubles at a time


def _restore_slots(obj: object, state: Any) -> None:
    """What pickle saved of a __slots__ object, (None, {slot: value}), set back on it."""
    _, slots = state
    for name, value in slots.items():
        setattr(obj, name, value)
