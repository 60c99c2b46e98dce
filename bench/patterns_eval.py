"""The root-cause ranker on chaos scenarios of the demo target, replayed through the real collector.

Run from the repository root::

    .venv/bin/python -m bench.patterns_eval            # table: every scenario, 4 seeds, both run orders (a minute or two)
    .venv/bin/python -m bench.patterns_eval --quick    # one seed, dependencies first (well under 30 s)
    .venv/bin/python -m bench.patterns_eval --json     # one JSON object

What runs
---------
Each replay is one scenario with one seed: a fresh demo target
(``collector.target.create_app(seed=seed)``) under uvicorn on a free loopback
port, and a real ``collector.service.Service`` over the shipped ``workflows/``
(environment ``prod``) with its SQLite history in a temporary directory. The
Service's scheduler is not started: its schedules are 15 to 60 s, and a slow
database makes each health check take 4 s, which would make a bench of a few
minutes hold a handful of incidents. Instead the replay drives the Service in
ticks of 15 s of *synthetic* time: at each tick, ``Service.run_pair`` runs
every pair whose ``schedule.every`` is due, with the Service's own
dependency skipping, the real runner and engine over real HTTP, and its
history store. Then the analytics side reads that history with the real
``analytics.source.HistorySource`` (one batch per tick, as the worker reads
it on its interval), maps each run's wall-clock start to the tick's synthetic
time plus its real offset within the tick, and feeds the batch to one
`analytics.patterns.PatternFinder`, whose topology comes from the collector's
own ``GET /api/workflows``. Retry back-off is not waited for (the runner's
injectable ``sleep``): it changes no outcome, only the wall time.

Two run orders: ``levels`` runs the due pairs dependencies first (as when a
dependency's schedule fires a moment before its dependents'), ``concurrent``
runs them all at once (as when the fire times coincide: a dependent then sees
its dependency's previous result, and fails on its own before it is skipped).

Scenarios and their ground truth
--------------------------------
A healthy baseline of 8 ticks (4 in ``--quick``) plus ``seed % 4`` (so the
fault starts at a different phase of the 30 s and 60 s schedules), the fault
through ``PUT /chaos/{dependency}``, then ``DELETE /chaos`` and 16 ticks (14)
of recovery.

| scenario | fault | right top causes |
|---|---|---|
| ``auth-outage`` | auth outage | the ``login`` step, or ``user-login`` (every authenticated workflow needs it) |
| ``database-outage`` | database outage | ``health-check`` (every workflow depends on it; it checks the database) |
| ``payments-outage`` | payments outage | the ``place-order`` step of order-placement |
| ``slow-database`` | database latency 2.5 s, beyond the health step's 2 s timeout | ``health-check`` |
| ``intermittent-auth`` | auth error rate 0.5 | the ``login`` step, or ``user-login`` |

Figures
-------
Before the first tick, one round of every pair warms the target and the
collector up; its runs are not given to the finder (a fresh process answers
its first requests too slowly for the 400 ms expectations).

An incident belongs to the fault when one of its members' onsets lies
within the fault's ticks (it may have opened a little earlier, on a blip,
and grown into the fault); any other is *spurious*: real failed runs outside
the fault, mostly a ``list-products`` slower than its 400 ms expectation
while many replays share the CPUs (see ``--parallel``). A fault without an
incident is *missed*.

- ``top1``: the share of the fault's incidents whose top cause, at its last
  report (resolved, or at the end of the replay), is a right one;
  ``top1_at_detection``: the same for the first report;
- ``detect_runs``: the runs of the incident's first failing pair from its
  onset (the onset run is 1) to the batch in which the incident was first
  reported (of that pair as a member); ``cause_runs``: to the first report
  whose top cause was right.
  Median and max over incidents.

Targets (issue 5, section 4): top-1 right in at least 90 % of incidents, each
found within 3 runs of its onset.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics.patterns import PatternFinder, Topology  # noqa: E402
from analytics.source import HistorySource, Run  # noqa: E402
from collector.api import create_app as collector_api  # noqa: E402
from collector.service import Service  # noqa: E402
from collector.target import create_app as target_app  # noqa: E402
from tests.helpers import PROBE_EMAIL, PROBE_PASSWORD, WORKFLOWS, probe_environment, serve_in_thread  # noqa: E402

__all__ = ["SCENARIOS", "Plan", "Replay", "Scenario", "evaluate", "replay", "score", "summarise", "table"]

ENV = "prod"
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC: synthetic time starts here
ORDERS = ("levels", "concurrent")
TICK = 15.0  # synthetic seconds between ticks: the greatest common divisor of the shipped schedules (15, 30, 60 s)


@dataclass(frozen=True)
class Scenario:
    name: str
    faults: dict[str, dict[str, Any]]  # dependency -> the chaos state to PUT
    truth: tuple[str, ...]  # the top causes counted as right
    fault_ticks: int
    quick_fault_ticks: int


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("auth-outage", {"auth": {"outage": True}}, ("login", "user-login"), 16, 8),
    Scenario("database-outage", {"database": {"outage": True}}, ("health-check",), 16, 8),
    Scenario("payments-outage", {"payments": {"outage": True}}, ("place-order",), 16, 8),
    # Every slow tick costs a health check of 2 x 2 s (its step timeout, one retry): fewer of them.
    Scenario("slow-database", {"database": {"latency_ms": 2500}}, ("health-check",), 6, 2),
    Scenario("intermittent-auth", {"auth": {"error_rate": 0.5}}, ("login", "user-login"), 16, 8),
)


@dataclass(frozen=True)
class Plan:
    baseline: int  # healthy ticks before the fault (the seed adds seed % 4)
    recovery: int  # ticks after it
    quick: bool

    @classmethod
    def of(cls, quick: bool) -> Plan:
        return cls(4, 14, True) if quick else cls(8, 16, False)


@dataclass
class Replay:
    scenario: Scenario
    seed: int
    order: str
    fault: tuple[float, float]  # synthetic [start, end) of the fault
    runs: list[Run] = field(default_factory=list)  # every run, in synthetic time
    reports: list[tuple[float, list[dict[str, Any]]]] = field(default_factory=list)  # (finder.now, incidents()) after each batch
    wall_s: float = 0.0


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the Service's config to expand; restore them after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def _no_wait(_: float) -> None:
    await asyncio.sleep(0)


def _levels(topology: Topology) -> dict[str, int]:
    """Each workflow's depth in the depends_on graph: 0 for those that depend on nothing."""
    depth: dict[str, int] = {}

    def of(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in depth:
            parents = [d for d in topology.depends_on.get(name, ()) if d not in seen]
            depth[name] = 1 + max((of(d, seen | {name}) for d in parents), default=-1)
        return depth[name]

    for name in topology.depends_on:
        of(name)
    return depth


async def replay(scenario: Scenario, *, seed: int, order: str, plan: Plan, workdir: Path) -> Replay:
    """Run one scenario against a fresh target and Service; feed a PatternFinder tick by tick."""
    started = time.perf_counter()
    fault_ticks = scenario.quick_fault_ticks if plan.quick else scenario.fault_ticks
    first = plan.baseline + seed % 4
    last = first + fault_ticks  # first tick after the fault
    result = Replay(scenario, seed, order, (T0 + first * TICK, T0 + last * TICK))
    with contextlib.ExitStack() as stack:
        app = target_app(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD, seed=seed)
        url = await asyncio.to_thread(stack.enter_context, serve_in_thread(app))
        with _environment(probe_environment({ENV: url})):
            service = Service([WORKFLOWS], data_dir=workdir, envs=[ENV], watch=False)
        stack.callback(service.store.close)
        service.runner.sleep = _no_wait
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=collector_api(service)), base_url="http://collector") as api:
            topology = Topology.from_api((await api.get("/api/workflows")).raise_for_status().json())
        levels = _levels(topology)
        every = {name: wf.schedule.every or TICK for name, wf in service.config.workflows.items()}
        source = HistorySource(workdir / "history.sqlite3")
        finder = PatternFinder(topology)
        starts: list[float] = []
        try:
            # One warm-up round, read and dropped: a fresh process answers its first requests slowly
            # (imports, first connections), which would fail the 400 ms expectations before the baseline.
            await asyncio.gather(*(service.run_pair(name, ENV) for name in every))
            await asyncio.to_thread(service.store.flush)
            await source.read()
            source.take_runs()
            async with httpx.AsyncClient(base_url=url, timeout=10) as target:
                for tick in range(last + plan.recovery):
                    if tick == first:
                        for dependency, state in scenario.faults.items():
                            (await target.put(f"/chaos/{dependency}", json=state)).raise_for_status()
                    elif tick == last:
                        (await target.delete("/chaos")).raise_for_status()
                    starts.append(time.time())
                    due = sorted(name for name in every if round(tick * TICK) % round(every[name]) == 0)
                    groups = [due] if order == "concurrent" else [[n for n in due if levels.get(n, 0) == lv] for lv in sorted(set(levels.values()))]
                    for group in groups:
                        await asyncio.gather(*(service.run_pair(name, ENV) for name in group))
                    await asyncio.to_thread(service.store.flush)
                    await source.read()
                    batch = [replace(run, t=_synthetic(run.t, starts)) for run in source.take_runs()]
                    result.runs.extend(batch)
                    finder.observe(batch)
                    result.reports.append((finder.now, finder.incidents()))
        finally:
            await service.engine.close()
    result.wall_s = time.perf_counter() - started
    return result


def _synthetic(wall: float, starts: Sequence[float]) -> float:
    """A wall-clock start as synthetic time: its tick's time plus its real offset within the tick."""
    tick = max(0, bisect.bisect_right(starts, wall) - 1)
    return T0 + tick * TICK + min(max(wall - starts[tick], 0.0), TICK * 0.99)


# ---------------------------------------------------------------- scoring


def _runs_until(runs: Sequence[Run], pair: tuple[str, str], onset: float, until: float) -> int:
    return sum(1 for r in runs if r.pair == pair and onset <= r.t <= until)


def score(result: Replay) -> dict[str, Any]:
    """Per incident of this replay: whether it belongs to the fault, its top cause, and how fast it came."""
    start, end = result.fault
    truth = set(result.scenario.truth)
    seen: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for now, incidents in result.reports:
        for incident in incidents:
            seen.setdefault(incident["id"], []).append((now, incident))
    found, spurious = [], []
    for reports in seen.values():
        final = reports[-1][1]
        onsets = [m for m in final["members"] if start <= m["onset"] < end]
        if not onsets:
            spurious.append({"id": final["id"], "top": final["top"], "members": [(m["workflow"], m["reason"]) for m in final["members"]]})
            continue
        # The fault's first failing pair; the incident may have opened before it (a blip it then grew from).
        leader = min(onsets, key=lambda m: m["onset"])
        pair, onset = (leader["workflow"], leader["env"]), leader["onset"]
        shown = [(now, i) for now, i in reports if any((m["workflow"], m["env"]) == pair for m in i["members"])]
        first_now, first = shown[0]
        right = [now for now, i in shown if i["top"] and i["top"]["cause"] in truth]
        found.append({
            "id": final["id"],
            "top": final["top"],
            "right": bool(final["top"] and final["top"]["cause"] in truth),
            "right_at_detection": bool(first["top"] and first["top"]["cause"] in truth),
            "detect_runs": _runs_until(result.runs, pair, onset, first_now),
            "cause_runs": _runs_until(result.runs, pair, onset, right[0]) if right else None,
            "status": final["status"],
            "members": len(final["members"]),
        })
    failed = any(r.failed and start <= r.t < end for r in result.runs)
    return {
        "scenario": result.scenario.name, "seed": result.seed, "order": result.order, "incidents": found,
        "spurious": spurious, "missed": failed and not found, "wall_s": round(result.wall_s, 2),
    }


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(scores: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The figures over a set of scored replays."""
    incidents = [i for s in scores for i in s["incidents"]]
    detect = [i["detect_runs"] for i in incidents]
    cause = [i["cause_runs"] for i in incidents if i["cause_runs"] is not None]
    return {
        "replays": len(scores),
        "incidents": len(incidents),
        "spurious": sum(len(s["spurious"]) for s in scores),
        "missed": sum(1 for s in scores if s["missed"]),
        "top1": sum(i["right"] for i in incidents) / len(incidents) if incidents else None,
        "top1_at_detection": sum(i["right_at_detection"] for i in incidents) / len(incidents) if incidents else None,
        "detect_runs_median": _median(detect),
        "detect_runs_max": max(detect) if detect else None,
        "cause_runs_median": _median(cause),
        "cause_runs_max": max(cause) if cause else None,
        "never_right": sum(1 for i in incidents if i["cause_runs"] is None),
        "top_causes": dict(Counter(f"{i['top']['kind']}:{i['top']['cause']}" for i in incidents if i["top"]).most_common()),
    }


async def _evaluate(jobs: list[tuple[Scenario, int, str]], plan: Plan, parallel: int, root: Path) -> list[Replay]:
    gate = asyncio.Semaphore(parallel)

    async def one(index: int, job: tuple[Scenario, int, str]) -> Replay:
        scenario, seed, order = job
        async with gate:
            return await replay(scenario, seed=seed, order=order, plan=plan, workdir=root / f"{index:03d}-{scenario.name}")

    return list(await asyncio.gather(*(one(i, job) for i, job in enumerate(jobs))))


def evaluate(
    *,
    quick: bool = False,
    seeds: int | None = None,
    orders: Sequence[str] | None = None,
    scenarios: Sequence[str] | None = None,
    parallel: int = 4,
) -> dict[str, Any]:
    """Replay the scenarios (concurrently, each with its own target and Service) and score them."""
    plan = Plan.of(quick)
    seeds = seeds if seeds is not None else (1 if quick else 4)
    orders = tuple(orders or (("levels",) if quick else ORDERS))
    chosen = [s for s in SCENARIOS if scenarios is None or s.name in scenarios]
    # The slow database first: its replays take longest, so they must not wait behind the gate.
    jobs = sorted(((s, seed, o) for s in chosen for seed in range(seeds) for o in orders), key=lambda job: job[0].name != "slow-database")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flowprobe-patterns-") as root:
        replays = asyncio.run(_evaluate(jobs, plan, parallel, Path(root)))
    scores = [score(r) for r in replays]
    return {
        "scenarios": {s.name: {**summarise([x for x in scores if x["scenario"] == s.name]), "truth": list(s.truth)} for s in chosen},
        "overall": summarise(scores),
        "replays": scores,
        "setup": {"quick": quick, "seeds": seeds, "orders": list(orders), "tick_s": TICK, "baseline_ticks": plan.baseline,
                  "recovery_ticks": plan.recovery, "parallel": parallel, "wall_s": round(time.perf_counter() - started, 1)},
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _pair_of(median: float | None, top: float | None) -> str:
    return "-" if median is None else f"{median:g} / {top:g}"


def table(result: dict[str, Any]) -> str:
    setup = result["setup"]
    lines = [
        f"patterns_eval: {setup['seeds']} seed(s) x orders {', '.join(setup['orders'])}, ticks of {setup['tick_s']:g} s, "
        f"{setup['wall_s']:g} s wall",
        "",
        "| scenario | replays | incidents | spurious | missed | top-1 right | top-1 at detection | runs to detection (median / max) "
        "| runs to right cause (median / max) | top causes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [*result["scenarios"].items(), ("overall", result["overall"])]
    for name, f in rows:
        causes = ", ".join(f"{k} x{v}" for k, v in f["top_causes"].items())
        lines.append(
            f"| {name} | {f['replays']} | {f['incidents']} | {f['spurious']} | {f['missed']} | {_pct(f['top1'])} | "
            f"{_pct(f['top1_at_detection'])} | {_pair_of(f['detect_runs_median'], f['detect_runs_max'])} | "
            f"{_pair_of(f['cause_runs_median'], f['cause_runs_max'])} | {causes} |"
        )
    lines.append("")
    lines.append("Targets: top-1 right >= 90% of incidents; found within 3 runs of the onset.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, dependencies first, shorter faults")
    parser.add_argument("--seeds", type=int, help="repetitions per scenario and order (default 4, or 1 with --quick)")
    parser.add_argument("--order", action="append", choices=ORDERS, help="run order(s) of the due pairs (repeatable)")
    parser.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS], help="only these (repeatable)")
    parser.add_argument("--parallel", type=int, default=4, help="replays at once, each its own target and Service (default 4)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("flowprobe").setLevel(logging.ERROR)  # a failed run is logged at WARNING: here they are the point
    result = evaluate(quick=args.quick, seeds=args.seeds, orders=args.order, scenarios=args.scenario, parallel=args.parallel)
    print(json.dumps(result, indent=2) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
