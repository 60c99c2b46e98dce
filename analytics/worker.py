"""The analytics worker: new points in, one anomaly score per series out.

Every `interval` the worker reads what its source has that is new, and for
each point asks that series' detector first and teaches it second
(``score_one``, then ``learn_one``): a score uses only what came before it,
exactly as live. There is one detector per (workflow, env, signal), made by
the factory the worker is given (`analytics.scorers.default_detector` when
run from the command line), so a test can bring its own, and attuned to the
worker's threshold (`analytics.scorers.attune`: the ensemble damps the echo
of its own alarms). The score is
exported from a series' first point; the anomaly flag only after its
`probation` (750 points from the command line, as NAB's), while the young
detector's calibration settles.

A source that cannot be read (Prometheus down, the history file missing or
locked) and a detector that raises are logged and counted in
``flowprobe_analytics_errors_total``; the worker carries on and tries again
at the next interval. It never stops for either.

The detectors are saved in the state directory (analytics/state.py) at most
every `save_every` seconds and when the worker stops, and loaded at start,
together with the time of the last point each learned: points at or before
it are not learned twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from analytics.findings import Findings
from analytics.influx import InfluxOutput
from analytics.patterns import Topology
from analytics.scorers import Detector, attune, how_they_run
from analytics.scorers.registry import PROBATION as SHIPPED_PROBATION
from analytics.scorers.registry import THRESHOLD as SHIPPED_THRESHOLD
from analytics.source import LATENCY, Point, Run, SeriesKey, Source, SourceError, open_source
from analytics.state import SavedSeries, StateFile, kind_of

__all__ = ["DEFAULT_PROBATION", "DEFAULT_THRESHOLD", "Series", "Worker", "command", "serve"]


log = logging.getLogger("flowprobe.analytics")

# The score at which flowprobe_anomaly is 1: the shipped detector's calibrated
# alarm threshold (the one value that scores best on the whole NAB subset, see
# analytics/scorers/registry.py). The generated alert rule holds the flag for
# a `for:` (collector/rules.py), so one odd run does not page.
DEFAULT_THRESHOLD = SHIPPED_THRESHOLD
# The points a series' detector learns before flowprobe_anomaly can be 1 (see registry.PROBATION).
DEFAULT_PROBATION = SHIPPED_PROBATION
# A series with no point for this long is no longer exported (its workflow
# was removed or stopped); its detector is kept, and it comes back with its
# next point. Longer than any sensible probe schedule.
STALE_AFTER = 6 * 3600.0


@dataclass
class Series:
    detector: Detector
    last_t: float = -math.inf  # time of the last point learned
    score: float | None = None  # score of that point
    value: float | None = None  # and its value
    learned: int = 0  # points its detector has learned


class Worker:
    def __init__(
        self,
        source: Source,
        factory: Callable[[], Detector],
        *,
        threshold: float = DEFAULT_THRESHOLD,
        probation: int = 0,
        interval: float = 15.0,
        state: StateFile | None = None,
        save_every: float = 60.0,
        stale_after: float = STALE_AFTER,
        clock: Callable[[], float] = time.time,
        findings: Findings | None = None,
        topology: Callable[[], Awaitable[Topology | None]] | None = None,
        influx: InfluxOutput | None = None,
    ) -> None:
        self.source = source
        self.factory = factory
        # The run-level models (failure prediction, forecasts, incidents); the workflows'
        # depends_on topology for the root causes comes from `topology`, else from the source.
        self.findings = findings
        self.topology = topology or getattr(source, "topology", None)
        self.influx = influx  # the scores and predictions as InfluxDB points too, when configured
        self.threshold = threshold
        # No anomaly is flagged on a series' first `probation` points, as NAB scores none
        # there: a young detector's calibration is still settling (registry.PROBATION).
        self.probation = probation
        self.interval = interval
        self.state = state
        self.save_every = save_every
        self.stale_after = stale_after
        self.clock = clock
        self.series: dict[SeriesKey, Series] = {}
        self.points_total = 0
        self.errors_total = 0
        self.last_run: float | None = None  # when the source was last read successfully
        self.source_error: str | None = None  # why the last read failed; None once it works
        self._dirty = False
        self._last_save = time.monotonic()
        self._logged: set[SeriesKey] = set()  # series whose detector failure was already logged

    # ------------------------------------------------------------ state

    def load(self) -> int:
        """Resume from the state directory; returns the number of series restored."""
        if self.state is None:
            return 0
        saved = self.state.load()
        try:
            expected: str | None = kind_of(self.factory())
        except Exception:
            expected = None  # reported when the first point needs a detector
        changed = 0
        for key, entry in saved.items():
            if expected is not None and entry.kind != expected:
                changed += 1  # the shipped detector changed: relearn rather than mix two models
                continue
            # A file saved before the points were counted: its detectors have had their probation.
            learned = entry.learned if entry.learned is not None else self.probation + 1
            self.series[key] = Series(attune(entry.detector, self.threshold), entry.last_t, entry.score, entry.value, learned)
        saved_findings = self.state.models.get("findings")
        if self.findings is not None and isinstance(saved_findings, Findings):
            self.findings = saved_findings
        if self.series:
            self.source.resume(max(s.last_t for s in self.series.values()))
        if saved:
            fields = {"series": len(self.series), "path": str(self.state.path)}
            if changed:
                fields["relearning"] = changed
            log.info("analytics state restored", extra={"fields": fields})
        return len(self.series)

    async def save(self) -> bool:
        if self.state is None:
            return True
        snapshot = {key: SavedSeries(s.detector, kind_of(s.detector), s.last_t, s.score, s.value, s.learned) for key, s in list(self.series.items())}
        models = {"findings": self.findings} if self.findings is not None else {}
        try:
            await asyncio.to_thread(self._save_locked, snapshot, models)
        except Exception as exc:  # a full disk or an unpicklable detector: keep running, try again later
            self.errors_total += 1
            log.error("could not save the analytics state", extra={"fields": {"path": str(self.state.path), "error": f"{type(exc).__name__}: {exc}"}})
            return False
        self._dirty = False
        self._last_save = time.monotonic()
        return True

    def _save_locked(self, snapshot: dict[SeriesKey, SavedSeries], models: dict[str, Any]) -> None:
        assert self.state is not None
        # The findings are pickled while no run is learned into them (their own lock).
        with contextlib.ExitStack() as stack:
            if self.findings is not None:
                stack.enter_context(self.findings.locked())
            self.state.save(snapshot, models)

    # ------------------------------------------------------------ running

    async def run_once(self) -> int:
        """Read, score and learn what is new; returns the number of points learned. Never raises for a source."""
        try:
            points = await self.source.read()
        except Exception as exc:
            self.errors_total += 1
            message = str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
            if message != self.source_error:  # once per new problem, not once per interval
                if isinstance(exc, SourceError):
                    log.warning("cannot read the analytics source; trying again every interval",
                                extra={"fields": {"source": self.source.name, "error": message}})
                else:
                    log.exception("reading the analytics source failed", extra={"fields": {"source": self.source.name}})
            self.source_error = message
            return 0
        if self.source_error is not None:
            log.info("the analytics source can be read again", extra={"fields": {"source": self.source.name}})
            self.source_error = None
        take_runs = getattr(self.source, "take_runs", None)  # a source of points only has no runs
        runs = take_runs() if take_runs is not None else []
        self.last_run = self.clock()
        if self.findings is not None and self.topology is not None and runs:
            await self._refresh_topology()
        # Detectors can be slow to learn a long history: off the event loop, which the collector may share.
        learned = await asyncio.to_thread(self._learn, points, runs) if points or runs else 0
        if self._dirty and time.monotonic() - self._last_save >= self.save_every:
            await self.save()
        return learned

    async def _refresh_topology(self) -> None:
        assert self.findings is not None and self.topology is not None
        try:
            topology = await self.topology()
        except Exception as exc:  # the root causes lose their depends_on evidence, nothing else
            log.warning("cannot read the workflows' topology", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
            return
        self.findings.set_topology(topology)

    def _learn(self, points: list[Point], runs: list[Run] | None = None) -> int:
        learned = 0
        no_detector: dict[SeriesKey, Exception] = {}
        latency_scores: dict[tuple[str, str, float], float] = {}  # each run's latency score, for the failure predictor
        for point in points:
            key = point.key
            series = self.series.get(key)
            if series is None:
                if key in no_detector:
                    continue
                try:
                    series = Series(attune(self.factory(), self.threshold))
                except Exception as exc:
                    no_detector[key] = exc
                    continue
                self.series[key] = series
            if point.t <= series.last_t:
                continue  # learned before a restart, or read twice
            series.last_t = point.t  # even if the detector fails on it: a bad point is not retried forever
            try:
                score = float(series.detector.score_one(point.value, point.t))
                series.detector.learn_one(point.value, point.t)
                if math.isnan(score):
                    raise ValueError("the detector scored NaN")
            except Exception:
                self.errors_total += 1
                if key not in self._logged:
                    self._logged.add(key)
                    log.exception("a detector failed; the point is skipped", extra={"fields": _fields(key)})
                continue
            series.score, series.value = min(1.0, max(0.0, score)), point.value
            series.learned += 1
            if point.signal == LATENCY:
                latency_scores[(point.workflow, point.env, point.t)] = series.score
            if self.influx is not None:
                self.influx.anomaly(point, series.score, self.flagged(series))
            learned += 1
        if no_detector:
            self.errors_total += len(no_detector)
            exc = next(iter(no_detector.values()))
            log.error("could not make a detector; those series are not scored",
                      extra={"fields": {"series": len(no_detector), "error": f"{type(exc).__name__}: {exc}"}})
        self.points_total += learned
        if runs and self.findings is not None:
            try:
                learned_runs = self.findings.observe(runs, latency_scores, self.influx.prediction if self.influx is not None else None)
            except Exception:
                self.errors_total += 1
                log.exception("the run-level models failed on a batch of runs; they are skipped")
                learned_runs = 0
            self.findings.forget_stale(self.clock() - self.stale_after)
            self._dirty = self._dirty or learned_runs > 0
        self._dirty = self._dirty or learned > 0
        if self.influx is not None:
            self.influx.flush()
        return learned

    async def run(self, stop: asyncio.Event) -> None:
        """Every `interval` until `stop` is set; then save the state."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:  # our own bug: logged and counted, and the next interval tries again
                self.errors_total += 1
                log.exception("the analytics worker failed an interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
        if self._dirty:
            await self.save()

    async def close(self) -> None:
        await self.source.close()
        if self.influx is not None:
            await asyncio.to_thread(self.influx.close)  # writes what it can, spools the rest for the next start

    # ------------------------------------------------------------ reading (the API, the exposition)

    def learning(self, series: Series) -> bool:
        """Whether the series is still in its probation: its latest point was among its first `probation`."""
        return series.learned <= self.probation

    def flagged(self, series: Series) -> bool:
        """Whether the series' latest point is an anomaly: a score at or above the threshold, past the probation."""
        return series.score is not None and series.score >= self.threshold and not self.learning(series)

    def current(self) -> list[tuple[SeriesKey, Series]]:
        """Series with a score, sorted by key; stale ones left out."""
        oldest = self.clock() - self.stale_after
        return sorted((key, s) for key, s in list(self.series.items()) if s.score is not None and s.last_t >= oldest)

    def anomalies(self) -> dict[str, Any]:
        items = [
            {
                "workflow": workflow,
                "env": env,
                "signal": signal_name,
                "score": s.score,
                "anomaly": self.flagged(s),
                "learning": self.learning(s),
                "value": s.value,
                "at": s.last_t,
            }
            for (workflow, env, signal_name), s in self.current()
        ]
        items.sort(key=lambda item: -float(item["score"] or 0.0))
        return {"threshold": self.threshold, "source": self.source.name, "last_run": self.last_run, "items": items}

    def predictions(self) -> dict[str, Any]:
        items = self.findings.predictions() if self.findings is not None else []
        oldest = self.clock() - self.stale_after
        alert_at = self.findings.alert_at if self.findings is not None else None
        return {"alert_at": alert_at, "source": self.source.name, "last_run": self.last_run,
                "items": [item for item in items if item["last_run"] >= oldest]}

    def incidents(self, *, open_only: bool = False) -> dict[str, Any]:
        found = self.findings.incidents(open_only=open_only) if self.findings is not None else Findings(None, None, None).incidents()
        return {"source": self.source.name, "last_run": self.last_run, **found}


def _fields(key: SeriesKey) -> dict[str, str]:
    return dict(zip(("workflow", "env", "signal"), key))


# ---------------------------------------------------------------- the command


async def serve(worker: Worker, host: str, port: int, stop: asyncio.Event | None = None) -> None:
    """Serve /metrics and the API and run the worker until SIGTERM or SIGINT (or `stop`)."""
    from analytics.emit import create_app
    from collector.service import ApiServer

    stop = stop or asyncio.Event()
    worker.load()
    api = ApiServer(create_app(worker), host, port)
    try:
        await api.start()  # bind first: a taken port fails before anything runs
    except OSError:
        await worker.close()
        raise
    loop = asyncio.get_running_loop()
    handled = (signal.SIGTERM, signal.SIGINT)
    for sig in handled:
        loop.add_signal_handler(sig, stop.set)
    if worker.influx is not None:
        worker.influx.start()
    log.info("analytics worker started",
             extra={"fields": {"listen": f"{host}:{api.port}", "source": worker.source.name, "series": len(worker.series),
                               "detectors": how_they_run()}})
    try:
        await worker.run(stop)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await api.stop()
        await worker.close()
        log.info("analytics worker stopped")


def command(args: argparse.Namespace, *, factory: Callable[[], Detector] | None = None) -> int:
    """`flowprobe analytics` (and `python -m analytics`)."""
    from collector.log import configure_logging

    configure_logging(args.log_level)
    if factory is None:
        from analytics.scorers import default_detector

        factory = default_detector
    try:
        factory()  # a missing or broken detector fails here, not silently at the first point
    except Exception as exc:
        print(f"flowprobe analytics: cannot make a detector: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    source = open_source(args.source, **({"step": args.interval} if args.source.startswith("prometheus:") else {}))
    influx = None
    if args.influx_url:
        if not (args.influx_org and args.influx_bucket):
            print("flowprobe analytics: --influx-url needs --influx-org and --influx-bucket", file=sys.stderr)
            return 1
        try:
            influx = InfluxOutput.open(args.influx_url, args.influx_org, args.influx_bucket, args.state_dir)
        except ValueError as exc:
            print(f"flowprobe analytics: {exc}", file=sys.stderr)
            return 1
    worker = Worker(source, factory, threshold=DEFAULT_THRESHOLD if args.threshold is None else args.threshold,
                    probation=DEFAULT_PROBATION if args.probation is None else args.probation, interval=args.interval, state=StateFile(args.state_dir),
                    findings=Findings.default(), influx=influx)
    try:
        asyncio.run(serve(worker, *args.listen))
    except OSError as exc:
        print(f"flowprobe analytics: {exc}", file=sys.stderr)
        return 1
    return 0
