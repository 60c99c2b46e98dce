"""The InfluxDB sink: line protocol, the disk spool, and delivery against a
real local HTTP server that can be switched to fail, hang, refuse or vanish."""

from __future__ import annotations

import json
import logging
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.config import InfluxSettings
from collector.result import RunResult, StepResult
from collector.sink import (
    InfluxSink,
    Spool,
    SpoolLockedError,
    backoff_delay,
    line,
    result_lines,
)
from tests.helpers import failed_order_run, free_port, wait_until

TOKEN = "influx-token-5d1c0a7e-do-not-log"

# ---------------------------------------------------------------- a reference parser


def _scan(text: str, i: int, escapable: str, stops: str) -> tuple[str, int]:
    """InfluxDB's rule: a backslash before a special character (or another
    backslash) escapes it; before anything else it is a literal backslash."""
    out = []
    while i < len(text) and text[i] not in stops:
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in escapable + "\\":
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out), i


def parse_line(text: str) -> tuple[str, dict[str, str], dict[str, Any], int]:
    """A small line protocol parser written from InfluxDB's reference, for round trips."""
    assert "\n" not in text and "\r" not in text
    measurement, i = _scan(text, 0, ", ", ", ")
    tags: dict[str, str] = {}
    while text[i] == ",":
        key, i = _scan(text, i + 1, ",= ", "=")
        assert text[i] == "="
        value, i = _scan(text, i + 1, ",= ", ", ")
        tags[key] = value
    assert text[i] == " "
    i += 1
    fields: dict[str, Any] = {}
    while True:
        key, i = _scan(text, i, ",= ", "=")
        assert text[i] == "="
        i += 1
        if text[i] == '"':
            out, i = [], i + 1
            while text[i] != '"':
                if text[i] == "\\" and text[i + 1] in '"\\':
                    out.append(text[i + 1])
                    i += 2
                else:
                    out.append(text[i])
                    i += 1
            value_: Any = "".join(out)
            i += 1
        else:
            j = i
            while text[j] not in ", ":
                j += 1
            raw, i = text[i:j], j
            if raw in ("true", "false"):
                value_ = raw == "true"
            elif raw.endswith("i"):
                value_ = int(raw[:-1])
            else:
                value_ = float(raw)
        fields[key] = value_
        if text[i] == ",":
            i += 1
            continue
        break
    assert text[i] == " "
    return measurement, tags, fields, int(text[i + 1 :])


# Special characters often, any other character (no newlines) sometimes.
_chars = st.one_of(
    st.sampled_from(list(' ,="\\=\t') + ["é", "☃", "𝄞", "\\\\", "\\ ", "\\,"]),
    st.characters(codec="utf-8", exclude_characters="\n\r"),
)
_text = st.lists(_chars, min_size=1, max_size=12).map("".join)
_field_values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(_chars, max_size=12).map("".join),
)


@settings(max_examples=150, deadline=None)
@given(
    measurement=_text,
    tags=st.dictionaries(_text, _text, max_size=4),
    fields=st.dictionaries(_text, _field_values, min_size=1, max_size=4),
    timestamp=st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
def test_line_protocol_round_trips_through_a_reference_parser(
    measurement: str, tags: dict[str, str], fields: dict[str, Any], timestamp: int
) -> None:
    text = line(measurement, tags, fields, timestamp)
    assert parse_line(text) == (measurement, tags, fields, timestamp)
    assert list(parse_line(text)[1]) == sorted(tags)


def test_newlines_cannot_travel_and_become_spaces() -> None:
    text = line("m\n", {"t\r": "a\nb"}, {"f": "x\ny"}, 1)
    assert "\n" not in text and "\r" not in text
    assert parse_line(text) == ("m ", {"t ": "a b"}, {"f": "x y"}, 1)


def test_empty_tags_are_left_out_and_non_finite_floats_too() -> None:
    assert line("m", {"a": "", "b": "x"}, {"v": float("nan"), "w": 1.5}, 7) == "m,b=x w=1.5 7"
    with pytest.raises(ValueError):
        line("m", {}, {"v": float("inf")}, 7)


def test_a_trailing_backslash_does_not_escape_the_separator() -> None:
    # influxdb_client's Point writes `t=a\ v=1`, which reads as the tag value "a v=1".
    assert line("m", {"t": "a\\"}, {"v": 1}, 1) == "m,t=a\\\\ v=1i 1"


# ---------------------------------------------------------------- points of a run


def test_a_run_becomes_one_point_per_step_that_ran_and_one_for_the_run() -> None:
    result = failed_order_run(
        1_700_000_000.25,
        login_at=1_700_000_000.5,
        pay_at=1_700_000_001.0,
        pay_connect=0.001,
        before_cancel=[StepResult("early", "error", attempts=0)],  # never sent: the run's time
    )
    assert result_lines(result) == [
        "flowprobe_step,env=prod,step=login,workflow=order-placement duration=0.125,connect=0.001,tls=0.002,request=0.003,"
        "first_byte=0.1,transfer=0.019,success=true,status_code=200i,retries=0i 1700000000500000000",
        "flowprobe_step,env=prod,step=pay,workflow=order-placement duration=0.25,connect=0.001,success=false,status_code=500i,retries=2i "
        "1700000001000000000",
        "flowprobe_step,env=prod,step=early,workflow=order-placement duration=0.0,success=false,retries=0i 1700000000250000000",
        "flowprobe_run,env=prod,result=failure,workflow=order-placement duration=1.5,success=false,attempts=2i,flaky=true,"
        'failed_step="pay",reason="status" 1700000000250000000',
    ]


def test_timestamps_keep_microseconds() -> None:
    text = result_lines(RunResult("w", "e", "r", 1_712_345_678.123456, "success"))[0]
    # A unix time in a float is good to about 0.24 µs; the nanoseconds keep what it holds.
    assert abs(int(text.rsplit(" ", 1)[1]) - 1_712_345_678_123_456_000) < 1000


def test_backoff_doubles_up_to_the_cap_with_full_jitter() -> None:
    assert [backoff_delay(n, 1.0, 30.0, 1.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(3, 1.0, 30.0, 0.5) == 2.0
    assert backoff_delay(10_000, 1.0, 30.0, 0.0) == 0.0


# ---------------------------------------------------------------- the spool

_spool_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 9)),
        st.tuples(st.just("consume"), st.integers(1, 9)),
        st.tuples(st.just("reopen"), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=30, deadline=None)
@given(ops=_spool_ops, bound=st.integers(1, 20), segment=st.integers(1, 5))
def test_spool_keeps_order_and_bound_across_reopens(ops: list[tuple[str, int]], bound: int, segment: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spool = Spool(Path(tmp), bound, segment_points=segment)
        assert spool.open() == 0
        model: list[str] = []
        serial = 0
        dropped_total = 0
        for op, n in ops:
            if op == "append":
                lines = [f"m v={serial + i}i {serial + i}" for i in range(n)]
                serial += n
                appended, dropped = spool.append(lines)
                model += lines
                assert appended == n
                expect_dropped = max(0, len(model) - bound)
                assert dropped == expect_dropped
                dropped_total += dropped
                del model[:expect_dropped]
            elif op == "consume":
                assert spool.peek(n) == model[:n]
                spool.consume(n)
                del model[:n]
            else:
                spool.close()
                spool = Spool(Path(tmp), bound, segment_points=segment)
                assert spool.open() == 0
            assert spool.points == len(model) <= bound
            assert spool.peek(1000) == model
        spool.close()
        segments = list(Path(tmp).glob("segment-*.lp"))
        assert len(segments) <= len(model) // segment + 2  # spent segments are deleted


def test_spool_cuts_a_torn_line_and_survives_a_lost_index(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 100, segment_points=3)
    spool.open()
    spool.append([f"m v={i}i {i}" for i in range(5)])
    spool.consume(1)
    spool.close()
    # A crash mid-append: half a line at the end of the last segment.
    last = sorted(tmp_path.glob("segment-*.lp"))[-1]
    with last.open("ab") as f:
        f.write(b"m v=99i 9")
    spool = Spool(tmp_path, 100, segment_points=3)
    spool.open()
    assert spool.peek(10) == [f"m v={i}i {i}" for i in range(1, 5)]
    spool.append(["m v=5i 5"])
    assert spool.peek(10)[-2:] == ["m v=4i 4", "m v=5i 5"]
    spool.close()
    # Without the index, every segment on disk is unsent: some points may go twice, none is lost.
    (tmp_path / "spool.index").unlink()
    spool = Spool(tmp_path, 100, segment_points=3)
    spool.open()
    assert spool.peek(10) == [f"m v={i}i {i}" for i in range(0, 6)]
    spool.close()


def test_spool_over_a_smaller_bound_drops_the_oldest_on_open(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 100)
    spool.open()
    spool.append([f"m v={i}i {i}" for i in range(10)])
    spool.close()
    spool = Spool(tmp_path, 4)
    assert spool.open() == 6
    assert spool.peek(10) == [f"m v={i}i {i}" for i in range(6, 10)]
    spool.close()


def test_one_sink_per_spool_directory(tmp_path: Path) -> None:
    first = Spool(tmp_path, 10)
    first.lock()
    with pytest.raises(SpoolLockedError):
        Spool(tmp_path, 10).lock()
    first.close()
    second = Spool(tmp_path, 10)
    second.lock()
    second.close()


# ---------------------------------------------------------------- a local InfluxDB stand-in


class FakeInflux:
    """The v2 write endpoint on a free loopback port. Modes: ok, fail (503),
    busy (503 with Retry-After: 1), reject (400), unauthorized (401, echoing the Authorization header as a
    careless server might), hang, and down (nothing listens)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode = "ok"
        self.max_lines: int | None = None  # larger bodies get 413
        self.lines: list[str] = []
        self.requests: list[tuple[float, str, int]] = []  # (monotonic time, mode, lines)
        self.authorization: set[str] = set()
        self.queries: list[dict[str, list[str]]] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.up()

    def up(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                lines = [text for text in body.split("\n") if text]
                with fake._lock:
                    mode = fake.mode
                    fake.requests.append((time.monotonic(), mode, len(lines)))
                    fake.authorization.add(self.headers.get("Authorization", ""))
                    fake.queries.append(parse_qs(urlsplit(self.path).query))
                if mode == "hang":
                    fake.release.wait(30)
                    return
                if mode == "ok" and fake.max_lines is not None and len(lines) > fake.max_lines:
                    self._reply(413, {"code": "request too large", "message": "too large"})
                elif mode == "ok":
                    with fake._lock:
                        fake.lines += lines
                    self._reply(204, None)
                elif mode == "reject":
                    self._reply(400, {"code": "invalid", "message": "unable to parse"})
                elif mode == "busy":
                    self._reply(503, {"code": "unavailable", "message": "busy"}, {"Retry-After": "1"})
                elif mode == "unauthorized":
                    self._reply(401, {"code": "unauthorized", "message": f"bad header {self.headers.get('Authorization')}"})
                else:
                    self._reply(503, {"code": "unavailable", "message": "try later"})

            def _reply(self, status: int, payload: dict[str, str] | None, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode() if payload is not None else b""
                try:
                    self.send_response(status)
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    if data:
                        self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(5)
            self._server = None

    def stop(self) -> None:
        self.release.set()
        self.down()

    def received(self) -> list[str]:
        with self._lock:
            return list(self.lines)


class ConstantRandom(random.Random):
    def random(self) -> float:
        return 0.999


@pytest.fixture
def influx() -> Iterator[FakeInflux]:
    server = FakeInflux()
    yield server
    server.stop()


def influx_settings(url: str, **overrides: Any) -> InfluxSettings:
    values: dict[str, Any] = {
        "url": url,
        "org": "acme",
        "bucket": "probes",
        "token": {"env": "FLOWPROBE_INFLUX_TOKEN"},
        "batch_size": 100,
        "flush_interval": 0.05,
        "timeout": 1.0,
        "retry_initial": 0.05,
        "retry_max": 0.2,
    }
    return InfluxSettings.model_validate({**values, **overrides})


@pytest.fixture
def make_sink(tmp_path: Path) -> Iterator[Any]:
    sinks: list[InfluxSink] = []

    def make(url: str, spool: Path | None = None, **overrides: Any) -> InfluxSink:
        sink = InfluxSink(influx_settings(url, **overrides), TOKEN, spool or tmp_path / "spool", rng=ConstantRandom())
        sink.start()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close(0.5)


def run(i: int, steps: int = 0) -> RunResult:
    """A run whose points say which it was: the run point's attempts is i."""
    return RunResult(
        "wf",
        "prod",
        f"r{i}",
        1_700_000_000.0 + i,
        "success",
        duration=0.5,
        attempts=i,
        steps=[StepResult(f"s{k}", "success", status=200, duration=0.1, attempts=1, started_at=1_700_000_000.0 + i) for k in range(steps)],
    )


def points(results: list[RunResult]) -> list[str]:
    return [text for r in results for text in result_lines(r)]


# ---------------------------------------------------------------- delivery


def test_points_reach_the_server_with_the_token_org_bucket_and_precision(influx: FakeInflux, make_sink: Any) -> None:
    sink = make_sink(influx.url)
    results = [run(i, steps=2) for i in range(5)]
    for r in results:
        sink.add(r)
    wait_until(lambda: sink.stats()["written"] == 15, timeout=5, what="15 points written")
    assert influx.received() == points(results)
    assert influx.authorization == {f"Token {TOKEN}"}
    assert influx.queries[0] == {"org": ["acme"], "bucket": ["probes"], "precision": ["ns"]}
    assert sink.stats() == {"written": 15, "spooled": 0, "dropped": 0, "rejected": 0, "failed_writes": 0, "spool_points": 0}


def test_writes_are_batched(influx: FakeInflux, make_sink: Any) -> None:
    sink = make_sink(influx.url, batch_size=4, flush_interval=0.3)
    added = time.monotonic()
    sink.add(run(1))
    wait_until(lambda: sink.stats()["written"] == 1, timeout=5, what="the lone point")
    # A lone point waits for flush_interval, not less.
    assert influx.requests[0][0] - added >= 0.3 * 0.9
    for i in range(2, 11):
        sink.add(run(i))
    wait_until(lambda: sink.stats()["written"] == 10, timeout=5, what="10 points")
    assert all(count <= 4 for _, _, count in influx.requests)
    assert influx.received() == points([run(i) for i in range(1, 11)])


def test_failed_writes_are_retried_with_growing_backoff(influx: FakeInflux, make_sink: Any) -> None:
    influx.mode = "fail"
    sink = make_sink(influx.url, retry_initial=0.05, retry_max=0.2)
    sink.add(run(1, steps=1))
    wait_until(lambda: sink.stats()["failed_writes"] >= 5, timeout=5, what="five failed writes")
    influx.mode = "ok"
    wait_until(lambda: sink.stats()["written"] == 2, timeout=5, what="the points after the outage")
    times = [t for t, _, _ in influx.requests]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # The jitter source is pinned near 1: pauses of about 0.05, 0.1, 0.2, 0.2 s.
    for gap, least in zip(gaps, [0.05, 0.1, 0.2, 0.2]):
        assert gap >= least * 0.99 * 0.9
    assert influx.received() == points([run(1, steps=1)])
    stats = sink.stats()
    assert stats["spooled"] == 2 and stats["spool_points"] == 0 and stats["failed_writes"] == len(influx.requests) - 1


def test_a_retry_after_longer_than_the_backoff_is_honoured(influx: FakeInflux, make_sink: Any) -> None:
    influx.mode = "busy"
    sink = make_sink(influx.url, retry_initial=0.01, retry_max=5.0)
    sink.add(run(1))
    wait_until(lambda: sink.stats()["failed_writes"] == 1, timeout=5, what="a failed write")
    influx.mode = "ok"
    wait_until(lambda: sink.stats()["written"] == 1, timeout=5, what="the point")
    assert influx.requests[1][0] - influx.requests[0][0] >= 0.9


def test_an_outage_spools_and_replays_in_order_before_newer_points(influx: FakeInflux, make_sink: Any) -> None:
    sink = make_sink(influx.url, batch_size=7)
    before = [run(i, steps=1) for i in range(0, 5)]
    during = [run(i, steps=1) for i in range(5, 30)]
    after = [run(i, steps=1) for i in range(30, 40)]
    for r in before:
        sink.add(r)
    wait_until(lambda: sink.stats()["written"] == 10, timeout=5, what="points before the outage")
    influx.down()
    for r in during:
        sink.add(r)
        time.sleep(0.005)
    wait_until(lambda: sink.stats()["spool_points"] == 50, timeout=5, what="the outage's points in the spool")
    assert sink.stats()["failed_writes"] >= 1
    influx.up()
    for r in after:
        sink.add(r)
    wait_until(lambda: sink.stats()["written"] == 80, timeout=5, what="every point")
    assert influx.received() == points(before + during + after)
    assert sink.stats()["spool_points"] == 0 and sink.stats()["dropped"] == 0


def test_a_full_spool_drops_the_oldest_and_counts_them(influx: FakeInflux, make_sink: Any) -> None:
    influx.down()
    sink = make_sink(influx.url, spool_max_points=10)
    results = [run(i) for i in range(25)]
    for r in results:
        sink.add(r)
    wait_until(lambda: sink.stats()["spooled"] == 25, timeout=5, what="25 points spooled")
    assert sink.stats()["dropped"] == 15 and sink.stats()["spool_points"] == 10
    influx.up()
    wait_until(lambda: sink.stats()["written"] == 10, timeout=5, what="the 10 newest points")
    assert influx.received() == points(results[15:])


def test_points_the_server_refuses_as_invalid_are_dropped_not_retried(influx: FakeInflux, make_sink: Any) -> None:
    influx.mode = "reject"
    sink = make_sink(influx.url)
    sink.add(run(1, steps=2))
    wait_until(lambda: sink.stats()["rejected"] == 3, timeout=5, what="3 points rejected")
    influx.mode = "ok"
    sink.add(run(2))
    wait_until(lambda: sink.stats()["written"] == 1, timeout=5, what="the next point")
    assert sink.stats()["failed_writes"] == 0 and sink.stats()["spool_points"] == 0
    assert influx.received() == points([run(2)])


def test_a_batch_too_large_for_the_server_is_split(influx: FakeInflux, make_sink: Any) -> None:
    influx.max_lines = 3
    sink = make_sink(influx.url, batch_size=50)
    results = [run(i) for i in range(10)]
    for r in results:
        sink.add(r)
    wait_until(lambda: sink.stats()["written"] == 10, timeout=5, what="10 points")
    assert influx.received() == points(results)


def test_add_never_blocks_on_a_hanging_server(influx: FakeInflux, make_sink: Any) -> None:
    influx.mode = "hang"
    sink = make_sink(influx.url, timeout=0.5, batch_size=500)
    sink.add(run(0, steps=1))
    wait_until(lambda: influx.requests, timeout=5, what="the write that hangs")
    results = [run(i, steps=1) for i in range(1, 10_001)]
    started = time.perf_counter()
    for r in results:
        sink.add(r)
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"10,000 add() calls took {elapsed:.3f}s"
    # The write times out; everything goes to the spool and waits there.
    wait_until(lambda: sink.stats()["spool_points"] == 20_002, timeout=10, what="the spool to take every point")
    influx.mode = "ok"
    influx.release.set()
    wait_until(lambda: sink.stats()["written"] == 20_002, timeout=10, what="every point")
    assert influx.received() == points([run(0, steps=1), *results])


def test_close_flushes_what_is_buffered_within_grace(influx: FakeInflux, tmp_path: Path) -> None:
    sink = InfluxSink(influx_settings(influx.url, flush_interval=60.0, batch_size=1000), TOKEN, tmp_path / "spool")
    sink.start()
    results = [run(i, steps=1) for i in range(5)]
    for r in results:
        sink.add(r)
    started = time.monotonic()
    sink.close(2.0)
    assert time.monotonic() - started < 2.0
    assert influx.received() == points(results)
    assert sink.stats()["written"] == 10 and sink.stats()["spool_points"] == 0
    sink.add(run(9))
    assert sink.stats()["dropped"] == 1


def test_close_spools_what_it_cannot_write_and_the_next_start_replays_it(influx: FakeInflux, tmp_path: Path) -> None:
    influx.mode = "hang"
    spool = tmp_path / "spool"
    sink = InfluxSink(influx_settings(influx.url, flush_interval=60.0, timeout=5.0), TOKEN, spool)
    sink.start()
    results = [run(i, steps=1) for i in range(5)]
    for r in results:
        sink.add(r)
    started = time.monotonic()
    sink.close(0.5)  # the write's own timeout (5 s) is cut to what is left of the grace
    assert time.monotonic() - started < 1.5
    assert sink.stats()["spool_points"] == 10 and sink.stats()["written"] == 0
    influx.mode = "ok"
    influx.release.set()
    again = InfluxSink(influx_settings(influx.url), TOKEN, spool)
    again.start()
    again.add(run(5))
    wait_until(lambda: again.stats()["written"] == 11, timeout=5, what="the spool replayed")
    again.close(1.0)
    assert influx.received() == points([*results, run(5)])


def test_close_during_an_outage_does_not_wait_out_the_grace(influx: FakeInflux, make_sink: Any) -> None:
    influx.down()
    sink = make_sink(influx.url, retry_initial=5.0, retry_max=5.0)
    sink.add(run(1))
    wait_until(lambda: sink.stats()["spool_points"] == 1, timeout=5, what="the point spooled")
    started = time.monotonic()
    sink.close(10.0)
    assert time.monotonic() - started < 2.0
    assert sink.stats()["spool_points"] == 1


def test_the_token_never_reaches_logs_stats_or_repr(influx: FakeInflux, make_sink: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    influx.mode = "unauthorized"
    sink = make_sink(influx.url)
    sink.add(run(1))
    wait_until(lambda: sink.stats()["failed_writes"] >= 2, timeout=5, what="failed writes")
    influx.down()
    wait_until(lambda: sink.stats()["failed_writes"] >= 4, timeout=5, what="more failed writes")
    sink.close(0.2)
    assert any("HTTP 401" in r.getMessage() and "[REDACTED]" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert TOKEN not in (record.exc_text or "")
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(sink) and TOKEN not in str(sink.stats())


def test_a_second_sink_on_the_same_spool_is_refused(influx: FakeInflux, make_sink: Any, tmp_path: Path) -> None:
    make_sink(influx.url, spool=tmp_path / "shared")
    with pytest.raises(SpoolLockedError):
        InfluxSink(influx_settings(influx.url), TOKEN, tmp_path / "shared").start()
