"""TopWindow against SortedWindow: the same quantile on every point, and old saved calibrators moved over."""

from __future__ import annotations

import pickle
import random

import pytest

from analytics.scorers.calibration import QuantileCalibrator
from analytics.scorers.window import SortedWindow, TopWindow


def streams() -> dict[str, list[float]]:
    rng = random.Random(4)
    n = 4000
    return {
        "noise": [rng.gauss(0.0, 1.0) for _ in range(n)],
        "ties": [float(rng.randint(0, 5)) for _ in range(n)],  # many equal values at the quantile
        "rising": [i * 0.01 + rng.random() for i in range(n)],  # every new value joins the top
        "falling": [-i * 0.01 + rng.random() for i in range(n)],  # the top keeps expiring: refills
        "flat, then bursts": [0.0] * 1500 + [rng.expovariate(1.0) if rng.random() < 0.05 else 0.0 for _ in range(n)],
    }


@pytest.mark.parametrize("kind", list(streams()))
@pytest.mark.parametrize(("size", "q"), [(2000, 0.99), (2000, 0.998), (100, 0.9), (50, 0.5), (30, 1.0), (1, 0.99)])
def test_the_quantile_is_the_sorted_windows_on_every_point(kind: str, size: int, q: float) -> None:
    top, full = TopWindow(size, q), SortedWindow(size)
    for i, x in enumerate(streams()[kind]):
        top.add(x)
        full.add(x)
        assert top.quantile() == full.quantile(q), f"point {i}"
        assert top._top == full._sorted[len(full._sorted) - len(top._top) :], f"point {i}: not the largest values"
        assert len(top._top) <= top.keep
    assert len(top) == len(full)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="window size must be at least 1"):
        TopWindow(0, 0.99)
    with pytest.raises(ValueError, match="q must be from 0 to 1"):
        TopWindow(10, 1.5)


def test_a_calibrator_saved_with_a_sorted_window_resumes_with_the_same_history() -> None:
    rng = random.Random(9)
    values = [rng.expovariate(1.0) for _ in range(3000)]
    old = QuantileCalibrator(history=2000, q=0.99)
    old._history = SortedWindow(2000)  # what a calibrator pickled before TopWindow held
    for r in values:
        old._history.add(r)
    resumed = pickle.loads(pickle.dumps(old))
    fresh = QuantileCalibrator(history=2000, q=0.99)
    for r in values:
        fresh.learn(r)
    assert isinstance(resumed._history, TopWindow) and len(resumed._history) == 2000
    for r in (0.5, 3.0, 9.0):
        assert resumed.ratio(r) == fresh.ratio(r)
    resumed.learn(7.0)
    fresh.learn(7.0)
    assert resumed.ratio(7.0) == fresh.ratio(7.0)
