"""The dataframe backend for bulk computation: pandas always, cuDF or CuPy when one is importable and a GPU is present.

This is the one module that may import cuDF or CuPy (STYLE.md, habit 7). The
choice is ``FLOWPROBE_BACKEND``: ``pandas``, ``cudf`` or ``cupy`` (an error if
it cannot be had) or ``auto`` (the default: cuDF where it works, else CuPy,
else pandas).

Bulk functions take a frame of either kind and run the same code on both: frame
operations that pandas and cuDF share (``groupby(...).shift``, a frame built
from a dict of columns), then array operations on the frame's values through
``xp`` (numpy for pandas, CuPy for cuDF). Only the conversion to an array
differs, because cuDF marks missing values as nulls rather than NaN.

The ``cupy`` backend is for a GPU where cuDF cannot be installed (its wheels
are hundreds of megabytes; CuPy often comes with the CUDA image): frames stay
pandas on the host, and the group-wise statistics run on the device as array
operations only (``_array_lags``: rows sorted by series with a stable sort,
each row's place in its series, the lags masked where the series has not yet
begun). The same array code runs on numpy as the ``arrays`` backend, which is
how it is tested on a machine without a GPU (tests/analytics/test_frame.py).

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

__all__ = ["ARRAYS", "BACKENDS", "Backend", "backend_of", "rolling_robust_z", "select_backend"]

BACKENDS = ("auto", "pandas", "cudf", "cupy", "arrays")
IQR_TO_SIGMA = 1.349  # as analytics.scorers.window: the frame path and the detectors give the same z


@dataclass(frozen=True)
class Backend:
    """A dataframe library (`lib`: pandas or cudf) and its array module (`xp`: numpy or cupy).

    `arrays`: the group-wise work is done on arrays (`_array_lags`) rather than
    with the frame library's groupby: the CuPy backend, and its numpy twin.
    """

    name: str
    lib: ModuleType
    xp: ModuleType
    arrays: bool = False

    def from_pandas(self, frame: pandas.DataFrame) -> Any:
        return frame if self.lib is pandas else self.lib.from_pandas(frame)

    def to_pandas(self, frame: Any) -> Any:
        return frame if self.lib is pandas else frame.to_pandas()

    def to_array(self, frame: Any) -> Any:
        """float64 values, missing as NaN, in `xp`: from pandas (copied to the device for CuPy) or from cuDF."""
        if self.lib is pandas:
            return self.xp.asarray(frame.to_numpy(dtype="float64", na_value=np.nan))
        return frame.astype("float64").to_cupy(na_value=np.nan)

    def to_host(self, array: Any) -> np.ndarray:
        return array if self.xp is np else self.xp.asnumpy(array)


PANDAS = Backend("pandas", pandas, np)
ARRAYS = Backend("arrays", pandas, np, arrays=True)  # the CuPy backend's code on numpy: what tests it without a GPU
_CPU = {"pandas": PANDAS, "arrays": ARRAYS}


def _cupy() -> ModuleType | None:
    """CuPy if it imports and CUDA sees a device; None otherwise (no GPU here is normal)."""
    try:
        import cupy  # type: ignore[import-not-found]

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None
    except Exception:  # ImportError, or a CUDA runtime error without a driver or device
        return None
    return cupy


def _cudf_backend() -> Backend | None:
    """cuDF and CuPy if both import and CUDA sees a device; None otherwise."""
    cupy = _cupy()
    if cupy is None:
        return None
    try:
        import cudf  # type: ignore[import-not-found]
    except Exception:
        return None
    return Backend("cudf", cudf, cupy)


def _cupy_backend() -> Backend | None:
    """Pandas frames with the group-wise work on a GPU through CuPy, where cuDF is not installed."""
    cupy = _cupy()
    return None if cupy is None else Backend("cupy", pandas, cupy, arrays=True)


def select_backend(name: str | None = None) -> Backend:
    """The backend named (default: ``FLOWPROBE_BACKEND``, else ``auto``)."""
    name = (name or os.environ.get("FLOWPROBE_BACKEND") or "auto").strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"FLOWPROBE_BACKEND must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name in _CPU:
        return _CPU[name]
    if name == "cupy":
        gpu = _cupy_backend()
        if gpu is None:
            raise RuntimeError("FLOWPROBE_BACKEND=cupy, but CuPy is not importable or no CUDA GPU is present")
        return gpu
    gpu = _cudf_backend()
    if gpu is None and name == "cudf":
        raise RuntimeError("FLOWPROBE_BACKEND=cudf, but cuDF is not importable or no CUDA GPU is present")
    return gpu or _cupy_backend() or PANDAS


def backend_of(frame: Any) -> Backend:
    """The backend a frame belongs to."""
    if isinstance(frame, (pandas.DataFrame, pandas.Series)):
        return PANDAS
    gpu = _cudf_backend()
    if gpu is None:
        raise TypeError(f"not a pandas frame, and cuDF is not available: {type(frame).__name__}")
    return gpu


def rolling_robust_z(frame: Any, key_cols: list[str], value_col: str, window: int, backend: Backend | None = None) -> Any:
    """|x - median| / robust sigma of each row against the previous `window` rows of its series.

    Series are the groups of `key_cols`; rows are taken in frame order within a
    series (sort by time first). Causal, like the detectors: a row's statistics
    exclude the row. Rows without `window` earlier rows in their series get NaN.
    The median, quartiles and scale floors are those of
    `analytics.scorers.window.SortedWindow.robust_z`, so the numbers match the
    streaming detectors. Memory is rows x window floats. `backend` defaults to
    the frame's own; a pandas frame can be given the ``cupy`` or ``arrays`` one.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    backend = backend or backend_of(frame)
    if backend.arrays:
        order, past, x = _array_lags(frame, key_cols, value_col, window, backend)
        z = backend.xp.empty_like(x)
        z[order] = _robust_z(backend.xp, past, x[order], window)  # back to frame order
        return pandas.Series(backend.to_host(z), index=frame.index, name=f"{value_col}_robust_z")
    values = frame.groupby(list(key_cols), sort=False)[value_col]
    lagged = backend.lib.DataFrame({f"lag{k}": values.shift(k) for k in range(1, window + 1)})
    z = _robust_z(backend.xp, backend.to_array(lagged), backend.to_array(frame[value_col]), window)
    return backend.lib.Series(z, index=frame.index, name=f"{value_col}_robust_z")


def _array_lags(frame: pandas.DataFrame, key_cols: list[str], value_col: str, window: int, backend: Backend) -> tuple[Any, Any, Any]:
    """(order, past, x): the rows sorted by series (frame order within one), their `window` previous values, all values.

    `past[i, k-1]` is the value k rows before row `order[i]` in its series, NaN
    where the series has fewer earlier rows: what ``groupby(...).shift(k)``
    gives, in arrays only. The series are numbered on the host (pandas); the
    rest runs in `backend.xp`.
    """
    xp = backend.xp
    codes = xp.asarray(frame.groupby(list(key_cols), sort=False).ngroup().to_numpy(dtype=np.int64))
    x = backend.to_array(frame[value_col])
    order = xp.argsort(codes, kind="stable")
    series, values = codes[order], x[order]
    place = xp.arange(len(values)) - xp.searchsorted(series, series, side="left")  # rows of its series before it
    # One contiguous row per lag (coalesced writes on a GPU, cache-friendly on a CPU); rows x lags is its transpose.
    lags = xp.empty((window, len(values)))
    for k in range(1, window + 1):
        lag = lags[k - 1]
        lag[:k] = xp.nan
        lag[k:] = values[:-k]
        lag[place < k] = xp.nan  # k rows back is another series: this row has fewer than k before it
    return order, lags.T, x


def _robust_z(xp: ModuleType, past: Any, x: Any, window: int) -> Any:
    """The z of each x against its row of `past` (NaN where the row is not full): one code for numpy and CuPy."""
    full = ~xp.isnan(past).any(axis=1)
    ordered = xp.sort(past, axis=1)
    med = ordered[:, window >> 1]
    scale = (ordered[:, (3 * window) >> 2] - ordered[:, window >> 2]) / IQR_TO_SIGMA
    scale = xp.maximum(scale, 0.02 * (ordered[:, -1] - ordered[:, 0]))
    scale = xp.maximum(scale, 1e-6 * xp.abs(med) + 1e-9)
    with np.errstate(invalid="ignore"):
        return xp.where(full, xp.abs(x - med) / scale, xp.nan)
