"""The robust baseline: how far a value lies from the rolling median, in robust standard deviations.

Also the robust statistics the ensemble combines: the value, its first
difference and its short moving average, each measured against its own rolling
window (bounded memory).
"""

from __future__ import annotations

import math
from collections import deque
from itertools import islice
from typing import TYPE_CHECKING, Any

from analytics.scorers.window import SortedWindow, _restore_slots, slot_state

if TYPE_CHECKING:
    from analytics.scorers.ensemble import Statistic

__all__ = ["DiffZ", "MeanZ", "RobustScorer", "SpreadZ", "SquashedScorer", "ValueZ", "squash"]


def squash(z: float, k: float) -> float:
    """Map a non-negative statistic to [0, 1): z / (z + k), 0.5 at z = k.

    Rational rather than 1 - exp(-z/k): that saturates to exactly 1.0 at z/k > 37
    and so loses the ordering of large deviations that a threshold sweep needs.
    """
    return z / (z + k) if z > 0.0 else 0.0


class ValueZ:
    """Robust z of the value against the last `window` values (0.0 until `warmup` are seen)."""

    __slots__ = ("_window", "_warmup")
    __getstate__ = slot_state  # saved as Python saves slots, compiled or not

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
    """Robust z of the step x - previous x against the last `window` steps: sudden jumps in noisy series.

    On a series denser than the ensemble's cadence (`blocks(every)`: `every`
    points make its reference time, five minutes), the step is that of the
    level over the reference time: the mean of the last `every` values, x
    included, less the mean of the `every` before them. A series five minutes
    apart is measured point to point, as the member was set on NAB's; a
    series a minute apart then measures the same change over the same time,
    not the noise of each single minute. One slow request among five moves
    the step by a fifth of its height; a jump that stays moves it by its
    whole height once it is five minutes old, as it would a series five
    minutes apart.

    >>> steps = DiffZ(window=50, warmup=3)
    >>> steps.blocks(2)
    >>> for x in (10.0, 11.0, 10.0, 11.0, 10.0, 11.0):
    ...     steps.learn(x)
    >>> steps.step(30.0)  # (10 + 11) / 2 before, (11 + 30) / 2 now
    10.0
    """

    __slots__ = ("_window", "_warmup", "_prev", "_every", "_recent")
    __getstate__ = slot_state  # saved as Python saves slots, compiled or not

    def __init__(self, window: int = 1000, warmup: int = 20) -> None:
        self._window = SortedWindow(window)
        self._warmup = warmup
        self._prev: float | None = None  # the last value
        self._every = 1
        self._recent: deque[float] = deque(maxlen=1)  # in blocks, the last 2 * every - 1 values: x's step is over them

    def blocks(self, every: int) -> None:
        """`every` points make the ensemble's reference time: the steps are from then on between means of `every` points.

        The steps learned so far stay in the window: they are changes over the same time, measured on fewer points.
        """
        if every > 1:
            if self._every == 1:  # point to point it keeps the last value only
                self._recent = deque(() if self._prev is None else (self._prev,))
            self._recent = deque(self._recent, maxlen=2 * every - 1)
        self._every = every

    def _block_step(self, x: float) -> float | None:
        recent = self._recent
        every = self._every
        if len(recent) < 2 * every - 1:
            return None
        return (sum(islice(recent, every, None)) + x - sum(islice(recent, every))) / every

    def step(self, x: float) -> float | None:
        """The step x would make: from the last value, or in blocks the mean of the last less that of the one before."""
        if self._every > 1:
            return self._block_step(x)
        prev = self._prev
        return None if prev is None else x - prev

    def statistic(self, x: float, t: float | None = None) -> float | None:
        prev = self._prev
        if prev is None or len(self._window._sorted) < self._warmup:
            return None
        if self._every == 1:  # step(x), without the call: every point five minutes apart takes this path
            return self._window.robust_z(x - prev)
        step = self._block_step(x)
        return None if step is None else self._window.robust_z(step)

    def learn(self, x: float, t: float | None = None) -> None:
        prev = self._prev
        if prev is not None:
            step = x - prev if self._every == 1 else self._block_step(x)  # step(x), as in `statistic`
            if step is not None:
                self._window.add(step)
        self._prev = x  # follow(x), without the call
        if self._every > 1:
            self._recent.append(x)

    def follow(self, x: float, t: float | None = None) -> None:
        """A point whose step the window skips (the ensemble's cadence): the next step is still measured with it."""
        self._prev = x
        if self._every > 1:
            self._recent.append(x)

    def __setstate__(self, state: Any) -> None:
        """A member pickled before its steps could span blocks resumes point to point, as it was saved."""
        self._every, self._recent = 1, deque(maxlen=1)
        _restore_slots(self, state)


class MeanZ:
    """Robust z of the mean of the last `span` values (x included) against past such means: level shifts.

    On a series denser than the ensemble's cadence (`blocks(every)`: `every`
    points make its reference time, five minutes) the mean is of `span` times
    `every` values: the same 15 minutes as `span` points five minutes apart,
    where the member was set. Three slow requests in three minutes are then
    not a level, and a level that holds a quarter of an hour is.
    """

    __slots__ = ("_window", "_warmup", "_recent", "_span", "_sum", "_points")
    __getstate__ = slot_state  # saved as Python saves slots, compiled or not

    def __init__(self, window: int = 1000, span: int = 3, warmup: int = 20) -> None:
        self._window = SortedWindow(window)
        self._warmup = warmup
        self._recent: deque[float] = deque()
        self._span = span  # in blocks of the ensemble's cadence
        self._points = span  # in points: span * every
        self._sum = 0.0

    def blocks(self, every: int) -> None:
        """`every` points make the ensemble's reference time: the mean is of `span * every` values from then on."""
        self._points = self._span * every
        recent = self._recent
        while len(recent) > self._points:
            self._sum -= recent.popleft()

    def statistic(self, x: float, t: float | None = None) -> float | None:
        recent = self._recent
        if len(recent) < self._points or len(self._window._sorted) < self._warmup:
            return None
        return self._window.robust_z((self._sum - recent[0] + x) / self._points)

    def learn(self, x: float, t: float | None = None) -> None:
        recent = self._recent  # follow(x), without the call: this runs on every point of a series five minutes apart
        recent.append(x)
        self._sum += x
        if len(recent) > self._points:
            self._sum -= recent.popleft()
        if len(recent) == self._points:
            # summed fresh from the deque: a running sum would drift with float error over millions of points
            self._window.add(sum(recent) / self._points)

    def follow(self, x: float, t: float | None = None) -> None:
        """x joins the last `span * every` values, and their mean not the window (`learn` adds it; the ensemble's cadence skips it)."""
        recent = self._recent
        recent.append(x)
        self._sum += x
        if len(recent) > self._points:
            self._sum -= recent.popleft()

    def __setstate__(self, state: Any) -> None:
        """A member pickled before its mean could span blocks resumes with the mean of `span` points, as it was saved."""
        _restore_slots(self, state)
        if "_points" not in state[1]:  # not hasattr: a compiled member always has it
            self._points = self._span


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
    __getstate__ = slot_state  # saved as Python saves slots, compiled or not

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
        phase = self._phase
        if not phase and len(self._recent) == self._span - 1:
            self._window.add(self._log_spread(x))
        self._cached = None  # follow(x), without the call: this runs on every point of a series five minutes apart
        self._recent.append(x)
        phase += 1
        self._phase = 0 if phase == self._stride else phase

    def follow(self, x: float, t: float | None = None) -> None:
        """x joins the last `span` values, and its spread not the window (`learn` adds it; the ensemble's cadence skips it)."""
        self._cached = None
        self._recent.append(x)
        phase = self._phase + 1
        self._phase = 0 if phase == self._stride else phase


class SquashedScorer:
    """A detector of one statistic: score = z / (z + k) for the statistic `z` of its member (0.0 while it warms up)."""

    def __init__(self, z: Statistic, k: float) -> None:
        self._z = z
        self._k = k

    def score_one(self, x: float, t: float | None = None) -> float:
        z = self._z.statistic(x, t)
        return 0.0 if z is None else squash(z, self._k)

    def learn_one(self, x: float, t: float | None = None) -> None:
        self._z.learn(x, t)


class RobustScorer(SquashedScorer):
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
        super().__init__(ValueZ(window, warmup), k)
