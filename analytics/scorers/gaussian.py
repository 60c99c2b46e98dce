"""river's GaussianScorer: how far into either tail of a rolling Gaussian fit the value lies."""

from __future__ import annotations

__all__ = ["GaussianTailScorer"]


class GaussianTailScorer:
    """score = 2 |CDF(x) - 0.5| under a Gaussian fitted to the last `window` values (river).

    The classic "windowed Gaussian" baseline of NAB: cheap, but a Gaussian fit
    is pulled by the outliers it should flag, so it is kept for comparison, not
    shipped. Deterministic, so `seed` is accepted only for a uniform signature.

    >>> import random
    >>> rng = random.Random(2)
    >>> d = GaussianTailScorer()
    >>> scores = []
    >>> for i in range(400):
    ...     x = 5.0 + rng.gauss(0.0, 0.1) + (1.0 if i == 350 else 0.0)
    ...     scores.append(d.score_one(x))
    ...     d.learn_one(x)
    >>> max(range(400), key=scores.__getitem__), round(scores[350], 3)
    (350, 1.0)
    """

    def __init__(self, window: int = 1000, grace_period: int = 20, seed: int | None = None) -> None:
        from river import anomaly  # heavy: imported only when this detector is built

        self._scorer = anomaly.GaussianScorer(window_size=window, grace_period=grace_period)

    def score_one(self, x: float, t: float | None = None) -> float:
        gaussian = self._scorer.gaussian
        if gaussian.n_samples < self._scorer.grace_period:
            return 0.0
        mu = gaussian.mu
        try:
            sigma = float(gaussian.sigma)
        except TypeError:
            # river's rolling variance can cancel to a hair below zero on a constant stretch: sigma is complex
            sigma = 0.0
        if not sigma > 1e-12 * max(1.0, abs(mu)):
            # no spread (river then calls every point a full outlier): any other value is one, the same value is not
            return 0.0 if abs(x - mu) <= 1e-9 * max(1.0, abs(mu)) else 1.0
        s = float(self._scorer.score_one(None, x))
        return min(1.0, max(0.0, s))

    def learn_one(self, x: float, t: float | None = None) -> None:
        self._scorer.learn_one(None, x)
