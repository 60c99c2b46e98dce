"""river's Half-Space Trees over lag and difference features, in the style of Netdata's anomaly detection."""

from __future__ import annotations

from collections import deque
from typing import Any

from analytics.scorers.window import SortedWindow

__all__ = ["HalfSpaceTreesScorer", "RobustUnitScaler"]


class RobustUnitScaler:
    """Maps v into (0, 1) by its signed robust z on the last `size` values: 0.5 + 0.5 z / (|z| + c).

    Not a min-max scaler: min-max clips a 30-sigma spike to 1.0, the same place
    as the largest ordinary noise of the window, and HST can no longer tell
    them apart. This keeps the order of extremes, compressed.

    >>> s = RobustUnitScaler(size=100, c=4.0)
    >>> for v in (1.0, 2.0, 3.0, 4.0, 5.0):
    ...     s.add(v)
    >>> round(s.scale(3.0), 3), round(s.scale(100.0), 3), round(s.scale(-100.0), 3)
    (0.5, 0.971, 0.027)
    """

    __slots__ = ("_window", "_c")

    def __init__(self, size: int, c: float = 4.0) -> None:
        self._window = SortedWindow(size)
        self._c = c

    def add(self, v: float) -> None:
        self._window.add(v)

    def scale(self, v: float) -> float:
        if not len(self._window):
            return 0.5
        z = self._window.robust_z(v)
        if v < self._window.median():
            z = -z
        return 0.5 + 0.5 * z / (abs(z) + self._c)


class HalfSpaceTreesScorer:
    """HST over the smoothed level and its last `lags` differences, each min-max scaled online to [0, 1].

    As Netdata does: smooth over `smooth` points, difference, and take `lags`
    lagged differences as the feature vector, so a point is judged together
    with the shape of the few points before it. Shallow trees and two lags (not
    Netdata's five): with one value per point, deeper trees and more lags
    spread 250 points so thin that ordinary noise looks as empty as a spike. river's HST expects features
    in [0, 1]; a running robust scaler over the last `scale_window` points maps
    them there (learned after scoring, so a new extreme scores before it is
    absorbed; see `RobustUnitScaler` for why not min-max). Seeded: the same `seed` gives
    the same trees and the same scores.

    >>> import random
    >>> rng = random.Random(5)
    >>> d = HalfSpaceTreesScorer(seed=42)
    >>> scores = []
    >>> for i in range(1200):
    ...     x = 10.0 + rng.gauss(0.0, 0.2) + (6.0 if i == 1100 else 0.0)
    ...     scores.append(d.score_one(x))
    ...     d.learn_one(x)
    >>> scores[1100] > max(scores[900:1100])
    True
    >>> round(scores[1100], 2), round(max(scores[900:1100]), 2)
    (0.68, 0.41)
    """

    def __init__(
        self,
        n_trees: int = 25,
        height: int = 3,
        window_size: int = 250,
        lags: int = 2,
        smooth: int = 3,
        scale_window: int = 1000,
        seed: int | None = 42,
    ) -> None:
        from river import anomaly  # heavy: imported only when an HST detector is built

        self._forest = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed)
        self._ranges = {name: RobustUnitScaler(scale_window) for name in ["level", *(f"d{lag}" for lag in range(lags))]}
        self._recent: deque[float] = deque(maxlen=smooth)
        self._smoothed: deque[float] = deque(maxlen=lags + 1)
        self._lags = lags

    def _features(self, x: float) -> dict[str, float] | None:
        recent = list(self._recent) + [x]
        if len(recent) > self._recent.maxlen:  # type: ignore[operator]
            recent = recent[1:]
        level = sum(recent) / len(recent)
        smoothed = list(self._smoothed) + [level]
        if len(smoothed) < self._lags + 1:
            return None
        smoothed = smoothed[-(self._lags + 1) :]
        feats = {"level": level}
        for lag in range(self._lags):
            feats[f"d{lag}"] = smoothed[-1 - lag] - smoothed[-2 - lag]
        return feats

    def score_one(self, x: float, t: float | None = None) -> float:
        feats = self._features(x)
        if feats is None:
            return 0.0
        scaled = self._scaled(feats)
        return min(1.0, max(0.0, float(self._forest.score_one(scaled))))

    def _scaled(self, feats: dict[str, float]) -> dict[str, Any]:
        return {k: self._ranges[k].scale(v) for k, v in feats.items()}

    def learn_one(self, x: float, t: float | None = None) -> None:
        feats = self._features(x)
        self._recent.append(x)
        self._smoothed.append(sum(self._recent) / len(self._recent))
        if feats is None:
            return
        self._forest.learn_one(self._scaled(feats))
        for k, v in feats.items():
            self._ranges[k].add(v)
