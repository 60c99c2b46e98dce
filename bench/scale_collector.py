"""Scale of one collector: 10,000 six-step workflows every 60 s (1,000 steps/s), with and without /metrics scrapes.

Run from the repository root::

    .venv/bin/python -m bench.scale_collector                     # a table (about 4 minutes)
    .venv/bin/python -m bench.scale_collector --json              # one JSON object
    .venv/bin/python -m bench.scale_collector --workflows 15000   # a larger load

What runs
---------
- **The target** is a local nginx (`bench._common.Nginx`, one worker) pinned
  to the second allowed CPU, answering a small JSON body to every path.
- **The collector** is the real one in a child process
  (`bench._common.CollectorProcess`): the `Service` with its scheduler,
  runner, aiohttp engine (a fresh connection per run, kept across the run's
  steps), SQLite history and metrics state, and its API under uvicorn, as
  ``flowprobe run`` serves them. It is pinned to the first CPU
  (``--collector-cpus`` to change that), on uvloop as ``flowprobe run`` runs it
  (``--loop asyncio`` to compare).
- **The workflows** are generated files: ``--workflows`` workflows of
  ``--steps`` steps every ``--interval`` seconds, each step a GET of a
  templated URL with ``status: 200`` and one JSONPath assertion
  (bench/collector_throughput.py's `write_config`). First fire times are
  spread over the interval by the scheduler.

After start-up and a warm-up of one interval (every pair has run once),
one scrape renders every pair (its time is reported apart: a scrape after
that renders only the pairs that ran since the one before), and after a
scrape interval ``--windows`` pairs of measured windows of ``--window`` seconds alternate: a
quiet one, then one in which /metrics is scraped every ``--scrape-interval``
seconds with ``Accept-Encoding: gzip``, as Prometheus does. The harness
itself runs unpinned and stays light.

Figures, and the targets of the performance issue
--------------------------------------------------
- scheduling lateness p50 / p99 / max, exact over every run started in the
  quiet windows and in the scraped ones (the scheduler's ``on_lateness``
  samples: what ``flowprobe_scheduler_lateness_seconds`` observes).
  Target: p99 < 1 s, and scraping raises p99 by no more than 2x.
- runs missed: the growth of ``flowprobe_runs_missed_total`` (fire times that
  came due but were coalesced because the previous run was still going),
  over the warm-up and over the measured windows. Target: 0.
- steps per second made against the offered rate, and runs that failed.
- collector cores: its CPU seconds (all threads) over wall time, per kind
  of window. Target: < 1.5. RSS now and at its peak (VmHWM). Target: < 1 GiB.
- a scrape: the time from sending ``GET /metrics`` to its last (gzipped)
  byte, median and min-max over every scrape; its size, gzipped and not,
  and its series. Target: < 1 s.
- start-up: from constructing the `Service` (which loads every workflow
  file) to the first scheduled run.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import CollectorProcess, Nginx, add_loop_argument, check_loop, cores, print_report, percentile, progress, proc_rss_kib, table  # noqa: E402

__all__ = ["main", "measure"]

TARGETS = {"lateness_p99_s": 1.0, "cores": 1.5, "rss_mib": 1024.0, "scrape_s": 1.0, "scrape_lateness_factor": 2.0, "missed": 0}


class Scraper:
    """Scrapes /metrics every `interval` seconds in a thread while `window` runs; keeps each scrape's time and size."""

    def __init__(self, base_url: str, interval: float, gzipped: bool) -> None:
        import httpx

        self.client = httpx.Client(base_url=base_url, timeout=120)
        self.interval, self.gzipped = interval, gzipped
        self.times: list[float] = []
        self.sizes: list[int] = []
        self.body: bytes | None = None  # the first exposition, decoded, to count its series

    def scrape(self) -> None:
        headers = {"Accept-Encoding": "gzip" if self.gzipped else "identity"}
        started = time.perf_counter()
        with self.client.stream("GET", "/metrics", headers=headers) as response:
            response.raise_for_status()
            raw = b"".join(response.iter_raw())
        self.times.append(time.perf_counter() - started)
        self.sizes.append(len(raw))
        if self.body is None:
            self.body = gzip.decompress(raw) if response.headers.get("content-encoding") == "gzip" else raw

    def window(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            began = time.monotonic()
            if began >= end:
                return
            self.scrape()
            time.sleep(max(0.0, min(self.interval - (time.monotonic() - began), end - time.monotonic())))

    def close(self) -> None:
        self.client.close()


class RssSampler:
    """The collector's RSS once a second, in a thread, for its peak within each window."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_kib, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.peak_kib = max(self.peak_kib, proc_rss_kib(self.pid))
            except OSError:
                return

    def take_peak(self) -> int:
        peak, self.peak_kib = self.peak_kib, 0
        return peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _lateness(samples: Sequence[float]) -> dict[str, float]:
    return {
        "lateness_p50_ms": percentile(samples, 50) * 1000,
        "lateness_p99_ms": percentile(samples, 99) * 1000,
        "lateness_max_ms": (max(samples) if samples else float("nan")) * 1000,
        "lateness_samples": len(samples),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from bench.collector_throughput import write_config

    allowed = cores()
    collector_cpus = args.collector_cpus or ([allowed[0]] if len(allowed) >= 2 else None)
    target_cpu = allowed[1] if len(allowed) >= 2 else None
    warmup = args.interval if args.warmup is None else args.warmup
    with tempfile.TemporaryDirectory(prefix="flowprobe-scale-") as work:
        nginx = Nginx(target_cpu)
        collector = sampler = scraper = None
        try:
            progress(f"writing {args.workflows} workflows of {args.steps} steps every {args.interval:g} s")
            config_dir = write_config(Path(work) / "workflows", nginx.url.rstrip("/"), args.workflows, args.steps, args.interval)
            progress(f"starting the collector ({args.loop} loop, CPUs {collector_cpus})")
            collector = CollectorProcess(config_dir, Path(work) / "data", cores=collector_cpus, loop=args.loop)
            sampler = RssSampler(collector.pid)
            progress(f"started in {collector.start_s:.1f} s; warm-up {warmup:g} s")
            time.sleep(warmup)
            warm = collector.stats()
            scraper = Scraper(collector.base_url, args.scrape_interval, args.gzip)
            progress("first scrape: every pair rendered")
            scraper.scrape()
            first_scrape_s = scraper.times.pop()
            scraper.sizes.pop()
            time.sleep(args.scrape_interval)
            collector.stats()  # what the first scrape did to lateness is not in the windows
            windows: dict[str, list[dict[str, Any]]] = {"quiet": [], "scraped": []}
            samples: dict[str, list[float]] = {"quiet": [], "scraped": []}
            sampler.take_peak()
            for index in range(args.windows):
                for kind in ("quiet", "scraped"):
                    progress(f"window {index + 1}/{args.windows}: {kind}, {args.window:g} s")
                    cpu, nginx_cpu, wall = collector.cpu_seconds(), nginx.cpu_seconds(), time.perf_counter()
                    if kind == "scraped":
                        scraper.window(args.window)
                    else:
                        time.sleep(args.window)
                    stats = collector.stats()
                    wall = time.perf_counter() - wall
                    samples[kind].extend(stats["lateness"])
                    windows[kind].append({
                        "wall_s": wall,
                        "runs": stats["runs"],
                        "steps": stats["steps"],
                        "failed": stats["runs"] - stats["outcomes"].get("success", 0),
                        "missed_total": stats["missed"],
                        "cores": (collector.cpu_seconds() - cpu) / wall,
                        "target_cores": (nginx.cpu_seconds() - nginx_cpu) / wall,
                        "peak_rss_mib": sampler.take_peak() / 1024,
                        "lateness_p99_ms": percentile(stats["lateness"], 99) * 1000,
                        "lateness_max_ms": max(stats["lateness"], default=float("nan")) * 1000,
                        "internal_errors": stats["internal_errors"],
                        "history_write_errors": stats["history_write_errors"],
                    })
            rss_mib = collector.rss_kib() / 1024
            hwm_mib = proc_rss_kib(collector.pid, "VmHWM") / 1024
        finally:
            if scraper is not None:
                scraper.close()
            if sampler is not None:
                sampler.stop()
            if collector is not None:
                collector.stop()
            nginx.stop()
    measured = windows["quiet"] + windows["scraped"]
    wall = sum(w["wall_s"] for w in measured)
    quiet, scraped = _lateness(samples["quiet"]), _lateness(samples["scraped"])
    body = scraper.body or b""
    report: dict[str, Any] = {
        "workflows": args.workflows,
        "steps_per_workflow": args.steps,
        "interval_s": args.interval,
        "pairs": collector.pairs,
        "start_s": collector.start_s,
        "offered_steps_per_second": args.workflows * args.steps / args.interval,
        "steps_per_second": sum(w["steps"] for w in measured) / wall,
        "runs_per_second": sum(w["runs"] for w in measured) / wall,
        "runs_failed": sum(w["failed"] for w in measured),
        "runs_missed_warmup": warm["missed"],
        "runs_missed_measured": measured[-1]["missed_total"] - warm["missed"],
        "quiet": quiet,
        "scraped": scraped,
        "scrape_lateness_factor": scraped["lateness_p99_ms"] / quiet["lateness_p99_ms"] if quiet["lateness_p99_ms"] else float("nan"),
        "cores_quiet": statistics.median(w["cores"] for w in windows["quiet"]),
        "cores_scraped": statistics.median(w["cores"] for w in windows["scraped"]),
        "cores_max": max(w["cores"] for w in measured),
        "target_cores": statistics.median(w["target_cores"] for w in measured),
        "rss_mib": rss_mib,
        "peak_rss_mib": hwm_mib,
        "first_scrape_s": first_scrape_s,
        "scrape_s": statistics.median(scraper.times) if scraper.times else float("nan"),
        "scrape_s_min": min(scraper.times, default=float("nan")),
        "scrape_s_max": max(scraper.times, default=float("nan")),
        "scrapes": len(scraper.times),
        "scrape_bytes": statistics.median(scraper.sizes) if scraper.sizes else 0,
        "metrics_bytes": len(body),
        "metrics_series": sum(1 for line in body.splitlines() if line and not line.startswith(b"#")),
        "internal_errors": measured[-1]["internal_errors"],
        "history_write_errors": measured[-1]["history_write_errors"],
        "windows": windows,
    }
    report["targets"] = TARGETS
    report["met"] = {
        "lateness_p99": max(quiet["lateness_p99_ms"], scraped["lateness_p99_ms"]) < TARGETS["lateness_p99_s"] * 1000,
        "missed": report["runs_missed_measured"] + report["runs_missed_warmup"] == TARGETS["missed"],
        "cores": report["cores_max"] < TARGETS["cores"],
        "rss": hwm_mib < TARGETS["rss_mib"],
        "scrape": report["scrape_s_max"] < TARGETS["scrape_s"],
        "scrape_lateness": report["scrape_lateness_factor"] <= TARGETS["scrape_lateness_factor"],
    }
    report["setup"] = {
        "collector_cpus": collector_cpus,
        "target_cpu": target_cpu,
        "cpus_online": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
        "loop": args.loop,
        "warmup_s": warmup,
        "window_s": args.window,
        "windows": args.windows,
        "scrape_interval_s": args.scrape_interval,
        "gzip": args.gzip,
    }
    return report


def _yes(flag: bool) -> str:
    return "met" if flag else "NOT met"


def format_table(r: dict[str, Any]) -> str:
    s, met = r["setup"], r["met"]
    lines = [
        f"one collector: {r['workflows']:,} workflows x {r['steps_per_workflow']} steps every {r['interval_s']:g} s "
        f"({r['offered_steps_per_second']:,.0f} steps/s offered), {s['loop']} loop, collector on CPUs {s['collector_cpus']}, "
        f"nginx on CPU {s['target_cpu']}; load average {s['load_average_1m']}",
        f"started in {r['start_s']:.1f} s; {s['warmup_s']:g} s warm-up, then {s['windows']} x (quiet, scraped) windows of "
        f"{s['window_s']:g} s; scrapes every {s['scrape_interval_s']:g} s{' with gzip' if s['gzip'] else ''}",
        "",
    ]
    q, sc = r["quiet"], r["scraped"]
    rows = [
        ["", "quiet windows", "scraped windows", "target"],
        ["lateness p50 ms", f"{q['lateness_p50_ms']:.1f}", f"{sc['lateness_p50_ms']:.1f}", ""],
        ["lateness p99 ms", f"{q['lateness_p99_ms']:.1f}", f"{sc['lateness_p99_ms']:.1f}", f"< 1000: {_yes(met['lateness_p99'])}"],
        ["lateness max ms", f"{q['lateness_max_ms']:.1f}", f"{sc['lateness_max_ms']:.1f}", ""],
        ["runs started (samples)", f"{q['lateness_samples']:,}", f"{sc['lateness_samples']:,}", ""],
        ["collector cores used", f"{r['cores_quiet']:.2f}", f"{r['cores_scraped']:.2f}", f"< 1.5: {_yes(met['cores'])}"],
    ]
    lines += table(rows)
    lines += [
        "",
        f"  scraping raises lateness p99 by      {r['scrape_lateness_factor']:.2f}x   (target <= 2x: {_yes(met['scrape_lateness'])})",
        f"  steps/s made (offered)               {r['steps_per_second']:,.0f} ({r['offered_steps_per_second']:,.0f}); "
        f"runs failed {r['runs_failed']}",
        f"  runs missed: warm-up / measured      {r['runs_missed_warmup']} / {r['runs_missed_measured']}   (target 0: {_yes(met['missed'])})",
        f"  collector RSS now / peak             {r['rss_mib']:,.0f} / {r['peak_rss_mib']:,.0f} MiB   (target < 1024: {_yes(met['rss'])})",
        f"  /metrics scrape                      {r['scrape_s'] * 1000:,.0f} ms ({r['scrape_s_min'] * 1000:,.0f}-{r['scrape_s_max'] * 1000:,.0f}) "
        f"over {r['scrapes']} scrapes   (target < 1000 ms: {_yes(met['scrape'])}); the first after start, "
        f"every pair rendered: {r['first_scrape_s'] * 1000:,.0f} ms",
        f"  exposition                           {r['metrics_bytes']:,} bytes ({r['scrape_bytes']:,.0f} as sent), "
        f"{r['metrics_series']:,} series",
        f"  nginx core used                      {r['target_cores']:.2f}",
        f"  internal errors / history write errors  {r['internal_errors']} / {r['history_write_errors']}",
    ]
    return "\n".join(lines)


def _cpu_list(text: str) -> list[int]:
    return [int(c) for c in text.split(",") if c]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale_collector", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--workflows", type=int, default=10_000, help="workflows (default 10000)")
    parser.add_argument("--steps", type=int, default=6, help="steps per workflow (default 6)")
    parser.add_argument("--interval", type=float, default=60.0, help="schedule interval in seconds (default 60)")
    parser.add_argument("--warmup", type=float, help="seconds after start-up before measuring (default: one interval)")
    parser.add_argument("--window", type=float, default=30.0, help="seconds per measured window (default 30)")
    parser.add_argument("--windows", type=int, default=2, help="pairs of (quiet, scraped) windows (default 2)")
    parser.add_argument("--scrape-interval", type=float, default=15.0, help="seconds between scrapes in scraped windows (default 15)")
    parser.add_argument("--no-gzip", dest="gzip", action="store_false", help="scrape without Accept-Encoding: gzip")
    add_loop_argument(parser)
    parser.add_argument("--collector-cpus", type=_cpu_list, help="CPUs for the collector, e.g. 0 or 0,1 (default: the first allowed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.interval < 1 or min(args.workflows, args.steps, args.windows) < 1 or args.window <= 0 or args.scrape_interval <= 0:
        parser.error("--interval must be at least 1; --workflows, --steps, --windows, --window and --scrape-interval positive")
    check_loop(parser, args.loop)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    return print_report(measure(args), args.json, format_table)


if __name__ == "__main__":
    sys.exit(main())
