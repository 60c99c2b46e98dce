"""The frame backend: the pandas and array paths against a plain-Python reference, cuDF and CuPy against pandas on a GPU."""

from __future__ import annotations

import math
import os
import random
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analytics.frame import ARRAYS, PANDAS, Backend, _cudf_backend, _cupy_backend, rolling_robust_z, select_backend


def reference(values: list[float], window: int) -> list[float]:
    """Plain Python: sorted() of the previous `window` values, the same quantile positions and floors."""
    out = []
    for i, x in enumerate(values):
        if i < window:
            out.append(math.nan)
            continue
        s = sorted(values[i - window : i])
        med = s[window // 2]
        scale = max((s[(3 * window) // 4] - s[window // 4]) / 1.349, 0.02 * (s[-1] - s[0]), 1e-6 * abs(med) + 1e-9)
        out.append(abs(x - med) / scale)
    return out


def frame(seed: int = 3) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for host in ("a", "b"):
        for step in ("login", "pay"):
            level = rng.uniform(10, 500)
            for i in range(120):
                v = level * rng.lognormvariate(0.0, 0.2) + (5 * level if i == 100 else 0.0)
                rows.append((host, step, i, round(v, 3)))
    rng.shuffle(rows)  # series interleaved, as rows arrive from many workflows
    df = pd.DataFrame(rows, columns=["host", "step", "i", "latency"])
    return df.sort_values("i", kind="stable").reset_index(drop=True)


@pytest.mark.parametrize("backend", [PANDAS, ARRAYS], ids=lambda b: b.name)
@pytest.mark.parametrize("window", [1, 4, 25])
def test_cpu_paths_match_plain_python(window: int, backend: Backend) -> None:
    df = frame()
    z = rolling_robust_z(df, ["host", "step"], "latency", window, backend)
    assert z.index.equals(df.index)
    for _, group in df.groupby(["host", "step"]):
        expected = reference(group["latency"].tolist(), window)
        np.testing.assert_allclose(z.loc[group.index].to_numpy(), expected, rtol=1e-12, equal_nan=True)


def test_matches_the_streaming_detectors_window() -> None:
    from analytics.scorers.window import SortedWindow  # here, not above: the GPU check (bench/gpu_check.sh) runs without river

    df = frame()
    z = rolling_robust_z(df, ["host", "step"], "latency", 25)
    group = df[(df.host == "a") & (df.step == "pay")]
    w = SortedWindow(25)
    for idx, x in zip(group.index, group["latency"]):
        if len(w) == 25:
            assert z[idx] == pytest.approx(w.robust_z(x), rel=1e-12)
        w.add(x)


def test_the_spike_stands_out() -> None:
    df = frame()
    z = rolling_robust_z(df, ["host", "step"], "latency", 50)
    for _, group in df.groupby(["host", "step"]):
        gz = z.loc[group.index]
        assert gz[group["i"] == 100].iloc[0] > gz[group["i"] != 100].max()


def test_the_array_path_is_the_groupby_path_exactly_with_gaps_and_short_series() -> None:
    """What the CuPy backend runs, on numpy: missing values, a one-row series and a series shorter than the window."""
    df = frame()
    df.loc[df.sample(frac=0.05, random_state=1).index, "latency"] = np.nan
    df = pd.concat([df, pd.DataFrame({"host": ["c", "d", "d"], "step": ["x", "y", "y"], "i": [0, 0, 1], "latency": [1.0, 2.0, 3.0]})],
                   ignore_index=True)
    for window in (1, 3, 25, 200):
        expected = rolling_robust_z(df, ["host", "step"], "latency", window)
        got = rolling_robust_z(df, ["host", "step"], "latency", window, ARRAYS)
        assert got.index.equals(df.index) and got.name == expected.name
        np.testing.assert_array_equal(got.to_numpy(), expected.to_numpy())  # NaN where pandas has NaN, and bit for bit


def test_backend_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWPROBE_BACKEND", "pandas")
    assert select_backend() is PANDAS
    assert select_backend("arrays") is ARRAYS
    monkeypatch.setenv("FLOWPROBE_BACKEND", "auto")
    assert select_backend().name == ("cudf" if _cudf_backend() else "cupy" if _cupy_backend() else "pandas")
    monkeypatch.setenv("FLOWPROBE_BACKEND", "polars")
    with pytest.raises(ValueError, match="FLOWPROBE_BACKEND must be one of auto, pandas, cudf, cupy, arrays, got 'polars'"):
        select_backend()
    if _cudf_backend() is None:
        with pytest.raises(RuntimeError, match="cuDF is not importable or no CUDA GPU is present"):
            select_backend("cudf")
    if _cupy_backend() is None:
        with pytest.raises(RuntimeError, match="CuPy is not importable or no CUDA GPU is present"):
            select_backend("cupy")


@pytest.mark.gpu
@pytest.mark.skipif(_cudf_backend() is None, reason="needs cuDF and a CUDA GPU (none here; runs where one is present)")
def test_cudf_path_matches_pandas() -> None:
    gpu = select_backend("cudf")
    df = frame()
    expected = rolling_robust_z(df, ["host", "step"], "latency", 25)
    got = gpu.to_pandas(rolling_robust_z(gpu.from_pandas(df), ["host", "step"], "latency", 25))
    np.testing.assert_allclose(got.to_numpy(dtype=float, na_value=np.nan), expected.to_numpy(), rtol=1e-9, equal_nan=True)


@pytest.mark.gpu
@pytest.mark.skipif(_cupy_backend() is None, reason="needs CuPy and a CUDA GPU (none here; runs where one is present)")
def test_cupy_path_matches_pandas() -> None:
    df = frame()
    expected = rolling_robust_z(df, ["host", "step"], "latency", 25)
    got = rolling_robust_z(df, ["host", "step"], "latency", 25, select_backend("cupy"))
    assert isinstance(got, pd.Series) and got.index.equals(df.index)
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-9, equal_nan=True)


def test_the_gpu_check_runs_these_tests_where_pytest_timeout_is_missing() -> None:
    """bench/gpu_check.sh runs on a GPU machine with what is installed there; without pytest-timeout, pyproject's
    `timeout` is an unknown option, which its filterwarnings = error once made an internal error of pytest."""
    root = Path(__file__).resolve().parents[2]
    script = (root / "bench" / "gpu_check.sh").read_text(encoding="utf-8")
    line = next(line for line in script.splitlines() if line.startswith('"$PY" -m pytest'))
    command = shlex.split(line.replace('"$PY"', shlex.quote(sys.executable)))
    done = subprocess.run(
        command, cwd=root, env={**os.environ, "PYTEST_ADDOPTS": "-p no:timeout"}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "deselected" in done.stdout, done.stdout + done.stderr
