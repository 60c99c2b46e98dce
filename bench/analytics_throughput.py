"""Bulk analytics throughput: rolling robust z-scores grouped by series, pandas against cuDF and CuPy.

    .venv/bin/python -m bench.analytics_throughput [--points 1M,10M] [--backends pandas,arrays,cudf,cupy] [--json]

For each size it builds a history of `--series` series (lognormal latencies,
interleaved as they arrive from many workflows) and scores every point
against the previous `--window` points of its series with
`analytics.batch.score_in_chunks`: the same function, split by series into
parts of `--chunk-rows`, on each backend. It prints points per second (the
median of `--repeat` runs, with min and max) and, for each backend beside
pandas, whether it agrees with pandas within float tolerance and the speed-up.

The backends (analytics/frame.py): `pandas` (groupby on the frame), `arrays`
(the CuPy backend's array code, on numpy), `cudf` and `cupy` (only where they
import and see a GPU; on a machine without one their rows say so). Sizes
accept K and M suffixes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import numpy as np
import pandas

from analytics.batch import Z_COLUMN, score_in_chunks
from analytics.frame import BACKENDS, select_backend

KEYS = ["series"]


def parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def history(points: int, series: int, seed: int = 1) -> pandas.DataFrame:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, series, points, dtype=np.int32)  # interleaved, as rows come in
    level = rng.uniform(0.05, 2.0, series)[ids]
    return pandas.DataFrame({"series": ids, "t": np.arange(points, dtype=np.float64), "value": level * rng.lognormal(0.0, 0.25, points)})


def measure(frame: pandas.DataFrame, backend: Any, window: int, chunk_rows: int, repeat: int) -> tuple[list[float], pandas.Series]:
    times, scored = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        scored = score_in_chunks(frame, KEYS, "value", "t", window, backend=backend, chunk_rows=chunk_rows)
        times.append(time.perf_counter() - started)
    assert scored is not None
    return times, scored.sort_values(["series", "t"])[Z_COLUMN].reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default="1M,10M", help="comma-separated sizes, e.g. 1M,10M,50M")
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--window", type=int, default=30)
    parser.add_argument("--chunk-rows", type=parse_size, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backends", default="pandas,arrays,cudf,cupy")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    for size in (parse_size(s) for s in args.points.split(",")):
        frame = history(size, args.series)
        baseline: tuple[float, pandas.Series] | None = None
        for name in args.backends.split(","):
            if name not in BACKENDS or name == "auto":
                parser.error(f"unknown backend {name!r}; known: {', '.join(b for b in BACKENDS if b != 'auto')}")
            try:
                backend = select_backend(name)
            except RuntimeError:
                rows.append({"points": size, "backend": name, "error": f"no CUDA GPU or {name} here"})
                continue
            times, scored = measure(frame, backend, args.window, args.chunk_rows, args.repeat)
            row = {"points": size, "backend": name, "seconds_median": statistics.median(times), "seconds_min": min(times),
                   "seconds_max": max(times), "points_per_second": size / statistics.median(times)}
            if name == "pandas":
                baseline = (row["seconds_median"], scored)
            elif baseline is not None:
                row["matches_pandas"] = bool(np.allclose(baseline[1].to_numpy(), scored.to_numpy(), rtol=1e-9, atol=1e-9, equal_nan=True))
                row["speedup"] = baseline[0] / row["seconds_median"]
            rows.append(row)
    report = {"window": args.window, "series": args.series, "chunk_rows": args.chunk_rows, "repeat": args.repeat, "rows": rows}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"rolling robust z, window {args.window}, {args.series} series, chunks of {args.chunk_rows} rows, median of {args.repeat}")
    print(f"{'points':>10}  {'backend':<7}  {'seconds (min-max)':<22}  {'points/s':>12}  notes")
    for row in rows:
        if "error" in row:
            print(f"{row['points']:>10,}  {row['backend']:<7}  {'-':<22}  {'-':>12}  {row['error']}")
            continue
        spread = f"{row['seconds_median']:.2f} ({row['seconds_min']:.2f}-{row['seconds_max']:.2f})"
        notes = f"{row['speedup']:.1f}x pandas, same numbers: {row['matches_pandas']}" if "speedup" in row else ""
        print(f"{row['points']:>10,}  {row['backend']:<7}  {spread:<22}  {row['points_per_second']:>12,.0f}  {notes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
