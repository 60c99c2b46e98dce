"""`flowprobe demo`: the embedded default, with no external server.

One process runs three demo targets (prod, staging and dev, each its own
farmers-market app with its own data and chaos controls), the collector
with its SQLite history and API, and the analytics worker reading that
history on the same event loop. The probe user's password is generated per
demo and reaches the workflows the way a real secret would: through the
environment variable that environments.yaml names.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from pathlib import Path

from analytics.worker import DEFAULT_PROBATION, Worker
from collector.service import ApiServer, Service
from collector.target import create_app

__all__ = ["DEMO_ENVS", "run_demo"]

DEMO_ENVS = ("prod", "staging", "dev")
DEMO_EMAIL = "demo@flowprobe.local"


# Newcomers watch the demo: read new runs more often than the worker's 15 s default.
ANALYTICS_INTERVAL = 5.0


async def run_demo(
    *, config: Path, listen: tuple[str, int], target_port: int, data_dir: Path, analytics_listen: tuple[str, int] | None = None
) -> None:
    password = secrets.token_urlsafe(18)
    os.environ["FLOWPROBE_PROBE_EMAIL"] = DEMO_EMAIL
    os.environ["FLOWPROBE_PROBE_PASSWORD"] = password
    targets: list[ApiServer] = []
    analytics: ApiServer | None = None
    worker, stop_analytics, analytics_task = None, asyncio.Event(), None
    try:
        for offset, env in enumerate(DEMO_ENVS):
            server = ApiServer(create_app(demo_email=DEMO_EMAIL, demo_password=password, seed=offset), "127.0.0.1", target_port + offset)
            await server.start()
            targets.append(server)
            os.environ[f"FLOWPROBE_{env.upper()}_URL"] = f"http://127.0.0.1:{server.port}"
        service = Service([config], data_dir=data_dir)
        analytics_line = "  analytics           off (--analytics-listen not set)"
        if analytics_listen is not None:
            from analytics.emit import create_app as create_analytics_app
            from analytics.scorers import how_they_run

            worker, problem = _analytics_worker(data_dir, service)
            if worker is None:
                analytics_line = f"  analytics           off: {problem}"
            else:
                worker.load()
                analytics = ApiServer(create_analytics_app(worker), *analytics_listen)
                await analytics.start()
                analytics_task = asyncio.create_task(worker.run(stop_analytics))
                analytics_base = f"http://{analytics.host}:{analytics.port}"
                service.analytics_url = analytics_base
                analytics_line = (f"  analytics           {analytics_base}/metrics  {base_of(listen)}/api/analytics/anomalies"
                                  f"|predictions|incidents\n  detectors           {how_they_run()}")
        host, port = listen
        base = base_of(listen)
        lines = [
            "flowprobe demo is running. Ctrl-C stops it.",
            f"  status page         {base}/",
            f"  workflows (state)   {base}/api/workflows",
            f"  Prometheus metrics  {base}/metrics",
            f"  API docs            {base}/docs",
            *(f"  demo target {env:<7} http://127.0.0.1:{t.port}  (chaos: PUT /chaos/auth|database|payments)" for env, t in zip(DEMO_ENVS, targets)),
            f"  run history         {data_dir / 'history.sqlite3'}",
            analytics_line,
        ]
        print("\n".join(lines), file=sys.stderr, flush=True)
        await service.serve(host, port)
    finally:
        stop_analytics.set()
        if analytics_task is not None:
            await analytics_task  # saves the detectors
        if analytics is not None:
            await analytics.stop()
        if worker is not None:
            await worker.close()
        for server in targets:
            await server.stop()


def base_of(listen: tuple[str, int]) -> str:
    return f"http://{listen[0]}:{listen[1]}"


def _analytics_worker(data_dir: Path, service: Service) -> tuple[Worker | None, str]:
    """The worker over the demo's history, or why there is none (the demo runs on without it).

    Its run-level models get the workflows' depends_on and steps from the
    collector's config as it is now (a reload included).
    """
    from analytics.findings import Findings
    from analytics.patterns import Topology
    from analytics.scorers import default_detector
    from analytics.source import HistorySource
    from analytics.state import StateFile

    async def topology() -> Topology:
        workflows = service.config.workflows.values()
        return Topology.from_api([{"workflow": w.name, "depends_on": list(w.depends_on), "steps": [s.name for s in w.steps]} for w in workflows])

    try:
        default_detector()
    except Exception as exc:
        return None, f"no detector ({type(exc).__name__}: {exc})"
    source = HistorySource(data_dir / "history.sqlite3")
    return Worker(source, default_detector, probation=DEFAULT_PROBATION, interval=ANALYTICS_INTERVAL, state=StateFile(data_dir / "analytics"),
                  findings=Findings.default(), topology=topology), ""
