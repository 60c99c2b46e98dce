"""bench/anomaly_domain.py: the domain target, and the same three days and incidents in time at another rate of points."""

from __future__ import annotations

import pytest

from analytics.scorers import attune, default_detector
from analytics.scorers.registry import THRESHOLD
from bench.anomaly_domain import DAYS, main, make_set
from bench.anomaly_nab import evaluate, figures, score_series


@pytest.mark.parametrize(("seed", "interval"), [(3, 60.0), (5, 30.0), (3, 15.0)])
def test_the_shipped_detector_meets_the_domain_target_at_the_workflows_schedules(seed: int, interval: float) -> None:
    """The analytics issue's target, window F1 0.90 at the shipped threshold, on a whole domain set (24 series).

    At each rate the seed of 7, 11, 3 and 5 that scored lowest when measured (ANALYTICS.md): 0.93 a minute apart,
    0.91 every 30 s (0.87 before the value and mean members settled), 0.97 every 15 s.
    """
    data = make_set(seed, 24, interval)[0]
    scores = [score_series(lambda: attune(default_detector(), THRESHOLD), series) for series in data]
    measured = figures(evaluate(scores, data, THRESHOLD), data, THRESHOLD)
    assert measured["f1"] >= 0.90 and measured["windows_found"] >= 47, measured


@pytest.mark.parametrize("interval", [15.0, 30.0])
def test_a_set_at_another_interval_keeps_its_durations_in_time(interval: float) -> None:
    data, kinds = make_set(7, 4, interval)
    minutely, minutely_kinds = make_set(7, 4)
    assert kinds == minutely_kinds
    for series in data:
        assert len(series.values) == DAYS * 86400 / interval
        assert series.times[1] - series.times[0] == interval
    for series, names in zip(data, kinds):
        for (start, end), kind in zip(series.windows, names):
            hours = (end - start) * interval / 3600.0  # the incident and its 30 minutes
            if kind == "level_shift":
                assert 2.4 <= hours <= 4.6, hours
            elif kind == "ramp":
                assert 1.4 <= hours <= 3.6, hours
            elif kind == "error_burst":
                assert 0.6 <= hours <= 1.1, hours


@pytest.mark.parametrize("interval", ["0", "-5", "7200"])
def test_the_domain_bench_refuses_an_interval_it_cannot_use(interval: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--interval", interval, "--series", "1"]) == 2
    assert "--interval must be more than 0 and at most 3600 seconds" in capsys.readouterr().err
