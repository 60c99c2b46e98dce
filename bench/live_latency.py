"""Live update latency: from a run being recorded to its `run` event reaching WebSocket clients.

Run from the repository root::

    .venv/bin/python -m bench.live_latency            # a table
    .venv/bin/python -m bench.live_latency --json     # one JSON object

What runs
---------
- **The target** is bench/collector_throughput.py's minimal HTTP server, in its
  own process, so runs take a millisecond or two.
- **The collector** is the real `Service` in this process: generated one-step
  workflows, the scheduler, the runner, the SQLite history, and its API
  (`create_app` plus the live router, under `ApiServer` and uvicorn, as
  `flowprobe run` serves it) on a free loopback port.
- **The clients** are N WebSocket clients (the ``websockets`` library, with
  permessage-deflate offered as browsers do; ``--no-compression`` turns it
  off) in one separate process, subscribed to everything.
- With two or more CPUs, the collector is pinned to the first; the target and
  the clients share the second.

What counts
-----------
After a warm-up (one interval by default: every pair has run once), for the
measured window a listener placed before the live hub stamps each run's
``run_id`` with ``time.time()`` when the collector records it; each client
stamps the ``run`` event when it has parsed it. Latency is receive minus
record, for every (event, client) delivery, on the one machine's clock.
Percentiles are exact (nearest rank) over all deliveries. Deliveries are
compared with those expected (runs in the window times clients still
connected) after a drain of 2 s; ``dropped`` counts clients closed with 1013
(too slow, or not reading).

Latency tails follow the event loops more than the network, so each side's
loop lag is shown (how late a 10 ms sleep woke up: busy, or not given the
CPU), and the collector's garbage-collector pauses: a full collection stops
its loop for as long as it takes to walk every object (hundreds of ms with
1000 workflows on a busy machine). The clients' process runs with its
collector off, so the harness's own pauses are not counted as latency.
``--batch`` has the clients ask for batches (``?batch=1``, see
collector/live.py); ``--no-compression`` has them not offer permessage-deflate.

``bench/live_load.py`` runs the same machinery with 500 clients and 1000 workflows.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import percentile  # noqa: E402
from bench.collector_throughput import CLOCK_TICKS, Target, write_config  # noqa: E402

__all__ = ["Setup", "main", "measure"]

HOST = "127.0.0.1"
WS_PATH = "/api/monitoring/websocket"


def _cpu_seconds(pid: int | None) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class LoopLag:
    """How late a 10 ms sleep wakes up on this event loop: the time the loop was busy or not scheduled."""

    def __init__(self) -> None:
        self.samples = array("d")
        self.measuring = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.01)
            if self.measuring:
                self.samples.append(time.perf_counter() - before - 0.01)

    def stop(self) -> dict[str, float]:
        if self._task is not None:
            self._task.cancel()
        ordered = sorted(self.samples)
        return {"p99_ms": percentile(ordered, 99) * 1000, "max_ms": (ordered[-1] if ordered else float("nan")) * 1000}


class GcPauses:
    """This process's garbage collector pauses while `measuring`: full (generation 2) ones stop the event loop longest."""

    def __init__(self) -> None:
        self.measuring = False
        self.full: list[float] = []
        self.total = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        elif self.measuring:
            pause = time.perf_counter() - self._began
            self.total += pause
            if info["generation"] == 2:
                self.full.append(pause)



def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------- the clients (their own process)


def _client_process(url: str, clients: int, compression: bool, core: int | None, conn: Connection) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    asyncio.run(_clients(url, clients, compression, conn))


async def _clients(url: str, count: int, compression: bool, conn: Connection) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    received: dict[str, array[float]] = {}  # run_id -> receive times, one per client that got it
    closes: dict[str, int] = {}
    connected = 0
    events = 0
    ready = asyncio.Event()
    stop = asyncio.Event()

    async def client() -> None:
        nonlocal connected, events
        try:
            async with connect(url, compression="deflate" if compression else None, open_timeout=120, max_size=None) as ws:
                while True:  # the snapshot, in as many parts as it takes
                    message = json.loads(await ws.recv())
                    if message["type"] == "snapshot" and message["part"] == message["parts"]:
                        break
                connected += 1
                if connected == count:
                    ready.set()
                async for text in ws:
                    now = time.time()
                    if text.startswith('{"type":"run"'):
                        run_ids = [json.loads(text)["run_id"]]
                        events += 1
                    elif text.startswith("["):  # a batch (?batch=1)
                        batch = json.loads(text)
                        run_ids = [e["run_id"] for e in batch if e["type"] == "run"]
                        events += len(batch)
                    else:
                        events += 1
                        continue
                    for run_id in run_ids:
                        times = received.get(run_id)
                        if times is None:
                            times = received[run_id] = array("d")
                        times.append(now)
        except ConnectionClosed as exc:
            code = str(exc.rcvd.code) if exc.rcvd is not None else "1006"
            closes[code] = closes.get(code, 0) + 1
        except (OSError, asyncio.TimeoutError) as exc:
            closes[type(exc).__name__] = closes.get(type(exc).__name__, 0) + 1
        finally:
            if not ready.is_set() and connected + sum(closes.values()) >= count:
                ready.set()

    started = time.perf_counter()
    tasks = []
    for index in range(count):  # in small batches: a burst of handshakes is not what is measured
        tasks.append(asyncio.create_task(client()))
        if index % 25 == 24:
            await asyncio.sleep(0.05)
    await ready.wait()
    # The harness's own collector pauses (a second and more, with half a million deliveries
    # held in memory) would be measured as latency: what it makes is freed by reference counting.
    gc.collect()
    gc.disable()
    lag = LoopLag()
    lag.start()
    lag.measuring = True
    conn.send({"connected": connected, "failed": sum(closes.values()), "connect_s": time.perf_counter() - started})

    async def wait_for_stop() -> None:
        stamps.update(await asyncio.to_thread(conn.recv))
        stop.set()

    stamps: dict[str, float] = {}
    waiter = asyncio.create_task(wait_for_stop())
    await stop.wait()
    await waiter
    alive = sum(1 for task in tasks if not task.done())
    client_lag = lag.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    latencies = array("d")
    for run_id, recorded in stamps.items():
        for at in received.get(run_id, ()):
            latencies.append(at - recorded)
    ordered = sorted(latencies)
    conn.send(
        {
            "clients_connected": connected,
            "clients_alive_at_end": alive,
            "closes": closes,
            "events_received": events,
            "runs_in_window": len(stamps),
            "deliveries": len(ordered),
            "deliveries_expected": len(stamps) * alive,
            "latency_p50_ms": percentile(ordered, 50) * 1000,
            "latency_p90_ms": percentile(ordered, 90) * 1000,
            "latency_p99_ms": percentile(ordered, 99) * 1000,
            "latency_max_ms": (ordered[-1] if ordered else float("nan")) * 1000,
            "clients_loop_lag_p99_ms": client_lag["p99_ms"],
            "clients_loop_lag_max_ms": client_lag["max_ms"],
        }
    )


# ---------------------------------------------------------------- the collector (this process)


@dataclass(frozen=True)
class Setup:
    clients: int
    workflows: int
    interval: float
    warmup: float
    duration: float
    drain: float = 2.0
    compression: bool = True
    batch: bool = False
    heartbeat: float = 15.0
    queue_size: int = 1000


def _build_app(service: Any, setup: Setup) -> tuple[Any, Any]:
    """The collector's app as `flowprobe run` serves it, with the bench's queue bound and heartbeat on its live hub."""
    from collector.api import create_app
    from collector.live import LiveHub, live_router

    app = create_app(service)
    hub = getattr(service, "live", None)
    if hub is None or not any(getattr(route, "path", "") == WS_PATH for route in app.routes):  # an API without the live router
        hub = LiveHub(service)
        app.include_router(live_router(service, hub))
    hub.queue_size, hub.heartbeat = setup.queue_size, setup.heartbeat
    hub.attach()  # the service attaches its own at start; twice is once
    return app, hub


async def measure(
    setup: Setup, config_dir: Path, target: Target, client_core: int | None, progress: Callable[[str], None]
) -> dict[str, Any]:
    from collector.service import ApiServer, Service

    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="flowprobe-bench-live-") as data_dir:
        service = Service([config_dir], data_dir=data_dir, grace=5.0, watch=False)
        stamps: dict[str, float] = {}
        measuring = False

        def stamp(result: Any) -> None:
            if measuring:
                stamps[result.run_id] = time.time()

        service.listeners.insert(0, stamp)  # before the hub's: the time the run was recorded
        gc_pauses = GcPauses()
        app, hub = _build_app(service, setup)
        api = ApiServer(app, HOST, 0)
        await api.start()
        await service.start()
        gc.callbacks.append(gc_pauses)
        rss_idle = _rss_mib()
        parent, child = context.Pipe()
        url = f"ws://{HOST}:{api.port}{WS_PATH}" + ("?batch=1" if setup.batch else "")
        process = context.Process(target=_client_process, args=(url, setup.clients, setup.compression, client_core, child), daemon=True)
        try:
            progress(f"warm-up {setup.warmup:g} s, {setup.clients} clients connecting")
            started = time.monotonic()
            process.start()
            child.close()
            connected = await asyncio.to_thread(parent.recv)
            await asyncio.sleep(max(0.0, setup.warmup - (time.monotonic() - started)))
            rss_connected = _rss_mib()
            rss_peak = rss_connected
            progress(f"measuring {setup.duration:g} s")
            measuring = True
            lag = LoopLag()
            lag.start()
            lag.measuring = gc_pauses.measuring = True
            cpu_before, wall_before = time.process_time(), time.perf_counter()
            clients_cpu_before, target_cpu_before = _cpu_seconds(process.pid), target.cpu_seconds()
            end = time.monotonic() + setup.duration
            while time.monotonic() < end:
                await asyncio.sleep(min(0.5, max(0.0, end - time.monotonic())))
                rss_peak = max(rss_peak, _rss_mib())
            measuring = gc_pauses.measuring = False
            server_lag = lag.stop()
            cpu, wall = time.process_time() - cpu_before, time.perf_counter() - wall_before
            clients_cpu, target_cpu = _cpu_seconds(process.pid) - clients_cpu_before, target.cpu_seconds() - target_cpu_before
            await asyncio.sleep(setup.drain)  # deliveries in flight at the end of the window
            parent.send(stamps)
            figures = await asyncio.to_thread(parent.recv)
            stats = hub.stats() if hub is not None else None
        finally:
            if gc_pauses in gc.callbacks:
                gc.callbacks.remove(gc_pauses)
            process.join(30)
            if process.is_alive():
                process.kill()
            await service.stop()
            await api.stop()
    return {
        **figures,
        "connect_s": connected["connect_s"],
        "connect_failed": connected["failed"],
        "dropped_slow": (stats or {}).get("dropped", {}).get("slow"),
        "dropped_dead": (stats or {}).get("dropped", {}).get("dead"),
        "runs_per_second": len(stamps) / wall,
        "collector_core_used": cpu / wall,
        "collector_loop_lag_p99_ms": server_lag["p99_ms"],
        "collector_loop_lag_max_ms": server_lag["max_ms"],
        "collector_gc_full_collections": len(gc_pauses.full),
        "collector_gc_full_pause_max_ms": max(gc_pauses.full, default=float("nan")) * 1000,
        "collector_gc_pause_total_s": gc_pauses.total,
        "clients_core_used": clients_cpu / wall,
        "target_core_used": target_cpu / wall,
        "server_rss_idle_mib": rss_idle,
        "server_rss_connected_mib": rss_connected,
        "server_rss_peak_mib": rss_peak,
        "server_rss_per_client_kib": (rss_connected - rss_idle) * 1024 / max(1, setup.clients),
    }


# ---------------------------------------------------------------- report

ROWS = (
    ("clients_connected", "clients connected", "{:.0f}"),
    ("connect_s", "connect + snapshot, all clients, s", "{:.1f}"),
    ("runs_per_second", "runs/s recorded", "{:.1f}"),
    ("runs_in_window", "runs in the window", "{:.0f}"),
    ("deliveries", "run events delivered", "{:.0f}"),
    ("deliveries_expected", "run events expected", "{:.0f}"),
    ("latency_p50_ms", "latency p50 ms", "{:.1f}"),
    ("latency_p90_ms", "latency p90 ms", "{:.1f}"),
    ("latency_p99_ms", "latency p99 ms", "{:.1f}"),
    ("latency_max_ms", "latency max ms", "{:.1f}"),
    ("dropped_slow", "clients dropped (1013, slow)", "{}"),
    ("dropped_dead", "clients dropped (dead)", "{}"),
    ("clients_alive_at_end", "clients connected at the end", "{:.0f}"),
    ("collector_core_used", "collector core used", "{:.0%}"),
    ("collector_loop_lag_p99_ms", "collector event loop lag p99 ms", "{:.1f}"),
    ("collector_loop_lag_max_ms", "collector event loop lag max ms", "{:.1f}"),
    ("collector_gc_full_collections", "collector full GC collections", "{:.0f}"),
    ("collector_gc_full_pause_max_ms", "collector full GC pause max ms", "{:.1f}"),
    ("collector_gc_pause_total_s", "collector GC pauses total s", "{:.2f}"),
    ("clients_loop_lag_p99_ms", "clients event loop lag p99 ms", "{:.1f}"),
    ("clients_loop_lag_max_ms", "clients event loop lag max ms", "{:.1f}"),
    ("clients_core_used", "clients core used", "{:.0%}"),
    ("target_core_used", "target core used", "{:.0%}"),
    ("server_rss_idle_mib", "server RSS before clients MiB", "{:.0f}"),
    ("server_rss_connected_mib", "server RSS with clients MiB", "{:.0f}"),
    ("server_rss_peak_mib", "server RSS peak MiB", "{:.0f}"),
    ("server_rss_per_client_kib", "server RSS per client KiB", "{:.0f}"),
)


def format_table(title: str, report: dict[str, Any]) -> str:
    setup = report["setup"]
    lines = [
        title,
        f"{setup['clients']} clients, {setup['workflows']} one-step workflows every {setup['interval_s']:g} s, "
        f"{setup['duration_s']:g} s window after {setup['warmup_s']:g} s; compression {'on' if setup['compression'] else 'off'}, "
        f"batches {'on' if setup['batch'] else 'off'}; "
        f"collector on CPU {setup['collector_cpu']}, clients and target on CPU {setup['client_cpu']}; "
        f"1-minute load average {setup['load_average_1m']:.2f} at the end",
        "",
    ]
    width = max(len(label) for _, label, _ in ROWS)
    for key, label, fmt in ROWS:
        value = report.get(key)
        lines.append(f"  {label:<{width}}  {'-' if value is None else fmt.format(value)}")
    if report.get("closes"):
        lines.append(f"  {'client closes by code':<{width}}  {report['closes']}")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return None if value != value else round(value, 4)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _cores() -> tuple[int | None, int | None]:
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)


def parse(argv: Sequence[str] | None, *, prog: str, doc: str | None, defaults: Setup) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--clients", type=int, default=defaults.clients, help=f"WebSocket clients (default {defaults.clients})")
    parser.add_argument("--workflows", type=int, default=defaults.workflows, help=f"one-step workflows (default {defaults.workflows})")
    parser.add_argument("--interval", type=float, default=defaults.interval, help=f"schedule interval, s (default {defaults.interval:g})")
    parser.add_argument("--warmup", type=float, default=defaults.warmup, help=f"seconds before measuring (default {defaults.warmup:g})")
    parser.add_argument("--duration", type=float, default=defaults.duration, help=f"measured window, s (default {defaults.duration:g})")
    parser.add_argument("--queue-size", type=int, default=defaults.queue_size, help=f"per-client queue bound (default {defaults.queue_size})")
    parser.add_argument("--no-compression", dest="compression", action="store_false", help="clients do not offer permessage-deflate")
    parser.add_argument("--batch", action="store_true", help="clients ask for batches (?batch=1): what is queued goes as one message")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.interval < 1:
        parser.error("--interval must be at least 1 (the schedule's minimum)")
    if min(args.clients, args.workflows, args.queue_size) < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("--clients, --workflows, --queue-size and --duration must be positive")
    return args


def run(args: argparse.Namespace, title: str) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("flowprobe.run").setLevel(logging.ERROR)
    collector_cpu, client_cpu = _cores()
    if collector_cpu is not None:
        os.sched_setaffinity(0, {collector_cpu})
    else:
        print("warning: fewer than two CPUs allowed; collector, target and clients share one", file=sys.stderr)
    setup = Setup(args.clients, args.workflows, args.interval, args.warmup, args.duration,
                  compression=args.compression, batch=args.batch, queue_size=args.queue_size)

    def progress(message: str) -> None:
        print(f"... {message}", file=sys.stderr, flush=True)

    from collector.service import run_event_loop

    target = Target(client_cpu)
    try:
        with tempfile.TemporaryDirectory(prefix="flowprobe-bench-live-config-") as workdir:
            config_dir = write_config(Path(workdir) / "workflows", target.base_url, setup.workflows, 1, setup.interval)
            report = run_event_loop(measure(setup, config_dir, target, client_cpu, progress))  # as `flowprobe run` runs
    finally:
        target.stop()
    report["setup"] = {
        "clients": setup.clients,
        "workflows": setup.workflows,
        "interval_s": setup.interval,
        "warmup_s": setup.warmup,
        "duration_s": setup.duration,
        "compression": setup.compression,
        "batch": setup.batch,
        "queue_size": setup.queue_size,
        "collector_cpu": collector_cpu,
        "client_cpu": client_cpu,
        "cpus_online": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "python": sys.version.split()[0],
    }
    if args.json:
        print(json.dumps(_jsonable(report), separators=(",", ":"), allow_nan=False))
    else:
        print(format_table(title, report))
    return 0


DEFAULTS = Setup(clients=50, workflows=200, interval=5.0, warmup=5.0, duration=20.0)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv, prog="python -m bench.live_latency", doc=__doc__, defaults=DEFAULTS)
    return run(args, "flowprobe live updates: latency from a run recorded to its event at WebSocket clients")


if __name__ == "__main__":
    sys.exit(main())
