"""flowprobe against prometheus-blackbox-exporter: probes per CPU-second, on the same nginx, in the same run.

Run from the repository root::

    .venv/bin/python -m bench.vs_blackbox            # a table (about a minute)
    .venv/bin/python -m bench.vs_blackbox --json     # one JSON object

What runs
---------
- **The target** is a local nginx (`bench._common.Nginx`): one worker, a
  generated config that answers a small JSON body, on a free loopback port,
  pinned to the second allowed CPU. nginx answers far faster than either
  prober asks, so it is never the limit (its CPU share is reported).
- **blackbox_exporter** (Debian's ``prometheus-blackbox-exporter``) runs
  pinned to the first CPU with an ``http_2xx`` module (``prober: http``,
  IPv4). ``wrk`` on the second CPU keeps ``--connections`` requests of
  ``/probe?target=<nginx>&module=http_2xx`` in flight, as many Prometheus
  servers scraping it would; a Lua hook checks every answer says
  ``probe_success 1``. Each probe is a fresh connection to nginx (the
  exporter builds a new HTTP client per probe). Its figure is probes
  answered over the exporter's CPU seconds (/proc utime + stime, all
  threads) in the window: the /probe request handling and the metrics
  rendering count, as they would under Prometheus.
- **flowprobe** runs in its own process pinned to the first CPU: the real
  `Service` (the runner, the aiohttp engine with a fresh connection and full
  phase timing per run, the assertions, the metrics state, the SQLite
  history and its writer thread, the live hub's listener), over
  ``--workflows`` generated one-step workflows (a GET, ``status: 200`` and a
  JSONPath assertion). ``--concurrency`` tasks call ``Service.run_pair`` one
  pair after another at full speed, the way the scheduler would call it,
  for the window. Its figure is runs recorded over the process's CPU
  seconds (all threads) in that window.

Both run alternately, ``--repeat`` times each, after a warm-up window each;
the figures are medians with the min-max of the repetitions, and the ratio
is flowprobe's median over blackbox's. The machine is shared, so absolute
rates vary; CPU seconds per probe vary much less, which is why the figure
is per CPU-second.

flowprobe runs on uvloop, as ``flowprobe run`` does (``--loop asyncio`` to compare);
``--mode scheduled`` drives flowprobe through its scheduler instead, at
``--rate`` runs per second (below what the core can do), so the
scheduler's own cost is counted too.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    HOST,
    Nginx,
    add_loop_argument,
    check_loop,
    cell,
    cores,
    free_port,
    proc_cpu_seconds,
    print_report,
    progress,
    run_on,
    summarise,
    table,
    wait_for_port,
)

__all__ = ["main"]

TARGET_RATIO = 1.0

_BLACKBOX_CONFIG = """\
modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
"""

# Counts answers and those that are not a successful probe; printed once by wrk at the end.
_WRK_LUA = """\
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) probes = 0; failed = 0 end
function response(status, headers, body)
  probes = probes + 1
  if status ~= 200 or not string.find(body, "\\nprobe_success 1", 1, true) then failed = failed + 1 end
end
function done(summary, latency, requests)
  local p, f = 0, 0
  for _, t in ipairs(threads) do p = p + t:get("probes"); f = f + t:get("failed") end
  io.write(string.format("PROBES %d FAILED %d\\n", p, f))
end
"""


# ---------------------------------------------------------------- blackbox_exporter


class Blackbox:
    """The exporter on a free port, pinned to `core`, and wrk driving /probe from `driver_core`."""

    def __init__(self, core: int | None, driver_core: int | None, workdir: Path) -> None:
        binary = shutil.which("prometheus-blackbox-exporter")
        wrk = shutil.which("wrk")
        if binary is None or wrk is None:
            raise RuntimeError("needs prometheus-blackbox-exporter and wrk (Debian: apt-get install prometheus-blackbox-exporter wrk)")
        self.wrk, self.driver_core = wrk, driver_core
        (workdir / "blackbox.yml").write_text(_BLACKBOX_CONFIG)
        self.script = workdir / "probe.lua"
        self.script.write_text(_WRK_LUA)
        self.port = free_port()
        command = [binary, f"--config.file={workdir / 'blackbox.yml'}", f"--web.listen-address={HOST}:{self.port}", "--log.level=warn"]
        self.process = subprocess.Popen(
            _pinned(command, core), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port, process=self.process)
        version = subprocess.run([binary, "--version"], capture_output=True, text=True)
        self.version = (version.stdout or version.stderr).split("\n")[0].split(" (")[0] or "blackbox_exporter"

    def window(self, target_url: str, seconds: float, connections: int) -> dict[str, float]:
        url = f"http://{HOST}:{self.port}/probe?target={target_url}&module=http_2xx"
        command = [self.wrk, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(self.script), url]
        cpu_before, wall_before = proc_cpu_seconds(self.process.pid), time.perf_counter()
        out = subprocess.run(_pinned(command, self.driver_core), capture_output=True, text=True, check=True).stdout
        wall, cpu = time.perf_counter() - wall_before, proc_cpu_seconds(self.process.pid) - cpu_before
        found = re.search(r"PROBES (\d+) FAILED (\d+)", out)
        if found is None:
            raise RuntimeError(f"wrk gave no count:\n{out}")
        probes, failed = int(found[1]), int(found[2])
        return {"probes": probes, "failed": failed, "cpu_s": cpu, "wall_s": wall}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _pinned(command: list[str], core: int | None) -> list[str]:
    return command if core is None else ["taskset", "-c", str(core), *command]


# ---------------------------------------------------------------- flowprobe (its own process)


def _flowprobe_process(config_dir: str, core: int | None, loop: str, conn: Connection) -> None:
    """Builds the Service once, then answers each ("window", ...) request with that window's figures."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("flowprobe.run").setLevel(logging.ERROR)  # per-run lines off: counted, not formatted
    run_on(loop, _flowprobe_serve(config_dir, conn))


async def _flowprobe_serve(config_dir: str, conn: Connection) -> None:
    from collector.service import Service

    with tempfile.TemporaryDirectory(prefix="flowprobe-bench-data-") as data_dir:
        service = Service([config_dir], data_dir=data_dir, grace=5.0, watch=False)
        counts = {"runs": 0, "failed": 0, "steps": 0}

        def tally(result: Any) -> None:
            counts["runs"] += 1
            counts["failed"] += result.outcome != "success"

        service.listeners.append(tally)
        await service.start()
        conn.send("ready")
        loop = asyncio.get_running_loop()
        pairs = itertools.cycle(service.scheduler.pairs)
        try:
            while True:
                request = await loop.run_in_executor(None, conn.recv)
                if request[0] == "stop":
                    break
                _, mode, seconds, concurrency = request
                for key in counts:
                    counts[key] = 0
                wall, cpu = time.perf_counter(), time.process_time()
                if mode == "driven":
                    deadline = loop.time() + seconds

                    async def worker() -> None:
                        while loop.time() < deadline:
                            await service.run_pair(*next(pairs))

                    await asyncio.gather(*(worker() for _ in range(concurrency)))
                else:  # scheduled: the scheduler fires the runs; we only watch
                    await asyncio.sleep(seconds)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                conn.send({"probes": counts["runs"], "failed": counts["failed"], "cpu_s": cpu, "wall_s": wall})
        finally:
            await service.stop()
    conn.send("stopped")


class Flowprobe:
    def __init__(self, config_dir: Path, core: int | None, loop: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_flowprobe_process, args=(str(config_dir), core, loop, child), name="bench-flowprobe", daemon=True)
        self.process.start()
        child.close()
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            self.process.kill()
            raise RuntimeError(f"the flowprobe process did not start (exit code {self.process.exitcode})")

    def window(self, mode: str, seconds: float, concurrency: int) -> dict[str, float]:
        self.conn.send(("window", mode, seconds, concurrency))
        if not self.conn.poll(seconds + 120):
            raise RuntimeError("the flowprobe process did not answer")
        return self.conn.recv()  # type: ignore[no-any-return]

    def stop(self) -> None:
        try:
            self.conn.send(("stop",))
            self.conn.poll(30)
        finally:
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()


# ---------------------------------------------------------------- the run


def _figures(window: dict[str, float], nginx_cpu: float) -> dict[str, float]:
    return {
        "probes_per_cpu_second": window["probes"] / window["cpu_s"] if window["cpu_s"] else float("nan"),
        "cpu_ms_per_probe": window["cpu_s"] / window["probes"] * 1000 if window["probes"] else float("nan"),
        "probes_per_second": window["probes"] / window["wall_s"],
        "core_used": window["cpu_s"] / window["wall_s"],
        "nginx_core_used": nginx_cpu / window["wall_s"],
        "probes": window["probes"],
        "failed": window["failed"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.collector_throughput import write_config

    allowed = cores()
    prober_core, other_core = (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)
    if prober_core is None:
        progress("warning: fewer than two CPUs allowed; nothing is pinned")
    results: dict[str, list[dict[str, float]]] = {"blackbox": [], "flowprobe": []}
    with tempfile.TemporaryDirectory(prefix="flowprobe-vs-blackbox-") as work:
        workdir = Path(work)
        nginx = Nginx(other_core)
        blackbox = flowprobe = None
        try:
            interval = args.workflows / args.rate if args.mode == "scheduled" else 3600.0
            config_dir = write_config(workdir / "workflows", nginx.url.rstrip("/"), args.workflows, 1, interval)
            blackbox = Blackbox(prober_core, other_core, workdir)
            progress(f"flowprobe: starting {args.workflows} one-step workflows ({args.mode}, {args.loop} loop)")
            flowprobe = Flowprobe(config_dir, prober_core, args.loop)
            if args.mode == "scheduled":
                time.sleep(min(interval, 30.0))  # every pair fired once: the load is steady

            def window(name: str) -> dict[str, float]:
                before = nginx.cpu_seconds()
                if name == "blackbox":
                    figures = blackbox.window(nginx.url, args.duration, args.connections)  # type: ignore[union-attr]
                else:
                    figures = flowprobe.window(args.mode, args.duration, args.concurrency)  # type: ignore[union-attr]
                return _figures(figures, nginx.cpu_seconds() - before)

            progress("warm-up: one window each")
            window("blackbox")
            window("flowprobe")
            for index in range(args.repeat):
                order = ("blackbox", "flowprobe") if index % 2 == 0 else ("flowprobe", "blackbox")
                for name in order:
                    progress(f"{name}: repetition {index + 1}/{args.repeat}")
                    results[name].append(window(name))
        finally:
            if flowprobe is not None:
                flowprobe.stop()
            if blackbox is not None:
                blackbox.stop()
            nginx.stop()
    blackbox_figures, flowprobe_figures = summarise(results["blackbox"]), summarise(results["flowprobe"])
    ratios = [f["probes_per_cpu_second"] / b["probes_per_cpu_second"] for f, b in zip(results["flowprobe"], results["blackbox"])]
    ratio = flowprobe_figures["probes_per_cpu_second"] / blackbox_figures["probes_per_cpu_second"]
    return {
        "blackbox": blackbox_figures,
        "flowprobe": flowprobe_figures,
        "ratio": ratio,
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "target_ratio": TARGET_RATIO,
        "target_met": ratio >= TARGET_RATIO,
        "setup": {
            "prober_cpu": prober_core,
            "nginx_and_driver_cpu": other_core,
            "cpus_online": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": sys.version.split()[0],
            "blackbox_version": blackbox.version if blackbox is not None else None,
            "mode": args.mode,
            "loop": args.loop,
            "workflows": args.workflows,
            "concurrency": args.concurrency,
            "rate": args.rate if args.mode == "scheduled" else None,
            "wrk_connections": args.connections,
            "duration_s": args.duration,
            "repeat": args.repeat,
        },
    }


ROWS = (
    ("probes_per_cpu_second", "probes per CPU-second", "{:,.0f}"),
    ("cpu_ms_per_probe", "CPU ms per probe", "{:.3f}"),
    ("probes_per_second", "probes per second (wall)", "{:,.0f}"),
    ("core_used", "prober core used", "{:.0%}"),
    ("nginx_core_used", "nginx core used", "{:.0%}"),
    ("failed", "failed probes", "{:.0f}"),
)


def format_table(report: dict[str, Any]) -> str:
    setup = report["setup"]
    what = (
        f"{setup['concurrency']} tasks calling run_pair" if setup["mode"] == "driven" else f"the scheduler at {setup['rate']:g} runs/s"
    )
    lines = [
        f"flowprobe vs {setup['blackbox_version']}: each prober pinned to CPU {setup['prober_cpu']}, "
        f"nginx and the driver on CPU {setup['nginx_and_driver_cpu']}; 1-minute load average {setup['load_average_1m']}",
        f"{setup['repeat']} alternating windows of {setup['duration_s']:g} s each after a warm-up; median (min-max)",
        f"flowprobe: {setup['workflows']} one-step workflows, {what}, {setup['loop']} event loop; "
        f"blackbox: wrk with {setup['wrk_connections']} connections on /probe (http_2xx)",
        "",
    ]
    rows = [["", "blackbox_exporter", "flowprobe"]]
    for key, label, fmt in ROWS:
        rows.append([label, *(cell(fmt, report[p][key], *report[p]["spread"][key]) for p in ("blackbox", "flowprobe"))])
    lines += table(rows)
    lines.append("")
    verdict = "met" if report["target_met"] else "NOT met"
    lines.append(
        f"ratio flowprobe / blackbox (probes per CPU-second): {report['ratio']:.2f} "
        f"(per repetition {report['ratio_min']:.2f}-{report['ratio_max']:.2f}); target >= {TARGET_RATIO:g}: {verdict}"
    )
    return "\n".join(lines)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.vs_blackbox", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measured window (default 8)")
    parser.add_argument("--repeat", type=int, default=5, help="windows per prober (default 5)")
    parser.add_argument("--workflows", type=int, default=1000, help="flowprobe one-step workflows (default 1000)")
    parser.add_argument("--concurrency", type=int, default=100, help="flowprobe runs in flight, driven mode (default 100)")
    parser.add_argument("--connections", type=int, default=100, help="wrk connections to the exporter (default 100)")
    parser.add_argument("--mode", choices=["driven", "scheduled"], default="driven", help="how flowprobe runs are started (default driven)")
    parser.add_argument("--rate", type=float, default=500.0, help="runs per second offered in scheduled mode (default 500)")
    add_loop_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.duration <= 0 or min(args.workflows, args.concurrency, args.connections) < 1 or args.rate <= 0:
        parser.error("--repeat, --duration, --workflows, --concurrency, --connections and --rate must be positive")
    if args.mode == "driven" and args.concurrency > args.workflows:
        parser.error("--concurrency above --workflows would run one pair twice at once")
    if args.mode == "scheduled" and args.workflows / args.rate < 1:
        parser.error("--workflows / --rate is the schedule interval and must be at least 1 s")
    check_loop(parser, args.loop)
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    return print_report(run(args), args.json, format_table)


if __name__ == "__main__":
    sys.exit(main())
