"""bench/anomaly_nab.py beyond the shared subset: other NAB folders, and the published detectors on exactly those files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import numpy as np

from analytics.scorers import COMPILED
from bench.anomaly_nab import PUBLISHED, PUBLISHED_SCORES, Series, evaluate, figures, main, published, sweep

# realTraffic and realAdExchange with NAB's label version 1.1: how many windows each file has.
HELD_OUT = {
    "realAdExchange/exchange-2_cpc_results.csv": 1,
    "realAdExchange/exchange-2_cpm_results.csv": 2,
    "realAdExchange/exchange-3_cpc_results.csv": 3,
    "realAdExchange/exchange-3_cpm_results.csv": 1,
    "realAdExchange/exchange-4_cpc_results.csv": 3,
    "realAdExchange/exchange-4_cpm_results.csv": 4,
    "realTraffic/TravelTime_387.csv": 3,
    "realTraffic/TravelTime_451.csv": 1,
    "realTraffic/occupancy_6005.csv": 1,
    "realTraffic/occupancy_t4013.csv": 2,
    "realTraffic/speed_6005.csv": 1,
    "realTraffic/speed_7578.csv": 4,
    "realTraffic/speed_t4013.csv": 2,
}


def test_the_best_f1_threshold_is_never_one_that_alarms_on_every_row() -> None:
    """Alarming everywhere finds every window for one false-alarm event a gap: here F1 0.6, at a NAB score far below
    never alarming. The sweep's F1-best is the best of the thresholds that score NAB 0 or more instead."""
    series = Series("ours/latency.csv", [0.0] * 100, [float(i) for i in range(100)], [(10, 15), (40, 45), (70, 75)], 0)
    scores = np.full(100, 0.05)
    scores[[12, 42]] = 0.9  # two windows found
    scores[[25, 55, 85]] = 0.95  # three false alarms
    everywhere = figures(evaluate([scores], [series], 0.05), [series], 0.05)
    assert everywhere["f1"] == pytest.approx(0.6) and everywhere["nab_standard"] < 0
    at_nab, at_f1 = sweep([scores], [series])
    assert at_f1["threshold"] == 0.9 and at_f1["f1"] == pytest.approx(0.5) and at_f1["nab_standard"] >= 0.0
    assert at_nab["threshold"] == 0.9


def labelled(name: str, windows: int) -> Series:
    return Series(name, [0.0] * 100, [float(i) for i in range(100)], [(10 * k, 10 * k + 5) for k in range(windows)], 0)


def test_the_shared_subset_keeps_the_readme_rows() -> None:
    subset = json.loads(PUBLISHED_SCORES.read_text(encoding="utf-8"))["readme_subset"]
    rows = published([labelled(name, 1) for name in reversed(subset)])  # the order the files come in does not matter
    assert [(r["detector"], r["nab_standard"], r["f1"]) for r in rows] == [(n, nab, f) for n, nab, _, _, f in PUBLISHED]
    assert {r["source"] for r in rows} == {"README"}


def test_other_nab_files_get_each_detectors_score_from_nabs_per_file_results() -> None:
    rows = {r["detector"]: r for r in published([labelled(n, w) for n, w in HELD_OUT.items()])}
    # worked out by hand from results/<detector>/<detector>_standard_scores.csv: sum the 13 raw scores, then
    # 100 (raw + 28) / (28 sigma(-1) + 28)
    assert {d: round(r["nab_standard"], 1) for d, r in rows.items()} == {"ARTime": 81.5, "Numenta HTM": 59.4, "CAD OSE": 80.7}
    assert all(r["f1"] is None and r["source"] == "NAB per-file scores" for r in rows.values())


def test_one_file_alone_is_normalised_by_its_own_windows() -> None:
    raw = json.loads(PUBLISHED_SCORES.read_text(encoding="utf-8"))["standard_raw"]["CAD OSE"]["realTraffic/speed_7578.csv"]
    (row,) = [r for r in published([labelled("realTraffic/speed_7578.csv", 4)]) if r["detector"] == "CAD OSE"]
    perfect = 4 * (2.0 / (1.0 + math.exp(-5.0)) - 1.0)
    assert row["nab_standard"] == pytest.approx(100.0 * (raw + 4) / (perfect + 4))


def test_a_file_that_is_not_nabs_gets_no_published_row() -> None:
    assert published([labelled("realTraffic/speed_7578.csv", 4), labelled("ours/checkout_latency.csv", 2)]) == []


def write_nab(root: Path, names: list[str]) -> None:
    labels = {}
    for name in names:
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [f"2024-01-01 {i // 60:02d}:{i % 60:02d}:00,{10.0 + (i % 7) + (80.0 if i == 1200 else 0.0)}" for i in range(1440)]
        path.write_text("timestamp,value\n" + "\n".join(rows) + "\n", encoding="utf-8")
        labels[name] = [["2024-01-01 19:50:00.000000", "2024-01-01 20:10:00.000000"]]
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels), encoding="utf-8")


def test_only_scores_the_folders_it_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_nab(tmp_path, ["a/one.csv", "a/two.csv", "b/three.csv"])
    assert main(["--data", str(tmp_path), "--only", "a/", "--json", "--no-throughput"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["files"], result["windows"], result["windows_found"]) == (2, 2, 2)
    assert result["published"] == []  # not NAB's files: nothing to put beside them

    assert main(["--data", str(tmp_path), "--only", "c/,d/", "--no-throughput"]) == 2
    err = capsys.readouterr().err
    assert "no labelled file" in err and "c/, d/" in err


def test_the_throughput_comes_with_the_machines_own_speed_and_a_detectors_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_nab(tmp_path, ["a/one.csv", "a/two.csv"])
    assert main(["--data", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["points_per_s_per_core"] > 0 and 0.0 < result["machine_loop_s"] < 60.0
    assert result["compiled"] is COMPILED
    if COMPILED:  # the pure-Python figure beside it, measured in the same run (bench.anomaly_nab.pure_throughput)
        assert result["pure_points_per_s_per_core"] > 0 and len(result["pure_points_per_s_per_core_range"]) == 2
    # 2880 points: the members' windows (1000) are full, the calibrators' (2000) too; a detector is tens of KiB at least
    assert 20.0 < result["detector_kib"] < 4096.0 and 10.0 < result["detector_pickled_kib"] < 4096.0
    assert main(["--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    line = next(x for x in out if x.startswith("throughput:"))
    assert "points/s per core" in line and "a plain CPython loop of 10 million additions in" in line
    assert ("compiled (setup.py)" if COMPILED else "pure Python") in line
    assert any(x.startswith("beside it, pure Python") and "times as fast" in x for x in out) is COMPILED
    assert any(x.startswith("memory: ") and "KiB a detector" in x for x in out)
    assert main(["--data", str(tmp_path), "--json", "--no-throughput"]) == 0
    assert "machine_loop_s" not in json.loads(capsys.readouterr().out), "no speed measured: no machine figure either"
