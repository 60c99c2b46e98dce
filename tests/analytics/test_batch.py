"""Batch scoring split by series: chunks and a real Dask LocalCluster give exactly the one-process scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics.batch import Z_COLUMN, partition_of, score_frame, score_in_chunks, score_with_dask
from analytics.frame import ARRAYS, PANDAS

KEYS = ["workflow", "env", "signal"]


def history(series: int = 24, points: int = 80, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for s in range(series):
        level = rng.uniform(0.05, 2.0)
        values = level * rng.lognormal(0.0, 0.2, points)
        values[points - 5] *= 8  # one spike per series
        frames.append(pd.DataFrame({
            "workflow": f"wf{s % 6}", "env": f"env{s // 6}", "signal": "latency",
            "t": np.arange(points, dtype=float) * 60.0, "value": values,
        }))
    frame = pd.concat(frames, ignore_index=True)
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)  # series interleaved, as they arrive


def by_row(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values([*KEYS, "t"]).reset_index(drop=True)


def test_partition_of_is_stable_and_keeps_each_series_whole():
    frame = history()
    first, again = partition_of(frame, KEYS, 4), partition_of(frame.iloc[::-1].reset_index(drop=True), KEYS, 4)[::-1]
    assert (first == again).all()  # the same key, the same partition, whatever the row order
    per_series = pd.Series(first).groupby([frame[k] for k in KEYS]).nunique()
    assert (per_series == 1).all()
    assert set(first) == {0, 1, 2, 3}  # 24 series spread over every partition
    with pytest.raises(ValueError, match="at least 1"):
        partition_of(frame, KEYS, 0)


@pytest.mark.parametrize("backend", [PANDAS, ARRAYS], ids=lambda b: b.name)
def test_chunks_give_the_one_process_scores(backend):
    frame = history()
    whole = by_row(score_frame(frame, KEYS, "value", "t", window=20))
    chunked = by_row(score_in_chunks(frame, KEYS, "value", "t", 20, backend=backend, chunk_rows=300))
    assert len(chunked) == len(frame)
    np.testing.assert_allclose(chunked[Z_COLUMN], whole[Z_COLUMN], equal_nan=True)
    spikes = whole[whole["t"] == 75 * 60.0]
    assert (spikes[Z_COLUMN] > 5).all()  # the planted spikes stand out


@pytest.mark.timeout(120)
def test_a_two_worker_local_cluster_gives_the_one_process_scores():
    distributed = pytest.importorskip("distributed")
    frame = history()
    expected = by_row(score_frame(frame, KEYS, "value", "t", window=20))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1", protocol="tcp") as cluster, distributed.Client(cluster) as client:
        lazy = score_with_dask(frame, KEYS, "value", "t", 20, partitions=4)
        with distributed.get_task_stream(client) as stream:
            result = client.compute(lazy).result()
    assert len({task["worker"] for task in stream.data}) == 2  # the work was shared by both workers
    got = by_row(result)
    assert len(got) == len(frame)
    np.testing.assert_allclose(got[Z_COLUMN], expected[Z_COLUMN], equal_nan=True)
