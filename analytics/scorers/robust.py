"""The robust baseline: how far a value lies from the rolling median, in robust standard deviations.

Also the robust statistics the ensemble combines: the value, its first
difference and its short moving average, each measured against its own rolling
window (bounded memory).
"""

from __future__ import annotations

from collections import deque

from analytics.scorers.window import SortedWindow

__all__ = ["DiffZ", "MeanZ", "RobustScorer", "ValueZ", "squash"]


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
        recent = self._recent
        recent.append(x)
        self._sum += x
        if len(recent) > self._span:
            self._sum -= recent.popleft()
        if len(recent) == self._span:
            # summed fresh from the deque: a running sum would drift with float error over millions of points
            self._window.add(sum(recent) / self._span)


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
