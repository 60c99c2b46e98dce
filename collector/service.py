"""The collector daemon: config, scheduler, runner, history, metrics and API, wired together.

Lifecycle:
- start: load the config (an invalid one is fatal at start), restore the last
  state from history, schedule every selected pair.
- reload (SIGHUP, or a change to a workflow file): load the new config; if it
  is invalid, log every problem, keep the old config running and set
  ``flowprobe_config_last_reload_successful`` to 0.
- stop (SIGTERM, SIGINT): stop scheduling, let runs in flight finish within
  the grace period, write their results, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import uvicorn

from collector.alerting import AlertService
from collector.alertstore import AlertStore
from collector.config import Config, ConfigError, Schedule, Workflow, load_config
from collector.engine import AiohttpEngine, Engine
from collector.live import MAX_CLIENT_MESSAGE_BYTES, LiveHub
from collector.log import log_run
from collector.metrics import MetricsRenderer, State, new_registry
from collector.report import ReportScheduler
from collector.resilience import CircuitBreakers
from collector.result import RunResult
from collector.runner import Runner
from collector.scheduler import Pair, Scheduler, Shard
from collector.sink import InfluxSink
from collector.store import HistoryStore

__all__ = ["ApiServer", "Service", "run_event_loop"]

log = logging.getLogger("flowprobe.collector")
_T = TypeVar("_T")

# The garbage collector's thresholds while the service runs (Python's are 700, 10, 10): a young
# collection every 20,000 net allocations instead of 700, so a run's objects die young instead
# of being promoted and walked again by every full collection; a full one after 20 of those.
_GC_THRESHOLD = (20_000, 20, 10)


def info_labels(workflow: Workflow) -> dict[str, str]:
    """flowprobe_workflow_info's labels: the static labels, and ``dependencies`` as the alerts carry it (",a,b,")."""
    labels = dict(workflow.labels)
    if workflow.depends_on:
        labels["dependencies"] = "," + ",".join(sorted(workflow.depends_on)) + ","
    return labels


class Service:
    def __init__(
        self,
        config_paths: Sequence[Path | str],
        *,
        data_dir: Path | str,
        envs: Sequence[str] | None = None,
        shard: Shard = Shard(),
        engine: Engine | None = None,
        grace: float = 25.0,
        watch: bool = True,
    ) -> None:
        self.config_paths = [Path(p) for p in config_paths]
        self.envs = list(envs) if envs else None
        self.shard = shard
        self.grace = grace
        self.watch = watch
        self.config = self._load()  # ConfigError propagates: an invalid config is fatal at start
        self.state = State()
        self.breakers = CircuitBreakers(self.config.circuit_breaker.failures, self.config.circuit_breaker.cool_down)
        self.engine = engine or AiohttpEngine()
        self.runner = Runner(self.engine, self.breakers)
        history = self.config.history
        self.data_dir = Path(data_dir)
        self.store = HistoryStore(self.data_dir / "history.sqlite3", runs_per_pair=history.runs_per_pair, max_age=history.max_age)
        # Like the alert database, the sink is set up at start; a reload does not move it.
        self.sink: InfluxSink | None = None
        # The database URL is read at start only; a reload changes tokens, escalation and Alertmanager.
        alert_database = self.config.database_url or f"sqlite:///{self.data_dir / 'alerts.sqlite3'}"
        self.alerts = AlertService(AlertStore(alert_database), settings=lambda: self.config.settings.alerting)
        self.reports = ReportScheduler.for_service(self)
        self.live = LiveHub(self)  # WebSocket and SSE clients of the API
        # Where the status page gets anomaly scores (the demo sets its own worker's address).
        self.analytics_url: str | None = self.config.settings.analytics_url
        self.scheduler = Scheduler(self._execute, on_missed=self.state.add_missed, on_lateness=self.state.lateness.observe)
        self.state.internal_errors = lambda: self.runner.internal_errors
        self.state.circuits = self.breakers.states
        self.state.sinks = lambda: {"influx": self.sink.stats()} if self.sink is not None else {}
        self.registry = new_registry(self.state)
        self.metrics = MetricsRenderer(self.state)
        self.state.configure({pair: info_labels(wf) for pair, wf in self.selected(self.config).items()})
        self.listeners: list[Callable[[RunResult], None]] = []
        self.ready = False
        self.stopping = asyncio.Event()
        self._gc_threshold: tuple[int, int, int] | None = None

    # ------------------------------------------------------------ config

    def _load(self) -> Config:
        config = load_config(*self.config_paths)
        if self.envs:
            unknown = [e for e in self.envs if e not in config.environments]
            if unknown:
                raise ValueError(f"unknown environment(s): {', '.join(unknown)} (defined: {', '.join(config.environments)})")
        return config

    def selected(self, config: Config) -> dict[Pair, Workflow]:
        """The pairs this collector runs: filtered by --env and --shard."""
        return {
            (wf.name, env): wf
            for wf, env in config.pairs()
            if (self.envs is None or env in self.envs) and self.shard.owns((wf.name, env))
        }

    def _apply(self, config: Config) -> None:
        self.config = config
        pairs = self.selected(config)
        self.state.configure({pair: info_labels(wf) for pair, wf in pairs.items()})
        self.breakers.configure(config.circuit_breaker.failures, config.circuit_breaker.cool_down)
        self.store.configure(runs_per_pair=config.history.runs_per_pair, max_age=config.history.max_age)
        self.runner.forget_compiled()
        if not self.ready:
            # At start, before the GC freeze (see start); after a reload, steps compile at their first run.
            self.runner.prepare(pairs.values())
        schedules: dict[Pair, Schedule] = {pair: wf.schedule for pair, wf in pairs.items()}
        self.scheduler.apply(schedules)

    def reload(self) -> bool:
        try:
            config = self._load()
        except (ConfigError, ValueError) as exc:
            self.state.reload_successful = 0
            problems = [str(p) for p in exc.problems] if isinstance(exc, ConfigError) else [str(exc)]
            log.error("config reload failed; the previous config keeps running", extra={"fields": {"problems": problems}})
            return False
        self._apply(config)
        if self.ready:
            self.reports.apply()
        self.state.reload_successful = 1
        self.state.reload_success_time = time.time()
        log.info("config reloaded", extra={"fields": {"workflows": len(config.workflows), "pairs": len(self.scheduler.pairs)}})
        return True

    # ------------------------------------------------------------ running

    def _failing_dependency(self, workflow: Workflow, env: str) -> str | None:
        for dependency in workflow.depends_on:
            state = self.state.pairs.get((dependency, env))
            last = state.last_result if state is not None else None
            # Unknown (not run here, or not yet) counts as healthy: run rather than guess.
            if last is not None and last.outcome != "success":
                return dependency
        return None

    async def run_pair(self, workflow_name: str, env: str) -> RunResult | None:
        config = self.config
        workflow = config.workflows.get(workflow_name)
        if workflow is None or env not in config.environments_of(workflow):
            return None
        dependency = self._failing_dependency(workflow, env)
        if dependency is not None:
            result = RunResult(
                workflow_name,
                env,
                "",
                time.time(),
                "skipped",
                skip_reason="dependency",
                message=f"skipped: {dependency} is failing in {env}",
            )
            result.run_id = f"skip-{time.time_ns():x}"
        else:
            result = await self.runner.run(config, workflow, env)
        self.record(result)
        return result

    async def _execute(self, workflow_name: str, env: str) -> None:
        await self.run_pair(workflow_name, env)

    def record(self, result: RunResult) -> None:
        self.state.record(result)
        self.store.add(result)
        if self.sink is not None:
            self.sink.add(result)
        log_run(result)
        for listener in list(self.listeners):
            try:
                listener(result)
            except Exception:
                log.exception("result listener failed")

    async def start(self) -> None:
        self._apply(self.config)
        influx = self.config.settings.influx
        if influx is not None and self.config.influx_token is not None:
            self.sink = InfluxSink(influx, self.config.influx_token, self.data_dir / "influx-spool")
            self.sink.start()
        latest, streaks = await asyncio.gather(asyncio.to_thread(self.store.latest), asyncio.to_thread(self.store.failure_streaks))
        for pair, result in latest.items():
            self.state.restore(result, streaks.get(pair))
        await self.alerts.start()
        self.reports.start()
        self.live.attach()
        # Everything built so far lives as long as the process: keep it out of the
        # collector's full collections, which otherwise pause the loop (and the probes).
        gc.freeze()
        # Runs make almost no reference cycles (at 10,000 six-step workflows, full collections
        # freed under 100 objects while walking 300,000 live ones for 0.5 s, every 30 s:
        # bench/scale_collector.py). Collect far less often; restored at stop.
        self._gc_threshold = gc.get_threshold()
        gc.set_threshold(*_GC_THRESHOLD)
        self.scheduler.start()
        self.ready = True
        log.info(
            "collector started",
            extra={"fields": {"workflows": len(self.config.workflows), "pairs": len(self.scheduler.pairs), "shard": f"{self.shard.index}/{self.shard.count}"}},
        )

    async def stop(self) -> None:
        self.ready = False
        if self._gc_threshold is not None:
            gc.set_threshold(*self._gc_threshold)
            self._gc_threshold = None
        self.live.close()  # end the live streams, or the API server would wait on them
        cancelled = await self.scheduler.shutdown(self.grace)
        if cancelled:
            log.warning("runs cancelled at the end of the grace period", extra={"fields": {"cancelled": cancelled}})
        await self.reports.stop(self.grace)  # a report being written reads the history: before it closes
        await asyncio.to_thread(self.store.flush)
        self.store.close()
        if self.sink is not None:
            # What cannot be written within the grace stays in the disk spool for the next start.
            await asyncio.to_thread(self.sink.close, min(self.grace, 10.0))
        await self.alerts.stop()
        await self.engine.close()
        log.info("collector stopped")

    async def _watch_files(self) -> None:
        from watchfiles import awatch

        watched = [p for p in self.config_paths if p.exists()]
        async for changes in awatch(*watched, stop_event=self.stopping, recursive=False):
            if any(path.endswith((".yaml", ".yml")) for _, path in changes):
                self.reload()

    async def serve(self, host: str, port: int) -> None:
        """Run until SIGTERM or SIGINT; SIGHUP reloads."""
        from collector.api import create_app

        loop = asyncio.get_running_loop()
        api = ApiServer(create_app(self), host, port)
        await api.start()  # bind first: a taken port fails before any run starts
        with _signals(loop, stop=self.stopping.set, reload=self.reload):
            await self.start()
            watcher = asyncio.create_task(self._watch_files()) if self.watch else None
            await self.stopping.wait()
            log.info("stopping: runs in flight may finish", extra={"fields": {"grace_seconds": self.grace}})
            await self.stop()
            await api.stop()
            if watcher is not None:
                await watcher


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The collector owns signals: SIGTERM must drain runs before the API goes away.
        yield


class ApiServer:
    """An ASGI app under uvicorn on this event loop, on a socket we bind ourselves.

    Binding here turns a taken port into an OSError we can report, instead of
    uvicorn's log line and sys.exit inside a task.
    """

    def __init__(self, app: object, host: str, port: int) -> None:
        self.host, self.port = host, port
        # Live messages are small and go to every client: per-message deflate would cost more than it saves.
        # A client's WebSocket message is cut at the live stream's own cap (live.py), before it is buffered whole.
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off", ws_per_message_deflate=False,
                                ws_max_size=MAX_CLIENT_MESSAGE_BYTES)
        self.server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP, not 0: only then does asyncio set TCP_NODELAY on the connections it accepts. Without it
        # every request after the first on a kept-alive connection waits ~40 ms for the client's delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on {self.host}:{self.port}: {exc.strerror}") from None
        self.port = sock.getsockname()[1]
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise OSError(f"server on {self.host}:{self.port} stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task


def run_event_loop(main: Coroutine[Any, Any, _T]) -> _T:
    """`asyncio.run`, on uvloop where it is installed, else on asyncio's own loop.

    Measured here (bench/vs_blackbox.py, bench/scale_collector.py), uvloop takes
    about a quarter less CPU per run, and at 10,000 six-step workflows on one
    core it kept scheduling lateness p99 at 34 ms where asyncio's loop let it
    reach 685 ms.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


@contextlib.contextmanager
def _signals(loop: asyncio.AbstractEventLoop, *, stop: Callable[[], None], reload: Callable[[], object]) -> Iterator[None]:
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    for sig in handled:
        loop.add_signal_handler(sig, stop if sig != signal.SIGHUP else reload)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
