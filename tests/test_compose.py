"""The docker compose stack: what can be proven without a Docker engine, and a smoke test where there is one.

Statically: the compose file parses; images are pinned; every service has a health
check, a restart policy and (where it keeps data) a named volume; bind mounts exist
and config is read-only; ports are loopback and follow DESIGN.md; Prometheus'
targets are the compose services; .env.example names every variable and nothing
secret is written in the compose file. For real: promtool checks prometheus.yml,
and the collector's entrypoint builds a config directory that `flowprobe check`
accepts, from the very files compose mounts.
"""

from __future__ import annotations

import fnmatch
import gc
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import tomllib
import urllib.request
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.cli import _parser
from collector.config import load_config
from tests.helpers import REPO, require_binary, wait_until

COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROMETHEUS_YML = REPO / "provisioning/prometheus/prometheus.yml"

# DESIGN.md, "Ports (loopback defaults)".
DESIGN_PORTS = {"collector": 9700, "analytics": 9701, "target": 8080, "prometheus": 9090, "alertmanager": 9093, "grafana": 3000, "influxdb": 8086}
# Where each service keeps its data inside its container; None: it keeps nothing.
DATA_PATHS = {
    "collector": "/data",
    "analytics": "/data",
    "target": None,
    "prometheus": "/prometheus",
    "alertmanager": "/alertmanager",
    "grafana": "/var/lib/grafana",
    "influxdb": "/var/lib/influxdb2",
}
# Environment variables whose values are credentials: only ever ${VAR:?...} from .env.
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$|API_URL$")
NO_ENGINE = "no Docker engine reachable: the stack smoke test did not run"


# ---------------------------------------------------------------- helpers


def _env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}; $$ is a literal $."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        value = env.get(name, "")
        if operator == ":-" and not value:
            return argument
        if operator == ":?" and not value:
            raise AssertionError(f"${{{name}}} is required: {argument}")
        return value

    return re.sub(r"\$\$|\$\{(\w+)(?:(:[-?])([^}]*))?\}", replace, text)


def _strings(value: Any) -> list[str]:
    """Every string in a loaded YAML document (comments are gone by then)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in _strings(key) + _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _references(value: Any) -> set[str]:
    """Names of the $VAR and ${VAR} references in the strings of `value`; $$ is a literal $."""
    return {name for text in _strings(value) for name in re.findall(r"\$\{?(\w+)", text.replace("$$", ""))}


def _variables() -> set[str]:
    """Every variable the compose file reads from the environment (.env)."""
    return _references(COMPOSE) | {secret["environment"] for secret in COMPOSE.get("secrets", {}).values() if "environment" in secret}


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each short-syntax volume entry."""
    mounts = []
    for entry in service.get("volumes", []):
        source, target, *mode = entry.split(":")
        mounts.append((source, target, mode == ["ro"]))
    return mounts


def _binds(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    return [m for m in _mounts(service) if m[0].startswith(("./", "/"))]


def _published(name: str) -> tuple[str, int, int]:
    (port,) = SERVICES[name]["ports"]
    host, host_port, container_port = port.split(":")
    return host, int(host_port), int(container_port)


def _listen_port(name: str) -> int:
    command = SERVICES[name]["command"]
    return int(command[command.index("--listen") + 1].rpartition(":")[2])


def _scrape_targets(config: dict[str, Any], job: str) -> list[str]:
    (scrape,) = [s for s in config["scrape_configs"] if s["job_name"] == job]
    return [target for static in scrape["static_configs"] for target in static["targets"]]


def _built(name: str) -> bool:
    return "build" in SERVICES[name]


# ---------------------------------------------------------------- the compose file


def test_the_stack_has_every_service_and_analytics_reads_prometheus() -> None:
    assert set(SERVICES) == set(DESIGN_PORTS)
    assert not [name for name, service in SERVICES.items() if "profiles" in service], "a plain `docker compose up` starts every service"
    args = _parser().parse_args(SERVICES["analytics"]["command"])
    assert args.source == f"prometheus:http://prometheus:{_published('prometheus')[2]}"
    assert args.state_dir == Path(DATA_PATHS["analytics"]), "the detectors are saved in the analytics volume"


@pytest.mark.parametrize("name", sorted(DESIGN_PORTS))
def test_every_image_is_pinned(name: str) -> None:
    image = SERVICES[name].get("image", "")
    match = re.fullmatch(r"(?P<repo>[a-z0-9][\w./-]*):(?P<tag>[\w][\w.-]*)", image)
    assert match, f"{name}: image {image!r} needs a tag"
    assert match["tag"] != "latest" and re.search(r"\d", match["tag"]), f"{name}: {image!r} is not a pinned version"
    if _built(name):
        version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
        assert image == f"flowprobe:{version}", f"{name}: the built image is named after pyproject.toml's version"
        assert SERVICES[name]["pull_policy"] == "build", f"{name}: never pull a locally built name from a registry"


@pytest.mark.parametrize("name", sorted(DESIGN_PORTS))
def test_every_service_restarts_and_has_a_health_check(name: str) -> None:
    service = SERVICES[name]
    assert service.get("restart") == "unless-stopped", name
    check = service.get("healthcheck", {})
    assert not check.get("disable") and check.get("test", [None])[0] == "CMD", f"{name}: a health check in exec form"
    for key in ("interval", "timeout", "retries", "start_period"):
        assert key in check, f"{name}: healthcheck.{key}"
    test = check["test"]
    if test[1] == "python":  # our own image has no curl or wget: the check is Python, and must at least compile
        compile(test[test.index("-c") + 1], f"{name} healthcheck", "exec")
        assert f":{_listen_port(name)}/" in test[-1], f"{name}: the health check asks the port the service listens on"


def test_flowprobe_containers_run_with_least_privilege() -> None:
    ours = {name: s for name, s in SERVICES.items() if str(s.get("image", "")).startswith("flowprobe:")}
    assert set(ours) == {"target", "collector", "analytics"}
    for name, service in ours.items():
        assert service.get("read_only") is True, f"{name}: a read-only root file system"
        assert service.get("cap_drop") == ["ALL"], f"{name}: no capabilities"
        assert "no-new-privileges:true" in service.get("security_opt", []), f"{name}: no privilege gain"
        assert "/tmp" in service.get("tmpfs", []), f"{name}: a writable /tmp (the collector assembles its config there)"
    assert "XDG_CACHE_HOME=/tmp/.cache" in (REPO / "Dockerfile").read_text(), "fontconfig's cache must go where it can be written"


@pytest.mark.parametrize("name", sorted(DESIGN_PORTS))
def test_services_that_keep_data_have_a_named_volume(name: str) -> None:
    declared = set(COMPOSE["volumes"])
    named = {(source, target) for source, target, _ in _mounts(SERVICES[name]) if not source.startswith(("./", "/"))}
    assert {source for source, _ in named} <= declared, f"{name}: volumes must be declared at the top level"
    if DATA_PATHS[name] is None:
        assert not named, f"{name} keeps no data"
    else:
        assert DATA_PATHS[name] in {target for _, target in named}, f"{name}: {DATA_PATHS[name]} needs a named volume"


def test_every_declared_volume_is_used() -> None:
    used = {source for service in SERVICES.values() for source, _, _ in _mounts(service)}
    assert set(COMPOSE["volumes"]) <= used


@pytest.mark.parametrize("name", sorted(DESIGN_PORTS))
def test_bind_mounts_exist_are_read_only_and_never_nest_in_a_read_only_mount(name: str) -> None:
    binds = _binds(SERVICES[name])
    for source, target, read_only in binds:
        assert source.startswith("./"), f"{name}: {source} should be a path in the repo"
        assert (REPO / source).exists(), f"{name}: {source} does not exist in the repo"
        assert read_only, f"{name}: config {source} must be mounted :ro"
    # Docker cannot make a mount point inside a read-only bind mount (moby/moby#39587):
    # nothing else may land below one, unless the mount point already exists in the repo.
    targets = [target for _, target, _ in _mounts(SERVICES[name])]
    targets += [secret["target"] for secret in SERVICES[name].get("secrets", []) if isinstance(secret, dict)]
    for source, parent, _ in binds:
        for target in targets:
            if target.startswith(parent.rstrip("/") + "/"):
                inside = REPO / source / target[len(parent) :].lstrip("/")
                assert inside.exists(), f"{name}: {target} lands inside the read-only mount of {source}"


@pytest.mark.parametrize("name", sorted(DESIGN_PORTS))
def test_ports_are_loopback_and_follow_the_design(name: str) -> None:
    host, host_port, container_port = _published(name)
    assert host == "127.0.0.1", f"{name}: publish on loopback only"
    assert host_port == container_port == DESIGN_PORTS[name], f"{name}: DESIGN.md's port is {DESIGN_PORTS[name]}"
    if _built(name):
        assert _listen_port(name) == container_port, f"{name}: listens where it is published"


def test_prometheus_scrapes_the_compose_services_and_alerts_to_alertmanager() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert _scrape_targets(config, "flowprobe") == [f"collector:{_listen_port('collector')}"]
    assert _scrape_targets(config, "flowprobe-analytics") == [f"analytics:{_listen_port('analytics')}"]
    alertmanagers = [t for am in config["alerting"]["alertmanagers"] for s in am["static_configs"] for t in s["targets"]]
    assert alertmanagers == [f"alertmanager:{_published('alertmanager')[2]}"]
    assert config["rule_files"] == ["rules/*.yml"]
    # The file Prometheus is started with is this one, through the folder mount.
    prometheus = SERVICES["prometheus"]
    (mount,) = [(source, target) for source, target, _ in _binds(prometheus) if target == "/etc/prometheus"]
    assert REPO / mount[0] / "prometheus.yml" == PROMETHEUS_YML
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def test_prometheus_config_is_valid() -> None:
    promtool = require_binary("promtool")
    checked = subprocess.run([promtool, "check", "config", str(PROMETHEUS_YML)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_env_example_names_every_variable_the_stack_reads() -> None:
    example = _env_example()
    assert _variables() == set(example), "docker-compose.yml and .env.example name different variables"
    for name, value in example.items():
        if SECRET_NAME.search(name):
            assert "change-me" in value, f".env.example: {name} must hold a placeholder, not a credential"


def test_no_secret_is_written_in_the_compose_file() -> None:
    text = COMPOSE_FILE.read_text()
    for name, service in SERVICES.items():
        for key, value in service.get("environment", {}).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), f"{name}: {key} must be ${{VAR:?...}} from .env, with no default"
    for name, value in _env_example().items():
        if SECRET_NAME.search(name):
            assert value not in text, f"the placeholder of {name} is written in docker-compose.yml"


def test_alertmanager_gets_every_secret_file_and_address_its_config_uses() -> None:
    alertmanager = SERVICES["alertmanager"]
    config_arg = next(arg for arg in alertmanager["command"] if arg.startswith("--config.file="))
    container_config = config_arg.partition("=")[2]
    (source,) = [s for s, target, _ in _binds(alertmanager) if container_config.startswith(target + "/")]
    config_file = REPO / source / Path(container_config).name
    assert config_file.exists(), f"{config_file} is what Alertmanager starts with"
    text = config_file.read_text()

    provided = {secret["target"]: secret for secret in alertmanager["secrets"]}
    for path in sorted(set(re.findall(r"/etc/alertmanager/secrets/[\w.-]+", text))):
        assert path in provided, f"alertmanager.yml reads {path}; no compose secret lands there"
        assert provided[path]["mode"] == 0o444, "Alertmanager runs as nobody; compose writes secrets as root"
        assert provided[path]["source"] in COMPOSE["secrets"]
    for host, port in re.findall(r"https?://([a-z][\w-]*):(\d+)", text):
        if host in SERVICES:
            assert int(port) == _published(host)[2], f"alertmanager.yml reaches {host}:{port}"


def test_grafana_mounts_its_provisioning_and_has_every_variable_it_expands() -> None:
    grafana = SERVICES["grafana"]
    binds = {target: REPO / source for source, target, _ in _binds(grafana)}
    provisioning = binds["/etc/grafana/provisioning"]
    assert binds["/var/lib/grafana/dashboards"] == REPO / "grafana/dashboards"
    # The dashboard provider reads the folder compose mounts the dashboards at.
    for provider_file in sorted((provisioning / "dashboards").glob("*.yml")):
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            assert provider["options"]["path"] in binds, f"{provider_file.name}: {provider['options']['path']} is not mounted"
    # Grafana expands $VAR and ${VAR} in provisioning files from its own environment.
    for datasource_file in sorted((provisioning / "datasources").glob("*.yml")):
        for name in sorted(_references(yaml.safe_load(datasource_file.read_text()))):
            assert name in grafana["environment"], f"{datasource_file.name} reads ${name}; compose does not set it for Grafana"


# ---------------------------------------------------------------- the collector's config, for real


def test_the_collector_entrypoint_assembles_a_config_that_flowprobe_accepts(tmp_path: Path) -> None:
    collector = SERVICES["collector"]
    # Run the entrypoint's script here, with each container path replaced by what compose mounts there.
    shell, flag, script, argv0 = collector["entrypoint"]
    assert (shell, flag, argv0) == ("/bin/sh", "-c", "flowprobe")
    script = _interpolate(script, {})
    config_dir = collector["command"][collector["command"].index("--config") + 1]
    replacements = {target: str(REPO / source) for source, target, _ in _binds(collector)} | {config_dir: str(tmp_path / "config")}
    for container_path in sorted(replacements, key=len, reverse=True):
        script = script.replace(container_path, replacements[container_path])

    env = {name: _interpolate(str(value), _env_example()) for name, value in collector["environment"].items()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    checked = subprocess.run(
        ["/bin/sh", "-c", script, "flowprobe", "check", str(tmp_path / "config")], capture_output=True, text=True, env=env, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 6 workflow(s)" in checked.stdout

    # The compose settings point at the compose services.
    old = dict(os.environ)
    try:
        os.environ.update(env)
        config = load_config(tmp_path / "config")
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert config.settings.alerting.alertmanager_url == f"http://alertmanager:{_published('alertmanager')[2]}"
    influxdb = SERVICES["influxdb"]["environment"]
    assert config.settings.influx is not None
    assert config.settings.influx.url == f"http://influxdb:{_published('influxdb')[2]}"
    assert (config.settings.influx.org, config.settings.influx.bucket) == (influxdb["DOCKER_INFLUXDB_INIT_ORG"], influxdb["DOCKER_INFLUXDB_INIT_BUCKET"])
    assert influxdb["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == collector["environment"]["FLOWPROBE_INFLUX_TOKEN"]
    assert {role for _, role in config.tokens.values()} == {"webhook", "operator"}
    assert config.environments["prod"].base_url == f"http://target:{_published('target')[2]}"


@pytest.mark.parametrize("name", [name for name in sorted(DESIGN_PORTS) if "build" in SERVICES[name]])
def test_flowprobe_commands_in_the_compose_file_parse(name: str) -> None:
    command = SERVICES[name]["command"]
    args = _parser().parse_args(command)
    assert args.listen == ("0.0.0.0", DESIGN_PORTS[name])


# ---------------------------------------------------------------- the image


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def _ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (last matching pattern wins)."""
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(candidate, pattern) for candidate in candidates):
            ignored = not negate
    return ignored


def test_the_dockerfile_builds_a_wheel_and_runs_it_as_non_root_from_a_pinned_slim_image() -> None:
    instructions = _dockerfile()
    args = dict(a.split("=", 1) for i, a in instructions if i == "ARG" and "=" in a)
    stages = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], a) for i, a in instructions if i == "FROM"]
    assert len(stages) == 2 and stages[0].endswith(" AS builder"), stages
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", stages[1]), f"final stage {stages[1]!r}: a pinned python:3.11 slim image"
    runs = " ".join(a for i, a in instructions if i == "RUN")
    assert "pip wheel" in runs and "--no-index" in runs and "from=builder" in runs
    (user,) = [a for i, a in instructions if i == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    assert json.loads(next(a for i, a in instructions if i == "ENTRYPOINT")) == ["flowprobe"]
    healthcheck = next(a for i, a in instructions if i == "HEALTHCHECK")
    compile(json.loads(healthcheck[healthcheck.index("CMD") + 3 :])[2], "HEALTHCHECK", "exec")
    command = json.loads(next(a for i, a in instructions if i == "CMD"))
    assert _parser().parse_args(command).command == "run"


def test_the_build_context_holds_what_the_image_copies_and_no_secret() -> None:
    for instruction, arguments in _dockerfile():
        if instruction == "COPY" and not arguments.startswith("--from"):
            for source in shlex.split(arguments)[:-1]:
                # the sources git keeps, not what a local build left beside them (git ignores those, and so does Docker)
                listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", source], cwd=REPO, capture_output=True, text=True, check=True)
                files = listed.stdout.split()
                assert files, source
                for file in files:
                    assert not _ignored(file), f"COPY {source}: {file} is left out by .dockerignore"
    for secret in (".env", ".git/config", ".venv/bin/python", "data/history.sqlite3", "tests/helpers.py", "deploy/collector/flowprobe.yaml"):
        assert _ignored(secret), f"{secret} must stay out of the build context"
    for local in ("analytics/scorers/window.cpython-311-x86_64-linux-gnu.so", "analytics/scorers/window.c", "analytics/scorers/_compiled.json"):
        assert _ignored(local), f"{local}: the image builds its own compiled detectors"


# ---------------------------------------------------------------- the stack, for real


def _docker_client() -> Any:
    import docker

    # Without an engine, docker-py leaves its half-made connection for the garbage collector,
    # which would warn (an error here) in some later test: collect it now, quietly.
    client = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            client = docker.from_env(timeout=10)
            client.ping()
        except Exception:  # DockerException, or requests' ConnectionError: either way, no engine
            client = None
        if client is None:
            gc.collect()  # outside the except block, where the traceback no longer holds the socket
    return client


@pytest.mark.e2e
@pytest.mark.timeout(1500)
def test_the_stack_comes_up_healthy_and_prometheus_scrapes_the_collector(tmp_path: Path) -> None:
    client = _docker_client()
    if client is None:
        pytest.skip(NO_ENGINE)
    try:
        _smoke(client, tmp_path)
    finally:
        client.close()


def _smoke(client: Any, tmp_path: Path) -> None:
    # The repo's compose file with absolute paths, random host ports (loopback still) and fresh secrets.
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    for service in compose["services"].values():
        if service.get("build") == ".":
            service["build"] = str(REPO)
        service["volumes"] = [str(REPO / v[2:]) if v.startswith("./") else v for v in service.get("volumes", [])]
        service["ports"] = [f"127.0.0.1::{p.rsplit(':', 1)[1]}" for p in service.get("ports", [])]
    compose_file = tmp_path / "docker-compose.yml"
    compose_file.write_text(yaml.safe_dump(compose, sort_keys=False))  # ${VAR} and $$ stay as they were written
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={secrets.token_urlsafe(24) if 'change-me' in v else v}\n" for k, v in _env_example().items()))
    project = f"flowprobe-smoke-{uuid.uuid4().hex[:8]}"
    base = ["docker", "compose", "--project-name", project, "--file", str(compose_file), "--env-file", str(env_file)]
    try:
        up = subprocess.run([*base, "up", "--detach", "--build", "--wait", "--wait-timeout", "600"], capture_output=True, text=True, timeout=1200)
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        containers = client.containers.list(filters={"label": f"com.docker.compose.project={project}"})
        states = {c.labels["com.docker.compose.service"]: c.attrs["State"].get("Health", {}).get("Status") for c in containers}
        assert states == dict.fromkeys(DESIGN_PORTS, "healthy")

        def url(name: str, path: str) -> str:
            container = next(c for c in containers if c.labels["com.docker.compose.service"] == name)
            binding = container.ports[f"{DESIGN_PORTS[name]}/tcp"][0]
            return f"http://127.0.0.1:{binding['HostPort']}{path}"

        def get(address: str) -> str:
            with urllib.request.urlopen(address, timeout=5) as response:
                return str(response.read().decode())

        wait_until(lambda: "flowprobe_workflow_success{" in get(url("collector", "/metrics")), timeout=120, what="the collector's first results")
        assert json.loads(get(url("grafana", "/api/health")))["database"] == "ok"

        def flowprobe_target_up() -> bool:
            targets = json.loads(get(url("prometheus", "/api/v1/targets")))["data"]["activeTargets"]
            return any(t["labels"]["job"] == "flowprobe" and t["health"] == "up" for t in targets)

        wait_until(flowprobe_target_up, timeout=120, what="Prometheus to scrape the collector")
    finally:
        subprocess.run([*base, "down", "--volumes", "--remove-orphans"], capture_output=True, timeout=300)
