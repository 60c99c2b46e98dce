"""Turning raw statistics into scores that mean the same on every series, and keeping alarms sparse.

A robust z of 6 is rare on a quiet series and routine on a bursty one. The
calibrator measures a statistic against the high quantile of its own recent
history on that series, so one threshold serves every series; the onset gate
damps scores that do not exceed the recent peak, so a long anomaly raises one
alarm at its start instead of one per row (NAB charges every false alarm row,
and an operator wants the onset).
"""

from __future__ import annotations

from analytics.scorers.window import SortedWindow

__all__ = ["OnsetGate", "QuantileCalibrator"]


class QuantileCalibrator:
    """ratio = r / (the `q`-quantile of the last `history` values of r); None until `warmup` are seen.

    >>> c = QuantileCalibrator(history=100, q=0.99, warmup=10)
    >>> for r in [1.0, 2.0, 1.5, 0.5, 1.0, 2.0, 1.0, 0.5, 1.5, 1.0]:
    ...     c.learn(r)
    >>> round(c.ratio(4.0), 6)
    2.0
    """

    __slots__ = ("_history", "_q", "_warmup")

    def __init__(self, history: int = 2000, q: float = 0.99, warmup: int = 20) -> None:
        self._history = SortedWindow(history)
        self._q = q
        self._warmup = warmup

    def ratio(self, r: float) -> float | None:
        s = self._history._sorted  # inlined quantile: this runs for every member on every point
        n = len(s)
        if n < self._warmup:
            return None
        return r / (s[min(n - 1, int(self._q * n))] + 1e-9)

    def learn(self, r: float) -> None:
        self._history.add(r)


class OnsetGate:
    """Passes a score that beats the decaying recent peak; multiplies any other by `damp`.

    The peak decays by `decay` per point (0.999: it halves in about 700 points).

    >>> g = OnsetGate(damp=0.5, decay=0.999)
    >>> [g.gated(s) for s in (0.2, 0.9)]
    [0.2, 0.9]
    >>> g.learn(0.9)
    >>> g.gated(0.8)
    0.4
    """

    __slots__ = ("_peak", "_damp", "_decay")

    def __init__(self, damp: float = 0.5, decay: float = 0.999) -> None:
        self._peak = 0.0
        self._damp = damp
        self._decay = decay

    def gated(self, s: float) -> float:
        return s if s > self._peak else s * self._damp

    def learn(self, gated: float) -> None:
        """Record the gated score that was emitted for this point."""
        peak = self._peak * self._decay
        self._peak = gated if gated > peak else peak
