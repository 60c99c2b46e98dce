"""Failure prediction and latency forecast, measured on the demo target under chaos.

Run from the repository root::

    .venv/bin/python -m bench.prediction_eval            # table, 3 repetitions (about four minutes)
    .venv/bin/python -m bench.prediction_eval --quick    # one small repetition (about 15 s)
    .venv/bin/python -m bench.prediction_eval --json     # one JSON object

What runs
---------
- **Targets:** one real demo target (``collector.target.create_app``) per
  environment (prod, staging, dev), each with its own data and chaos
  control, under uvicorn on a free loopback port, all three in one child
  process: the probes' event loop then times the target's answers, not the
  target's own work, as in a deployment.
- **Probes:** the shipped workflows (workflows/), loaded with
  ``collector.config.load_config`` and run by the real ``Runner`` with the
  production aiohttp engine: 6 workflows x 3 environments = 18 pairs. A
  workflow whose ``depends_on`` did not pass its last run is skipped, as the
  collector's service does.
- **Time:** not the wall clock. The pairs run in ticks, all pairs at once,
  as fast as the target answers; each tick stands for one minute, and every
  run gets that synthetic start time (so the hour of day moves on). Retry
  back-offs are not slept: each runner's clock is moved on by the back-off
  instead, so a run's duration counts it as live, at no wall-clock cost.
- **Scenarios** (seeded), per environment one after the other, ramp and
  no-warning in turn, each after a healthy stretch of 20-40 ticks:
  - ``ramp``: a degradation of auth or payments that ramps up over 20-40
    ticks (latency rising linearly to 80-250 ms per call, the error rate
    rising quadratically to 5-20 %), then an outage of 4-10 ticks;
  - ``no_warning``: an outage of auth, the database or payments, 4-10 ticks,
    with no precursor.
  The database is never ramped: health-check wants it "ok", so any chaos
  on it fails health-check at once and skips everything else; it has no
  precursor to see. Every pair of the environment belongs to the scenario;
  those that do not use the broken dependency give the model its negatives.
  ``--quick``: two scenarios per environment, shorter (healthy 10-16, ramp
  12-16 ticks at 60-150 ms, outage 4-6).
- **Evaluation,** by progressive validation, exactly as the worker would:
  each run that was not skipped is scored by the shipped anomaly detector
  (then learned), and `FailurePredictor.observe` learns what the run
  settles, then predicts; skipped runs go to the predictor too. The
  prediction's label is whether one of the pair's next K = 5 runs failed.

Figures, per scenario family (a point belongs to the scenario of the tick it
was made at):

- ``auc``: ROC AUC of the predictions over every point;
- ``auc_onset``: the same over the points where the pair's last K runs all
  passed: can it see a failure coming, rather than see that one is going on?
- ``precision``, ``recall``: at ``ALERT_THRESHOLD`` (analytics/predict.py),
  point by point;
- ``lead_runs``: the median, over failure onsets (a failure after 10 passed
  runs), of the number of runs before the onset that the prediction had been
  at or above the threshold without a break; ``warned``: the share of onsets
  with a lead of at least one run.

And the latency forecaster's mean absolute error (ms) at 5 min, 15 min and
1 h (5, 15 and 60 runs ahead), against the naive forecast (the last
duration), over the runs that passed: all of them, and those within a ramp.
Each figure is the median over the repetitions (``--repeat``, seeds 1, 2,
...), with their min-max.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics.forecast import LatencyForecaster, horizon_seconds  # noqa: E402
from analytics.predict import ALERT_THRESHOLD, FailurePredictor  # noqa: E402
from analytics.source import Run  # noqa: E402

__all__ = ["Episode", "Scenario", "evaluate", "evaluate_forecast", "generate", "plan", "run"]

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
ENVS = ("prod", "staging", "dev")
DEPENDENCIES = ("auth", "database", "payments")
# Any chaos on the database fails health-check at once (it wants the database "ok"), and every other
# workflow is then skipped: a database degradation has no precursor, so it is a no-warning outage only.
RAMP_DEPENDENCIES = ("auth", "payments")
FAMILIES = ("ramp", "no_warning")
TICK = 60.0  # simulated seconds per tick: one run of every pair
START = 1_735_689_600.0  # 2025-01-01 00:00 UTC
ONSET_AFTER = 10  # a failure after this many passed runs is a failure onset
HORIZON = 5  # K: the predictor's horizon in runs
PROBE_EMAIL = "bench@flowprobe.local"


@dataclass(frozen=True)
class Episode:
    """One scenario in one environment, in ticks: [start, degrade) healthy, [degrade, outage) ramp, [outage, end) down."""

    env: str
    family: str
    dependency: str
    start: int
    degrade: int
    outage: int
    end: int
    latency_ms: int = 0  # at the top of the ramp
    error_rate: float = 0.0

    def chaos(self, tick: int) -> dict[str, Any] | None:
        """The dependency's chaos state at `tick`, or None for healthy."""
        if tick < self.degrade or tick >= self.end:
            return None
        if tick >= self.outage:
            return {"outage": True}
        f = (tick - self.degrade + 1) / (self.outage - self.degrade)
        return {"latency_ms": round(self.latency_ms * f), "error_rate": round(self.error_rate * f * f, 4)}


@dataclass
class Scenario:
    """What a generation produced: the runs in tick order, and the episodes they ran under."""

    seed: int
    ticks: int
    episodes: list[Episode]
    runs: list[Run] = field(default_factory=list)
    wall_s: float = 0.0

    def episode_at(self, env: str, tick: int) -> Episode | None:
        for episode in self.episodes:
            if episode.env == env and episode.start <= tick < episode.end:
                return episode
        return None


def plan(seed: int, *, episodes: int, healthy: tuple[int, int] = (20, 40), ramp: tuple[int, int] = (20, 40),
         outage: tuple[int, int] = (4, 10), latency_ms: tuple[int, int] = (80, 250), tail: int = 10,
         envs: Sequence[str] = ENVS) -> tuple[list[Episode], int]:
    """Per environment, `episodes` scenarios alternating ramp and no-warning (which first is seeded); the number of ticks."""
    rng = random.Random(seed)
    out: list[Episode] = []
    ticks = 0
    for env in envs:
        tick = 0
        first = rng.randrange(2)
        for i in range(episodes):
            family = FAMILIES[(first + i) % 2]
            start = tick
            degrade = start + rng.randint(*healthy)
            down = degrade + (rng.randint(*ramp) if family == "ramp" else 0)
            end = down + rng.randint(*outage)
            dependency = rng.choice(RAMP_DEPENDENCIES if family == "ramp" else DEPENDENCIES)
            out.append(Episode(env, family, dependency, start, degrade, down, end,
                               latency_ms=rng.randint(*latency_ms) if family == "ramp" else 0,
                               error_rate=round(rng.uniform(0.05, 0.2), 3) if family == "ramp" else 0.0))
            tick = end
        ticks = max(ticks, tick + tail)
    return out, ticks


# ---------------------------------------------------------------- generation: real target, real runner


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _VirtualBackoff:
    """A runner clock that a back-off moves on instead of sleeping: the run's duration counts it, the wall clock does not."""

    def __init__(self) -> None:
        self.offset = 0.0

    def clock(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.offset += max(0.0, seconds)


def serve_targets(ports: Sequence[int], seed: int) -> None:
    """In the child process: one demo target per port, on one event loop, until terminated.

    The probe password comes in the environment (BENCH_PROBE_PASSWORD), not on the command line.
    """
    import uvicorn

    from collector.target import create_app

    password = os.environ["BENCH_PROBE_PASSWORD"]
    servers = [
        uvicorn.Server(uvicorn.Config(create_app(demo_email=PROBE_EMAIL, demo_password=password, seed=seed * 10 + i),
                                      host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="off"))
        for i, port in enumerate(ports)
    ]

    async def serve() -> None:
        await asyncio.gather(*(server.serve() for server in servers))

    asyncio.run(serve())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def _targets(seed: int, password: str) -> AsyncIterator[dict[str, str]]:
    """The demo targets, one per environment, in a child process of their own (as in a deployment):
    the probes' event loop then times the target's answers, not the target's work. Yields env -> URL."""
    import httpx

    ports = [_free_port() for _ in ENVS]
    code = f"from bench.prediction_eval import serve_targets; serve_targets({ports!r}, {seed})"
    env = {**os.environ, "BENCH_PROBE_PASSWORD": password, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    urls = {name: f"http://127.0.0.1:{port}" for name, port in zip(ENVS, ports, strict=True)}
    try:
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(timeout=1) as client:
            for url in urls.values():
                while True:
                    if child.poll() is not None:
                        raise RuntimeError(f"the demo targets stopped: {child.stderr.read().decode(errors='replace')[-2000:] if child.stderr else ''}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"{url}/health")).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError("the demo targets did not answer within 30 s")
                    await asyncio.sleep(0.05)
        yield urls
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.stderr:
            child.stderr.close()


def _as_run(result: Any) -> Run:
    """A collector RunResult as the analytics worker reads it from the history (analytics/source.py)."""
    return Run(
        result.workflow, result.env, 0.0, float(result.duration), result.outcome,
        failed_step=result.failed_step, reason=result.reason, attempts=int(result.attempts or 1), flaky=bool(result.flaky),
        hosts=tuple(sorted({s.host for s in result.steps if getattr(s, "host", None)})), skip_reason=result.skip_reason,
    )


async def _tick_loop(scenario: Scenario, urls: dict[str, str], engine: Any, password: str, progress: Callable[[str], None] | None) -> None:
    """Every tick: set each dependency's chaos, then run every pair once, all at the same time."""
    import httpx

    from collector.config import load_config
    from collector.runner import Runner

    names = {f"FLOWPROBE_{env.upper()}_URL": url for env, url in urls.items()}
    with _environ({**names, "FLOWPROBE_PROBE_EMAIL": PROBE_EMAIL, "FLOWPROBE_PROBE_PASSWORD": password}):
        config = load_config(WORKFLOWS)
    pairs = [(wf, env) for wf, env in config.pairs() if env in urls]
    clocks = {(wf.name, env): _VirtualBackoff() for wf, env in pairs}
    runners = {key: Runner(engine, rng=random.Random(f"{scenario.seed}/{key}"), sleep=c.sleep, clock=c.clock) for key, c in clocks.items()}
    order = {key: i for i, key in enumerate(runners)}
    applied: dict[tuple[str, str], dict[str, Any] | None] = {}
    last: dict[tuple[str, str], str] = {}  # the outcome of each pair's latest run
    started = time.perf_counter()
    async with httpx.AsyncClient() as control:
        for tick in range(scenario.ticks):
            for env, url in urls.items():
                for dep in DEPENDENCIES:
                    state = next((e.chaos(tick) for e in scenario.episodes if e.env == env and e.dependency == dep and e.start <= tick < e.end), None)
                    if applied.get((env, dep)) != state:
                        (await control.put(f"{url}/chaos/{dep}", json=state or {})).raise_for_status()
                        applied[(env, dep)] = state
            # A workflow whose dependency's last run did not pass is skipped, as the collector's
            # Service.run_pair does; the last run is that of the previous tick, as in a real schedule.
            blocked = {(wf.name, env) for wf, env in pairs if any(last.get((dep, env), "success") != "success" for dep in wf.depends_on)}
            results = await asyncio.gather(*(runners[(wf.name, env)].run(config, wf, env) for wf, env in pairs if (wf.name, env) not in blocked))
            runs = [_as_run(result) for result in results]
            runs += [Run(wf, env, 0.0, 0.0, "skipped", skip_reason="dependency") for wf, env in blocked]
            for run in sorted(runs, key=lambda r: order[r.pair]):
                # Pairs start a second apart within the tick, as a scheduler spreads them.
                scenario.runs.append(dataclasses.replace(run, t=START + tick * TICK + order[run.pair]))
                last[run.pair] = run.outcome
            if progress and tick % 50 == 0:
                progress(f"seed {scenario.seed}: tick {tick}/{scenario.ticks}, {time.perf_counter() - started:.1f} s")


async def generate(seed: int, *, quick: bool = False, progress: Callable[[str], None] | None = None) -> Scenario:
    """Run the shipped workflows against real demo targets while their chaos follows `plan`."""
    from collector.engine import AiohttpEngine

    if quick:
        episodes, ticks = plan(seed, episodes=2, healthy=(10, 16), ramp=(12, 16), outage=(4, 6), latency_ms=(60, 150), tail=6)
    else:
        episodes, ticks = plan(seed, episodes=4)
    scenario = Scenario(seed, ticks, episodes)
    password = secrets.token_urlsafe(16)
    async with _targets(seed, password) as urls:
        engine = AiohttpEngine()
        started = time.perf_counter()
        try:
            await _tick_loop(scenario, urls, engine, password, progress)
        finally:
            await engine.close()
    scenario.wall_s = time.perf_counter() - started
    return scenario


# ---------------------------------------------------------------- evaluation: progressive validation


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """ROC AUC (the Mann-Whitney statistic, ties counted half); None without both classes."""
    positives = sum(1 for y in labels if y)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum, i = 0.0, 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mean_rank = (i + j) / 2 + 1
        rank_sum += mean_rank * sum(1 for k in order[i : j + 1] if labels[k])
        i = j + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


@dataclass
class _Point:
    family: str | None
    p: float | None
    failed: bool
    label: bool | None = None  # whether one of the next K runs failed; None at the end of the stream
    clean: bool = False  # the last K runs, this one included, all passed


def _family(scenario: Scenario, run: Run) -> str | None:
    episode = scenario.episode_at(run.env, int((run.t - START) // TICK))
    return episode.family if episode else None


def predict_points(scenario: Scenario, predictor: FailurePredictor, *, anomaly: bool = True) -> tuple[dict[tuple[str, str], list[_Point]], float]:
    """Every non-skipped run through the worker's path, in order; the points per pair and the predictor's runs per second."""
    from analytics.scorers import default_detector

    detectors: dict[tuple[str, str], Any] = {}
    series: dict[tuple[str, str], list[_Point]] = defaultdict(list)
    spent = 0.0
    for run in scenario.runs:
        if run.outcome == "skipped":
            predictor.observe(run)  # no point: a skipped run is not a run of the target
            continue
        score = None
        if anomaly:
            detector = detectors.get(run.pair) or detectors.setdefault(run.pair, default_detector())
            score = detector.score_one(run.duration, run.t)
            detector.learn_one(run.duration, run.t)
        started = time.perf_counter()
        p = predictor.observe(run, score)
        spent += time.perf_counter() - started
        series[run.pair].append(_Point(_family(scenario, run), p, run.failed))
    k = predictor.horizon_runs
    for points in series.values():
        failed = [q.failed for q in points]
        for i, point in enumerate(points):
            ahead = failed[i + 1 : i + 1 + k]
            point.label = True if any(ahead) else (False if len(ahead) == k else None)
            point.clean = not any(failed[max(0, i - k + 1) : i + 1])
    count = sum(len(points) for points in series.values())
    return series, count / spent if spent else math.inf


def _leads(points: list[_Point], threshold: float) -> list[tuple[str | None, int]]:
    """(family, runs warned ahead) for each failure onset: a failure after ONSET_AFTER passed runs."""
    out = []
    for i in range(ONSET_AFTER, len(points)):
        if points[i].failed and not any(q.failed for q in points[i - ONSET_AFTER : i]):
            lead = 0
            while lead < i and (p := points[i - 1 - lead].p) is not None and p >= threshold:
                lead += 1
            out.append((points[i].family, lead))
    return out


def evaluate(scenario: Scenario, *, predictor: FailurePredictor | None = None, threshold: float = ALERT_THRESHOLD,
             anomaly: bool = True) -> dict[str, Any]:
    """Progressive validation of `predictor` (a fresh default one if None) on `scenario`: figures per scenario family."""
    predictor = predictor or FailurePredictor(HORIZON)
    series, speed = predict_points(scenario, predictor, anomaly=anomaly)
    out: dict[str, Any] = {"runs_per_second": speed}
    leads = [lead for points in series.values() for lead in _leads(points, threshold)]
    for family in FAMILIES:
        points = [q for s in series.values() for q in s if q.family == family and q.label is not None and q.p is not None]
        scores, labels = [q.p for q in points], [bool(q.label) for q in points]
        clean = [q for q in points if q.clean]
        alerts = [s >= threshold for s in scores]
        hits = sum(1 for a, y in zip(alerts, labels, strict=True) if a and y)
        family_leads = sorted(lead for f, lead in leads if f == family)
        out[family] = {
            "points": len(points),
            "positives": sum(labels),
            "auc": auc(scores, labels),
            "auc_onset": auc([q.p for q in clean], [bool(q.label) for q in clean]),
            "precision": hits / sum(alerts) if any(alerts) else None,
            "recall": hits / sum(labels) if any(labels) else None,
            "onsets": len(family_leads),
            "lead_runs": statistics.median(family_leads) if family_leads else None,
            "warned": sum(1 for lead in family_leads if lead > 0) / len(family_leads) if family_leads else None,
        }
    return out


def evaluate_forecast(scenario: Scenario, horizons: Sequence[str] = ("5m", "15m", "1h")) -> dict[str, dict[str, float | None]]:
    """Mean absolute error (ms) of the forecaster and of the naive forecast (the last duration), per horizon.

    Over the runs that passed, which are what the forecaster learns (a failure's duration is not a latency):
    ``holt`` and ``naive`` over all of them, ``holt_ramp`` and ``naive_ramp`` where both the forecast and
    the run it forecasts lie in one ramp-up (None where no ramp is that long)."""
    forecaster = LatencyForecaster(horizons)
    steps = {label: max(1, round(horizon_seconds(label) / TICK)) for label in horizons}
    made: dict[tuple[str, str], list[tuple[float, dict[str, float] | None, Episode | None]]] = defaultdict(list)
    for run in scenario.runs:
        forecast = forecaster.observe(run)
        if run.outcome == "success":
            tick = int((run.t - START) // TICK)
            episode = scenario.episode_at(run.env, tick)
            ramping = episode if episode and episode.family == "ramp" and episode.degrade <= tick < episode.outage else None
            made[run.pair].append((run.duration, forecast, ramping))
    kinds = ("holt", "naive", "holt_ramp", "naive_ramp")
    errors: dict[str, dict[str, list[float]]] = {label: {kind: [] for kind in kinds} for label in horizons}
    for points in made.values():
        for i, (value, forecast, ramping) in enumerate(points):
            for label, h in steps.items():
                if forecast is None or i + h >= len(points):
                    continue
                actual, _, later = points[i + h]
                by = errors[label]
                by["holt"].append(abs(forecast[label] - actual))
                by["naive"].append(abs(value - actual))
                if ramping is not None and later is ramping:
                    by["holt_ramp"].append(abs(forecast[label] - actual))
                    by["naive_ramp"].append(abs(value - actual))
    return {label: {kind: 1000 * statistics.fmean(e) if e else None for kind, e in by.items()} for label, by in errors.items()}


# ---------------------------------------------------------------- the whole benchmark

FIGURES = ("auc", "auc_onset", "precision", "recall", "lead_runs", "warned", "points", "positives", "onsets")


def _median(values: list[Any]) -> Any:
    known = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(known) if known else None


def _spread(values: list[Any]) -> list[Any]:
    known = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return [min(known), max(known)] if known else [None, None]


def run(*, quick: bool = False, repeat: int | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Generate and evaluate `repeat` seeded repetitions; medians, min-max and every repetition."""
    repeat = repeat or (1 if quick else 3)
    repeats = []
    for seed in range(1, repeat + 1):
        scenario = asyncio.run(generate(seed, quick=quick, progress=progress))
        figures = evaluate(scenario)
        figures["forecast"] = evaluate_forecast(scenario)
        figures["ticks"], figures["runs"], figures["wall_s"] = scenario.ticks, len(scenario.runs), scenario.wall_s
        figures["skipped"] = sum(1 for r in scenario.runs if r.outcome == "skipped")
        figures["pairs"] = len({r.pair for r in scenario.runs})
        repeats.append(figures)
        if progress:
            progress(f"seed {seed}: {len(scenario.runs)} runs in {scenario.wall_s:.1f} s; ramp AUC {figures['ramp']['auc']}")
    out: dict[str, Any] = {
        "setup": {"quick": quick, "repeat": repeat, "horizon_runs": HORIZON, "threshold": ALERT_THRESHOLD, "tick_s": TICK,
                  "pairs": repeats[0]["pairs"], "cpus": os.cpu_count()},
        "runs_per_second": _median([r["runs_per_second"] for r in repeats]),
    }
    for family in FAMILIES:
        out[family] = {name: _median([r[family][name] for r in repeats]) for name in FIGURES}
        out[family]["spread"] = {name: _spread([r[family][name] for r in repeats]) for name in FIGURES}
    horizons = repeats[0]["forecast"]
    out["forecast_mae_ms"] = {h: {kind: _median([r["forecast"][h][kind] for r in repeats]) for kind in horizons[h]} for h in horizons}
    out["repeats"] = repeats
    return out


def _fmt(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def table(result: dict[str, Any]) -> str:
    setup = result["setup"]
    lines = [
        f"failure prediction: progressive validation, K = {setup['horizon_runs']} runs, threshold {setup['threshold']},"
        f" {setup['repeat']} repetition(s), {setup['pairs']} pairs; medians [min-max]",
        "",
        f"{'family':12s} {'auc':>16s} {'auc_onset':>16s} {'precision':>16s} {'recall':>16s} {'lead_runs':>16s} {'warned':>16s} {'onsets':>7s}",
    ]
    for family in FAMILIES:
        f = result[family]
        cells = []
        for name, width in (("auc", 16), ("auc_onset", 16), ("precision", 16), ("recall", 16), ("lead_runs", 16), ("warned", 16)):
            lo, hi = f["spread"][name]
            cells.append(f"{_fmt(f[name])} [{_fmt(lo)}-{_fmt(hi)}]".rjust(width))
        lines.append(f"{family:12s} " + " ".join(cells) + f" {_fmt(f['onsets'], 0):>7s}")
    lines += ["", f"predictor: {result['runs_per_second']:,.0f} runs/s (observe, one core); runs per repetition:"
              f" {', '.join(str(r['runs']) for r in result['repeats'])}", "",
              "latency forecast, MAE in ms over passed runs (all of them | within ramp-ups):",
              f"{'horizon':8s} {'holt':>8s} {'naive':>8s} | {'holt':>8s} {'naive':>8s}"]
    for horizon, by in result["forecast_mae_ms"].items():
        lines.append(f"{horizon:8s} {_fmt(by['holt'], 1):>8s} {_fmt(by['naive'], 1):>8s} | {_fmt(by['holt_ramp'], 1):>8s} {_fmt(by['naive_ramp'], 1):>8s}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small repetition (well under 30 s)")
    parser.add_argument("--repeat", type=int, help="repetitions (seeds 1..N); default 3, 1 with --quick")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, repeat=args.repeat, progress=lambda line: print(line, file=sys.stderr))
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
