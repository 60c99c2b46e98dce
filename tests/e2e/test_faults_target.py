"""Faults of the probed target, against the collector as a real process (issue 7 §3).

A raw asyncio server stands in for a misbehaving target: it hangs before or
inside a response, resets the connection before or inside one, sends a
body far over the engine's cap (declared, chunked without end, or unframed
until the connection closes), or drips an endless body a byte at a time.
For each, every run must end within its deadline as a failure with the right
reason, and the collector's peak memory must stay bounded while it probes
them all at once. A healthy path on the same server keeps passing.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from collector.engine import MAX_BODY_BYTES, AiohttpEngine, Engine, EngineError, HttpxEngine, OutgoingRequest
from tests.e2e.test_collector import ready, start_collector
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

STEP_TIMEOUT = 2.0
CHUNK = b"x" * 65536
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _hang(_reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()  # until the client gives up and the server stops


async def _hang_in_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    await writer.drain()
    await _hang(reader, writer)


def _reset_now(writer: asyncio.StreamWriter) -> None:
    # Linger 0: close() sends RST rather than FIN.
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _reset(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _reset_now(writer)


async def _reset_in_body(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    await writer.drain()
    await asyncio.sleep(0.1)
    _reset_now(writer)


async def _flood(writer: asyncio.StreamWriter, head: bytes, chunk: bytes) -> None:
    """Send `head`, then `chunk` for ever, as fast as the client reads."""
    writer.write(head)
    while True:
        writer.write(chunk)
        await writer.drain()


async def _declared_huge(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _flood(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n", CHUNK)


async def _chunked_endless(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _flood(writer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))


async def _until_close(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # No Content-Length, no chunking: the body runs until the connection closes.
    await _flood(writer, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", CHUNK)


async def _drip(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        writer.write(b"1\r\nx\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)


async def _ok(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}')
    await writer.drain()
    await asyncio.sleep(0.5)  # let the client close first


# path: (handler, the reason its runs must fail with, or None for success)
FAULTS: dict[str, tuple[Handler, str | None]] = {
    "hang": (_hang, "timeout"),
    "hang-in-body": (_hang_in_body, "timeout"),
    "reset": (_reset, "connect"),
    "reset-in-body": (_reset_in_body, "connect"),
    "declared-huge": (_declared_huge, "assertion"),
    "chunked-endless": (_chunked_endless, "assertion"),
    "until-close": (_until_close, "assertion"),
    "drip": (_drip, "timeout"),
    "ok": (_ok, None),
}


@contextmanager
def faulty_target() -> Iterator[str]:
    """The raw server on a loopback port, on an event loop in a thread of its own; yields its base URL."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()
    ports: list[int] = []
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            request_line = await reader.readline()
            while (await reader.readline()).strip():
                pass  # headers; the requests carry no body
            words = request_line.split()
            path = words[1].decode().strip("/") if len(words) > 1 else ""
            await FAULTS.get(path, (_reset, None))[0](reader, writer)
        except (ConnectionError, OSError):
            pass  # the client went away: what the faults expect
        finally:
            writer.transport.abort()
            handlers.discard(task)

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        ports.append(server.sockets[0].getsockname()[1])
        started.set()
        await stop.wait()
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10), "the faulty server did not start"
    try:
        yield f"http://127.0.0.1:{ports[0]}"
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()


def write_config(directory: Path) -> Path:
    """One workflow per fault, each run every second; no retries and no breaker to blur the reasons."""
    directory.mkdir()
    (directory / "environments.yaml").write_text(
        'environments:\n  prod: {base_url: "${FLOWPROBE_PROD_URL}"}\ncircuit_breaker: {failures: 1000000, cool_down: 1s}\n'
    )
    for path in FAULTS:
        (directory / f"{path}.yaml").write_text(
            f"name: {path}\nschedule: {{every: 1s}}\ntimeout: 5s\n"
            f"steps:\n  - name: get\n    request: {{url: '{{{{ base_url }}}}/{path}', timeout: {STEP_TIMEOUT:g}s}}\n"
            "    expect: {status: 200}\n"
        )
    return directory


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of a process, in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


def runs_by_workflow(history: Path) -> dict[str, list[tuple[str, str | None, float, str]]]:
    """(outcome, reason, duration, message) of every stored run, per workflow."""
    with sqlite3.connect(f"file:{history}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT workflow, outcome, reason, duration, json_extract(data, '$.message') FROM runs").fetchall()
    found: dict[str, list[tuple[str, str | None, float, str]]] = {}
    for workflow, outcome, reason, duration, message in rows:
        found.setdefault(workflow, []).append((outcome, reason, duration, message or ""))
    return found


def test_target_faults_fail_with_their_reason_within_the_deadline_in_bounded_memory(tmp_path: Path) -> None:
    config = write_config(tmp_path / "workflows")
    history = tmp_path / "data" / "history.sqlite3"
    log = tmp_path / "collector.log"
    with faulty_target() as url:
        process, base = start_collector(config, tmp_path / "data", url, log, "--no-watch")
        with process as proc:
            wait_until(lambda: ready(base), what="collector ready")
            at_start = memory_kib(proc.pid)

            def three_runs_each() -> dict[str, list[tuple[str, str | None, float, str]]] | None:
                found = runs_by_workflow(history) if history.exists() else {}
                return found if set(found) == set(FAULTS) and all(len(r) >= 3 for r in found.values()) else None

            try:
                runs = wait_until(three_runs_each, timeout=40, interval=0.25, what="three runs of every fault")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None
            at_end = memory_kib(proc.pid)
            assert httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            assert proc.poll() is None

    for path, (_handler, reason) in FAULTS.items():
        for outcome, got_reason, duration, message in runs[path]:
            assert (outcome, got_reason) == ("success" if reason is None else "failure", reason), (path, message)
            # The deadline holds: no run outlives its step's timeout (plus scheduling slack).
            assert duration < STEP_TIMEOUT + 1.0, (path, duration, message)
            if reason == "assertion":
                assert "response body over the limit of 10 MiB" in message, (path, message)
    # Three runs of three unbounded bodies went by; without the cap each would
    # read for the full 2 s timeout (gigabytes over loopback). With it, the
    # peak resident set grows by a few copies of the 10 MiB cap at most.
    growth_mib = (at_end["VmHWM"] - at_start["VmHWM"]) / 1024
    assert growth_mib < 8 * MAX_BODY_BYTES / 2**20, f"peak RSS grew by {growth_mib:.0f} MiB: {at_start} -> {at_end}"


@pytest.mark.parametrize("make", [
    lambda: AiohttpEngine(max_body=4096),
    lambda: HttpxEngine(httpx.AsyncHTTPTransport(), max_body=4096),
], ids=["aiohttp", "httpx"])
def test_the_body_cap_is_a_parameter_of_either_engine(make: Callable[[], Engine]) -> None:
    """A smaller cap fails a body the default takes; a body under it still passes."""

    async def main(url: str) -> None:
        engine = make()
        try:
            for path in ("chunked-endless", "declared-huge", "until-close"):
                session = engine.session()
                try:
                    with pytest.raises(EngineError) as caught:
                        await session.send(OutgoingRequest("GET", f"{url}/{path}"))
                    assert caught.value.reason == "assertion" and "response body over the limit of 4096 bytes" in caught.value.message, path
                finally:
                    await session.close()
            session = engine.session()
            try:
                ok = await session.send(OutgoingRequest("GET", f"{url}/ok"))
                assert ok.status == 200 and ok.json() == {"ok": True}
            finally:
                await session.close()
        finally:
            await engine.close()

    with faulty_target() as url:
        asyncio.run(main(url))
