"""Batch scoring partitioned by series: in one process, or across a Dask cluster.

The streaming worker (analytics/worker.py) scores each point as it arrives. A
backfill or a very large installation scores history in bulk instead: rolling
robust z-scores of every point against the previous `window` points of its
series (`analytics.frame.rolling_robust_z`), on pandas, cuDF or CuPy.

Every statistic here is per series, so the work splits by series with no
exchange between parts: a series is assigned to a partition by a stable hash
of its key (crc32, the same on every machine and run), each partition is
scored on its own, and the results are put back together. The same split is
the unit of work of a Dask cluster (`score_with_dask`): the frame is shuffled
on the partition number so that each series lies wholly in one Dask
partition, and each worker runs the single-process code on its part. With
dask-cudf the partitions are cuDF frames and the same function runs on the
workers' GPUs. DEPLOYMENT.md shows how to run it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas

from analytics.frame import Backend, backend_of, rolling_robust_z

__all__ = ["partition_of", "score_frame", "score_in_chunks", "score_with_dask"]

Z_COLUMN = "robust_z"


def partition_of(frame: pandas.DataFrame, key_cols: Sequence[str], partitions: int) -> np.ndarray:
    """The partition (0..partitions-1) of each row's series: crc32 of the key, stable across runs and machines.

    The rows are grouped by hash first (pandas' own), so crc32 runs once per series, not once per row.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    key_cols = list(key_cols)
    codes = frame.groupby(key_cols, sort=False).ngroup().to_numpy()  # numbered in order of first appearance
    firsts = frame[key_cols].drop_duplicates().astype(str).to_numpy()  # the same order
    hashes = np.fromiter((zlib.crc32("\x00".join(row).encode()) for row in firsts), dtype=np.uint64, count=len(firsts))
    return (hashes % partitions).astype(np.int64)[codes]


def score_frame(frame: Any, key_cols: Sequence[str], value_col: str, time_col: str, window: int, backend: Backend | None = None) -> Any:
    """The frame sorted by series and time, with a `robust_z` column. One partition's work; pandas or cuDF (or CuPy)."""
    ordered = frame.sort_values([*key_cols, time_col], kind="stable") if len(frame) else frame
    out = ordered.copy()
    out[Z_COLUMN] = rolling_robust_z(ordered, list(key_cols), value_col, window, backend) if len(ordered) else []
    return out


def _chunks(frame: pandas.DataFrame, key_cols: Sequence[str], rows: int) -> Iterator[pandas.DataFrame]:
    parts = max(1, -(-len(frame) // rows))
    if parts == 1:
        yield frame
        return
    partition = partition_of(frame, key_cols, parts)
    for part in range(parts):
        chunk = frame[partition == part]
        if len(chunk):
            yield chunk


def score_in_chunks(frame: pandas.DataFrame, key_cols: Sequence[str], value_col: str, time_col: str, window: int,
                    *, backend: Backend, chunk_rows: int = 2_000_000) -> pandas.DataFrame:
    """Score a pandas frame part by part on `backend`, so memory stays about chunk_rows x window floats.

    Each part is a set of whole series (split by `partition_of`), moved to the
    backend (a GPU for cuDF; for CuPy only its arrays go), scored, and brought
    back as pandas.
    """
    scored = [backend.to_pandas(score_frame(backend.from_pandas(chunk), key_cols, value_col, time_col, window, backend))
              for chunk in _chunks(frame, key_cols, chunk_rows)]
    return pandas.concat(scored) if scored else score_frame(frame, key_cols, value_col, time_col, window)


def score_with_dask(frame: Any, key_cols: Sequence[str], value_col: str, time_col: str, window: int, *, partitions: int) -> Any:
    """A lazy Dask frame: `frame` (a Dask or pandas frame) split by series into `partitions`, each scored by `score_frame`.

    Call ``.compute()`` (or ``client.compute``) on the result to run it on the
    cluster. A series never spans two partitions, so the scores are exactly
    those of one process.
    """
    import dask.dataframe as dd

    if isinstance(frame, pandas.DataFrame):
        frame = dd.from_pandas(frame, npartitions=partitions)
    key_cols = list(key_cols)

    def with_partition(part: Any) -> Any:
        part = part.copy()
        part["_partition"] = partition_of(backend_of(part).to_pandas(part), key_cols, partitions) if len(part) else []
        return part

    meta = frame._meta.assign(_partition=np.int64(0))
    keyed = frame.map_partitions(with_partition, meta=meta)
    # One Dask partition per hash value, so every row of a series meets in the same partition.
    shuffled = keyed.shuffle("_partition", npartitions=partitions)
    scored_meta = meta.assign(**{Z_COLUMN: np.float64(0)}).drop(columns="_partition")
    return shuffled.map_partitions(
        lambda part: score_frame(part.drop(columns="_partition"), key_cols, value_col, time_col, window), meta=scored_meta
    )
