"""Soak: 1000 workflows for 30 minutes against the demo target while its chaos toggles; memory, descriptors and lateness over time.

Run from the repository root::

    .venv/bin/python -m bench.soak                  # 30 minutes, a table at the end
    .venv/bin/python -m bench.soak --minutes 2      # a short check of the harness
    .venv/bin/python -m bench.soak --json           # one JSON object (with the time series)

What runs
---------
- **The target** is the demo farmers-market app (collector/target.py) under
  uvicorn in its own process, pinned to the second allowed CPU, on a fixed
  free loopback port.
- **The collector** is the real one in a child process
  (`bench._common.CollectorProcess`): `Service` and its API under uvicorn,
  pinned to the first CPU. Its workflows are the six shipped ones
  (workflows/*.yaml: health check, login, product listing, registration,
  farm creation, order placement) copied in groups until there are
  ``--workflows`` of them, each group with its own names and
  ``depends_on`` pointing inside the group, all every ``--interval``
  seconds. They log in with secrets, capture tokens marked secret, create
  and delete users, farms and orders, and run cleanup steps.
- **Chaos** changes every ``--chaos-every`` seconds, in a seeded cycle
  through the target's /chaos API: calm, database latency (300 ms, then
  3 s: past the health check's 2 s step timeout, so requests are cut),
  payments failing half the time, an auth outage (503s), and, with
  ``--restarts`` (the default), the target process killed for a period and
  started again on the same port (refused connections, circuit breakers).
- **Prometheus' part** is played by the harness: ``GET /metrics`` every
  15 s.

Every ``--sample-every`` seconds the harness records the collector's RSS,
open file descriptors and threads (from /proc), the scheduling lateness
samples of the runs started since the last sample (the scheduler's
``on_lateness``), runs by outcome, ``flowprobe_runs_missed_total``, and
internal errors.

Figures
-------
- RSS at the start (the end of the warm-up: one interval, every pair has
  run once), in the middle and at the end of the soak, its peak, and its
  slope over the second half (a least-squares line, MiB per hour): flat
  memory means end close to middle and a slope near 0.
- open file descriptors and threads at the same three moments, and the
  most seen: a leak of connections shows as growth.
- lateness p50 / p99 / max over the whole soak, and the worst p99 of any
  sample period: a scheduler stall shows as a max of seconds.
- runs by outcome (chaos makes failures: they are expected), runs missed
  (fire times coalesced behind a run still going), internal errors and
  history write errors (both should be 0), /metrics scrapes and their
  time.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import yaml

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import HOST, CollectorProcess, add_loop_argument, check_loop, cores, print_report, free_port, percentile, progress, proc_rss_kib, table  # noqa: E402

__all__ = ["main", "soak"]

SHIPPED = Path(__file__).resolve().parent.parent / "workflows"
# Dependencies first, so a group cut short still has what its workflows depend on.
ORDER = ("health-check", "user-login", "product-listing", "registration", "farm-creation", "order-placement")
DEMO_EMAIL = "soak@flowprobe.local"
SCRAPE_EVERY = 15.0

# (name, what to PUT on /chaos per dependency, or "down" to stop the target); cycled in a seeded order.
CHAOS: tuple[tuple[str, Any], ...] = (
    ("calm", {}),
    ("database slow (300 ms)", {"database": {"latency_ms": 300}}),
    ("payments failing 50%", {"payments": {"error_rate": 0.5}}),
    ("auth outage", {"auth": {"outage": True}}),
    ("database very slow (3 s)", {"database": {"latency_ms": 3000}}),
    ("target down", "down"),
)


# ---------------------------------------------------------------- workflows


def write_config(directory: Path, base_url: str, workflows: int, interval: float) -> Path:
    """`workflows` copies of the shipped workflows in groups of six, every `interval` seconds, one environment."""
    directory.mkdir(parents=True, exist_ok=True)
    shipped = {name: yaml.safe_load((SHIPPED / f"{name}.yaml").read_text()) for name in ORDER}
    (directory / "environments.yaml").write_text(yaml.safe_dump({
        "environments": {"soak": {"base_url": base_url, "secrets": {
            "PROBE_EMAIL": {"env": "FLOWPROBE_PROBE_EMAIL"}, "PROBE_PASSWORD": {"env": "FLOWPROBE_PROBE_PASSWORD"}}}},
        "circuit_breaker": {"failures": 5, "cool_down": "30s"},
    }))
    written = 0
    group = 0
    while written < workflows:
        for name in ORDER:
            if written == workflows:
                break
            workflow = dict(shipped[name])
            workflow["name"] = f"{name}-{group:04d}"
            workflow["schedule"] = {"every": f"{interval:g}s"}
            workflow.pop("environments", None)
            depends = [f"{d}-{group:04d}" for d in workflow.get("depends_on", [])]
            if depends:
                workflow["depends_on"] = depends
            (directory / f"{workflow['name']}.yaml").write_text(yaml.safe_dump(workflow, sort_keys=False))
            written += 1
        group += 1
    return directory


# ---------------------------------------------------------------- the demo target (its own process)


def _serve_target(port: int, core: int | None, password: str, seed: int, reply: Connection) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    import logging

    logging.basicConfig(level=logging.ERROR)
    from collector.service import ApiServer
    from collector.target import create_app

    async def serve() -> None:
        server = ApiServer(create_app(demo_email=DEMO_EMAIL, demo_password=password, seed=seed), HOST, port)
        await server.start()
        reply.send(server.port)
        reply.close()
        await asyncio.Event().wait()

    asyncio.run(serve())


class DemoTarget:
    """The demo target on a fixed port: start, stop (a crash), start again."""

    def __init__(self, core: int | None, password: str) -> None:
        self.core, self.password, self.port = core, password, free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.process: Any = None
        self.starts = 0
        self.start()

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        self.process = context.Process(target=_serve_target, args=(self.port, self.core, self.password, self.starts, send), daemon=True)
        self.process.start()
        send.close()
        try:
            for _ in range(3):  # the port of a killed process can take a moment to free
                if receive.poll(30):
                    receive.recv()
                    break
            else:
                raise EOFError
        except EOFError:
            self.process.kill()
            raise RuntimeError(f"the demo target did not start on port {self.port} (exit code {self.process.exitcode})") from None
        finally:
            receive.close()
        self.starts += 1

    def kill(self) -> None:
        self.process.kill()
        self.process.join(10)

    def alive(self) -> bool:
        return bool(self.process.is_alive())

    def chaos(self, states: dict[str, dict[str, Any]]) -> None:
        import httpx

        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            client.delete("/chaos").raise_for_status()
            for dependency, state in states.items():
                client.put(f"/chaos/{dependency}", json=state).raise_for_status()


# ---------------------------------------------------------------- the soak


def _status_value(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _slope_per_hour(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value), per hour; NaN with fewer than 2 points."""
    if len(points) < 2:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in points) / var * 3600 if var else float("nan")


def soak(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    allowed = cores()
    collector_cpu, target_cpu = (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)
    password = secrets.token_urlsafe(18)
    os.environ["FLOWPROBE_PROBE_EMAIL"] = DEMO_EMAIL  # the collector process inherits them: its secrets
    os.environ["FLOWPROBE_PROBE_PASSWORD"] = password
    rng = random.Random(args.seed)
    cycle = [c for c in CHAOS if args.restarts or c[1] != "down"]
    duration = args.minutes * 60
    warmup = args.interval if args.warmup is None else args.warmup
    samples: list[dict[str, Any]] = []
    lateness: list[float] = []
    outcomes: dict[str, int] = {}
    scrapes: list[float] = []
    chaos_log: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory(prefix="flowprobe-soak-") as work:
        target = DemoTarget(target_cpu, password)
        collector = None
        try:
            config_dir = write_config(Path(work) / "workflows", target.base_url, args.workflows, args.interval)
            progress(f"starting the collector with {args.workflows} workflows every {args.interval:g} s ({args.loop} loop)")
            collector = CollectorProcess(config_dir, Path(work) / "data", cores=[collector_cpu] if collector_cpu is not None else None,
                                         loop=args.loop)
            scraper = httpx.Client(base_url=collector.base_url, timeout=60, headers={"Accept-Encoding": "gzip"})
            progress(f"warm-up {warmup:g} s (every pair runs once)")
            time.sleep(warmup)
            warm = collector.stats()
            began = time.monotonic()
            next_sample = next_scrape = next_chaos = began
            chaos_index = 0
            down_until: float | None = None
            last_progress = began
            while True:
                now = time.monotonic()
                if now - began >= duration:
                    break
                if down_until is not None and now >= down_until:
                    target.start()
                    down_until = None
                if now >= next_chaos:
                    if down_until is None:  # while the target is down, the next change waits its turn
                        name, states = cycle[chaos_index] if chaos_index < len(cycle) else rng.choice(cycle)
                        chaos_index += 1
                        if states == "down":
                            target.kill()
                            down_until = now + min(args.chaos_every, 20.0)
                        else:
                            target.chaos(states)
                        chaos_log.append((round(now - began, 1), name))
                    next_chaos += args.chaos_every
                if now >= next_scrape:
                    started = time.perf_counter()
                    scraper.get("/metrics").raise_for_status()
                    scrapes.append(time.perf_counter() - started)
                    next_scrape += SCRAPE_EVERY
                if now >= next_sample:
                    stats = collector.stats()
                    lateness.extend(stats["lateness"])
                    for outcome, count in stats["outcomes"].items():
                        outcomes[outcome] = outcomes.get(outcome, 0) + count
                    samples.append({
                        "t_s": round(now - began, 1),
                        "rss_mib": collector.rss_kib() / 1024,
                        "fds": collector.fds(),
                        "threads": _status_value(collector.pid, "Threads"),
                        "runs": stats["runs"],
                        "lateness_p99_ms": percentile(stats["lateness"], 99) * 1000,
                        "lateness_max_ms": (max(stats["lateness"]) if stats["lateness"] else float("nan")) * 1000,
                        "missed_total": stats["missed"],
                        "internal_errors": stats["internal_errors"],
                        "history_write_errors": stats["history_write_errors"],
                    })
                    next_sample += args.sample_every
                    if now - last_progress >= 60:
                        last = samples[-1]
                        progress(f"{(now - began) / 60:.0f}/{args.minutes:g} min: RSS {last['rss_mib']:.0f} MiB, {last['fds']} fds, "
                                 f"lateness max {last['lateness_max_ms']:.0f} ms, chaos: {chaos_log[-1][1]}")
                        last_progress = now
                time.sleep(max(0.0, min(next_sample, next_scrape, next_chaos, down_until or next_sample) - time.monotonic()))
            if down_until is not None:
                target.start()
            scraper.close()
            peak_mib = proc_rss_kib(collector.pid, "VmHWM") / 1024
        finally:
            if collector is not None:
                collector.stop()
            if target.alive():
                target.kill()
    return _report(args, samples, lateness, outcomes, scrapes, chaos_log, warm, peak_mib, warmup, target.starts)


def _report(args: argparse.Namespace, samples: list[dict[str, Any]], lateness: list[float], outcomes: dict[str, int],
            scrapes: list[float], chaos_log: list[tuple[float, str]], warm: dict[str, Any], peak_mib: float, warmup: float,
            target_starts: int) -> dict[str, Any]:
    first, middle, last = samples[0], samples[len(samples) // 2], samples[-1]
    half = samples[len(samples) // 2 :]
    report: dict[str, Any] = {
        "workflows": args.workflows,
        "interval_s": args.interval,
        "minutes": args.minutes,
        "rss_mib": {"start": first["rss_mib"], "middle": middle["rss_mib"], "end": last["rss_mib"], "peak": peak_mib,
                    "slope_second_half_mib_per_hour": _slope_per_hour([(s["t_s"], s["rss_mib"]) for s in half])},
        "fds": {"start": first["fds"], "middle": middle["fds"], "end": last["fds"], "max": max(s["fds"] for s in samples)},
        "threads": {"start": first["threads"], "middle": middle["threads"], "end": last["threads"], "max": max(s["threads"] for s in samples)},
        "lateness_p50_ms": percentile(lateness, 50) * 1000,
        "lateness_p99_ms": percentile(lateness, 99) * 1000,
        "lateness_max_ms": (max(lateness) if lateness else float("nan")) * 1000,
        "worst_period_p99_ms": max((s["lateness_p99_ms"] for s in samples if s["runs"]), default=float("nan")),
        "runs": sum(outcomes.values()),
        "outcomes": outcomes,
        "runs_missed_warmup": warm["missed"],
        "runs_missed": last["missed_total"] - warm["missed"],
        "internal_errors": last["internal_errors"],
        "history_write_errors": last["history_write_errors"],
        "scrapes": len(scrapes),
        "scrape_ms_median": statistics.median(scrapes) * 1000 if scrapes else float("nan"),
        "scrape_ms_max": max(scrapes, default=float("nan")) * 1000,
        "chaos": chaos_log,
        "target_starts": target_starts,
        "samples": samples,
        "setup": {
            "cpus_online": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": sys.version.split()[0],
            "loop": args.loop,
            "warmup_s": warmup,
            "sample_every_s": args.sample_every,
            "chaos_every_s": args.chaos_every,
            "restarts": args.restarts,
            "seed": args.seed,
        },
    }
    return report


def format_table(r: dict[str, Any]) -> str:
    rss, fds, threads = r["rss_mib"], r["fds"], r["threads"]
    lines = [
        f"soak: {r['workflows']} workflows every {r['interval_s']:g} s for {r['minutes']:g} min against the demo target, "
        f"chaos every {r['setup']['chaos_every_s']:g} s ({len(r['chaos'])} changes, target started {r['target_starts']} times); "
        f"{r['setup']['loop']} loop; load average {r['setup']['load_average_1m']}",
        "",
    ]
    rows = [
        ["", "start", "middle", "end", "peak / max"],
        ["collector RSS MiB", f"{rss['start']:.0f}", f"{rss['middle']:.0f}", f"{rss['end']:.0f}", f"{rss['peak']:.0f}"],
        ["open file descriptors", str(fds["start"]), str(fds["middle"]), str(fds["end"]), str(fds["max"])],
        ["threads", str(threads["start"]), str(threads["middle"]), str(threads["end"]), str(threads["max"])],
    ]
    lines += table(rows)
    outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(r["outcomes"].items()))
    lines += [
        "",
        f"  RSS slope over the second half    {rss['slope_second_half_mib_per_hour']:+.1f} MiB/hour",
        f"  lateness p50 / p99 / max          {r['lateness_p50_ms']:.1f} / {r['lateness_p99_ms']:.1f} / {r['lateness_max_ms']:.0f} ms "
        f"(worst {r['setup']['sample_every_s']:g}-s period p99: {r['worst_period_p99_ms']:.0f} ms)",
        f"  runs                              {r['runs']:,} ({outcomes})",
        f"  runs missed: warm-up / soak       {r['runs_missed_warmup']} / {r['runs_missed']}",
        f"  internal errors / history errors  {r['internal_errors']} / {r['history_write_errors']}",
        f"  /metrics scrapes                  {r['scrapes']}, median {r['scrape_ms_median']:.0f} ms, max {r['scrape_ms_max']:.0f} ms",
    ]
    return "\n".join(lines)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=30.0, help="soak length after the warm-up (default 30)")
    parser.add_argument("--workflows", type=int, default=1000, help="workflows (default 1000)")
    parser.add_argument("--interval", type=float, default=60.0, help="schedule interval of every workflow, s (default 60)")
    parser.add_argument("--warmup", type=float, help="seconds before the soak starts (default: one interval)")
    parser.add_argument("--chaos-every", type=float, default=60.0, help="seconds between chaos changes (default 60)")
    parser.add_argument("--no-restarts", dest="restarts", action="store_false", help="never stop the target process")
    parser.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the chaos order after the first cycle (default 7)")
    add_loop_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.interval < 1 or args.minutes <= 0 or args.workflows < 1 or args.chaos_every <= 0 or args.sample_every <= 0:
        parser.error("--interval must be at least 1; --minutes, --workflows, --chaos-every and --sample-every positive")
    check_loop(parser, args.loop)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    return print_report(soak(args), args.json, format_table)


if __name__ == "__main__":
    sys.exit(main())
