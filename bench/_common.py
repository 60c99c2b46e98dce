"""Helpers shared by the benchmarks: processes, CPU and memory readings, percentiles, tables, JSON.

Kept free of collector imports, so a spawned helper process (a target, a
load generator) that imports it stays light.

- `proc_cpu_seconds`, `proc_rss_kib`, `proc_fds`: another process's user+system
  CPU (all its threads), resident memory and open file descriptors, read from
  /proc, so a benchmark measures a process without asking it.
- `cores`: the CPUs this process may use, to pin parts apart.
- `Nginx`: a local nginx on a free loopback port serving one small JSON
  body, one worker, pinned to a core where asked; the ceiling of an HTTP
  exchange on this machine, and a target no Python prober can slow down.
- `percentile`, `summarise`, `cell`, `table`: exact nearest-rank percentiles,
  medians with min-max over repetitions, and aligned text tables.
- `jsonable`: floats rounded, NaN to null (JSON has no NaN).
- `CollectorProcess`: the real collector (`Service` and its API under
  `ApiServer`, as `flowprobe run` serves them) in a child process of its own,
  pinned where asked, on asyncio or uvloop. It keeps every scheduling
  lateness sample and counts runs by outcome; `stats()` hands over what
  was gathered since the last call. Its CPU, memory and descriptors are read
  from /proc by the parent, so the figures are the collector's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Coroutine, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "BODY",
    "CLOCK_TICKS",
    "CollectorProcess",
    "HOST",
    "LOOPS",
    "Nginx",
    "add_loop_argument",
    "cell",
    "check_loop",
    "cores",
    "free_port",
    "jsonable",
    "percentile",
    "print_report",
    "proc_cpu_seconds",
    "proc_fds",
    "proc_rss_kib",
    "progress",
    "run_on",
    "summarise",
    "table",
    "wait_for_port",
]

HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# The small JSON every local target of the benchmarks answers.
BODY = b'{"status":"ok","items":[{"id":1,"name":"kale"},{"id":2,"name":"eggs"}]}'


# ---------------------------------------------------------------- processes


def proc_cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process, all its threads (and its reaped children's not)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def proc_rss_kib(pid: int | str = "self", key: str = "VmRSS") -> int:
    """A memory line of /proc/<pid>/status in KiB: VmRSS (now) or VmHWM (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def proc_fds(pid: int | str = "self") -> int:
    """Open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def cores() -> list[int]:
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Until something accepts on 127.0.0.1:port; RuntimeError after `timeout` or if `process` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout:g} s")


def progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


_NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    server {{
        listen {host}:{port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
"""


class Nginx:
    """nginx serving `BODY` on a free loopback port, one worker, pinned to `core` (or unpinned)."""

    def __init__(self, core: int | None) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise RuntimeError("nginx is not installed (Debian: apt-get install nginx-light)")
        self._dir = tempfile.TemporaryDirectory(prefix="flowprobe-bench-nginx-")
        prefix = self._dir.name
        self.port = free_port()
        conf = Path(prefix) / "nginx.conf"
        conf.write_text(_NGINX_CONF.format(prefix=prefix, host=HOST, port=self.port, body=BODY.decode()))
        command = [binary, "-p", prefix, "-c", str(conf), "-e", f"{prefix}/error.log"]
        if core is not None:
            command = ["taskset", "-c", str(core), *command]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.port, process=self.process)
        except RuntimeError:
            self.stop()
            raise
        self.url = f"http://{HOST}:{self.port}/"

    def cpu_seconds(self) -> float:
        """The master's and the workers' CPU (the worker does the serving)."""
        pids = [self.process.pid, *_children(self.process.pid)]
        return sum(proc_cpu_seconds(pid) for pid in pids)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # SIGTERM: nginx's fast shutdown, workers included
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._dir.cleanup()


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


# ---------------------------------------------------------------- the collector in its own process


_T = TypeVar("_T")

LOOPS = ("asyncio", "uvloop")


def add_loop_argument(parser: argparse.ArgumentParser) -> None:
    """--loop, defaulting to uvloop as `flowprobe run` does (collector.service.run_event_loop)."""
    parser.add_argument("--loop", choices=LOOPS, default="uvloop",
                        help="the collector's event loop (default uvloop, as `flowprobe run` uses; asyncio to compare)")


def check_loop(parser: argparse.ArgumentParser, loop: str) -> None:
    if loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            parser.error("--loop uvloop: uvloop is not installed (pip install uvloop, or --loop asyncio)")


def print_report(report: dict[str, Any], as_json: bool, format_table: Callable[[dict[str, Any]], str]) -> int:
    """The report as one JSON object (``--json``) or as `format_table` lays it out; 0, the exit status."""
    print(json.dumps(jsonable(report), separators=(",", ":"), allow_nan=False) if as_json else format_table(report), flush=True)
    return 0


def run_on(loop: str, main: Coroutine[Any, Any, _T]) -> _T:
    """`main` on the named event loop: uvloop as `flowprobe run` runs it, or asyncio's own."""
    if loop == "uvloop":
        from collector.service import run_event_loop

        return run_event_loop(main)
    return asyncio.run(main)


def _collector_main(config_dir: str, data_dir: str, cores: list[int] | None, loop: str, conn: Connection) -> None:
    if cores:
        os.sched_setaffinity(0, set(cores))  # before any thread starts: its threads inherit it
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("flowprobe.run").setLevel(logging.ERROR)  # per-run lines off: counted, not formatted
    run_on(loop, _collector_serve(config_dir, data_dir, conn))


async def _collector_serve(config_dir: str, data_dir: str, conn: Connection) -> None:
    from collector.api import create_app
    from collector.service import ApiServer, Service

    started = time.perf_counter()
    service = Service([config_dir], data_dir=data_dir, grace=5.0, watch=False)
    lateness = array("d")
    outcomes: dict[str, int] = {}
    steps = [0]
    observe = service.scheduler.on_lateness

    def on_lateness(seconds: float) -> None:
        lateness.append(seconds)
        observe(seconds)

    def on_result(result: Any) -> None:
        outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
        steps[0] += sum(1 for step in result.steps if step.outcome != "skipped")

    service.scheduler.on_lateness = on_lateness
    service.listeners.append(on_result)
    api = ApiServer(create_app(service), HOST, 0)
    await api.start()
    await service.start()
    conn.send({"port": api.port, "pairs": len(service.scheduler.pairs), "start_s": time.perf_counter() - started})
    loop = asyncio.get_running_loop()
    try:
        while True:
            request = await loop.run_in_executor(None, conn.recv)
            if request == "stop":
                break
            conn.send({
                "lateness": lateness.tobytes(),
                "outcomes": dict(outcomes),
                "steps": steps[0],
                "missed": sum(pair.missed for pair in service.state.pairs.values()),
                "internal_errors": service.runner.internal_errors,
                "history_write_errors": service.store.write_errors,
            })
            del lateness[:]
            outcomes.clear()
            steps[0] = 0
    finally:
        await service.stop()
        await api.stop()
    conn.send("stopped")


class CollectorProcess:
    """The real collector and its API in a child process; see the module docstring."""

    def __init__(self, config_dir: Path, data_dir: Path, *, cores: list[int] | None = None, loop: str = "uvloop", timeout: float = 600) -> None:
        context = multiprocessing.get_context("spawn")  # no inherited loop, threads or sockets
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_collector_main, args=(str(config_dir), str(data_dir), cores, loop, child), name="bench-collector", daemon=True
        )
        self.process.start()
        child.close()
        if not self.conn.poll(timeout):
            self.process.kill()
            raise RuntimeError(f"the collector did not start within {timeout:g} s")
        try:
            hello = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the collector process failed to start (exit code {self.process.exitcode})") from None
        self.pid: int = self.process.pid  # type: ignore[assignment]
        self.port: int = hello["port"]
        self.pairs: int = hello["pairs"]
        self.start_s: float = hello["start_s"]
        self.base_url = f"http://{HOST}:{self.port}"

    def stats(self) -> dict[str, Any]:
        """What happened since the last call: lateness samples (seconds), runs by outcome, steps made;
        and the totals so far of runs missed, internal errors and history write errors."""
        self.conn.send("stats")
        if not self.conn.poll(120):
            raise RuntimeError("the collector did not answer")
        stats: dict[str, Any] = self.conn.recv()
        samples = array("d")
        samples.frombytes(stats.pop("lateness"))
        stats["lateness"] = samples
        stats["runs"] = sum(stats["outcomes"].values())
        return stats

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid)

    def rss_kib(self) -> int:
        return proc_rss_kib(self.pid)

    def fds(self) -> int:
        return proc_fds(self.pid)

    def stop(self) -> None:
        try:
            if self.process.is_alive():
                self.conn.send("stop")
                self.conn.poll(60)
        except (BrokenPipeError, OSError):
            pass
        finally:
            self.process.join(30)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()


# ---------------------------------------------------------------- figures


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; NaN when there are no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def summarise(repeats: list[dict[str, float]]) -> dict[str, Any]:
    """The median of each figure, its [min, max] under "spread", and every repetition under "repeats"."""
    summary: dict[str, Any] = {}
    spread: dict[str, list[float]] = {}
    for key in repeats[0]:
        values = [r[key] for r in repeats]
        summary[key] = statistics.median(values)
        spread[key] = [min(values), max(values)]
    summary["spread"] = spread
    summary["repeats"] = repeats
    return summary


def cell(fmt: str, median: float, low: float, high: float) -> str:
    """A median with its (min-max), formatted alike; the range left out when there is none."""
    text = fmt.format(median)
    if low != high and fmt.format(low) != fmt.format(high):
        text += f" ({fmt.format(low)}-{fmt.format(high)})"
    return text


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells as aligned lines: the first column left, the others right, a rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def jsonable(value: Any) -> Any:
    """Floats to 4 decimals; NaN (a figure with no samples) becomes null, as JSON has no NaN."""
    if isinstance(value, float):
        return None if value != value else round(value, 4)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
