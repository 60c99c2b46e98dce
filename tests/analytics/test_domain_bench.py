"""bench/anomaly_domain.py at another rate of points: the same three days and the same incidents in time."""

from __future__ import annotations

import pytest

from bench.anomaly_domain import DAYS, main, make_set


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
