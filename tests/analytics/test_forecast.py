"""The latency forecaster: trends, horizons in the pair's own runs, never negative, NaN-proof, picklable."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from analytics.forecast import DEFAULT_HORIZONS, Holt, LatencyForecaster, horizon_seconds
from analytics.source import Run

T0 = 1_735_689_600.0


def run(i: int, duration: float, *, every: float = 60.0, outcome: str = "success", workflow: str = "checkout", env: str = "prod") -> Run:
    return Run(workflow, env, T0 + i * every, duration, outcome)


def test_horizons_parse_as_durations_and_refuse_nonsense() -> None:
    assert DEFAULT_HORIZONS == ("5m", "15m", "1h")
    assert [horizon_seconds(h) for h in ("5m", "15m", "1h", "90s", "1m30s")] == [300.0, 900.0, 3600.0, 90.0, 90.0]
    for bad in ("0s", "soon", "-5m", ""):
        with pytest.raises(ValueError):
            horizon_seconds(bad)
    with pytest.raises(ValueError):
        LatencyForecaster(())
    with pytest.raises(ValueError):
        LatencyForecaster(alpha=0.0)


def test_a_linear_trend_is_tracked() -> None:
    forecaster = LatencyForecaster()
    slope = 0.002  # seconds per run, one run a minute
    made = [forecaster.observe(run(i, 0.2 + slope * i)) for i in range(300)]
    now, before = made[-1], made[-2]
    assert now is not None and before is not None and set(now) == {"5m", "15m", "1h"}
    assert now["5m"] < now["15m"] < now["1h"]  # the trend goes on, fading with the horizon
    for label in now:  # the forecasts move with the line, one slope per run
        assert now[label] - before[label] == pytest.approx(slope, rel=1e-3)


def test_in_noise_it_beats_the_last_value() -> None:
    rng = random.Random(7)
    forecaster = LatencyForecaster(["5m"])
    values = [0.3 * (1 + 0.5 * math.sin(i / 40)) * math.exp(rng.gauss(0, 0.15)) for i in range(600)]
    made = [forecaster.observe(run(i, v)) for i, v in enumerate(values)]
    holt = [abs(f["5m"] - values[i + 5]) for i, f in enumerate(made[:-5]) if f is not None]
    naive = [abs(values[i] - values[i + 5]) for i, f in enumerate(made[:-5]) if f is not None]
    assert sum(holt) < 0.9 * sum(naive)


def test_steps_come_from_the_pairs_own_run_interval() -> None:
    forecaster = LatencyForecaster(["5m"])
    reference = Holt()
    for i in range(50):
        duration = 0.5 + 0.01 * i
        forecaster.observe(run(i, duration, every=30.0))
        reference.learn_one(duration)
    got = forecaster.forecast(("checkout", "prod"))
    assert got is not None
    assert got["5m"] == pytest.approx(reference.forecast(10))  # 5 minutes at one run per 30 s
    assert got["5m"] != pytest.approx(reference.forecast(5))


def test_a_forecast_is_never_negative() -> None:
    forecaster = LatencyForecaster()
    for i in range(40):
        forecast = forecaster.observe(run(i, max(0.0, 2.0 - 0.1 * i)))  # falling fast to zero
        if forecast is not None:
            assert min(forecast.values()) >= 0.0
    assert forecast is not None and forecast["1h"] == 0.0


def test_nothing_before_two_runs_and_only_passed_runs_durations_are_learned() -> None:
    forecaster = LatencyForecaster()
    pair = ("checkout", "prod")
    assert forecaster.forecast(pair) is None
    assert forecaster.observe(run(0, 1.0)) is None  # one run gives no interval yet
    for i, bad in enumerate([math.nan, math.inf, -1.0], start=1):
        assert forecaster.observe(run(i, bad)) is None
    assert forecaster.observe(run(4, 99.0, outcome="skipped")) is None
    assert forecaster.observe(run(5, 0.005, outcome="failure")) is None  # a refused request is no latency
    forecast = forecaster.observe(run(6, 1.0))
    assert forecast is not None and all(v == pytest.approx(1.0) for v in forecast.values())
    again = forecaster.observe(run(6, 50.0))  # the same run read twice: not learned twice
    assert again == forecast
    assert forecaster.pairs() == [pair]
    forecaster.forget(pair)
    assert forecaster.pairs() == []


def test_pickle_round_trip_goes_on_identically() -> None:
    rng = random.Random(3)
    runs = [run(i, 0.3 + 0.001 * i + rng.gauss(0, 0.02), workflow=f"wf{i % 3}") for i in range(200)]
    forecaster = LatencyForecaster()
    for r in runs[:120]:
        forecaster.observe(r)
    restored = pickle.loads(pickle.dumps(forecaster))
    for r in runs[120:]:
        assert restored.observe(r) == forecaster.observe(r)
