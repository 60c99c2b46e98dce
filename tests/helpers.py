"""Shared helpers for tests that start real servers on free loopback ports."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / "workflows"
PROBE_EMAIL = "demo@flowprobe.local"
PROBE_PASSWORD = "probe-password-for-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T | None], *, timeout: float = 20.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the server may not be up yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_error!r})" if last_error else ""))


@contextmanager
def serve_in_thread(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, what="uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (make test installs it from Debian's packages)")
    return path


def probe_environment(urls: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables the shipped workflows need: secrets and target URLs."""
    env = {"FLOWPROBE_PROBE_EMAIL": PROBE_EMAIL, "FLOWPROBE_PROBE_PASSWORD": PROBE_PASSWORD}
    for name, url in (urls or {}).items():
        env[f"FLOWPROBE_{name.upper()}_URL"] = url
    return env


@contextmanager
def running_process(args: list[str], *, env: dict[str, str] | None = None, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess whose output goes to `log`; killed on exit if still running."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=REPO)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@contextmanager
def running_alertmanager(directory: Path, config: Path | None = None) -> Iterator[str]:
    """A real Alertmanager on a free loopback port; yields its URL.

    Without `config` it has one receiver that sends nothing."""
    binary = require_binary("prometheus-alertmanager")
    directory.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = directory / "alertmanager.yml"
        config.write_text('route: {receiver: "null"}\nreceivers: [{name: "null"}]\n')
    url = f"http://127.0.0.1:{free_port()}"
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.path={directory / 'data'}",
        f"--web.listen-address={url.removeprefix('http://')}",
        "--cluster.listen-address=",  # no gossip: one loopback instance
        "--log.level=warn",
    ]
    log = directory / "alertmanager.log"
    with running_process(args, log=log) as process:
        try:
            wait_until(lambda: process.poll() is None and httpx.get(f"{url}/-/ready", timeout=1).status_code == 200,
                       timeout=15, what="Alertmanager to be ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text(errors='replace')}") from None
        yield url


def fast_copy(dest: Path, every: str = "1s") -> Path:
    """The shipped workflows with short schedules, so a test sees every one run within seconds."""
    dest.mkdir()
    for source in WORKFLOWS.glob("*.yaml"):
        text = source.read_text()
        if source.name != "environments.yaml":
            text, count = re.subn(r"schedule: \{every: \w+\}", f"schedule: {{every: {every}}}", text)
            assert count == 1, source
        (dest / source.name).write_text(text)
    return dest


class VictoriaMetrics:
    """One data directory and port; start and stop it like a server that goes away."""

    def __init__(self, tmp_path: Path) -> None:
        self.binary = require_binary("victoria-metrics")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = tmp_path / "vm-data"
        self.tmp_path = tmp_path
        self.starts = 0

    @contextmanager
    def running(self) -> Iterator[subprocess.Popen[bytes]]:
        self.starts += 1
        args = [
            self.binary,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.data}",
            "-search.latencyOffset=0s",
            "-retentionPeriod=1y",
        ]
        with running_process(args, log=self.tmp_path / f"vm-{self.starts}.log") as proc:
            wait_until(lambda: httpx.get(f"{self.url}/health", timeout=1).text.strip() == "OK", timeout=15, what="VictoriaMetrics")
            yield proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)

    def export(self, match: str) -> list[dict[str, Any]]:
        httpx.get(f"{self.url}/internal/force_flush", timeout=5).raise_for_status()
        response = httpx.post(f"{self.url}/api/v1/export", data={"match[]": match, "start": "0"}, timeout=10)
        response.raise_for_status()
        return [json.loads(text) for text in response.text.splitlines() if text.strip()]
