"""Collector throughput: how many workflow steps one core runs, how late, at what CPU cost.

Run from the repository root::

    .venv/bin/python -m bench.collector_throughput            # table
    .venv/bin/python -m bench.collector_throughput --json     # one JSON object

What runs
---------
- **The target** is a minimal HTTP/1.1 server (raw asyncio protocol, a fixed
  small JSON body, keep-alive) in a separate process pinned to its own core,
  on 127.0.0.1 and a free port. Its cost is kept off the collector's core, and
  its own CPU share is reported so a saturated target shows up.
- **The collector** is the real `Service`: config loaded from generated
  workflow files, the APScheduler scheduler, the runner, the aiohttp engine
  (one fresh connection per run, as in production), the SQLite history in a
  temporary directory, and the metrics state. It runs in this process, pinned
  to one core, so its worker threads (history writer, DNS) share that core too.
- Logging is at WARNING, with per-run failure lines off: failures are counted
  in the figures instead, and formatting a log line per run would measure the
  log handler rather than the collector.

Scenarios
---------
- ``single``: N one-step workflows (default 1000 every 10 s: 100 runs/s).
- ``six``: N six-step workflows (default 500 every 10 s: 300 steps/s).
- ``scrape``: 1000 six-step workflows, each run once, then ``/metrics`` timed.

Each step is a GET with a templated URL, a status expectation and one JSONPath
assertion. First fire times are spread over the interval by the scheduler, so
the load is steady from the start; the warm-up (one interval by default) makes
every pair run once (templates compiled, state created) before measuring.

What counts, over the measured window of each repetition
--------------------------------------------------------
- steps per second: steps made (passed or failed, not skipped), from runs
  that finished inside the window, over the window's wall time; the offered
  rate (workflows x steps / interval) is printed beside it.
- lateness p50 / p99: raw samples of how late each run started after its
  scheduled time, taken from the scheduler's ``on_lateness`` hook (the same
  value the ``flowprobe_scheduler_lateness_seconds`` histogram gets).
- CPU per 1000 runs: this process's user+system CPU (all threads) over the
  window, divided by runs finished; collector core use is CPU over wall time.
- runs missed: the growth of ``flowprobe_runs_missed_total`` (fire times that
  came due but were coalesced or overlapped) over the window.
- peak RSS: the process's high-water mark during the repetition (reset at its
  start through /proc/self/clear_refs where the kernel allows it).
Each scenario repeats (``--repeat``, default 3) with a fresh `Service`; the
figure shown is the median, with the min-max of the repetitions.

``/metrics``: after every pair has run once (so every step series exists), the
scheduler is stopped and the exposition is rendered with ``State.render()``
several times, cold (every pair marked changed, as after a scrape interval in
which every pair ran) and warm (nothing changed); then the real API
(`create_app` under `ApiServer`) is scraped over HTTP with httpx, cold, with
and without gzip. Medians are reported with the exposition's size and its
number of series.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a file (make bench): make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import CLOCK_TICKS, cell, percentile, print_report, summarise  # noqa: E402

if TYPE_CHECKING:
    from collector.result import RunResult
    from collector.service import Service

# The collector is imported inside the functions that use it: the target
# process re-imports this module (spawn) and should stay a bare asyncio server.

__all__ = ["CLOCK_TICKS", "Target", "main", "write_config"]

HOST = "127.0.0.1"
BODY = b'{"status":"ok","items":[{"id":1,"name":"kale"},{"id":2,"name":"eggs"}]}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)


# ---------------------------------------------------------------- the target (its own process)


class _TargetProtocol(asyncio.Protocol):
    """Answers every request with the same small JSON; keep-alive unless asked to close."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                line_end = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : line_end if line_end >= 0 else None])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(RESPONSE)
            if b"\r\nconnection: close" in head:
                self.transport.close()
                return


def _serve_target(core: int | None, reply: Connection) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(_TargetProtocol, HOST, 0, backlog=4096)
        reply.send(server.sockets[0].getsockname()[1])
        reply.close()
        await server.serve_forever()

    asyncio.run(serve())


class Target:
    """The target process: start, its port, its CPU seconds so far, stop."""

    def __init__(self, core: int | None) -> None:
        context = multiprocessing.get_context("spawn")  # no inherited loop, threads or sockets
        receive, send = context.Pipe(duplex=False)
        self.process = context.Process(target=_serve_target, args=(core, send), name="bench-target", daemon=True)
        self.process.start()
        send.close()
        try:
            if not receive.poll(30):
                raise EOFError
            self.port: int = receive.recv()
        except EOFError:
            self.process.kill()
            raise RuntimeError(f"the target process did not start (exit code {self.process.exitcode})") from None
        finally:
            receive.close()
        self.base_url = f"http://{HOST}:{self.port}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(5)


# ---------------------------------------------------------------- workflow files


def write_config(directory: Path, base_url: str, workflows: int, steps: int, interval: float) -> Path:
    """N workflow files and an environments.yaml pointing at the target."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "environments.yaml").write_text(f'environments:\n  bench:\n    base_url: "{base_url}"\n')
    step_text = "".join(
        f"""  - name: step-{s}
    request:
      url: "{{{{ base_url }}}}/items/{{{{ workflow }}}}/{s}"
    expect:
      status: 200
      json: {{"$.status": {{eq: ok}}}}
"""
        for s in range(1, steps + 1)
    )
    for index in range(workflows):
        name = f"bench-{index:05d}"
        (directory / f"{name}.yaml").write_text(
            f"name: {name}\nschedule: {{every: {interval:g}s}}\nenvironments: [bench]\nsteps:\n{step_text}"
        )
    return directory


# ---------------------------------------------------------------- measuring one repetition


@dataclass
class Tally:
    """What the collector reported while `measuring` is on."""

    measuring: bool = False
    runs: int = 0
    failed_runs: int = 0
    steps: int = 0
    lateness: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)

    def on_result(self, result: RunResult) -> None:
        if not self.measuring:
            return
        self.runs += 1
        self.failed_runs += result.outcome != "success"
        self.steps += sum(1 for step in result.steps if step.outcome != "skipped")
        self.durations.append(result.duration)

    def wrap_lateness(self, original: Callable[[float], None]) -> Callable[[float], None]:
        def observe(seconds: float) -> None:
            if self.measuring:
                self.lateness.append(seconds)
            original(seconds)

        return observe


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _missed(service: Service) -> int:
    return sum(pair.missed for pair in service.state.pairs.values())


async def measure_once(
    config_dir: Path, *, workflows: int, steps: int, interval: float, warmup: float, duration: float, target: Target
) -> dict[str, float]:
    from collector.service import Service

    gc.collect()  # the previous repetition's garbage is not this one's cost
    with tempfile.TemporaryDirectory(prefix="flowprobe-bench-data-") as data_dir:
        service = Service([config_dir], data_dir=data_dir, grace=5.0, watch=False)
        tally = Tally()
        service.listeners.append(tally.on_result)
        service.scheduler.on_lateness = tally.wrap_lateness(service.scheduler.on_lateness)
        await service.start()
        try:
            await asyncio.sleep(warmup)
            peak_reset = _reset_peak_rss()
            missed_before = _missed(service)
            target_before = target.cpu_seconds()
            tally.measuring = True
            wall_before, cpu_before = time.perf_counter(), time.process_time()
            await asyncio.sleep(duration)
            wall, cpu = time.perf_counter() - wall_before, time.process_time() - cpu_before
            tally.measuring = False
            target_cpu = target.cpu_seconds() - target_before
            missed = _missed(service) - missed_before
            peak_kib = _status_kib("VmHWM") if peak_reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        finally:
            await service.stop()
    runs = tally.runs
    return {
        "offered_steps_per_second": workflows * steps / interval,
        "steps_per_second": tally.steps / wall,
        "runs_per_second": runs / wall,
        "lateness_p50_ms": percentile(tally.lateness, 50) * 1000,
        "lateness_p99_ms": percentile(tally.lateness, 99) * 1000,
        "lateness_max_ms": max(tally.lateness, default=float("nan")) * 1000,
        "run_duration_p50_ms": percentile(tally.durations, 50) * 1000,
        "run_duration_p99_ms": percentile(tally.durations, 99) * 1000,
        "cpu_seconds_per_1000_runs": cpu / runs * 1000 if runs else float("nan"),
        "collector_core_used": cpu / wall,
        "target_core_used": target_cpu / wall,
        "runs_missed": missed,
        "runs_failed": tally.failed_runs,
        "peak_rss_mib": peak_kib / 1024,
    }


# ---------------------------------------------------------------- /metrics at N workflows


async def measure_scrape(config_dir: Path, *, samples: int, concurrency: int = 100) -> dict[str, float]:
    import httpx

    from collector.api import create_app
    from collector.metrics import MetricsRenderer
    from collector.service import ApiServer, Service

    gc.collect()
    with tempfile.TemporaryDirectory(prefix="flowprobe-bench-data-") as data_dir:
        service = Service([config_dir], data_dir=data_dir, grace=5.0, watch=False)
        await service.start()  # the schedule is an hour: almost nothing fires on its own
        gate = asyncio.Semaphore(concurrency)

        async def run(pair: tuple[str, str]) -> None:
            async with gate:
                await service.run_pair(*pair)

        await asyncio.gather(*(run(pair) for pair in service.scheduler.pairs))
        await service.stop()  # a quiet process: the figures are the render's alone
        populated = sum(1 for pair in service.state.pairs.values() if pair.steps)

        def touch_all() -> None:
            for pair in service.state.pairs.values():
                pair.version += 1

        def timed(render: Any) -> tuple[float, Any]:
            started = time.perf_counter()
            value = render()
            return (time.perf_counter() - started) * 1000, value

        cold_ms, warm_ms = [], []
        body = b""
        for _ in range(samples):
            touch_all()
            elapsed, text = timed(service.state.render)
            cold_ms.append(elapsed)
            warm_ms.append(timed(service.state.render)[0])
            body = text.encode()

        service.metrics = MetricsRenderer(service.state, max_age=0)  # every scrape renders
        api = ApiServer(create_app(service), HOST, 0)
        await api.start()
        scrape_ms: dict[str, list[float]] = {"identity": [], "gzip": []}
        gzip_bytes = 0
        try:
            async with httpx.AsyncClient(base_url=f"http://{HOST}:{api.port}", timeout=120) as client:
                (await client.get("/metrics")).raise_for_status()  # connect and warm the app
                for _ in range(samples):
                    for encoding in scrape_ms:
                        touch_all()
                        started = time.perf_counter()
                        response = await client.get("/metrics", headers={"Accept-Encoding": encoding})
                        response.raise_for_status()
                        scrape_ms[encoding].append((time.perf_counter() - started) * 1000)
                        if encoding == "gzip":
                            gzip_bytes = int(response.headers.get("content-length", 0))
        finally:
            await api.stop()
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return {
        "workflows": len(service.state.pairs),
        "workflows_populated": populated,
        "metrics_render_cold_ms": statistics.median(cold_ms),
        "metrics_render_cold_ms_min": min(cold_ms),
        "metrics_render_cold_ms_max": max(cold_ms),
        "metrics_render_warm_ms": statistics.median(warm_ms),
        "metrics_render_warm_ms_min": min(warm_ms),
        "metrics_render_warm_ms_max": max(warm_ms),
        "metrics_bytes": len(body),
        "metrics_gzip_bytes": gzip_bytes,
        "metrics_series": series,
        "scrape_http_ms": statistics.median(scrape_ms["identity"]),
        "scrape_http_ms_min": min(scrape_ms["identity"]),
        "scrape_http_ms_max": max(scrape_ms["identity"]),
        "scrape_http_gzip_ms": statistics.median(scrape_ms["gzip"]),
        "scrape_http_gzip_ms_min": min(scrape_ms["gzip"]),
        "scrape_http_gzip_ms_max": max(scrape_ms["gzip"]),
        "samples": samples,
    }


# ---------------------------------------------------------------- report


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    steps: int
    workflows: int


SCENARIOS = {
    "single": Scenario("single_step", "single-step", 1, 1000),
    "six": Scenario("six_step", "six-step", 6, 500),
}

# (key, label, format) for the table, in order.
ROWS = (
    ("offered_steps_per_second", "offered steps/s", "{:.0f}"),
    ("steps_per_second", "steps/s", "{:.1f}"),
    ("runs_per_second", "runs/s", "{:.1f}"),
    ("lateness_p50_ms", "lateness p50 ms", "{:.2f}"),
    ("lateness_p99_ms", "lateness p99 ms", "{:.2f}"),
    ("lateness_max_ms", "lateness max ms", "{:.1f}"),
    ("run_duration_p50_ms", "run duration p50 ms", "{:.2f}"),
    ("run_duration_p99_ms", "run duration p99 ms", "{:.2f}"),
    ("cpu_seconds_per_1000_runs", "CPU s / 1000 runs", "{:.3f}"),
    ("collector_core_used", "collector core used", "{:.0%}"),
    ("target_core_used", "target core used", "{:.0%}"),
    ("runs_missed", "runs missed", "{:.0f}"),
    ("runs_failed", "runs failed", "{:.0f}"),
    ("peak_rss_mib", "peak RSS MiB", "{:.0f}"),
)


def format_table(report: dict[str, Any]) -> str:
    setup = report["setup"]
    lines = [
        f"flowprobe collector throughput: collector pinned to CPU {setup['collector_cpu']}, target to CPU {setup['target_cpu']}, "
        f"1-minute load average {setup['load_average_1m']:.2f} at the end"
    ]
    scenarios = [(s, report[s.key]) for s in SCENARIOS.values() if s.key in report]
    if scenarios:
        lines.append(
            f"{setup['repeat']} repetitions of {setup['duration_s']:g} s after a {setup['warmup_s']:g} s warm-up; median (min-max)"
        )
        lines.append("")
        header = ["", *(f"{s.title}: {r['workflows']} x {s.steps} every {r['interval_s']:g}s" for s, r in scenarios)]
        rows = [header]
        for key, label, fmt in ROWS:
            rows.append([label, *(cell(fmt, r[key], *r["spread"][key]) for _, r in scenarios)])
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for n, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
            if n == 0:
                lines.append("  ".join("-" * w for w in widths))
    if "metrics" in report:
        m = report["metrics"]
        lines.append("")
        lines.append(f"/metrics at {m['workflows']} six-step workflows ({m['workflows_populated']} populated), median of {m['samples']}:")
        for label, key in (
            ("render, every pair changed", "metrics_render_cold_ms"),
            ("render, nothing changed", "metrics_render_warm_ms"),
            ("HTTP scrape, every pair changed", "scrape_http_ms"),
            ("HTTP scrape, gzip, every pair changed", "scrape_http_gzip_ms"),
        ):
            lines.append(f"  {label:<40}{m[key]:.1f} ms ({m[key + '_min']:.1f}-{m[key + '_max']:.1f})")
        lines.append(f"  {'exposition':<40}{m['metrics_bytes']:,} bytes ({m['metrics_gzip_bytes']:,} gzipped), {m['metrics_series']:,} series")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def _cores() -> tuple[int | None, int | None]:
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None  # nothing to pin apart; the report says so
    return allowed[0], allowed[1]


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.collector_throughput", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--scenario", action="append", choices=["single", "six", "scrape"], help="run only these (repeatable; default all)")
    parser.add_argument("--workflows", type=int, help="workflows per scenario (default: single 1000, six 500)")
    parser.add_argument("--interval", type=float, default=10.0, help="schedule interval in seconds (default 10)")
    parser.add_argument("--duration", type=float, default=12.0, help="measured window per repetition in seconds (default 12)")
    parser.add_argument("--warmup", type=float, help="seconds before measuring (default: one interval)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions per scenario (default 3)")
    parser.add_argument("--scrape-workflows", type=int, default=1000, help="six-step workflows for the /metrics figures (default 1000)")
    parser.add_argument("--scrape-samples", type=int, default=5, help="timed renders and scrapes (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.interval < 1:
        parser.error("--interval must be at least 1 (the schedule's minimum)")
    if args.repeat < 1 or args.duration <= 0 or (args.workflows is not None and args.workflows < 1):
        parser.error("--repeat, --duration and --workflows must be positive")
    return args


async def _bench(args: argparse.Namespace, target: Target, workdir: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    chosen = args.scenario or ["single", "six", "scrape"]
    warmup = args.interval if args.warmup is None else args.warmup
    report: dict[str, Any] = {}
    for name in ("single", "six"):
        if name not in chosen:
            continue
        scenario = SCENARIOS[name]
        workflows = args.workflows or scenario.workflows
        config_dir = write_config(workdir / name, target.base_url, workflows, scenario.steps, args.interval)
        repeats = []
        for index in range(args.repeat):
            progress(f"{scenario.title}: repetition {index + 1}/{args.repeat}")
            repeats.append(
                await measure_once(
                    config_dir,
                    workflows=workflows,
                    steps=scenario.steps,
                    interval=args.interval,
                    warmup=warmup,
                    duration=args.duration,
                    target=target,
                )
            )
        figures = summarise(repeats)
        report[scenario.key] = {"workflows": workflows, "steps_per_workflow": scenario.steps, "interval_s": args.interval, **figures}
    if "scrape" in chosen:
        progress(f"/metrics: {args.scrape_workflows} six-step workflows")
        config_dir = write_config(workdir / "scrape", target.base_url, args.scrape_workflows, 6, 3600)
        report["metrics"] = await measure_scrape(config_dir, samples=args.scrape_samples)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    # WARNING and above, plainly; per-run failure lines off (failures are counted instead).
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("flowprobe.run").setLevel(logging.ERROR)

    collector_cpu, target_cpu = _cores()
    if collector_cpu is not None:
        os.sched_setaffinity(0, {collector_cpu})  # before any thread exists: threads inherit it
    else:
        print("warning: fewer than two CPUs allowed; collector and target share one", file=sys.stderr)

    def progress(message: str) -> None:
        print(f"... {message}", file=sys.stderr, flush=True)

    target = Target(target_cpu)
    try:
        with tempfile.TemporaryDirectory(prefix="flowprobe-bench-") as workdir:
            report = asyncio.run(_bench(args, target, Path(workdir), progress))
    finally:
        target.stop()
    report["setup"] = {
        "collector_cpu": collector_cpu,
        "target_cpu": target_cpu,
        "cpus_online": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "python": sys.version.split()[0],
        "interval_s": args.interval,
        "warmup_s": args.interval if args.warmup is None else args.warmup,
        "duration_s": args.duration,
        "repeat": args.repeat,
    }
    return print_report(report, args.json, format_table)


if __name__ == "__main__":
    sys.exit(main())
