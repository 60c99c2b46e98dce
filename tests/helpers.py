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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
import yaml

from collector.engine import HttpxEngine
from collector.result import RunResult, StepResult
from collector.service import Service
from collector.target import create_app as create_target

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


def demo_service(config: Path, data: Path) -> Service:
    """A Service over `config` in prod, never started, whose steps reach the demo target in-process; its alert store open."""
    target = httpx.ASGITransport(create_target(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD))
    service = Service([config], data_dir=data, envs=["prod"], engine=HttpxEngine(target), watch=False)
    service.alerts.open()
    return service


@contextmanager
def closing(service: Service) -> Iterator[Service]:
    """A service made in a test; its run history and alert store are closed on the way out."""
    try:
        yield service
    finally:
        service.alerts.store.close()
        service.store.close()


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
def _serving(args: list[str], *, log: Path, ready: str, what: str) -> Iterator[subprocess.Popen[bytes]]:
    """`args` as a process, once `ready` (a URL) answers 200; its log joins the error if it never does."""
    with running_process(args, log=log) as process:
        try:
            wait_until(lambda: process.poll() is None and httpx.get(ready, timeout=1).status_code == 200, timeout=30, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text(errors='replace')}") from None
        yield process


def alertmanager_args(config: Path, storage: Path, port: int) -> list[str]:
    """The command line of a real Alertmanager alone on a loopback port."""
    return [
        require_binary("prometheus-alertmanager"),
        f"--config.file={config}",
        f"--storage.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # no gossip: one loopback instance
        "--log.level=warn",
    ]


@contextmanager
def alertmanager_on(port: int, storage: Path, config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real Alertmanager on a given port, once ready; yields its process (a restart can come back where it was)."""
    with _serving(alertmanager_args(config, storage, port), log=log, ready=f"http://127.0.0.1:{port}/-/ready",
                  what="Alertmanager to be ready") as process:
        yield process


@contextmanager
def running_alertmanager(directory: Path, config: Path | None = None) -> Iterator[str]:
    """A real Alertmanager on a free loopback port; yields its URL.

    Without `config` it has one receiver that sends nothing."""
    directory.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = directory / "alertmanager.yml"
        config.write_text('route: {receiver: "null"}\nreceivers: [{name: "null"}]\n')
    port = free_port()
    with alertmanager_on(port, directory / "data", config, directory / "alertmanager.log"):
        yield f"http://127.0.0.1:{port}"


def prometheus_config(
    jobs: Mapping[str, Sequence[str]], *, rules: Sequence[Path] = (), alertmanager: str | None = None, remote_write: str | None = None
) -> str:
    """Prometheus's YAML: scrape and evaluate every second; `jobs` maps a job name to the URLs (or host:port) it scrapes."""
    config: dict[str, Any] = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}}
    if rules:
        config["rule_files"] = [str(path) for path in rules]
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.removeprefix("http://")]}]}]}
    config["scrape_configs"] = [
        {"job_name": job, "static_configs": [{"targets": [url.removeprefix("http://") for url in urls]}]} for job, urls in jobs.items()
    ]
    if remote_write:
        config["remote_write"] = [{"url": remote_write}]
    return yaml.safe_dump(config, sort_keys=False)


def alertmanager_for_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One running_alertmanager for a whole test module, as its fixture:
    `alertmanager = pytest.fixture(scope="module", name="alertmanager")(alertmanager_for_module)`."""
    with running_alertmanager(tmp_path_factory.mktemp("alertmanager")) as url:
        yield url


@contextmanager
def running_prometheus(directory: Path, config: str, *flags: str, agent: bool = False, log: Path | None = None) -> Iterator[str]:
    """A real Prometheus on a free loopback port, once ready, with `config` (YAML) written in `directory`; yields its URL.

    Its files there: prometheus.yml, its storage tsdb/ and its log prometheus.log (`log` puts that
    elsewhere); an `agent` (scrape and remote-write only) has agent.yml, agent/ and agent.log.
    `flags` are more of its command-line flags."""
    binary = require_binary("prometheus")
    name = "agent" if agent else "prometheus"
    (directory / f"{name}.yml").write_text(config)
    url = f"http://127.0.0.1:{free_port()}"
    storage = ["--enable-feature=agent", f"--storage.agent.path={directory / 'agent'}"] if agent else [f"--storage.tsdb.path={directory / 'tsdb'}"]
    args = [binary, f"--config.file={directory / f'{name}.yml'}", *storage, f"--web.listen-address={url.removeprefix('http://')}", *flags]
    with _serving(args, log=log or directory / f"{name}.log", ready=f"{url}/-/ready", what=f"{name} to be ready"):
        yield url


def failed_order_run(started_at: float, *, login_at: float, pay_at: float, pay_connect: float, before_cancel: Sequence[StepResult] = ()) -> RunResult:
    """order-placement failed at `pay` on its second attempt: a step that passed with every phase timed,
    the failure (retried), then `before_cancel` and a skipped step."""
    return RunResult(
        "order-placement",
        "prod",
        "r1",
        started_at,
        "failure",
        duration=1.5,
        attempts=2,
        flaky=True,
        failed_step="pay",
        reason="status",
        steps=[
            StepResult(
                "login",
                "success",
                status=200,
                duration=0.125,
                phases={"connect": 0.001, "tls": 0.002, "request": 0.003, "first_byte": 0.1, "transfer": 0.019},
                attempts=1,
                started_at=login_at,
            ),
            StepResult("pay", "failure", status=500, duration=0.25, phases={"connect": pay_connect}, attempts=3, started_at=pay_at),
            *before_cancel,
            StepResult("cancel", "skipped", message="skipped: an earlier step failed"),
        ],
    )


def config_with_tokens(directory: Path, tokens: Mapping[str, str], *, name: str, variable: str) -> dict[str, str]:
    """The shipped workflows in `directory`, with a flowprobe.yaml that gives each role in `tokens` a token
    named `name.format(role=role)` read from `variable.format(ROLE=role.upper())`, and a daily JSON report.

    Returns the environment the config needs: its secrets, its tokens, and its environments at hosts never dialled."""
    directory.mkdir(parents=True)
    for source in WORKFLOWS.glob("*.yaml"):
        (directory / source.name).write_text(source.read_text())
    variables = {role: variable.format(ROLE=role.upper()) for role in tokens}
    entries = [{"name": name.format(role=role), "role": role, "token": {"env": variables[role]}} for role in tokens]
    schedules = [{"cron": "0 6 * * *", "period": "daily", "formats": ["json"]}]
    (directory / "flowprobe.yaml").write_text(json.dumps({"alerting": {"tokens": entries}, "reports": {"schedules": schedules}}))
    offline = {"prod": "http://prod.test", "staging": "http://staging.test", "dev": "http://dev.test"}
    return probe_environment(offline) | {variables[role]: token for role, token in tokens.items()}


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
