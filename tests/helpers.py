"""Shared helpers for tests that start real servers on free loopback ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

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
