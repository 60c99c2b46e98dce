"""The moves a series makes all the time: from one band of its recent values to another, point to point.

A series sampled every five minutes jumps about in its own ways: a machine's
temperature steps up and down within its lowest band for days, a busy API's
latency hops between its two usual levels. The ensemble's step member measures
a jump against the series' own jumps, but not where it lands: a jump of twice
the usual worst that keeps the series in a band it moves about in every day is
a habit, one that takes it somewhere it rarely goes is news.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque

from analytics.scorers.window import SortedWindow, slot_state

__all__ = ["Moves"]


class Moves:
    """How often the series has moved from the band of its last point to the band of `x`, of its last `memory` moves.

    The bands are the `bins` (8) ranges of rank in `values` (the value
    member's window: eighths of its recent values); a point's band is taken
    before the window learns it. Each point makes one move, from the band of
    the point before it. `common(x)` is true when x's move is one the series
    made at least `share` (5 %) of its last `memory` (2000) moves, once it has
    made `least` (1000): fewer are too thin to call anything common.

    >>> from analytics.scorers.window import SortedWindow  # a compiled module's globals lack what its .pxd cimports
    >>> values = SortedWindow(100)
    >>> moves = Moves(values, bins=2, share=0.2, least=4, memory=10)
    >>> for x in (1.0, 9.0, 1.0, 9.0, 1.0, 9.0, 1.0):  # low, high, low, ...: two bands, each move the other way
    ...     moves.learn(x)
    ...     values.add(x)
    >>> moves.common(9.0), moves.common(1.0)  # from the low band: up is a habit; staying low never happened
    (True, False)
    """

    __slots__ = ("_values", "_bins", "_share", "_least", "_counts", "_moves", "_last")
    __getstate__ = slot_state  # saved as Python saves slots, compiled or not

    def __init__(self, values: SortedWindow, bins: int = 8, share: float = 0.05, least: int = 1000, memory: int = 2000) -> None:
        self._values = values
        self._bins = bins
        self._share = share
        self._least = least
        self._counts = [0] * (bins * bins)  # moves made, by (band before) * bins + band after
        self._moves: deque[int] = deque(maxlen=memory)  # the last `memory` moves, for expiry
        self._last: int | None = None  # the band of the last point learned

    def band(self, x: float) -> int | None:
        """x's band in the window as it is now (None while it is empty)."""
        ordered = self._values._sorted
        n = len(ordered)
        if not n:
            return None
        band = bisect_left(ordered, x) * self._bins // n
        return band if band < self._bins else self._bins - 1

    def common(self, x: float) -> bool:
        """Whether the move to x, from the last point, is one this series makes all the time."""
        moves = self._moves
        last = self._last
        if last is None or len(moves) < self._least:
            return False
        band = self.band(x)
        return band is not None and self._counts[last * self._bins + band] >= self._share * len(moves)

    def learn(self, x: float) -> None:
        """Count x's move; call it before the value window learns x, as `common` was for x. Runs on every point."""
        band = self.band(x)
        if band is None:
            return
        last = self._last
        if last is not None:
            move = last * self._bins + band
            counts, moves = self._counts, self._moves
            if len(moves) == moves.maxlen:
                counts[moves[0]] -= 1  # the oldest move, which the append drops
            counts[move] += 1
            moves.append(move)
        self._last = band
