"""The InfluxDB sink: every run as line protocol, with nothing lost to an outage.

Points
------
One ``flowprobe_run`` point per run and one ``flowprobe_step`` point per step
that ran (a skipped step sent no request, so it has no duration or phases; the
run point says which step failed and why). Timestamps are in nanoseconds.

``flowprobe_step``
    tags ``workflow``, ``env``, ``step``; fields ``duration`` (seconds, float),
    ``connect``, ``tls``, ``request``, ``first_byte``, ``transfer`` (seconds,
    float, each only when measured), ``success`` (boolean), ``status_code``
    (integer, absent when no response came), ``retries`` (integer: attempts - 1).
    Time: the step's ``started_at``, else the run's.
``flowprobe_run``
    tags ``workflow``, ``env``, ``result`` (success, failure, error, skipped);
    fields ``duration`` (seconds, float), ``success`` (boolean), ``attempts``
    (integer), ``flaky`` (boolean), ``failed_step`` and ``reason`` (strings,
    only when set). Time: the run's ``started_at``.

VictoriaMetrics names these ``{measurement}_{field}``, e.g.
``flowprobe_step_duration``; it stores booleans as 1/0 and string fields as 0.

Line protocol is written here rather than with ``influxdb_client.Point``: the
client does not escape backslashes in keys and tag values, so a tag value
ending in ``\\`` escapes the separator after it and corrupts the line.

Delivery
--------
``add`` only puts the result on a queue. One thread turns results into lines,
writes batches with the client's synchronous API, and owns the spool, so
retry and spooling are ours (the client's Rx batching retries on its own
threads and drops a batch when its retries run out).

- A batch is written when it holds ``batch_size`` points or its oldest point
  has waited ``flush_interval``.
- A failed write moves the batch, and every point behind it, to the spool on
  disk. While the spool holds points, new points join its tail, and its head is
  written again after a backoff: ``retry_initial`` doubling up to
  ``retry_max``, with full jitter, or the server's Retry-After when longer.
  So replay is in order and always before newer points.
- A 400 or 422 (a line the server will never take) drops the batch, counted as
  ``rejected``; a 413 halves the batch size. Other failures (connection,
  timeout, 5xx, 401, 403, 404) are retried until the server takes the points.
- Past ``spool_max_points`` the oldest points are dropped and counted.
- At most ``max(4 * batch_size, 10000)`` points wait in memory; when writes
  fall behind more than that, the rest wait in the spool too.
- ``close(grace)`` writes what it can within ``grace`` and spools the rest;
  the next ``start`` replays it.

Delivery is at least once: a crash between a write and the spool index update
sends those points again. InfluxDB keeps one point per series and timestamp,
so a resent point overwrites itself.

Spool format
------------
``spool_dir`` holds append-only segments ``segment-<seq>.lp`` (one line of
line protocol per point, at most a quarter of the bound or 10,000 lines
each), ``spool.index`` (JSON ``{"segment": seq, "offset": bytes}``: where the
first unsent point is; older segments are spent), and ``spool.lock`` (one
sink per directory). Each append is fsynced; the index is replaced
atomically. A torn last line from a crash is cut off on open.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import json
import logging
import math
import os
import queue
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from collector.config import InfluxSettings
from collector.result import RunResult
from collector.secret import MASK

__all__ = [
    "PHASES",
    "RUN_MEASUREMENT",
    "STEP_MEASUREMENT",
    "InfluxSink",
    "Spool",
    "SpoolLockedError",
    "backoff_delay",
    "line",
    "result_lines",
    "unix_ns",
]

log = logging.getLogger("flowprobe.sink")

STEP_MEASUREMENT = "flowprobe_step"
RUN_MEASUREMENT = "flowprobe_run"
PHASES = ("connect", "tls", "request", "first_byte", "transfer")

FieldValue = float | int | bool | str

# ---------------------------------------------------------------- line protocol

# A newline ends a line (and a spool record), so it cannot travel: it becomes a
# space, escaped where a space needs escaping. Two backslashes read as one.
_MEASUREMENT_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", " ": "\\ ", "\n": "\\ ", "\r": "\\ "})
_KEY_ESCAPES = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ ", "\n": "\\ ", "\r": "\\ "})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": " ", "\r": " "})


def _field_value(value: FieldValue) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        # Line protocol has no NaN or infinity; a field without a value is left out.
        return repr(value) if math.isfinite(value) else None
    return '"' + value.translate(_STRING_ESCAPES) + '"'


def line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], timestamp_ns: int) -> str:
    """One point of line protocol. Tags are sorted (InfluxDB's preferred
    order); an empty tag value means no tag. Needs at least one field."""
    head = measurement.translate(_MEASUREMENT_ESCAPES)
    for key in sorted(tags):
        if tags[key]:
            head += "," + key.translate(_KEY_ESCAPES) + "=" + tags[key].translate(_KEY_ESCAPES)
    body = ",".join(key.translate(_KEY_ESCAPES) + "=" + text for key, value in fields.items() if (text := _field_value(value)) is not None)
    if not body:
        raise ValueError(f"a point needs a field: {measurement}")
    return f"{head} {body} {timestamp_ns}"


def unix_ns(unix_seconds: float) -> int:
    # Whole seconds apart from the fraction: 1.7e9 * 1e9 in one float would round to 256 ns.
    whole = math.floor(unix_seconds)
    return whole * 1_000_000_000 + round((unix_seconds - whole) * 1e9)


def result_lines(result: RunResult) -> list[str]:
    """The points of one run: its steps that ran, then the run."""
    lines = []
    for step in result.steps:
        if step.outcome == "skipped":
            continue
        fields: dict[str, FieldValue] = {"duration": float(step.duration)}
        fields.update((phase, float(step.phases[phase])) for phase in PHASES if phase in step.phases)
        fields["success"] = step.outcome == "success"
        if step.status is not None:
            fields["status_code"] = int(step.status)
        fields["retries"] = max(step.attempts - 1, 0)
        started = step.started_at if step.started_at is not None else result.started_at
        lines.append(line(STEP_MEASUREMENT, {"workflow": result.workflow, "env": result.env, "step": step.name}, fields, unix_ns(started)))
    run: dict[str, FieldValue] = {
        "duration": float(result.duration),
        "success": result.outcome == "success",
        "attempts": int(result.attempts),
        "flaky": bool(result.flaky),
    }
    if result.failed_step:
        run["failed_step"] = result.failed_step
    if result.reason:
        run["reason"] = result.reason
    lines.append(
        line(RUN_MEASUREMENT, {"workflow": result.workflow, "env": result.env, "result": result.outcome}, run, unix_ns(result.started_at))
    )
    return lines


def backoff_delay(failures: int, initial: float, maximum: float, uniform: float) -> float:
    """Pause after the `failures`-th failed write in a row: full jitter over
    ``min(maximum, initial * 2 ** (failures - 1))``; `uniform` is in [0, 1)."""
    return min(maximum, initial * 2.0 ** min(failures - 1, 64)) * uniform


# ---------------------------------------------------------------- spool


class SpoolLockedError(RuntimeError):
    """Another sink holds this spool directory."""


@dataclass
class _Segment:
    seq: int
    remaining: int  # unsent lines
    total: int  # lines in the file, sent or not


_INDEX = "spool.index"
_LOCK = "spool.lock"
_PREFIX, _SUFFIX = "segment-", ".lp"


class Spool:
    """A bounded, ordered, on-disk queue of line protocol lines.

    Not thread-safe: one thread (the sink's) uses it.
    """

    def __init__(self, directory: Path, max_points: int, *, segment_points: int | None = None) -> None:
        self.directory = Path(directory)
        self.max_points = max_points
        self.segment_points = segment_points or max(1, min(10_000, max_points // 4))
        self.points = 0
        self._segments: collections.deque[_Segment] = collections.deque()
        self._offset = 0  # bytes already sent in the first segment
        self._next_seq = 0
        self._lock_fd: int | None = None

    # ------------------------------------------------------------ lifecycle

    def lock(self) -> None:
        """Take the directory for this process; raises SpoolLockedError if taken."""
        if self._lock_fd is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise SpoolLockedError(f"spool directory {self.directory} is in use by another sink") from None
            raise
        self._lock_fd = fd

    def open(self) -> int:
        """Recover what is on disk; returns how many points were dropped to fit the bound."""
        self.lock()
        index_seq, index_offset = self._read_index()
        seqs = sorted(
            int(p.name[len(_PREFIX) : -len(_SUFFIX)])
            for p in self.directory.glob(f"{_PREFIX}*{_SUFFIX}")
            if p.name[len(_PREFIX) : -len(_SUFFIX)].isdigit()
        )
        self._segments.clear()
        self.points, self._offset = 0, 0
        if seqs:
            self._cut_torn_tail(self._path(seqs[-1]))
        for seq in seqs:
            path = self._path(seq)
            if index_seq is not None and seq < index_seq:
                path.unlink()  # spent before a crash cut the cleanup short
                continue
            total = _count_lines(path, 0)
            remaining = total
            if seq == index_seq and not self._segments:
                offset = min(index_offset, path.stat().st_size)
                remaining = _count_lines(path, offset)
                self._offset = offset
            self._segments.append(_Segment(seq, remaining, total))
            self.points += remaining
        self._next_seq = max([*seqs, (index_seq or 0) - 1]) + 1 if seqs or index_seq else 0
        dropped = max(0, self.points - self.max_points)
        if dropped:
            self._advance(dropped)
        self._write_index()
        return dropped

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # ------------------------------------------------------------ queue

    def append(self, lines: Sequence[str]) -> tuple[int, int]:
        """Add lines at the tail, fsynced. Returns (appended, dropped): the
        oldest points dropped to stay within the bound. On a disk error the
        lines not appended are the caller's to count; the error is raised."""
        appended = 0
        while appended < len(lines):
            if not self._segments or self._segments[-1].total >= self.segment_points:
                self._segments.append(_Segment(self._next_seq, 0, 0))
                self._next_seq += 1
            tail = self._segments[-1]
            chunk = lines[appended : appended + self.segment_points - tail.total]
            data = "".join(f"{text}\n" for text in chunk).encode()
            path = self._path(tail.seq)
            try:
                with open(path, "ab") as f:
                    start = f.tell()
                    try:
                        f.write(data)
                        f.flush()
                        os.fsync(f.fileno())
                    except OSError:
                        f.truncate(start)  # never leave half a line for the next append to run into
                        raise
            except OSError:
                if tail.total == 0:
                    self._segments.pop()
                    path.unlink(missing_ok=True)
                raise
            if tail.total == 0:
                _fsync_dir(self.directory)
            tail.total += len(chunk)
            tail.remaining += len(chunk)
            self.points += len(chunk)
            appended += len(chunk)
        dropped = max(0, self.points - self.max_points)
        if dropped:
            self._advance(dropped)
            self._write_index()
        return appended, dropped

    def peek(self, limit: int) -> list[str]:
        """Up to `limit` of the oldest lines, oldest first, without removing them."""
        out: list[str] = []
        for i, segment in enumerate(self._segments):
            want = min(segment.remaining, limit - len(out))
            if want <= 0:
                break
            with open(self._path(segment.seq), "rb") as f:
                if i == 0:
                    f.seek(self._offset)
                for _ in range(want):
                    out.append(f.readline().rstrip(b"\n").decode("utf-8", "replace"))
        return out

    def consume(self, count: int) -> None:
        """Remove the `count` oldest lines (they were sent)."""
        self._advance(min(count, self.points))
        self._write_index()

    # ------------------------------------------------------------ internals

    def _path(self, seq: int) -> Path:
        return self.directory / f"{_PREFIX}{seq:012d}{_SUFFIX}"

    def _advance(self, count: int) -> None:
        while count > 0 and self._segments:
            head = self._segments[0]
            if count >= head.remaining:
                count -= head.remaining
                self.points -= head.remaining
                self._segments.popleft()
                self._offset = 0
                self._path(head.seq).unlink(missing_ok=True)
            else:
                with open(self._path(head.seq), "rb") as f:
                    f.seek(self._offset)
                    for _ in range(count):
                        f.readline()
                    self._offset = f.tell()
                head.remaining -= count
                self.points -= count
                count = 0

    def _read_index(self) -> tuple[int | None, int]:
        try:
            data = json.loads((self.directory / _INDEX).read_text())
            return int(data["segment"]), max(0, int(data["offset"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None, 0  # no index: every segment is unsent (at worst some points go twice)

    def _write_index(self) -> None:
        seq = self._segments[0].seq if self._segments else self._next_seq
        tmp = self.directory / f"{_INDEX}.tmp"
        with open(tmp, "w") as f:
            json.dump({"segment": seq, "offset": self._offset if self._segments else 0}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / _INDEX)
        _fsync_dir(self.directory)

    @staticmethod
    def _cut_torn_tail(path: Path) -> None:
        size = path.stat().st_size
        if size == 0:
            return
        with open(path, "r+b") as f:
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            # Find the last complete line; a crash mid-append left the rest.
            keep, position = 0, 0
            f.seek(0)
            while chunk := f.read(1 << 20):
                if (at := chunk.rfind(b"\n")) >= 0:
                    keep = position + at + 1
                position += len(chunk)
            f.truncate(keep)
            log.warning("influx spool: cut %d bytes of a torn last line from %s", size - keep, path.name)


def _count_lines(path: Path, offset: int) -> int:
    count = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- sink

_STOP = object()
_DRAIN = 5_000  # results taken off the queue per turn of the loop
_MIN_WRITE = 0.05  # seconds: below this much grace left, spool instead of writing
WriteOutcome = Literal["ok", "retry", "reject", "too_large"]


class InfluxSink:
    """Writes runs to InfluxDB (v2 write API) from a background thread.

    ``start()`` once; ``add(result)`` from the event loop for every finished
    run (it never blocks); ``close(grace)`` on shutdown, from a thread (it
    blocks). ``stats()`` for metrics, from anywhere.
    """

    def __init__(self, settings: InfluxSettings, token: str, spool_dir: Path, *, rng: random.Random | None = None) -> None:
        self._settings = settings
        self._token = token
        self._rng = rng or random.Random()
        self._spool = Spool(Path(spool_dir), settings.spool_max_points)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._deadline = math.inf
        self._counts = {"written": 0, "spooled": 0, "dropped": 0, "rejected": 0, "failed_writes": 0}
        self._counts_lock = threading.Lock()
        self._start_lock = threading.Lock()
        # Owned by the worker thread from here on.
        self._client: Any = None
        self._write_api: Any = None
        self._buffer: list[str] = []
        self._buffer_since = 0.0
        self._failures = 0
        self._retry_at = 0.0
        self._max_lines = settings.batch_size
        self._memory_points = max(4 * settings.batch_size, 10_000)
        self._stopping = False

    def __repr__(self) -> str:
        return f"InfluxSink(url={self._settings.url!r}, org={self._settings.org!r}, bucket={self._settings.bucket!r})"

    # ------------------------------------------------------------ public API

    def start(self) -> None:
        """Take the spool directory and start the writer thread. Cheap: the
        spool is recovered and replayed on that thread. Raises
        SpoolLockedError if another sink uses the directory."""
        with self._start_lock:
            if self._thread is not None:
                return
            self._spool.lock()
            self._thread = threading.Thread(target=self._run, name="flowprobe-influx", daemon=True)
            self._thread.start()

    def add(self, result: RunResult) -> None:
        """Queue a finished run. O(1), never blocks, never raises; the result
        must not change afterwards."""
        with self._start_lock:  # uncontended but for close(): what it accepts is queued before the stop
            if not self._closing:
                self._queue.put(result)
                return
        self._count(dropped=1 + sum(1 for s in result.steps if s.outcome != "skipped"))
        log.warning("influx sink is closed; a run of %s/%s was not written", result.workflow, result.env)

    def add_lines(self, lines: list[str]) -> None:
        """Queue points already in line protocol (see `line`): the analytics
        worker's findings. Same promises as `add`; the list must not change."""
        if not lines:
            return
        with self._start_lock:
            if not self._closing:
                self._queue.put(lines)
                return
        self._count(dropped=len(lines))
        log.warning("influx sink is closed; %d points were not written", len(lines))

    def close(self, grace: float) -> None:
        """Write what is buffered within `grace` seconds, spool the rest, stop.

        Blocking: call it with ``asyncio.to_thread``. A write already in
        flight can hold it up to ``timeout`` past `grace`."""
        with self._start_lock:
            if self._closing:
                return
            self._closing = True
            self._deadline = time.monotonic() + max(grace, 0.0)
            self._queue.put(_STOP)
        if self._thread is None:
            self.start()
        assert self._thread is not None
        self._thread.join(timeout=max(grace, 0.0) + self._settings.timeout + 5.0)
        if self._thread.is_alive():
            log.error("influx sink did not stop in time; points it still held may be lost")

    def stats(self) -> dict[str, int]:
        """Counters since start: points ``written``, ``spooled`` (moved to the
        disk spool), ``dropped`` (oldest spooled points past the bound, or
        unspoolable), ``rejected`` (refused by the server as invalid),
        ``failed_writes`` (write attempts that failed); and ``spool_points``
        now. ``written``, ``dropped`` and ``rejected`` do not overlap; a
        spooled point is later written, dropped or rejected."""
        with self._counts_lock:
            counts = dict(self._counts)
        counts["spool_points"] = self._spool.points
        return counts

    # ------------------------------------------------------------ worker

    def _count(self, **deltas: int) -> None:
        with self._counts_lock:
            for key, delta in deltas.items():
                self._counts[key] += delta

    def _redact(self, text: str) -> str:
        return text.replace(self._token, MASK) if self._token else text

    def _run(self) -> None:
        try:
            self._client, self._write_api = self._connect(self._settings.timeout)
            try:
                dropped = self._spool.open()
            except OSError as exc:
                log.error("influx spool %s could not be read: %s", self._spool.directory, self._redact(str(exc)))
                dropped = 0
            if dropped:
                self._count(dropped=dropped)
                log.warning("influx spool held more than %d points; dropped the %d oldest", self._spool.max_points, dropped)
            if self._spool.points:
                log.info("influx spool holds %d points from an earlier run; replaying them first", self._spool.points)
            while not self._stopping:
                try:
                    self._take(self._wait_time())
                    if not self._stopping:
                        self._turn()
                except Exception as exc:  # our bug (or a broken disk): log it and keep the sink alive
                    log.error("influx sink error: %s", self._redact(repr(exc)))
                    time.sleep(0.1)
            self._shutdown()
        finally:
            self._spool.close()
            self._disconnect(self._client, self._write_api)
            # Let the client go now: its ApiClient's __del__ fails noisily if it waits for interpreter exit.
            self._client = self._write_api = None

    def _connect(self, timeout: float) -> tuple[Any, Any]:
        # Imported here: the client (and reactivex) load only when a sink is configured.
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        client = InfluxDBClient(url=self._settings.url, token=self._token, org=self._settings.org, timeout=timeout * 1000.0)
        return client, client.write_api(write_options=SYNCHRONOUS)

    @staticmethod
    def _disconnect(client: Any, write_api: Any) -> None:
        if write_api is not None:
            write_api.close()
        if client is not None:
            client.close()

    def _wait_time(self) -> float | None:
        now = time.monotonic()
        if self._spool.points:
            return max(0.0, self._retry_at - now)
        if self._buffer:
            if len(self._buffer) >= self._batch():
                return 0.0
            return max(0.0, self._buffer_since + self._settings.flush_interval - now)
        return None

    def _take(self, timeout: float | None) -> None:
        try:
            item = self._queue.get(timeout=timeout) if timeout is None or timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return
        self._accept(item)
        for _ in range(_DRAIN):
            try:
                self._accept(self._queue.get_nowait())
            except queue.Empty:
                return

    def _accept(self, item: Any) -> None:
        if item is _STOP:
            self._stopping = True
            return
        try:
            lines = item if isinstance(item, list) else result_lines(item)
        except Exception as exc:  # a malformed result is our bug, not the sink's end
            self._count(dropped=1)
            log.error("influx sink could not turn a run into points: %s", self._redact(repr(exc)))
            return
        if not self._buffer:
            self._buffer_since = time.monotonic()
        self._buffer.extend(lines)

    def _batch(self) -> int:
        return min(self._settings.batch_size, self._max_lines)

    def _turn(self) -> None:
        if self._buffer and (self._spool.points or len(self._buffer) > self._memory_points):
            self._spill()
        now = time.monotonic()
        if self._spool.points:
            if now >= self._retry_at:
                self._replay_one(self._settings.timeout)
        elif self._buffer and (len(self._buffer) >= self._batch() or now - self._buffer_since >= self._settings.flush_interval):
            self._flush_one(self._settings.timeout)

    def _spill(self) -> None:
        lines, self._buffer = self._buffer, []
        try:
            appended, dropped = self._spool.append(lines)
        except OSError as exc:
            # A full or broken disk: what could not be spooled is lost, and counted.
            appended, dropped = 0, 0
            log.error("influx spool write failed; %d points lost: %s", len(lines), self._redact(str(exc)))
            self._count(dropped=len(lines))
        self._count(spooled=appended, dropped=dropped)
        if dropped:
            log.warning("influx spool is full (%d points); dropped the %d oldest", self._spool.max_points, dropped)

    def _flush_one(self, timeout: float) -> None:
        count = min(self._batch(), len(self._buffer))
        outcome = self._write(self._buffer[:count], timeout)
        if outcome == "ok":
            del self._buffer[:count]
            self._count(written=count)
        elif outcome == "reject":
            del self._buffer[:count]
            self._count(rejected=count)
        elif outcome == "retry":
            self._spill()  # the batch and everything behind it, in order

    def _replay_one(self, timeout: float) -> None:
        lines = self._spool.peek(self._batch())
        outcome = self._write(lines, timeout)
        if outcome in ("ok", "reject"):
            self._spool.consume(len(lines))
            self._count(**{"written" if outcome == "ok" else "rejected": len(lines)})
            if outcome == "ok" and not self._spool.points:
                log.info("influx spool replayed; writing directly again")

    def _write(self, lines: list[str], timeout: float) -> WriteOutcome:
        from influxdb_client import WritePrecision
        from influxdb_client.client.exceptions import InfluxDBError

        body = "\n".join(lines).encode()
        client, write_api = (self._client, self._write_api)
        if timeout < self._settings.timeout:
            # The client has one timeout; a shorter one (closing) needs its own client.
            client, write_api = self._connect(timeout)
        try:
            write_api.write(bucket=self._settings.bucket, org=self._settings.org, record=body, write_precision=WritePrecision.NS)
        except Exception as exc:
            status = getattr(exc, "status", None)
            message = self._redact(str(getattr(exc, "message", None) or exc))[:500]
            if status in (400, 422):
                log.error("InfluxDB refused %d points (HTTP %s), dropping them: %s", len(lines), status, message)
                return "reject"
            if status == 413 and len(lines) > 1:
                self._max_lines = max(1, len(lines) // 2)
                log.warning("InfluxDB found a batch of %d points too large; writing %d at a time", len(lines), self._max_lines)
                return "too_large"
            if status == 413:
                log.error("InfluxDB refused a single point as too large (HTTP 413), dropping it")
                return "reject"
            self._failed(exc, status, message, len(lines))
            retry_after = getattr(exc, "retry_after", None) if isinstance(exc, InfluxDBError) else None
            if retry_after:
                try:
                    self._retry_at = max(self._retry_at, time.monotonic() + min(float(retry_after), self._settings.retry_max))
                except ValueError:
                    pass  # an HTTP date: keep our own backoff
            return "retry"
        finally:
            if client is not self._client:
                self._disconnect(client, write_api)
        if self._failures:
            log.info("InfluxDB writes succeed again after %d failed attempts", self._failures)
            self._failures = 0
        return "ok"

    def _failed(self, exc: BaseException, status: int | None, message: str, points: int) -> None:
        self._failures += 1
        self._count(failed_writes=1)
        delay = backoff_delay(self._failures, self._settings.retry_initial, self._settings.retry_max, self._rng.random())
        self._retry_at = time.monotonic() + delay
        what = f"HTTP {status}" if status else type(exc).__name__
        hint = " (check the token, org and bucket)" if status in (401, 403, 404) else ""
        # One warning per outage, then debug: a dead server must not flood the log.
        level = logging.WARNING if self._failures == 1 else logging.DEBUG
        log.log(level, "InfluxDB write of %d points failed (%s%s): %s; spooling, next try in %.2fs", points, what, hint, message, delay)

    def _shutdown(self) -> None:
        while True:  # everything queued before close(); add() queues nothing after it
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._accept(item)
        if self._buffer and self._spool.points:
            self._spill()
        while self._buffer or self._spool.points:
            remaining = self._deadline - time.monotonic()
            if remaining < _MIN_WRITE or (self._failures and time.monotonic() < self._retry_at):
                break
            timeout = min(self._settings.timeout, remaining)
            failures = self._failures
            if self._spool.points:
                self._replay_one(timeout)
            else:
                self._flush_one(timeout)
            if self._failures > failures:
                break
        if self._buffer:
            self._spill()
        if self._spool.points:
            log.info("influx sink stopped with %d points in the spool; the next start replays them", self._spool.points)
