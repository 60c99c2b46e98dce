"""bench/anomaly_search.py: the random search starts at the shipped ensemble and measures each draw as the NAB bench does."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from analytics.scorers import DETECTORS
from bench.anomaly_search import SETTINGS, configurations, detector, main, shipped
from tests.analytics.test_nab_bench import write_nab


def scores(make, n: int = 1500) -> list[float]:
    rng = random.Random(3)
    d = make()
    out = []
    for i in range(n):
        x = 50.0 + rng.gauss(0.0, 2.0) + (30.0 if i in (900, 1300) else 0.0) + (10.0 if i >= 1100 else 0.0)
        out.append(d.score_one(x, 60.0 * i))
        d.learn_one(x, 60.0 * i)
    return out


def test_the_shipped_configuration_is_the_shipped_detector() -> None:
    assert scores(lambda: detector(shipped())) == scores(DETECTORS["ensemble"])
    changed = dict(shipped(), q_step=0.995)  # one setting off: the scores differ, so the mapping is not a no-op
    assert scores(lambda: detector(changed)) != scores(DETECTORS["ensemble"])


def test_the_draws_start_at_the_shipped_one_and_stay_in_the_grid() -> None:
    drawn = configurations(5, 30)
    assert drawn[0] == shipped() and len(drawn) == 31
    assert len({tuple(sorted(c.items())) for c in drawn}) == 31
    assert all(c[name] in SETTINGS[name] for c in drawn[1:] for name in c)
    assert configurations(5, 30) == drawn  # seeded
    assert configurations(6, 30) != drawn


def test_it_measures_every_draw_on_nab_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_nab(tmp_path, ["a/one.csv", "b/two.csv"])
    assert main(["--data", str(tmp_path), "--configs", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["files"], result["configs"]) == (2, 3)
    best = result["shipped"]["at_best_nab"]
    assert (best["windows"], best["windows_found"]) == (2, 2)  # each file's one spike, inside its window
    assert result["shipped"]["config"] == shipped()

    assert main(["--data", str(tmp_path), "--configs", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 configurations (seed 1) on 2 NAB files") and "(shipped)" in out


def test_no_data_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--data", str(tmp_path)]) == 2
    assert "no NAB data" in capsys.readouterr().err
