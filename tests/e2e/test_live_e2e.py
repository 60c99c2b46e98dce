"""Live updates over real sockets: a collector process and the demo target under uvicorn, real WebSocket clients."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from collector.live import LiveHub, live_router
from collector.result import RunResult
from collector.service import Service
from collector.target import create_app as create_target
from tests.helpers import PROBE_EMAIL, PROBE_PASSWORD, WORKFLOWS, fast_copy, free_port, probe_environment, running_process, serve_in_thread, wait_until

pytestmark = pytest.mark.e2e
websockets_client = pytest.importorskip("websockets.sync.client", reason="uvicorn serves WebSockets with the websockets package")
ConnectionClosed = pytest.importorskip("websockets.exceptions").ConnectionClosed


@pytest.fixture
def target() -> Iterator[str]:
    with serve_in_thread(create_target(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD)) as url:
        yield url


def messages(ws: Any, until: float) -> Iterator[dict[str, Any]]:
    while (left := until - time.monotonic()) > 0:
        try:
            yield json.loads(ws.recv(timeout=left))
        except TimeoutError:
            return


def collector(tmp_path: Path, target: str) -> tuple[list[str], str, Path]:
    """`flowprobe run` over the shipped workflows (every second) in prod: its arguments, address and log."""
    config = fast_copy(tmp_path / "workflows")
    base = f"127.0.0.1:{free_port()}"
    args = [sys.executable, "-m", "collector.cli", "run", "--config", str(config), "--env", "prod", "--listen", base,
            "--data-dir", str(tmp_path / "data"), "--grace", "5", "--no-watch"]
    return args, base, tmp_path / "collector.log"


def test_a_failing_run_reaches_a_websocket_client_within_2_s(tmp_path: Path, target: str) -> None:
    args, base, log = collector(tmp_path, target)
    with running_process(args, env=probe_environment({"prod": target}), log=log):
        wait_until(lambda: httpx.get(f"http://{base}/readyz", timeout=2).status_code == 200, what="collector ready")
        with websockets_client.connect(f"ws://{base}/api/monitoring/websocket?env=prod&workflow=health-check", open_timeout=5) as ws:
            status = None
            for message in messages(ws, time.monotonic() + 10):
                if message["type"] == "snapshot":
                    assert [(p["workflow"], p["env"]) for p in message["pairs"]] == [("health-check", "prod")]
                    status = message["pairs"][0]["status"]
                elif message["type"] == "state":
                    status = message["status"]
                if status == "up":
                    break
            assert status == "up", log.read_text()[-3000:]

            httpx.put(f"{target}/chaos/database", json={"outage": True}).raise_for_status()
            changed = time.monotonic()
            seen: list[tuple[str, float]] = []
            for message in messages(ws, changed + 5):
                assert (message.get("workflow"), message.get("env")) in {("health-check", "prod"), (None, None)}, message
                if message["type"] == "run" and message["outcome"] == "failure":
                    seen.append(("run", time.monotonic() - changed))
                    assert message["failed_step"] == "health"
                elif message["type"] == "state":
                    seen.append((f"state {message['previous']}->{message['status']}", time.monotonic() - changed))
                    break
            assert [what for what, _ in seen] == ["run", "state up->down"], (seen, log.read_text()[-3000:])
            # Runs every second, one retry 200 ms later: a failing run is recorded about 1.2 s after the change at most.
            assert seen[0][1] < 2.0, seen


def test_sigterm_ends_the_live_streams_and_the_collector_exits(tmp_path: Path, target: str) -> None:
    args, base, log = collector(tmp_path, target)
    with running_process(args, env=probe_environment({"prod": target}), log=log) as process:
        wait_until(lambda: httpx.get(f"http://{base}/readyz", timeout=2).status_code == 200, what="collector ready")
        with websockets_client.connect(f"ws://{base}/api/monitoring/websocket", open_timeout=5) as ws, \
                httpx.stream("GET", f"http://{base}/api/monitoring/events", timeout=10) as sse:
            assert json.loads(ws.recv(timeout=5))["type"] == "snapshot"
            lines = sse.iter_lines()
            assert next(line for line in lines if line.startswith("event: ")) == "event: snapshot"
            stopped = time.monotonic()
            process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code in (1001, 1012)  # ours, or uvicorn's shutdown
            for _ in lines:  # the SSE response ends rather than holding the server's shutdown
                pass
            assert process.wait(timeout=15) == 0, log.read_text()[-3000:]
            assert time.monotonic() - stopped < 10


PADDING = "x" * 2000


def handshake(port: int, receive_buffer: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /api/monitoring/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: nothing past the handshake is read
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def test_a_client_that_never_reads_is_dropped_and_one_that_reads_keeps_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in probe_environment().items():
        monkeypatch.setenv(name, value)
    service = Service([WORKFLOWS], data_dir=tmp_path, envs=["prod"], watch=False)
    hub = LiveHub(service, queue_size=100, heartbeat=30.0)
    hub.attach()
    app = FastAPI()
    app.include_router(live_router(service, hub))
    port = free_port()
    received: list[str] = []
    with serve_in_thread(app, port) as url:
        ws_url = url.replace("http://", "ws://") + "/api/monitoring/websocket"
        with websockets_client.connect(ws_url, open_timeout=5) as reader:
            assert json.loads(reader.recv(timeout=5))["type"] == "snapshot"

            def read() -> None:
                for text in reader:
                    received.append(json.loads(text)["run_id"])

            thread = threading.Thread(target=read, daemon=True)
            thread.start()
            stuck = handshake(port, receive_buffer=4096)
            try:
                wait_until(lambda: hub.stats()["clients"] == 2, timeout=5, what="both clients registered")
                # Events at a pace a reading client keeps up with, until the one that does not read is dropped.
                result = RunResult("user-login", "prod", "", time.time(), "failure", duration=0.25, failed_step="login", reason="status")
                sent = 0
                deadline = time.monotonic() + 15
                while hub.dropped["slow"] == 0 and time.monotonic() < deadline:
                    for _ in range(10):
                        # Big events, so the socket buffers (megabytes on loopback) fill within a second or two.
                        result.run_id = f"run-{sent:06d}-" + PADDING
                        hub.on_run(result)
                        sent += 1
                    time.sleep(0.01)
                assert hub.dropped == {"slow": 1, "dead": 0}, (sent, hub.stats())
                wait_until(lambda: hub.stats()["clients"] == 1, timeout=5, what="the stuck client to leave")
                wait_until(lambda: len(received) == sent, timeout=10, what=f"the reader to get all {sent} events")
                assert received == [f"run-{n:06d}-" + PADDING for n in range(sent)]
            finally:
                stuck.close()
            assert hub.stats()["clients"] == 1  # the reader is still connected
    service.store.close()
