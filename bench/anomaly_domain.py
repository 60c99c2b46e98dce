"""The anomaly detectors on our own domain: synthetic workflow step latencies with injected incidents.

Run from the repository root::

    .venv/bin/python -m bench.anomaly_domain                      # table, the shipped detector
    .venv/bin/python -m bench.anomaly_domain --detector robust    # another registered detector
    .venv/bin/python -m bench.anomaly_domain --json               # one JSON object

What runs (all seeded: ``--seed``, default 7)
--------------------------------------------
- ``--series`` (default 24) step-latency series, one point a minute for three
  days, each with its own base latency (30 ms to 2 s, log-uniform), lognormal
  noise (sigma 0.1 to 0.3), a daily cycle (busier in working hours, amplitude
  10 % to 40 %), and rare benign slow requests (0.2 % of points at 2-3x, as a
  GC pause or a cold cache gives).
- Two incidents per series after the probation period, at least six hours
  apart, of these kinds in turn:
  - ``spike``: 1-5 points at 5-10x;
  - ``level_shift``: a bad deploy, 1.8-3x for 2-4 hours, then rolled back;
  - ``ramp``: a leak, rising linearly to 3-5x over 1-3 hours, then a restart;
  - ``error_burst``: 10-30 minutes of failures, each either a timeout (10 s)
    or a fast failure (1-5 ms, connection refused).
- Each incident's window runs from its first anomalous point to 30 minutes
  after its last.
- ``--interval S``: a point every S seconds instead (15 and 30 are the
  shipped workflows' own schedules). Every duration above stays the same in
  time (three days, the incidents' hours and minutes, the window's 30
  minutes, the daily cycle); a spike's 1-5 points and the benign requests'
  0.2 % stay the same in points, and so does NAB's probation (750 points at
  most). At 60 the set is the same as without it, to the bit.
- Scoring is that of ``bench/anomaly_nab.py`` (the NAB README's
  rules, probation included): window precision, recall and F1, median latency.

The figures are given at the shipped threshold (``registry.THRESHOLD``, chosen
once on NAB and not touched here) and at the best single threshold for the
whole domain set; never one per scenario. At the best single threshold the
detector is scored again attuned to it (``bench.anomaly_nab.operating_point``),
as a worker run with that ``--threshold`` would be.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.anomaly_nab import Series, evaluate, evaluate_file, figures, operating_point, score_series, sweep  # noqa: E402

KINDS = ("spike", "level_shift", "ramp", "error_burst")
MINUTE = 60.0
DAYS = 3
START = 1_735_689_600.0  # 2025-01-01 00:00 UTC
TAIL_MINUTES = 30  # after an incident, still its window (the detector's reaction)
TIMEOUT_MS = 10_000.0


def points(minutes: float, per_hour: float) -> int:
    """How many points of a series with `per_hour` points an hour make `minutes` minutes."""
    return round(minutes * per_hour / 60.0)


def make_series(rng: random.Random, index: int, interval: float = MINUTE) -> tuple[Series, list[str]]:
    per_hour = 3600.0 / interval  # points an hour
    n = int(DAYS * 24 * per_hour)
    base = math.exp(rng.uniform(math.log(30.0), math.log(2000.0)))
    noise = rng.uniform(0.1, 0.3)
    daily = rng.uniform(0.1, 0.4)
    times = [START + i * interval for i in range(n)]
    values = []
    for i in range(n):
        hour = (i / per_hour) % 24.0
        season = 1.0 + daily * math.exp(-((hour - 14.0) ** 2) / 18.0)  # a working-day bump around 14:00
        v = base * season * rng.lognormvariate(0.0, noise)
        if rng.random() < 0.002:
            v *= rng.uniform(2.0, 3.0)
        values.append(v)
    probation = min(math.floor(0.15 * n), 750)
    kinds = [KINDS[(2 * index) % 4], KINDS[(2 * index + 1) % 4]]
    windows = []
    first = rng.randrange(probation + points(360, per_hour), n // 2)
    second = rng.randrange(max(first + points(600, per_hour), n // 2 + points(60, per_hour)), n - points(300, per_hour))
    for kind, onset in zip(kinds, (first, second)):
        end = inject(rng, values, kind, onset, per_hour)
        windows.append((onset, min(end + points(TAIL_MINUTES, per_hour), n - 1)))
    series = Series(f"domain/{index:02d}", values, times, windows, probation)
    return series, kinds


def inject(rng: random.Random, values: list[float], kind: str, onset: int, per_hour: float) -> int:
    """Inject one incident at `onset` into a series of `per_hour` points an hour; returns its last anomalous row."""
    if kind == "spike":
        length = rng.randint(1, 5)
        factor = rng.uniform(5.0, 10.0)
        for i in range(onset, onset + length):
            values[i] *= factor
    elif kind == "level_shift":
        length = rng.randint(points(120, per_hour), points(240, per_hour))
        factor = rng.uniform(1.8, 3.0)
        for i in range(onset, onset + length):
            values[i] *= factor
    elif kind == "ramp":
        length = rng.randint(points(60, per_hour), points(180, per_hour))
        top = rng.uniform(3.0, 5.0)
        for k, i in enumerate(range(onset, onset + length)):
            values[i] *= 1.0 + (top - 1.0) * (k + 1) / length
    elif kind == "error_burst":
        length = rng.randint(points(10, per_hour), points(30, per_hour))
        for i in range(onset, onset + length):
            values[i] = TIMEOUT_MS * rng.uniform(1.0, 1.02) if rng.random() < 0.5 else rng.uniform(1.0, 5.0)
    else:
        raise ValueError(kind)
    return onset + length - 1


def make_set(seed: int, count: int, interval: float = MINUTE) -> tuple[list[Series], list[list[str]]]:
    rng = random.Random(seed)
    made = [make_series(rng, i, interval) for i in range(count)]
    return [s for s, _ in made], [k for _, k in made]


def recall_by_kind(all_scores: list[np.ndarray], data: list[Series], kinds: list[list[str]], threshold: float) -> dict[str, float]:
    found = {k: 0 for k in KINDS}
    total = {k: 0 for k in KINDS}
    for scores, series, names in zip(all_scores, data, kinds):
        for window, kind in zip(series.windows, names):
            alarms = np.flatnonzero(scores[series.probation :] >= threshold) + series.probation
            total[kind] += 1
            found[kind] += int(np.any((alarms >= window[0]) & (alarms <= window[1])))
    return {k: found[k] / total[k] for k in KINDS if total[k]}


def run(name: str | None, seed: int, count: int, interval: float = MINUTE) -> dict[str, Any]:
    from analytics.scorers import DETECTORS
    from analytics.scorers.registry import DEFAULT, THRESHOLD

    name = name or DEFAULT
    data, kinds = make_set(seed, count, interval)
    all_scores = [score_series(DETECTORS[name], s) for s in data]
    shipped = figures(evaluate(all_scores, data, THRESHOLD, latencies=True), data, THRESHOLD)
    shipped["recall_by_kind"] = recall_by_kind(all_scores, data, kinds, THRESHOLD)
    _, best = sweep(all_scores, data)
    best_scores, best = operating_point(DETECTORS[name], data, best["threshold"], all_scores)
    best["recall_by_kind"] = recall_by_kind(best_scores, data, kinds, best["threshold"])
    per_series_fp = [evaluate_file(s, d, THRESHOLD).fp_events for s, d in zip(all_scores, data)]
    return {
        "detector": name,
        "seed": seed,
        "series": count,
        "interval_s": interval,
        "rows": sum(len(s.values) for s in data),
        "at_shipped_threshold": shipped,
        "at_best_single_threshold": best,
        "fp_events_per_series_max": max(per_series_fp),
        "f1": shipped["f1"],
    }


def table(result: dict[str, Any]) -> str:
    lines = [
        f"domain set: {result['series']} series, {result['rows']} rows {result['interval_s']:g} s apart, seed {result['seed']}, "
        f"detector {result['detector']}",
        "",
        "| operating point | threshold | window P | window R | window F1 | latency (rows, median) | "
        + " | ".join(f"R {k}" for k in KINDS)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(KINDS),
    ]
    for label, key in (("shipped threshold", "at_shipped_threshold"), ("best single threshold", "at_best_single_threshold")):
        f = result[key]
        lat = "" if f["latency_rows"] is None else f"{f['latency_rows']:.0f}"
        lines.append(
            f"| {label} | {f['threshold']:.4g} | {f['precision']:.2f} | {f['recall']:.2f} | {f['f1']:.2f} | {lat} | "
            + " | ".join(f"{f['recall_by_kind'].get(k, float('nan')):.2f}" for k in KINDS)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", help="a name from analytics.scorers.DETECTORS (default: the shipped one)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--series", type=int, default=24)
    parser.add_argument("--interval", type=float, default=MINUTE, help="seconds between points (default 60)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    from analytics.scorers import DETECTORS

    if args.detector and args.detector not in DETECTORS:
        print(f"unknown detector {args.detector!r}; known: {', '.join(sorted(DETECTORS))}", file=sys.stderr)
        return 2
    if args.interval <= 0.0 or args.interval > 3600.0:
        print(f"--interval must be more than 0 and at most 3600 seconds, got {args.interval:g}", file=sys.stderr)
        return 2
    result = run(args.detector, args.seed, args.series, args.interval)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
