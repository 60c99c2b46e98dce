"""The shipped detector on one real NAB file: a floor under its measured result, so a regression shows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analytics.scorers import DETECTORS
from analytics.scorers.registry import DEFAULT, THRESHOLD
from bench.anomaly_nab import Series, data_dir, evaluate_file, load_series, score_series, sigma

FILE = "realKnownCause/ec2_request_latency_system_failure.csv"  # 4032 rows, 3 windows, about 0.05 s
ROOT = data_dir()

pytestmark = pytest.mark.skipif(
    not (ROOT / "data" / FILE).is_file(),
    reason=f"NAB data not found at {ROOT} (set FLOWPROBE_NAB_DIR, or put shared/ beside the clone)",
)


def shipped_scores(name: str) -> tuple[Series, np.ndarray]:
    windows = json.loads((ROOT / "labels" / "combined_windows.json").read_text(encoding="utf-8"))[name]
    series = load_series(ROOT, name, windows)
    return series, score_series(DETECTORS[DEFAULT], series)


def test_shipped_detector_finds_the_windows_of_one_nab_file() -> None:
    series, scores = shipped_scores(FILE)
    counts = evaluate_file(scores, series, THRESHOLD, latencies=True)
    null, perfect = -len(series.windows), len(series.windows) * float(sigma(-1.0))
    file_score = 100.0 * (counts.raw - null) / (perfect - null)
    # measured: 3/3 windows, 2 false-positive events, latencies [67, 66, 67] rows, file score 79.6
    assert counts.found == 3, counts
    assert counts.fp_events <= 4, counts
    assert max(counts.latencies or [999]) <= 100, counts.latencies
    assert file_score >= 75.0, file_score


def test_shipped_detector_finds_the_misconfiguration_that_stops_the_swings() -> None:
    """The autoscaling group's CPU stops swinging between 30 and 100 % and sinks below its old floor: the spread member finds it.

    Missed before SpreadZ joined the ensemble (its best score in the window was 0.55).
    """
    series, scores = shipped_scores("realKnownCause/cpu_utilization_asg_misconfiguration.csv")  # 18,050 rows, about 0.3 s
    counts = evaluate_file(scores, series, THRESHOLD, latencies=True)
    # measured: 1/1 window, found 1,263 rows after its start (NAB's windows are wide: 1,498 rows here), 7 false-alarm events
    assert counts.found == 1, counts
    assert counts.fp_events <= 9, counts


def test_an_alarm_is_not_followed_by_its_own_echo() -> None:
    """After an alarm the shipped ensemble damps the next points (the gate's echo): the fall of a spike, the second point of a jump."""
    series, scores = shipped_scores("realKnownCause/ambient_temperature_system_failure.csv")  # 7,267 rows, about 0.1 s
    counts = evaluate_file(scores, series, THRESHOLD)
    alarms = np.flatnonzero(scores[series.probation :] >= THRESHOLD)
    outside = [i + series.probation for i in alarms if not any(a <= i + series.probation <= b for a, b in series.windows)]
    # measured: 1/2 windows, 5 false-alarm rows in 5 events; 2/2 and 7 when the shift watch's boost raised the step member
    # too (the second window's only alarm was such a step), 9 rows without the echo (two of them the row after another)
    assert counts.found >= 1, counts
    assert len(outside) <= 5, outside
    assert np.diff(alarms).min() > 6, "an alarm row within six rows of the one before"


def test_a_cpu_spike_every_day_at_the_same_hour_stops_alarming_and_the_incidents_still_do() -> None:
    """ec2_cpu_utilization_24ae8d: the CPU spikes at about the same time every day (the ensemble's daily routine)."""
    series, scores = shipped_scores("realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv")  # 4,032 rows
    counts = evaluate_file(scores, series, THRESHOLD, latencies=True)
    # measured: 2/2 windows, each found 100 rows in (at its labelled point), no false alarm; 12 false alarms without the
    # routine, one on each day's spike
    assert counts.found == 2, counts
    assert counts.fp_events <= 2, counts
    assert max(counts.latencies or [999]) <= 100, counts.latencies


def test_a_nightly_cpu_spike_that_skips_days_and_wanders_an_hour_stays_a_routine() -> None:
    """ec2_cpu_utilization_c6585a (no labelled window): the CPU spikes once a night between 03:00 and 04:30, not every night."""
    series, scores = shipped_scores("realAWSCloudwatch/ec2_cpu_utilization_c6585a.csv")  # 4,032 rows
    counts = evaluate_file(scores, series, THRESHOLD)
    # measured: 3 false-alarm events, the spikes of the first nights; 7 while the routine wanted each of the last two
    # nights within half an hour
    assert counts.fp_events <= 3, counts


def test_the_holidays_in_new_york_taxi_demand_are_found() -> None:
    """nyc_taxi: the weekly profile explains the demand, so the seasonal member speaks; Thanksgiving and Christmas look
    ordinary against all hours, and unusual against their own."""
    series, scores = shipped_scores("realKnownCause/nyc_taxi.csv")  # 10,320 rows, about 0.15 s
    counts = evaluate_file(scores, series, THRESHOLD, latencies=True)
    # measured: 5/5 windows (3/5 without the seasonal member: not the two holidays), 3 false-alarm events
    assert counts.found == 5, counts
    assert counts.fp_events <= 4, counts


def test_the_shipped_detector_meets_both_nab_targets_on_the_whole_subset() -> None:
    """The analytics issue's targets on the shared subset, at the shipped threshold: NAB standard 68 and window F1 0.60.

    Measured: NAB 70.8, window F1 0.613 (42 of 49 windows, 46 false-alarm events); 70.0 and 0.571 (56 events) before the
    step member was held back on the moves a series makes all the time. About 1.5 s (137,301 points).
    """
    from bench.anomaly_nab import evaluate, figures, load_nab

    data = load_nab(ROOT)
    measured = figures(evaluate([score_series(DETECTORS[DEFAULT], s) for s in data], data, THRESHOLD), data, THRESHOLD)
    assert measured["nab_standard"] >= 68.0 and measured["f1"] >= 0.60, measured
