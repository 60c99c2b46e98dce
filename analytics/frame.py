"""The dataframe backend for bulk computation: pandas always, cuDF when it is importable and a GPU is present.

This is the one module that may import cuDF (STYLE.md, habit 7). The choice is
``FLOWPROBE_BACKEND``: ``pandas``, ``cudf`` (an error if it cannot be had) or
``auto`` (the default: cuDF where it works, else pandas).

Bulk functions take a frame of either kind and run the same code on both: frame
operations that pandas and cuDF share (``groupby(...).shift``, a frame built
from a dict of columns), then array operations on the frame's values through
``xp`` (numpy for pandas, CuPy for cuDF). Only the conversion to an array
differs, because cuDF marks missing values as nulls rather than NaN.

>>> import pandas as pd
>>> backend = select_backend("pandas")
>>> frame = pd.DataFrame({"series": ["a"] * 6, "value": [1.0, 2.0, 3.0, 2.0, 1.0, 9.0]})
>>> rolling_robust_z(backend.from_pandas(frame), ["series"], "value", window=4).round(3).tolist()
[nan, nan, nan, nan, 1.349, 9.443]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pandas

__all__ = ["BACKENDS", "Backend", "backend_of", "rolling_robust_z", "select_backend"]

BACKENDS = ("auto", "pandas", "cudf")
IQR_TO_SIGMA = 1.349  # as analytics.scorers.window: the frame path and the detectors give the same z


@dataclass(frozen=True)
class Backend:
    """A dataframe library (`lib`: pandas or cudf) and its array module (`xp`: numpy or cupy)."""

    name: str
    lib: ModuleType
    xp: ModuleType

    def from_pandas(self, frame: pandas.DataFrame) -> Any:
        return frame if self.name == "pandas" else self.lib.from_pandas(frame)

    def to_pandas(self, frame: Any) -> Any:
        return frame if self.name == "pandas" else frame.to_pandas()

    def to_array(self, frame: Any) -> Any:
        """float64 values, missing as NaN: numpy for pandas, CuPy for cuDF (the one place they differ)."""
        if self.name == "pandas":
            return frame.to_numpy(dtype="float64", na_value=np.nan)
        return frame.astype("float64").to_cupy(na_value=np.nan)


PANDAS = Backend("pandas", pandas, np)


def _cudf_backend() -> Backend | None:
    """cuDF and CuPy if both import and CUDA sees a device; None otherwise (no GPU here is normal)."""
    try:
        import cudf  # type: ignore[import-not-found]
        import cupy  # type: ignore[import-not-found]

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # ImportError, or a CUDA runtime error without a driver or device
        return None
    return Backend("cudf", cudf, cupy)


def select_backend(name: str | None = None) -> Backend:
    """The backend named (default: ``FLOWPROBE_BACKEND``, else ``auto``)."""
    name = (name or os.environ.get("FLOWPROBE_BACKEND") or "auto").strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"FLOWPROBE_BACKEND must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "pandas":
        return PANDAS
    gpu = _cudf_backend()
    if gpu is None and name == "cudf":
        raise RuntimeError("FLOWPROBE_BACKEND=cudf, but cuDF is not importable or no CUDA GPU is present")
    return gpu or PANDAS


def backend_of(frame: Any) -> Backend:
    """The backend a frame belongs to."""
    if isinstance(frame, (pandas.DataFrame, pandas.Series)):
        return PANDAS
    gpu = _cudf_backend()
    if gpu is None:
        raise TypeError(f"not a pandas frame, and cuDF is not available: {type(frame).__name__}")
    return gpu


def rolling_robust_z(frame: Any, key_cols: list[str], value_col: str, window: int) -> Any:
    """|x - median| / robust sigma of each row against the previous `window` rows of its series.

    Series are the groups of `key_cols`; rows are taken in frame order within a
    series (sort by time first). Causal, like the detectors: a row's statistics
    exclude the row. Rows without `window` earlier rows in their series get NaN.
    The median, quartiles and scale floors are those of
    `analytics.scorers.window.SortedWindow.robust_z`, so the numbers match the
    streaming detectors. Memory is rows x window floats.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    backend = backend_of(frame)
    xp = backend.xp
    values = frame.groupby(list(key_cols), sort=False)[value_col]
    lagged = backend.lib.DataFrame({f"lag{k}": values.shift(k) for k in range(1, window + 1)})
    past = backend.to_array(lagged)
    full = ~xp.isnan(past).any(axis=1)
    ordered = xp.sort(past, axis=1)
    med = ordered[:, window >> 1]
    scale = (ordered[:, (3 * window) >> 2] - ordered[:, window >> 2]) / IQR_TO_SIGMA
    scale = xp.maximum(scale, 0.02 * (ordered[:, -1] - ordered[:, 0]))
    scale = xp.maximum(scale, 1e-6 * xp.abs(med) + 1e-9)
    x = backend.to_array(frame[value_col])
    with np.errstate(invalid="ignore"):
        z = xp.where(full, xp.abs(x - med) / scale, xp.nan)
    return backend.lib.Series(z, index=frame.index, name=f"{value_col}_robust_z")
