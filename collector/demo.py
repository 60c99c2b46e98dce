"""`flowprobe demo`: the embedded default, with no external server.

One process runs three demo targets (prod, staging and dev, each its own
farmers-market app with its own data and chaos controls) and the collector
with its SQLite history and API. The probe user's password is generated per
demo and reaches the workflows the way a real secret would: through the
environment variable that environments.yaml names.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from collector.service import ApiServer, Service
from collector.target import create_app

__all__ = ["DEMO_ENVS", "run_demo"]

DEMO_ENVS = ("prod", "staging", "dev")
DEMO_EMAIL = "demo@flowprobe.local"


async def run_demo(*, config: Path, listen: tuple[str, int], target_port: int, data_dir: Path) -> None:
    password = secrets.token_urlsafe(18)
    os.environ["FLOWPROBE_PROBE_EMAIL"] = DEMO_EMAIL
    os.environ["FLOWPROBE_PROBE_PASSWORD"] = password
    targets: list[ApiServer] = []
    try:
        for offset, env in enumerate(DEMO_ENVS):
            server = ApiServer(create_app(demo_email=DEMO_EMAIL, demo_password=password, seed=offset), "127.0.0.1", target_port + offset)
            await server.start()
            targets.append(server)
            os.environ[f"FLOWPROBE_{env.upper()}_URL"] = f"http://127.0.0.1:{server.port}"
        service = Service([config], data_dir=data_dir)
        host, port = listen
        base = f"http://{host}:{port}"
        lines = [
            "flowprobe demo is running. Ctrl-C stops it.",
            f"  workflows (state)   {base}/api/workflows",
            f"  Prometheus metrics  {base}/metrics",
            f"  API docs            {base}/docs",
            *(f"  demo target {env:<7} http://127.0.0.1:{t.port}  (chaos: PUT /chaos/auth|database|payments)" for env, t in zip(DEMO_ENVS, targets)),
            f"  run history         {data_dir / 'history.sqlite3'}",
        ]
        print("\n".join(lines), file=sys.stderr, flush=True)
        await service.serve(host, port)
    finally:
        for server in targets:
            await server.stop()
