"""Dashboard API under load: concurrent users polling the overview, with its cache warm.

Run from the repository root::

    .venv/bin/python -m bench.api_load                    # six demo workflows x 3 envs, 1000 runs each
    .venv/bin/python -m bench.api_load --pairs 1000       # 1000 generated pairs (250 workflows x 4 envs), 100 runs each
    .venv/bin/python -m bench.api_load --pairs 1000 --envs 1   # 1000 workflows in one environment
    .venv/bin/python -m bench.api_load --json             # one JSON object on stdout

What runs
---------
- **The history** is seeded before the server starts, through
  `collector.store.HistoryStore`: per pair, ``--runs`` runs spread evenly over
  the last ``--span`` (7 d by default, the default retention), about 96 %
  success, 2 % failure (status, connect, timeout), 1 % error, 1 % skipped,
  1 % of the successes flaky; durations drawn from a seeded log-normal.
- **The collector's API** runs in its own process, pinned to the first
  allowed CPU: the real `Service` over that config and data directory (not
  started: nothing probes, the history does not change), `create_app` with
  the dashboard router (`dashboard_router(service)`, default 10 s cache),
  under uvicorn on a socket it binds itself (`ApiServer`).
- **The users** are ``--users`` asyncio tasks (100 by default), each with
  its own `aiohttp.ClientSession` (its own keep-alive connection), each sending
  ``--requests`` GETs of the overview one after the other, with
  ``Accept-Encoding: gzip`` as a browser does. They run in load generator
  processes, one per CPU other than the API's (``--processes``), pinned, and
  start together once every connection is open. On a two-CPU machine that is
  one process; the client's own cost per request can make it the bottleneck
  long before the API: the server-side figures below tell the two apart.

Figures
-------
- ``cold_ms``: the first request, which computes the overview (the SQLite
  queries) before answering.
- ``p50_ms`` / ``p95_ms`` / ``p99_ms`` / ``max_ms``: latency of every request of
  the measured phase (nearest rank), from sending to the last byte read,
  cache warm. The cache's refresh runs behind the answers (stale while
  refreshing), so the refreshes during the phase are in these figures.
- ``server_p50_ms`` / ``server_p95_ms``: the same requests timed inside the API
  process (an ASGI middleware of the benchmark around the app): the API's own
  share, without the load generator's queueing.
- ``requests_per_second``: requests of the phase / its wall time.
- ``server_cpu_percent`` / ``client_cpu_percent``: CPU time of each process over
  the phase / wall time (100 = one core). A client near 100 means the
  load generator, not the API, is the bottleneck: read the latencies as an
  upper bound then.
- ``body_bytes`` / ``gzip_bytes``: the overview's size, plain and as sent.

The target in the issue is p95 < 200 ms; the report says whether it was met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):  # run as a file: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import CLOCK_TICKS, HOST, percentile  # noqa: E402

OVERVIEW = "/api/monitoring/dashboard/overview"
TARGET_P95_MS = 200.0
DEMO_WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"
PROBE_ENV = {"FLOWPROBE_PROBE_EMAIL": "bench@flowprobe.local", "FLOWPROBE_PROBE_PASSWORD": "bench-password"}


# ---------------------------------------------------------------- the config and its history


def write_config(directory: Path, pairs: int | None, runs: int, span: float, envs: int = 4) -> Path:
    """The demo workflows (pairs None), or generated ones: pairs / envs workflows in `envs` environments."""
    directory.mkdir(parents=True, exist_ok=True)
    history = f"history: {{runs_per_pair: {max(runs, 1000)}, max_age: {int(span + 86400)}s}}\n"
    if pairs is None:
        for source in DEMO_WORKFLOWS.glob("*.yaml"):
            text = source.read_text()
            if source.name == "environments.yaml":
                text = text.replace("history: {runs_per_pair: 1000, max_age: 7d}", history.strip())
            (directory / source.name).write_text(text)
        return directory
    envs = max(1, min(envs, pairs))
    environments = "".join(f"  env{e}: {{base_url: 'http://env{e}.bench.invalid'}}\n" for e in range(envs))
    (directory / "environments.yaml").write_text(f"environments:\n{environments}{history}")
    for index in range(math.ceil(pairs / envs)):
        name = f"bench-{index:05d}"
        (directory / f"{name}.yaml").write_text(
            f"name: {name}\nschedule: {{every: 60s}}\nlabels: {{team: team-{index % 7}}}\nalert: {{latency_slo: 500ms}}\n"
            "steps:\n  - name: get\n    request: {url: '{{ base_url }}/items'}\n"
        )
    return directory


def seed_history(config_dir: Path, data_dir: Path, runs: int, span: float, seed: int = 7) -> int:
    """Write `runs` results per pair through HistoryStore; returns how many."""
    from collector.config import load_config
    from collector.result import RunResult
    from collector.store import HistoryStore

    config = load_config(config_dir)
    store = HistoryStore(data_dir / "history.sqlite3", runs_per_pair=max(runs, 1000), max_age=span + 86400)
    rng = random.Random(seed)
    now = time.time()
    written = 0
    for workflow, env in config.pairs():
        step = span / runs
        for index in range(runs):
            started = now - span + index * step + rng.random() * step * 0.5
            roll = rng.random()
            duration = min(30.0, rng.lognormvariate(math.log(0.12), 0.6))
            if roll < 0.01:
                result = RunResult(workflow.name, env, f"r{written:09d}", started, "skipped", 0.0, skip_reason="dependency")
            elif roll < 0.02:
                result = RunResult(workflow.name, env, f"r{written:09d}", started, "error", duration, message="internal error")
            elif roll < 0.04:
                reason = rng.choice(["status", "connect", "timeout"])
                result = RunResult(workflow.name, env, f"r{written:09d}", started, "failure", duration, failed_step="get", reason=reason)  # type: ignore[arg-type]
            else:
                flaky = rng.random() < 0.01
                result = RunResult(workflow.name, env, f"r{written:09d}", started, "success", duration, flaky=flaky, attempts=2 if flaky else 1)
            store.add(result)
            written += 1
    store.flush()
    store.close()
    return written


# ---------------------------------------------------------------- the API process


class ServerTimer:
    """ASGI middleware: how long the API took per request, from the call to the last body byte handed to the server.

    It separates the API's own time from the load generator's: with 100 users
    in one Python process, the client side can be the bottleneck.
    GET /__bench__/timings answers the durations so far and clears them.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.durations: list[float] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == "/__bench__/timings":
            body = json.dumps(self.durations).encode()
            self.durations = []
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        start = time.perf_counter()
        await self.app(scope, receive, send)
        self.durations.append(time.perf_counter() - start)


def _serve(config_dir: str, data_dir: str, core: int | None, reply: Connection) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    import logging

    logging.basicConfig(level=logging.WARNING)
    from collector.api import create_app
    from collector.dashboard_api import dashboard_router
    from collector.service import ApiServer, Service, run_event_loop

    async def serve() -> None:
        service = Service([config_dir], data_dir=data_dir, watch=False)
        app = create_app(service)
        if not any(getattr(route, "path", None) == OVERVIEW for route in app.routes):
            app.include_router(dashboard_router(service))  # until collector/api.py includes it
        server = ApiServer(ServerTimer(app), HOST, 0)
        await server.start()
        reply.send(server.port)
        reply.close()
        await asyncio.Event().wait()

    run_event_loop(serve())  # the loop `flowprobe run` serves the API on


class ApiProcess:
    def __init__(self, config_dir: Path, data_dir: Path, core: int | None) -> None:
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        self.process = context.Process(target=_serve, args=(str(config_dir), str(data_dir), core, send), name="bench-api", daemon=True)
        self.process.start()
        send.close()
        try:
            if not receive.poll(60):
                raise EOFError
            self.port: int = receive.recv()
        except EOFError:
            self.process.kill()
            raise RuntimeError(f"the API process did not start (exit code {self.process.exitcode})") from None
        finally:
            receive.close()
        self.base_url = f"http://{HOST}:{self.port}"

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(5)


# ---------------------------------------------------------------- the users


def first_answer(base_url: str, path: str) -> dict[str, Any]:
    """The cold request (it computes the overview), and the answer's size plain and gzipped."""
    with httpx.Client(base_url=base_url, timeout=120) as client:
        started = time.perf_counter()
        first = client.get(path, headers={"Accept-Encoding": "gzip"})
        cold = time.perf_counter() - started
        first.raise_for_status()
        body = first.json()
        raw = client.get(path, headers={"Accept-Encoding": "identity"})
        client.get("/__bench__/timings")  # clears these two
    return {
        "cold_ms": cold * 1000,
        "pairs": len(body.get("items", [])) if isinstance(body, dict) else None,
        "source": body.get("source") if isinstance(body, dict) else None,
        "body_bytes": len(raw.content),
        "gzip_bytes": int(first.headers["content-length"]) if first.headers.get("content-encoding") == "gzip" else None,
    }


async def _users(base_url: str, users: int, requests: int, path: str, barrier: Any) -> dict[str, Any]:
    import aiohttp

    # aiohttp, not httpx: httpx's per-request cost made the load generator the bottleneck
    # (one CPU at ~600 requests/s), so the latencies measured its queueing, not the API.
    sessions = [
        aiohttp.ClientSession(base_url, connector=aiohttp.TCPConnector(limit=1), headers={"Accept-Encoding": "gzip"},
                              timeout=aiohttp.ClientTimeout(total=60))
        for _ in range(users)
    ]
    latencies: list[float] = []
    errors = 0

    async def user(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for _ in range(requests):
            sent = time.perf_counter()
            async with session.get(path) as response:
                await response.read()
                latencies.append(time.perf_counter() - sent)
                errors += response.status != 200

    async def connect(session: aiohttp.ClientSession) -> None:
        async with session.get("/healthz") as response:
            await response.read()

    try:
        await asyncio.gather(*(connect(s) for s in sessions))  # every connection open before the clock starts
        await asyncio.to_thread(barrier.wait)
        cpu, began = time.process_time(), time.monotonic()
        await asyncio.gather(*(user(s) for s in sessions))
        ended = time.monotonic()
        cpu = time.process_time() - cpu
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
    return {"latencies": latencies, "errors": errors, "began": began, "ended": ended, "cpu_s": cpu}


def _users_process(base_url: str, users: int, requests: int, path: str, core: int | None, barrier: Any, reply: Connection) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})
    reply.send(asyncio.run(_users(base_url, users, requests, path, barrier)))
    reply.close()


def load(api: ApiProcess, users: int, requests: int, path: str, cores: Sequence[int | None]) -> dict[str, Any]:
    """`users` split over one load generator process per core in `cores`, all started together."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(cores) + 1)
    shares = [users // len(cores) + (i < users % len(cores)) for i in range(len(cores))]
    workers = []
    for core, share in zip(cores, shares):
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_users_process, args=(api.base_url, share, requests, path, core, barrier, send), daemon=True)
        process.start()
        send.close()
        workers.append((process, receive))
    barrier.wait(timeout=120)
    server_before = api.cpu_seconds()
    results = []
    for process, receive in workers:
        results.append(receive.recv())
        process.join(10)
    server_used = api.cpu_seconds() - server_before
    with httpx.Client(base_url=api.base_url, timeout=30) as client:
        server_times = client.get("/__bench__/timings").json()
    wall = max(r["ended"] for r in results) - min(r["began"] for r in results)
    return {
        "latencies": [x for r in results for x in r["latencies"]],
        "server_times": server_times,
        "errors": sum(r["errors"] for r in results),
        "wall_s": wall,
        "client_cpu_s": sum(r["cpu_s"] for r in results),
        "server_cpu_s": server_used,
    }


# ---------------------------------------------------------------- report


def _cores(processes: int | None) -> tuple[int | None, list[int | None]]:
    """The API's core, and one core per load generator process: the others, or unpinned on one CPU."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, [None] * (processes or 1)
    rest = allowed[1:]
    count = processes or len(rest)
    return allowed[0], [rest[i % len(rest)] for i in range(count)]


def format_table(report: dict[str, Any]) -> str:
    r = report
    lines = [
        f"dashboard overview under load: {r['users']} users x {r['requests_per_user']} requests, "
        f"{r['pairs']} pairs ({r['setup']['envs']} environment(s)), {r['runs_seeded']} runs in the history ({r['source']})",
        f"  cold (computes the overview)   {r['cold_ms']:8.1f} ms",
        f"  warm p50 / p95 / p99 / max     {r['p50_ms']:8.1f} / {r['p95_ms']:.1f} / {r['p99_ms']:.1f} / {r['max_ms']:.1f} ms",
        f"  in the API (server side) p50 / p95 {r['server_p50_ms']:5.2f} / {r['server_p95_ms']:.2f} ms",
        f"  requests per second            {r['requests_per_second']:8.1f}   (errors: {r['errors']})",
        f"  API process CPU                {r['server_cpu_percent']:8.1f} %   (one core = 100)",
        f"  load generator CPU             {r['client_cpu_percent']:8.1f} %   ({len(r['setup']['client_cpus'])} process(es))",
        f"  body                           {r['body_bytes']:8d} bytes, {r['gzip_bytes'] or 0} gzipped",
        f"  target p95 < {TARGET_P95_MS:.0f} ms              {'met' if r['target_met'] else 'NOT met'}",
        f"  machine                        {r['setup']['cpus_online']} CPUs, load average {r['setup']['load_average_1m']} (1 min)",
    ]
    if r["client_cpu_percent"] > 90 * len(r["setup"]["client_cpus"]):
        lines.append("  note: the load generator saturates its CPU: the latencies above are mostly its own queueing, an upper bound")
    if r["setup"]["load_average_1m"] > (r["setup"]["cpus_online"] or 1):
        lines.append("  note: other processes compete for the CPUs; the latencies include their share")
    return "\n".join(lines)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.api_load", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, help="generated (workflow, env) pairs (default: the six demo workflows x 3 environments)")
    parser.add_argument("--envs", type=int, default=4, help="environments of the generated pairs (default 4; 1: --pairs workflows)")
    parser.add_argument("--runs", type=int, help="runs per pair in the history (default: 1000 for the demo, 100 generated)")
    parser.add_argument("--span", default="7d", help="the history spans this far back (default 7d)")
    parser.add_argument("--users", type=int, default=100, help="concurrent users (default 100)")
    parser.add_argument("--requests", type=int, default=30, help="requests per user in the measured phase (default 30)")
    parser.add_argument("--processes", type=int, help="load generator processes (default: one per CPU other than the API's)")
    parser.add_argument("--path", default=OVERVIEW, help=f"what the users GET (default {OVERVIEW})")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.envs < 1:
        parser.error("--envs must be positive")
    if (args.processes is not None and args.processes < 1) or (args.pairs is not None and args.pairs < 1) or args.users < 1 or args.requests < 1 or (args.runs is not None and args.runs < 1):
        parser.error("--pairs, --runs, --users and --requests must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    from collector.config import parse_duration

    span = parse_duration(args.span)
    runs = args.runs or (1000 if args.pairs is None else 100)
    os.environ.update(PROBE_ENV)  # the demo workflows' secrets; the API process inherits them
    api_cpu, client_cpus = _cores(args.processes)

    def progress(message: str) -> None:
        print(f"... {message}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="flowprobe-api-load-") as workdir:
        config_dir = write_config(Path(workdir) / "config", args.pairs, runs, span, args.envs)
        progress(f"seeding {runs} runs per pair")
        seeded = seed_history(config_dir, Path(workdir) / "data", runs, span)
        api = ApiProcess(config_dir, Path(workdir) / "data", api_cpu)
        try:
            figures = first_answer(api.base_url, args.path)
            progress(f"{args.users} users x {args.requests} requests on {args.path}, in {len(client_cpus)} process(es)")
            figures.update(load(api, args.users, args.requests, args.path, client_cpus))
        finally:
            api.stop()
    latencies = figures.pop("latencies")
    server_times = figures.pop("server_times")
    wall = figures.pop("wall_s")
    report: dict[str, Any] = {
        "users": args.users,
        "requests_per_user": args.requests,
        "runs_seeded": seeded,
        **figures,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000,
        "server_p50_ms": percentile(server_times, 50) * 1000,
        "server_p95_ms": percentile(server_times, 95) * 1000,
        "requests_per_second": len(latencies) / wall,
        "server_cpu_percent": 100 * figures.pop("server_cpu_s") / wall,
        "client_cpu_percent": 100 * figures.pop("client_cpu_s") / wall,
        "setup": {
            "envs": args.envs if args.pairs is not None else 3,
            "api_cpu": api_cpu,
            "client_cpus": client_cpus,
            "cpus_online": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": sys.version.split()[0],
        },
    }
    report["target_met"] = report["p95_ms"] < TARGET_P95_MS
    if args.json:
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in report.items()}, separators=(",", ":")))
    else:
        print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
