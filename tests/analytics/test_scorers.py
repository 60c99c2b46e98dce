"""One contract for every detector in DETECTORS (as river's estimator checks), plus every module's doctests."""

from __future__ import annotations

import doctest
import importlib
import math
import pkgutil
import random

import pytest

import analytics.scorers
from analytics.scorers import DETECTORS, Detector, default_detector
from analytics.scorers.registry import DEFAULT, THRESHOLD

START = 1_700_000_000.0  # a Tuesday; 5-minute steps as in the NAB files
STEP = 300.0


def stable(n: int, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [100.0 + rng.gauss(0.0, 1.0) for _ in range(n)]


def times(n: int) -> list[float]:
    return [START + i * STEP for i in range(n)]


def run(name: str, values: list[float], ts: list[float] | None) -> list[float]:
    detector = DETECTORS[name]()
    scores = []
    for i, x in enumerate(values):
        t = None if ts is None else ts[i]
        scores.append(detector.score_one(x, t))
        detector.learn_one(x, t)
    return scores


@pytest.fixture(params=sorted(DETECTORS))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_contract(name: str) -> None:
    detector = DETECTORS[name]()
    assert isinstance(detector, Detector)

    # In [0, 1] and finite, with and without time, on a series with spikes, a shift and a ramp.
    values = stable(700)
    values[400] += 30.0
    values[500:] = [v + 15.0 for v in values[500:]]
    values[600:650] = [v + 0.5 * i for i, v in enumerate(values[600:650])]
    for ts in (times(len(values)), None):
        scores = run(name, values, ts)
        assert all(isinstance(s, float) and math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores), name

    # Causal: changing the future does not change the past scores.
    future = stable(700, seed=99)
    prefix = run(name, values[:450], times(450))
    changed = run(name, values[:450] + [v * 3.0 for v in future[450:]], times(700))
    assert changed[:450] == prefix

    # Reproducible: two fresh instances give identical scores.
    assert run(name, values, times(700)) == run(name, values, times(700))

    # score_one only looks: asking twice gives the same answer, and the scores after it are unchanged.
    detector = DETECTORS[name]()
    twice = []
    for x, t in zip(values, times(700)):
        first = detector.score_one(x, t)
        assert detector.score_one(x, t) == first
        twice.append(first)
        detector.learn_one(x, t)
    assert twice == run(name, values, times(700))


def test_spike_after_a_stable_stretch_scores_above_the_stable_points(name: str) -> None:
    values = stable(600, seed=4)
    values[550] += 25.0
    for ts in (times(600), None):
        scores = run(name, values, ts)
        assert scores[550] > max(scores[300:550]), (name, ts is None)


def test_constant_series(name: str) -> None:
    scores = run(name, [7.0] * 400 + [12.0], times(401))
    assert all(math.isfinite(s) and 0.0 <= s <= 1.0 for s in scores)
    assert scores[-1] > max(scores[300:400]), "a change after a flat stretch scores above the flat stretch"


def test_default_detector_is_registered() -> None:
    assert DEFAULT in DETECTORS
    assert type(default_detector()) is type(DETECTORS[DEFAULT]())


MODULES = sorted(
    ["analytics.frame"] + [f"analytics.scorers.{m.name}" for m in pkgutil.iter_modules(analytics.scorers.__path__)]
)


@pytest.mark.parametrize("module", MODULES)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest failure(s) in {module}"


def test_shipped_detector_alarms_when_a_noisy_series_goes_flat() -> None:
    """A stuck value at the median: no value, step or mean is unusual, only the spread (SpreadZ) is."""
    rng = random.Random(9)
    values = [100.0 + rng.gauss(0.0, 5.0) for _ in range(1500)] + [100.0] * 30
    scores = run(DEFAULT, values, times(len(values)))
    assert max(scores[300:1500]) < THRESHOLD, "no false alarm on steady noise once warmed up"
    assert max(scores[1500:]) >= THRESHOLD, "going flat alarms"
