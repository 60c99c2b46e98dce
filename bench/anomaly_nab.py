"""The anomaly detectors on the NAB subset: window P/R/F1, latency, NAB standard score, throughput.

Run from the repository root::

    .venv/bin/python -m bench.anomaly_nab                       # table, the shipped detector
    .venv/bin/python -m bench.anomaly_nab --detector robust     # another registered detector
    .venv/bin/python -m bench.anomaly_nab --json                # one JSON object
    .venv/bin/python -m bench.anomaly_nab --data ~/NAB --only realTraffic/,realAdExchange/   # NAB files it was not tuned on

The data and the scoring rules are those of ``shared/benchmarks/nab/README.md``
(default ``<repo>/../shared/benchmarks/nab``, or ``--data DIR``, or
``FLOWPROBE_NAB_DIR``), followed exactly:

- every file is scored causally with a fresh detector (``s = score_one(x, t)``
  then ``learn_one(x, t)``), one configuration for all files;
- the first ``min(floor(0.15 * rows), 750)`` rows of a file never alarm;
- one threshold for the whole set is swept; the best NAB standard score is
  reported with the window precision, recall, F1 and median latency at that
  same threshold. The threshold that maximises window F1 is shown as well
  (it is a different operating point, and labelled so). A detector that acts
  on its own alarms (the shipped ensemble's echo, ``analytics.scorers.attune``)
  is scored once at the shipped threshold for the sweep, then again attuned to
  the best threshold, as a worker run with that ``--threshold`` would be; the
  figures of the first row are those of that second scoring;
- window metrics: a window with at least one alarm is found; consecutive
  alarm rows outside every window merge into one false-positive event;
  latency is the rows from a window's start to its first alarm;
- NAB standard: the earliest alarm in a window earns sigma(y) with
  sigma(y) = 2/(1+exp(5y)) - 1 and y = -(end - i)/(end - start) (-1 at the
  left edge, 0 at the right edge); a missed window costs 1; every alarm row
  outside the windows costs 0.11 * sigma(y), y measured in widths of the
  previous window past its end (the full 0.11 before any window); the raw sum
  over the set is normalised as 100 (raw - null) / (perfect - null).

Beside it, the published detectors on the same files: on the shared subset,
the rows of its README (window P/R/F1 included); on any other set of NAB
files (``--data`` a NAB checkout, ``--only`` some of its folders), each
one's NAB standard score from NAB's own per-file results
(``bench/nab_published.json``: NAB's scorer, each detector at its corpus-wide
threshold), summed over exactly the files scored. On the shared subset that
way reads 0.5-2.2 points higher than the README's rows (ARTime 67.8, not
67.3; Numenta HTM 67.3, not 66.5; CAD OSE 62.2, not 60.0): the two scorers
differ in detail, so compare within a point or two.

Throughput is CPU time of this one process (one core: the detectors are
single-threaded) for score_one + learn_one over the first files of the set,
the median of three repetitions, as the detectors run here: compiled
(setup.py builds them with Cython; ``compiled`` in the JSON) or as their .py
files. When compiled, the same is measured on the .py files in a child
process (``FLOWPROBE_PURE_PYTHON=1``; ``pure_points_per_s_per_core``), so the
two figures come from the same machine in the same run. Beside it, the machine's own speed:
the CPU seconds of a plain CPython loop of 10 million additions, timed after
each repetition (``machine_loop_s``, their median), since the same detector
measures twice as many points/s on one machine as on another. Then memory:
what one detector holds once it has learned the same 60,000 points
(``detector_kib``, traced by ``tracemalloc``: what the worker needs a series)
and its pickle (``detector_pickled_kib``: what it saves a series).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "nab"
TP_WEIGHT, FN_WEIGHT, FP_WEIGHT = 1.0, 1.0, 0.11

# From shared/benchmarks/nab/README.md (NAB's published per-file results at NAB's own thresholds).
PUBLISHED: list[tuple[str, float, float | None, float | None, float | None]] = [
    ("ARTime", 67.3, 0.29, 0.86, 0.43),
    ("Numenta HTM", 66.5, 0.39, 0.80, 0.52),
    ("CAD OSE", 60.0, 0.50, 0.71, 0.59),
    ("KNN CAD", 54.7, None, None, None),
    ("Random Cut Forest", 51.9, 0.24, 0.71, 0.36),
    ("Windowed Gaussian", 24.3, 0.13, 0.47, 0.20),
    ("random", 27.2, 0.10, 0.43, 0.17),
]
# NAB's per-file standard scores of ARTime, Numenta HTM and CAD OSE, for any other set of NAB files (`published`).
PUBLISHED_SCORES = Path(__file__).with_name("nab_published.json")


@dataclass(frozen=True)
class Series:
    """One NAB file: values, unix times, anomaly windows as inclusive row ranges, probation rows."""

    name: str
    values: list[float]
    times: list[float]
    windows: list[tuple[int, int]]
    probation: int


def data_dir(explicit: str | None = None) -> Path:
    return Path(explicit or os.environ.get("FLOWPROBE_NAB_DIR") or DEFAULT_DATA)


def labelled_dir(explicit: str | None = None) -> Path | None:
    """`data_dir`, or None after saying on stderr that it holds no NAB labels."""
    root = data_dir(explicit)
    if not (root / "labels" / "combined_windows.json").is_file():
        print(f"no NAB data at {root} (use --data DIR or FLOWPROBE_NAB_DIR)", file=sys.stderr)
        return None
    return root


def _unix(stamp: str) -> float:
    return datetime.fromisoformat(stamp).replace(tzinfo=timezone.utc).timestamp()


def load_series(root: Path, name: str, windows: list[list[str]]) -> Series:
    values: list[float] = []
    stamps: list[str] = []
    with open(root / "data" / name, encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            stamp, _, value = line.rstrip("\n").partition(",")
            stamps.append(stamp)
            values.append(float(value))
    row = {stamp: i for i, stamp in enumerate(stamps)}
    ranges = [(row[a.removesuffix(".000000")], row[b.removesuffix(".000000")]) for a, b in windows]
    return Series(name, values, [_unix(s) for s in stamps], ranges, min(math.floor(0.15 * len(values)), 750))


def load_nab(root: Path, only: list[str] | None = None) -> list[Series]:
    """Every labelled file under `root`, or those whose path (as the labels name it) starts with one of `only`."""
    labels = json.loads((root / "labels" / "combined_windows.json").read_text(encoding="utf-8"))
    names = [name for name in sorted(labels) if not only or name.startswith(tuple(only))]
    return [load_series(root, name, labels[name]) for name in names]


def published(data: list[Series]) -> list[dict[str, Any]]:
    """The published detectors on exactly these files: the README's rows on its subset, else NAB's per-file scores.

    A detector whose per-file table lacks one of the files (not a NAB file) has no row.
    """
    table = json.loads(PUBLISHED_SCORES.read_text(encoding="utf-8"))
    names = sorted(s.name for s in data)
    if names == table["readme_subset"]:
        return [
            {"detector": n, "nab_standard": nab, "precision": p, "recall": r, "f1": f, "source": "README"}
            for n, nab, p, r, f in PUBLISHED
        ]
    null, perfect = nab_bounds(data)
    rows = []
    for detector, per_file in table["standard_raw"].items():
        if names and all(n in per_file for n in names):
            raw = sum(per_file[n] for n in names)
            nab = 100.0 * (raw - null) / (perfect - null)
            rows.append({"detector": detector, "nab_standard": nab, "precision": None, "recall": None, "f1": None, "source": "NAB per-file scores"})
    return rows


def score_series(factory: Any, series: Series) -> np.ndarray:
    detector = factory()
    score, learn = detector.score_one, detector.learn_one
    out = []
    append = out.append
    for x, t in zip(series.values, series.times):
        append(score(x, t))
        learn(x, t)
    return np.asarray(out, dtype=float)


def sigma(y: np.ndarray | float) -> np.ndarray | float:
    return 2.0 / (1.0 + np.exp(5.0 * np.asarray(y, dtype=float))) - 1.0


@dataclass
class Counts:
    """Sums over files at one threshold; the figures are derived from them."""

    windows: int = 0
    found: int = 0
    fp_events: int = 0
    raw: float = 0.0
    latencies: list[int] | None = None

    def add(self, other: Counts) -> None:
        self.windows += other.windows
        self.found += other.found
        self.fp_events += other.fp_events
        self.raw += other.raw
        if other.latencies is not None:
            self.latencies = (self.latencies or []) + other.latencies


def evaluate_file(scores: np.ndarray, series: Series, threshold: float, latencies: bool = False) -> Counts:
    """Window TP/FP events and the raw NAB standard score of one file at one threshold."""
    alarms = np.flatnonzero(scores[series.probation :] >= threshold) + series.probation
    starts = np.array([a for a, _ in series.windows], dtype=np.int64)
    ends = np.array([b for _, b in series.windows], dtype=np.int64)
    counts = Counts(windows=len(series.windows), latencies=[] if latencies else None)
    raw = -FN_WEIGHT * len(starts)
    inside = np.zeros(len(alarms), dtype=bool)
    if len(starts):
        first = np.searchsorted(alarms, starts)
        ok = first < len(alarms)
        hit = np.zeros(len(starts), dtype=bool)
        hit[ok] = alarms[first[ok]] <= ends[ok]
        counts.found = int(hit.sum())
        i = alarms[first[hit]]
        width = np.maximum(ends[hit] - starts[hit], 1)
        raw += float(np.sum(TP_WEIGHT * sigma(-(ends[hit] - i) / width) + FN_WEIGHT))
        if latencies:
            counts.latencies = (i - starts[hit]).tolist()
        pos = np.searchsorted(starts, alarms, side="right") - 1
        has_prev = pos >= 0
        inside[has_prev] = alarms[has_prev] <= ends[pos[has_prev]]
    out = alarms[~inside]
    if len(out):
        pos = np.searchsorted(starts, out, side="right") - 1 if len(starts) else np.full(len(out), -1)
        cost = np.full(len(out), -FP_WEIGHT)
        after = pos >= 0
        if after.any():
            p = pos[after]
            y = (out[after] - ends[p]) / np.maximum(ends[p] - starts[p], 1)
            cost[after] = FP_WEIGHT * sigma(y)
        raw += float(cost.sum())
        # a run of consecutive outside alarm rows is one event
        counts.fp_events = int(1 + np.count_nonzero(np.diff(out) != 1))
    counts.raw = raw
    return counts


def evaluate(all_scores: list[np.ndarray], data: list[Series], threshold: float, latencies: bool = False) -> Counts:
    total = Counts(latencies=[] if latencies else None)
    for scores, series in zip(all_scores, data):
        total.add(evaluate_file(scores, series, threshold, latencies))
    return total


def nab_bounds(data: list[Series]) -> tuple[float, float]:
    n = sum(len(s.windows) for s in data)
    return -FN_WEIGHT * n, float(TP_WEIGHT * sigma(-1.0)) * n


def figures(counts: Counts, data: list[Series], threshold: float) -> dict[str, Any]:
    null, perfect = nab_bounds(data)
    precision = counts.found / (counts.found + counts.fp_events) if counts.found + counts.fp_events else 0.0
    recall = counts.found / counts.windows if counts.windows else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    lat = counts.latencies or []
    return {
        "threshold": threshold,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "latency_rows": float(statistics.median(lat)) if lat else None,
        "nab_standard": 100.0 * (counts.raw - null) / (perfect - null),
        "windows": counts.windows,
        "windows_found": counts.found,
        "fp_events": counts.fp_events,
    }


def candidate_thresholds(all_scores: list[np.ndarray], data: list[Series], limit: int = 3000) -> np.ndarray:
    """The distinct scored values at the top of the distribution: only there can a threshold be best."""
    scored = np.concatenate([s[d.probation :] for s, d in zip(all_scores, data)])
    top = np.unique(scored)[::-1]
    if len(top) > limit:
        top = _spread(top, limit)
    return top


def _spread(sorted_desc: np.ndarray, limit: int) -> np.ndarray:
    # every value among the highest `limit // 2`, then a geometric thinning of the rest
    head = sorted_desc[: limit // 2]
    rest = sorted_desc[limit // 2 :]
    idx = np.unique(np.geomspace(1, len(rest), limit // 2).astype(int) - 1)
    return np.concatenate([head, rest[idx]])


def sweep(all_scores: list[np.ndarray], data: list[Series]) -> tuple[dict[str, Any], dict[str, Any]]:
    """One threshold for the whole set: (the NAB-best operating point, the F1-best operating point).

    The F1-best is the best of the thresholds that score no worse than never alarming (NAB standard 0 or more), if
    any does. The README merges consecutive false-alarm rows into one event, so a threshold low enough to alarm on
    every row finds every window for one event a gap between windows: F1 0.58 on the shared subset, whatever the
    detector (its NAB standard is about -12,000).
    """
    best_nab: tuple[float, float] | None = None
    best_f1: tuple[float, float] | None = None
    best_any: tuple[float, float] | None = None
    for thr in candidate_thresholds(all_scores, data):
        fig = figures(evaluate(all_scores, data, float(thr)), data, float(thr))
        if best_nab is None or fig["nab_standard"] > best_nab[0]:
            best_nab = (fig["nab_standard"], float(thr))
        if fig["nab_standard"] >= 0.0 and (best_f1 is None or fig["f1"] > best_f1[0]):
            best_f1 = (fig["f1"], float(thr))
        if best_any is None or fig["f1"] > best_any[0]:
            best_any = (fig["f1"], float(thr))
    best_f1 = best_f1 or best_any
    assert best_nab is not None and best_f1 is not None
    at_nab = figures(evaluate(all_scores, data, best_nab[1], True), data, best_nab[1])
    at_f1 = figures(evaluate(all_scores, data, best_f1[1], True), data, best_f1[1])
    return at_nab, at_f1


def operating_point(factory: Any, data: list[Series], threshold: float, scores: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, Any]]:
    """(scores, figures) of a worker alarming at `threshold`: the detector attuned to it (`attune`), as the worker does.

    A detector that acts on its own alarms (the ensemble's echo) is scored again
    at that alarm level; for any other, `scores` (from the sweep) already are its.
    """
    from analytics.scorers import attune

    if hasattr(factory(), "set_alarm_level"):
        scores = [score_series(lambda: attune(factory(), threshold), s) for s in data]
    return scores, figures(evaluate(scores, data, threshold, latencies=True), data, threshold)


def stream(data: list[Series], points: int = 60_000) -> list[tuple[float, float]]:
    """The first `points` (value, time) pairs of the set, file after file: what throughput and memory are measured on."""
    chunk: list[tuple[float, float]] = []
    for series in data:
        chunk.extend(zip(series.values, series.times))
        if len(chunk) >= points:
            break
    return chunk[:points]


def throughput(factory: Any, data: list[Series], points: int = 60_000, repeat: int = 3) -> tuple[float, float, float, float]:
    """Points per CPU second on this one core: (median, min, max) over `repeat` runs, and the median `loop_seconds`
    timed after each run."""
    chunk = stream(data, points)
    rates, loops = [], []
    for _ in range(repeat):
        detector = factory()
        score, learn = detector.score_one, detector.learn_one
        start = time.process_time()
        for x, t in chunk:
            score(x, t)
            learn(x, t)
        rates.append(len(chunk) / max(time.process_time() - start, 1e-9))
        loops.append(loop_seconds())
    return statistics.median(rates), min(rates), max(rates), statistics.median(loops)


def loop_seconds(steps: int = 10_000_000) -> float:
    """This machine's plain CPython speed: the CPU seconds of `steps` additions in a loop (``total += i``).

    The same detector, at the same instructions a point, measured 53,400 and 106,900 points/s on two of the
    machines these figures were taken on: `throughput` times this beside each of its runs, so that figures from
    different machines (or hours) can be told apart.
    """
    start = time.process_time()
    total = 0
    for i in range(steps):
        total += i
    return time.process_time() - start


# In a child process: `throughput` of the same detector and files on the detectors' .py files (FLOWPROBE_PURE_PYTHON).
PURE_THROUGHPUT = """
import json, sys
from pathlib import Path
import analytics.scorers
from bench.anomaly_nab import load_nab, throughput
assert not analytics.scorers.COMPILED
print(json.dumps(throughput(analytics.scorers.DETECTORS[sys.argv[1]], load_nab(Path(sys.argv[2]), json.loads(sys.argv[3])))))
"""


def pure_throughput(name: str, root: Path, only: list[str] | None) -> tuple[float, float, float, float]:
    """`throughput` as the pure-Python modules run it, in a child process beside the compiled run, on the same machine."""
    env = dict(os.environ, FLOWPROBE_PURE_PYTHON="1", PYTHONPATH=str(REPO))
    child = subprocess.run(
        [sys.executable, "-c", PURE_THROUGHPUT, name, str(root), json.dumps(only)], env=env, capture_output=True, text=True, check=True
    )
    return tuple(json.loads(child.stdout))


def detector_memory(factory: Any, data: list[Series], points: int = 60_000) -> tuple[float, float]:
    """(KiB of memory, KiB pickled) of one detector once it has learned `points` of the set: what a series costs the
    worker once its windows are full (the memory allocated for it and still held, as tracemalloc counts it)."""
    chunk = stream(data, points)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        detector = factory()
        for x, t in chunk:
            detector.score_one(x, t)
            detector.learn_one(x, t)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return held / 1024.0, len(pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL)) / 1024.0


class NoFiles(LookupError):
    """`--only` matched none of the labelled files."""


def run(name: str | None, root: Path, measure_speed: bool = True, only: list[str] | None = None) -> dict[str, Any]:
    from analytics.scorers import COMPILED, DETECTORS
    from analytics.scorers.registry import DEFAULT

    name = name or DEFAULT
    factory = DETECTORS[name]
    data = load_nab(root, only)
    if not data:
        raise NoFiles(f"no labelled file under {root} starts with {', '.join(only or [])}")
    started = time.perf_counter()
    all_scores = [score_series(factory, s) for s in data]
    elapsed = time.perf_counter() - started
    at_nab, at_f1 = sweep(all_scores, data)
    _, at_nab = operating_point(factory, data, at_nab["threshold"], all_scores)
    result: dict[str, Any] = {"detector": name, "files": len(data), "rows": sum(len(s.values) for s in data)}
    result.update(at_nab)
    result["best_f1_operating_point"] = at_f1
    result["published"] = published(data)
    result["scoring_wall_s"] = elapsed
    result["compiled"] = COMPILED
    if measure_speed:
        med, lo, hi, loop = throughput(factory, data)
        result["points_per_s_per_core"] = med
        result["points_per_s_per_core_range"] = [lo, hi]
        result["machine_loop_s"] = loop
        if COMPILED:  # the same detector as its .py files run it, in the same run
            med, lo, hi, _ = pure_throughput(name, root, only)
            result["pure_points_per_s_per_core"] = med
            result["pure_points_per_s_per_core_range"] = [lo, hi]
        result["detector_kib"], result["detector_pickled_kib"] = detector_memory(factory, data)
    return result


def _fmt(v: float | None, spec: str) -> str:
    return "" if v is None else format(v, spec)


def table(result: dict[str, Any]) -> str:
    f1pt = result["best_f1_operating_point"]
    lines = [
        f"NAB subset: {result['files']} files, {result['rows']} rows, {result['windows']} windows; one threshold for the set",
        "",
        "| detector | NAB standard | window P | window R | window F1 | latency (rows, median) | threshold |",
        "|---|---|---|---|---|---|---|",
        f"| **flowprobe {result['detector']}** (best NAB threshold) | {result['nab_standard']:.1f} | {result['precision']:.2f} "
        f"| {result['recall']:.2f} | {result['f1']:.2f} | {_fmt(result['latency_rows'], '.0f')} | {result['threshold']:.4g} |",
        f"| flowprobe {result['detector']} (best F1 threshold, NAB >= 0) | {f1pt['nab_standard']:.1f} | {f1pt['precision']:.2f} "
        f"| {f1pt['recall']:.2f} | {f1pt['f1']:.2f} | {_fmt(f1pt['latency_rows'], '.0f')} | {f1pt['threshold']:.4g} |",
    ]
    for row in result["published"]:
        lines.append(
            f"| {row['detector']} (published, {row['source']}) | {row['nab_standard']:.1f} | {_fmt(row['precision'], '.2f')} "
            f"| {_fmt(row['recall'], '.2f')} | {_fmt(row['f1'], '.2f')} | | |"
        )
    lines.append("")
    lines.append(f"windows found {result['windows_found']}/{result['windows']}, false-positive events {result['fp_events']}")
    if f1pt["nab_standard"] < 0:
        lines.append(
            "note: no threshold scores NAB 0 or more, and the best-F1 one alarms on (nearly) every row; the README merges"
            f" consecutive false alarms into one event, so alarming everywhere scores F1 {f1pt['f1']:.2f} here, whatever"
            " the detector. Window P/R/F1 are meant at the NAB threshold (first row)."
        )
    if "points_per_s_per_core" in result:
        lo, hi = result["points_per_s_per_core_range"]
        how = "compiled (setup.py)" if result["compiled"] else "pure Python"
        lines.append(
            f"throughput: {result['points_per_s_per_core']:,.0f} points/s per core, {how}: score_one + learn_one, median of 3"
            f" ({lo:,.0f}-{hi:,.0f}); this machine runs a plain CPython loop of 10 million additions in {result['machine_loop_s']:.2f} s"
        )
        if "pure_points_per_s_per_core" in result:
            pure, (lo, hi) = result["pure_points_per_s_per_core"], result["pure_points_per_s_per_core_range"]
            lines.append(
                f"beside it, pure Python (its .py files, FLOWPROBE_PURE_PYTHON=1): {pure:,.0f} points/s per core ({lo:,.0f}-{hi:,.0f});"
                f" compiled {result['points_per_s_per_core'] / pure:.1f} times as fast"
            )
        lines.append(
            f"memory: {result['detector_kib']:,.0f} KiB a detector (a series) once its windows are full, 60,000 points in;"
            f" {result['detector_pickled_kib']:,.0f} KiB saved"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="NAB folder (default: FLOWPROBE_NAB_DIR or <repo>/../shared/benchmarks/nab)")
    parser.add_argument("--detector", help="a name from analytics.scorers.DETECTORS (default: the shipped one)")
    parser.add_argument("--only", help="comma-separated path prefixes: score only those files (realTraffic/,realAdExchange/)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput measurement")
    args = parser.parse_args(argv)
    root = labelled_dir(args.data)
    if root is None:
        return 2
    sys.path.insert(0, str(REPO))
    from analytics.scorers import DETECTORS

    if args.detector and args.detector not in DETECTORS:
        print(f"unknown detector {args.detector!r}; known: {', '.join(sorted(DETECTORS))}", file=sys.stderr)
        return 2
    only = [p for p in (args.only or "").split(",") if p] or None
    try:
        result = run(args.detector, root, measure_speed=not args.no_throughput, only=only)
    except NoFiles as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
