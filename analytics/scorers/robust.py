"""The robust baseline: how far a value lies from the rolling median, in robust standard deviations.

Also the robust statistics the ensemble combines: the value, its first
difference and its short moving average, each measured against its own rolling
window (bounded memory).
"""

from __future__ import annotations

import math
from collections import deque

from analytics.scorers.window import SortedWindow

__all__ = ["DiffZ", "MeanZ", "RobustScorer", "SpreadZ", "ValueZ", "squash"]


def squash(z: float, k: float) -> float:
    """Map a non-negative statistic to [0, 1): z / (z + k), 0.5 at z = k.

    Rational rather than 1 - exp(-z/k): that saturates to exactly 1.0 at z/k > 37
    and so loses the ordering of large deviations that a threshold sweep needs.
    """
    return z / (z + k) if z > 0.0 else 0.0


class ValueZ:
    """Robust z of the value against the last `window` values (0.0 until `warmup` are seen)."""

    __slots__ = ("_window", "_warmup")

    def __init__(self, window: int = 1000, warmup: int = 20) -> None:
        self._window = SortedWindow(window)
        self._warmup = warmup

    def statistic(self, x: float, t: float | None = None) -> float | None:
        if len(self._window._sorted) < self._warmup:
            return None
        return self._window.robust_z(x)

    def learn(self, x: float, t: float | None = None) -> None:
        self._window.add(x)

    def follow(self, x: float, t: float | None = None) -> None:
        """A point the window skips (the ensemble's cadence): nothing to keep."""


class DiffZ:
    """Robust z of the step x - previous x against the last `window` steps: sudden jumps in noisy series."""

    __slots__ = ("_window", "_warmup", "_prev")

    def __init__(self, window: int = 1000, warmup: int = 20) -> None:
        self._window = SortedWindow(window)
        self._warmup = warmup
        self._prev: float | None = None

    def statistic(self, x: float, t: float | None = None) -> float | None:
        if self._prev is None or len(self._window._sorted) < self._warmup:
            return None
        return self._window.robust_z(x - self._prev)

    def learn(self, x: float, t: float | None = None) -> None:
        if self._prev is not None:
            self._window.add(x - self._prev)
        self._prev = x

    def follow(self, x: float, t: float | None = None) -> None:
        """A point whose step the window skips (the ensemble's cadence): the next step is still from it."""
        self._prev = x


class MeanZ:
    """Robust z of the mean of the last `span` values (x included) against past such means: level shifts."""

    __slots__ = ("_window", "_warmup", "_recent", "_span", "_sum")

    def __init__(self, window: int = 1000, span: int = 3, warmup: int = 20) -> None:
        self._window = SortedWindow(window)
        self._warmup = warmup
        self._recent: deque[float] = deque()
        self._span = span
        self._sum = 0.0

    def statistic(self, x: float, t: float | None = None) -> float | None:
        recent = self._recent
        if len(recent) < self._span or len(self._window._sorted) < self._warmup:
            return None
        return self._window.robust_z((self._sum - recent[0] + x) / self._span)

    def learn(self, x: float, t: float | None = None) -> None:
        self.follow(x, t)
        recent = self._recent
        if len(recent) == self._span:
            # summed fresh from the deque: a running sum would drift with float error over millions of points
            self._window.add(sum(recent) / self._span)

    def follow(self, x: float, t: float | None = None) -> None:
        """x joins the last `span` values, and its mean not the window (`learn` adds it; the ensemble's cadence skips it)."""
        recent = self._recent
        recent.append(x)
        self._sum += x
        if len(recent) > self._span:
            self._sum -= recent.popleft()


class SpreadZ:
    """Robust z of the log standard deviation of the last `span` values (x included) against past such: a change of texture.

    Two-sided: a burst of swings in a quiet series (a dense run of spikes, an
    oscillation that starts) and a series that goes flat or stops swinging (a
    stuck sensor, a host that stopped reporting load, traffic that died).
    Neither moves the level much, so the value, step and mean members miss
    them. The log makes a doubling of the spread count the same at any scale;
    the 1e-9 keeps a perfectly flat stretch finite (and very far from a noisy
    series' usual spread).

    The spread of overlapping 6-point windows changes slowly, so it is
    measured on every `stride`-th point only (None in between: the ensemble
    skips the member there): a change of texture is seen at most `stride - 1`
    points later, for a third of the cost. It says nothing until it has
    seen `warmup` spreads (300 points): the log of a 6-point spread has a long
    low tail (six noisy values that happen to lie close together), and with
    fewer the calibrator takes one of those for a change.

    >>> import random
    >>> rng = random.Random(5)
    >>> spread = SpreadZ(span=6)
    >>> zs = []
    >>> for i in range(400):
    ...     x = 100.0 + (rng.gauss(0.0, 1.0) if not 300 <= i < 320 else 0.0)  # 20 points with no noise at all
    ...     zs.append(spread.statistic(x) or 0.0)
    ...     spread.learn(x)
    >>> max(zs[:300]) < 4.0, min(z for z in zs[305:320] if z) > 10.0
    (True, True)
    """

    __slots__ = ("_window", "_warmup", "_recent", "_span", "_cached", "_stride", "_phase")

    def __init__(self, window: int = 1000, span: int = 6, warmup: int = 100, stride: int = 3) -> None:
        self._window = SortedWindow(window)
        self._warmup = warmup
        self._recent: deque[float] = deque(maxlen=span - 1)
        self._span = span
        self._cached: tuple[float, float] | None = None
        self._stride = stride
        self._phase = 0

    def _log_spread(self, x: float) -> float:
        cached = self._cached
        if cached is not None and cached[0] == x:
            return cached[1]
        n = self._span
        total = x
        for v in self._recent:
            total += v
        mean = total / n
        d = x - mean
        ss = d * d
        for v in self._recent:
            d = v - mean
            ss += d * d
        out = math.log(math.sqrt(ss / n) + 1e-9)
        self._cached = (x, out)
        return out

    def statistic(self, x: float, t: float | None = None) -> float | None:
        if self._phase or len(self._recent) < self._span - 1 or len(self._window._sorted) < self._warmup:
            return None
        return self._window.robust_z(self._log_spread(x))

    def learn(self, x: float, t: float | None = None) -> None:
        if not self._phase and len(self._recent) == self._span - 1:
            self._window.add(self._log_spread(x))
        self.follow(x, t)

    def follow(self, x: float, t: float | None = None) -> None:
        """x joins the last `span` values, and its spread not the window (`learn` adds it; the ensemble's cadence skips it)."""
        self._cached = None
        self._recent.append(x)
        phase = self._phase + 1
        self._phase = 0 if phase == self._stride else phase


class RobustScorer:
    """Rolling median and IQR: score = z / (z + k) for z = |x - median| / robust sigma.

    Needs no `t`; deterministic, so `seed` is accepted only for a uniform signature.

    >>> import random
    >>> rng = random.Random(7)
    >>> d = RobustScorer()
    >>> scores = []
    >>> for i in range(300):
    ...     x = 50.0 + rng.gauss(0.0, 1.0) + (25.0 if i == 250 else 0.0)
    ...     scores.append(d.score_one(x))
    ...     d.learn_one(x)
    >>> max(range(300), key=scores.__getitem__)
    250
    >>> round(scores[250], 2), max(scores[:250]) < 0.6
    (0.79, True)
    """

    def __init__(self, window: int = 1000, k: float = 6.0, warmup: int = 20, seed: int | None = None) -> None:
        self._z = ValueZ(window, warmup)
        self._k = k

    def score_one(self, x: float, t: float | None = None) -> float:
        z = self._z.statistic(x, t)
        return 0.0 if z is None else squash(z, self._k)

    def learn_one(self, x: float, t: float | None = None) -> None:
        self._z.learn(x, t)
