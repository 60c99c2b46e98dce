"""Turning raw statistics into scores that mean the same on every series, and keeping alarms sparse.

A robust z of 6 is rare on a quiet series and routine on a bursty one. The
calibrator measures a statistic against the high quantile of its own recent
history on that series, so one threshold serves every series; the onset gate
damps scores that do not exceed the recent peak, so a long anomaly raises one
alarm at its start instead of one per row (NAB charges every false alarm row,
and an operator wants the onset).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from analytics.scorers.window import SortedWindow, TopWindow, _restore_slots, slot_state

__all__ = ["Cadence", "OnsetGate", "QuantileCalibrator", "WARMUP"]

WARMUP = 20  # the values a calibrator holds before it gives a ratio, unless told otherwise


class QuantileCalibrator:
    """ratio = r / (the `q`-quantile of the last `history` values of r); None until `warmup` are seen.

    A young calibrator, holding fewer than 1 / (1 - q) values (500 at the
    99.8th percentile, 100 at the 99th), has not seen its quantile yet: the
    largest value it holds is all it has, and a new value beats the largest
    of n with a chance of 1 / (n + 1), not 1 - q. So until then its
    reference is extrapolated from its `TAIL` (5) largest values, as an
    exponential tail (peaks over a threshold): the fifth largest plus their
    mean excess over it times ln(5 / (n (1 - q))), and never less than the
    largest. The younger, the further out; at 1 / (1 - q) values it is the
    quantile itself. This matters most on a series checked more often than
    every five minutes: the ensemble's calibrators learn a value a block
    (`Cadence`), so a check every 15 s has learned 37 after the 750 points
    of NAB's probation (three hours).

    >>> c = QuantileCalibrator(history=100, q=0.9, warmup=10)
    >>> for r in [1.0, 2.0, 1.5, 0.5, 1.0, 2.0, 1.0, 0.5, 1.5, 1.0]:
    ...     c.learn(r)
    >>> round(c.ratio(4.0), 6)  # ten values: the 90th percentile is the largest, 2
    2.0
    >>> c = QuantileCalibrator(history=100, q=0.99, warmup=10)
    >>> for r in [1.0, 2.0, 1.5, 0.5, 1.0, 2.0, 1.0, 0.5, 1.5, 1.0]:
    ...     c.learn(r)
    >>> round(c.reference(), 3)  # ten values, for the 99th: 1 + ((1.5 + 1.5 + 2 + 2) / 4 - 1) * ln(5 / (10 * 0.01))
    3.934
    """

    __slots__ = ("_history", "_q", "_warmup", "_mature", "_young")
    __getstate__ = slot_state  # saved as Python saves slots, compiled or not

    def __init__(self, history: int = 2000, q: float = 0.99, warmup: int = WARMUP) -> None:
        self._history = TopWindow(history, q)
        self._q = q
        self._warmup = warmup
        self._mature = _mature(q, history, warmup)
        self._young = (0, 0.0)  # (values held, the reference extrapolated from them): young, every value is new

    def reference(self) -> float:
        """What a statistic is measured against: the `q`-quantile, or while young its extrapolation (at least 1 value)."""
        history = self._history
        n = len(history)
        if n >= self._mature or self._q >= 1.0:  # at q = 1 the largest is the quantile at any age
            return history.quantile()
        held, reference = self._young
        if held != n:  # the window is not full while young (`_mature`): a value learned is one more held
            reference = history.quantile()
            tail = history.largest(TAIL)
            if len(tail) == TAIL:
                base = tail[0]
                beyond = base + (sum(tail) - base * TAIL) / (TAIL - 1) * math.log(TAIL / (n * (1.0 - self._q)))
                if beyond > reference:
                    reference = beyond
            self._young = (n, reference)
        return reference

    def ratio(self, r: float) -> float | None:
        if len(self._history) < self._warmup:
            return None
        return r / (self.reference() + 1e-9)

    def learn(self, r: float) -> None:
        self._history.add(r)

    def __setstate__(self, state: Any) -> None:
        """A calibrator pickled before TopWindow kept its history in a SortedWindow: the same values, moved over."""
        history = state[1].pop("_history")  # set last: a compiled calibrator's holds a TopWindow only
        _restore_slots(self, state)
        if isinstance(history, SortedWindow):
            old, history = history, TopWindow(history.size, self._q)
            for r in old._order:
                history.add(r)
        self._history = history
        self._mature, self._young = _mature(self._q, history.size, self._warmup), (0, 0.0)


TAIL = 5  # the largest values a young calibrator extrapolates its quantile from


def _mature(q: float, size: int, warmup: int) -> float:
    """The values a calibrator at `q` holds once its quantile is among them: 1 / (1 - q) (none needed at q = 1).

    A full window is mature however small: its quantile is the one it is asked for, of the values it keeps. Never
    before its `warmup`, so that a calibrator that is mature is one that speaks (the ensemble checks that alone).
    """
    return max(float(warmup), 0.0 if q >= 1.0 else min(1.0 / (1.0 - q) - 1e-9, float(size)))


class Cadence:
    """How many points of a series make `reference` seconds: the block whose largest statistic a calibrator learns.

    A calibrator's quantile is a budget of points: at the 99th percentile, 1 %
    of what it learned lies over its reference. The ensemble's quantiles were
    chosen on series five minutes apart (NAB's: `reference` seconds), where
    1 % of the points is 2.9 a day, and its 2000 values are a week. A check
    that runs every minute has five times the points a day: learning every
    point, it would let five times as many a day over the reference, and
    raise more false alarms a day than the same service checked every five
    minutes, against a memory of a day and a half. So the ensemble's
    calibrators learn the largest statistic of each `every` points (every =
    `reference` / the series' interval, rounded, at least 1): a block of five
    minutes, as on the series the quantiles were set on. A series `reference`
    apart or further is learned point by point, as before.

    The ensemble tells it the time every few points (`learn(t, points)`); the
    interval is the median, over the last `spans` such calls, of each call's
    mean interval, so it follows a schedule that changes and ignores the odd
    gap (a restart, a night without data).

    >>> c = Cadence(reference=300.0)
    >>> for i in range(0, 400, 16):
    ...     every = c.learn(60.0 * i, 16)  # a point a minute, told every 16 points
    >>> every
    5
    >>> c.learn(60.0 * 400 + 8 * 3600.0, 16)  # then eight hours without data
    5
    >>> for i in range(1, 10):
    ...     every = c.learn(60.0 * 400 + 8 * 3600.0 + 600.0 * 16 * i, 16)  # then one every ten minutes
    >>> every
    1
    """

    __slots__ = ("reference", "every", "_gaps", "_last")
    __getstate__ = slot_state  # saved as Python saves slots, compiled or not

    def __init__(self, reference: float = 300.0, spans: int = 9) -> None:
        if reference <= 0.0:
            raise ValueError(f"reference must be positive, got {reference}")
        self.reference = reference
        self.every = 1
        self._gaps: deque[float] = deque(maxlen=spans)
        self._last: float | None = None

    def learn(self, t: float | None, points: int) -> int:
        """Told the time `t` of the point `points` after the one it was last told of; returns `every`.

        None: that point had no time, so the next call only marks where the next span starts.
        """
        last, self._last = self._last, t
        if last is not None and t is not None and t > last:
            self._gaps.append((t - last) / points)
            ordered = sorted(self._gaps)
            self.every = max(1, round(self.reference / ordered[len(ordered) >> 1]))
        return self.every


class OnsetGate:
    """Passes a score that beats the decaying recent peak; multiplies any other by `damp`.

    The peak decays by `decay` per point (0.999: it halves in about 700 points).
    A refractory period (as CAD OSE's rest period): once an emitted score
    reaches `rest_level`, the scores of the next `rest` points are damped too,
    unless one beats the score that raised the alarm (then it alarms and the
    rest starts again from it). An operator wants the first alarm of an
    episode, and NAB pays only for the first alarm in a window but charges
    every false one; a worse incident inside the rest still alarms. Given
    the points' times, the rest also ends once `rest_seconds` have passed
    since its alarm: whichever comes first, so a series sampled hourly
    rests a day, not `rest` hours.
    An echo: once an emitted score reaches `echo_level`, the next `echo` points
    are damped whatever they score, worse or not (the fall of a spike that
    alarmed on its rise, the second point of a two-point jump, a second
    member that sees the same change one point later).

    >>> g = OnsetGate(damp=0.5, decay=0.999)
    >>> [g.gated(s) for s in (0.2, 0.9)]
    [0.2, 0.9]
    >>> g.learn(0.9)
    >>> g.gated(0.8)
    0.4
    >>> g = OnsetGate(damp=0.5, decay=0.5, rest_level=0.7, rest=2)
    >>> out = []
    >>> for s in (0.8, 0.5, 0.78, 0.9, 0.85, 0.85, 0.85):
    ...     out.append(g.gated(s))
    ...     g.learn(out[-1])
    >>> out  # alarm; rest (0.78 beats the peak, not the alarm); 0.9 beats the alarm; rest; the gate alone
    [0.8, 0.25, 0.39, 0.9, 0.425, 0.425, 0.85]
    >>> g = OnsetGate(damp=0.5, decay=0.5, echo_level=0.6, echo=2)
    >>> out = []
    >>> for s in (0.7, 0.9, 0.95, 0.99):
    ...     out.append(g.gated(s))
    ...     g.learn(out[-1])
    >>> out  # alarm; its echo for two points, however high; then 0.99 beats the peak
    [0.7, 0.45, 0.475, 0.99]
    >>> g = OnsetGate(damp=0.5, decay=0.5, rest_level=0.7, rest=3, rest_seconds=7200.0)
    >>> out = []
    >>> for t, s in enumerate((0.8, 0.6, 0.75, 0.75), start=1):  # a point an hour
    ...     out.append(g.gated(s, t * 3600.0))
    ...     g.learn(out[-1], t * 3600.0)
    >>> out  # alarm; two hours of rest; then 0.75 alarms, though the rest had a point to go
    [0.8, 0.3, 0.375, 0.75]
    """

    __slots__ = (
        "_peak", "_damp", "_decay", "_rest_level", "_rest", "_resting", "_alarm", "echo_level", "_echo", "_echoing",
        "_rest_seconds", "_rest_until",
    )
    __getstate__ = slot_state  # saved as Python saves slots, compiled or not

    def __init__(
        self,
        damp: float = 0.5,
        decay: float = 0.999,
        rest_level: float = 1.0,
        rest: int = 0,
        echo_level: float = 1.0,
        echo: int = 0,
        rest_seconds: float | None = None,
    ) -> None:
        self._peak = 0.0
        self._damp = damp
        self._decay = decay
        self._rest_level = rest_level
        self._rest = rest
        self._resting = 0
        self._alarm = 0.0
        self.echo_level = echo_level
        self._echo = echo
        self._echoing = 0
        self._rest_seconds = rest_seconds
        self._rest_until = math.inf  # the time the rest ends, if it does not run out of points first

    def gated(self, s: float, t: float | None = None) -> float:
        """The score to emit for a point that scored `s` at time `t` (None: no time; the rest counts points only)."""
        if s > self._peak and not self._echoing and (not self._resting or s > self._alarm or (t is not None and t > self._rest_until)):
            return s
        return s * self._damp

    def learn(self, gated: float, t: float | None = None) -> None:
        """Record the gated score that was emitted for this point, at time `t` (as given to `gated`)."""
        peak = self._peak * self._decay
        self._peak = gated if gated > peak else peak
        if self._resting and t is not None and t > self._rest_until:
            self._resting = 0  # the rest's time is up before its points
        if gated >= self._rest_level and (not self._resting or gated > self._alarm):
            self._resting = self._rest
            self._alarm = gated
            seconds = self._rest_seconds
            self._rest_until = math.inf if t is None or seconds is None else t + seconds
        elif self._resting:
            self._resting -= 1
        if self._echoing:
            self._echoing -= 1
        elif gated >= self.echo_level:
            self._echoing = self._echo

    def __setstate__(self, state: Any) -> None:
        """A gate pickled before the echo, or before its rest could end in time, resumes as it was saved: without them."""
        self.echo_level, self._echo, self._echoing = 1.0, 0, 0
        self._rest_seconds, self._rest_until = None, math.inf
        _restore_slots(self, state)
