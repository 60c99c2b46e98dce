"""The systemd units in deploy/systemd and the configurations DEPLOYMENT.md shows.

Units: valid, hardened, and running what the CLI accepts.

- `systemd-analyze verify` accepts each unit with no warning, and
  `systemd-analyze security --offline` rates its exposure OK (skipped where
  systemd-analyze is missing; the static checks below run everywhere).
- Key settings, read by a small parser (systemd repeats keys, so configparser
  does not fit): a user of its own, no new privileges, a read-only system but
  for the state directory the command writes to, restart on failure, reload
  by SIGHUP for the collector only (SIGHUP would end the analytics worker).
- ExecStart, with the unit's ${VAR} defaults expanded, parses with the real
  `flowprobe` argument parser, overrides included.
- MemoryDenyWriteExecute=yes is safe: the collector, a PDF report and the
  analytics worker run in processes where the kernel refuses writable memory
  that is executable (prctl PR_SET_MDWE, the kernel's own form of the setting).

DEPLOYMENT.md: its Prometheus server and agent configurations (with the
file_sd targets they read) pass `promtool check config`, its rules
`promtool check rules`; every `flowprobe` command in it, the Kubernetes
StatefulSet's included, parses with the real CLI and the shards cover 0..N-1;
every flag given to prometheus or alertmanager is one the installed binary
has; the unit settings and the exposure figure it quotes are the units'.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from collector.cli import _parser
from collector.scheduler import Shard
from collector.target import create_app
from tests.helpers import (
    PROBE_EMAIL,
    PROBE_PASSWORD,
    REPO,
    WORKFLOWS,
    free_port,
    probe_environment,
    require_binary,
    running_process,
    serve_in_thread,
    wait_until,
)

UNITS = REPO / "deploy" / "systemd"
DEPLOYMENT = REPO / "DEPLOYMENT.md"
COLLECTOR, ANALYTICS = "flowprobe.service", "flowprobe-analytics.service"
INSTALLED = "/opt/flowprobe/bin/flowprobe"  # where the units expect the virtual environment's entry point
FLOWPROBE = Path(sys.executable).parent / "flowprobe"  # the one installed here, by pip install -e .
Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections, each key with every value it was given, in order (systemd keys may repeat)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{line!r} is outside a section"
        key, equals, value = line.partition("=")
        assert equals, f"{line!r} is not KEY=VALUE"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def load(name: str) -> Unit:
    return parse_unit((UNITS / name).read_text())


def one(unit: Unit, key: str, section: str = "Service") -> str:
    values = unit[section].get(key)
    assert values and len(values) == 1, f"[{section}] {key}= is set {len(values or [])} times"
    return values[0]


def environment(unit: Unit) -> dict[str, str]:
    """The unit's Environment= assignments (the defaults an EnvironmentFile= may override)."""
    return dict(assignment.split("=", 1) for value in unit["Service"].get("Environment", []) for assignment in shlex.split(value))


def exec_args(unit: Unit, overrides: dict[str, str] | None = None) -> list[str]:
    """ExecStart's argv with ${VAR} expanded as systemd does (each one a single word, quoted or not)."""
    variables = environment(unit) | (overrides or {})
    words = shlex.split(one(unit, "ExecStart"))
    assert words[0] == INSTALLED, words[0]
    return [re.sub(r"\$\{(\w+)\}", lambda m: variables[m.group(1)], word) for word in words[1:]]


# ---------------------------------------------------------------- systemd's own checks


@pytest.mark.parametrize("name", [COLLECTOR, ANALYTICS])
def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(name: str, tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze")
    # verify checks that ExecStart's program exists: point it at the one installed here, nothing else changes.
    unit = tmp_path / name
    unit.write_text((UNITS / name).read_text().replace(INSTALLED, str(FLOWPROBE)))
    verified = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and not verified.stdout.strip() and not verified.stderr.strip(), verified.stdout + verified.stderr


@pytest.mark.parametrize("name", [COLLECTOR, ANALYTICS])
def test_systemd_analyze_security_rates_the_exposure_ok(name: str) -> None:
    analyze = require_binary("systemd-analyze")
    # --threshold is in tenths: fail above 2.0 of 10 ("OK" is below 4.0; a unit without hardening scores 9.6).
    rated = subprocess.run([analyze, "security", "--offline=true", "--threshold=20", "--no-pager", str(UNITS / name)],
                           capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", rated.stdout)
    assert match, rated.stdout + rated.stderr
    assert rated.returncode == 0 and float(match[1]) <= 2.0, rated.stdout[-3000:]
    if name == COLLECTOR:  # the figure DEPLOYMENT.md quotes
        quoted = re.search(r"`systemd-analyze security` rates\s+it (\d+\.\d+)", DEPLOYMENT.read_text())
        assert quoted and quoted[1] == match[1], f"DEPLOYMENT.md quotes {quoted and quoted[1]}, systemd-analyze says {match[1]}"


# ---------------------------------------------------------------- the settings


@pytest.mark.parametrize("name", [COLLECTOR, ANALYTICS])
def test_the_unit_is_hardened_and_restarts_on_failure(name: str) -> None:
    unit = load(name)
    service = unit["Service"]
    assert one(unit, "DynamicUser") == "yes" and "User" not in service, "a user made for the service, never root"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                       "PrivateDevices": "yes", "CapabilityBoundingSet": "", "MemoryDenyWriteExecute": "yes",
                       "RestrictSUIDSGID": "yes", "UMask": "0077", "Restart": "on-failure", "Type": "exec"}.items():
        assert one(unit, key) == value, f"{name}: {key}={value}"
    # ProcSubset=pid would hide /proc/stat, whose boot time prometheus_client needs for every process_* series.
    assert service.get("ProcSubset", ["all"]) == ["all"]
    assert one(unit, "WantedBy", "Install") == "multi-user.target"
    # A config that never loads stops after a few tries instead of restarting for ever.
    assert int(one(unit, "StartLimitBurst", "Unit")) > 1 and "StartLimitIntervalSec" in unit["Unit"]


@pytest.mark.parametrize(("name", "option"), [(COLLECTOR, "data_dir"), (ANALYTICS, "state_dir")])
def test_the_only_writable_path_is_where_the_command_writes(name: str, option: str) -> None:
    unit = load(name)
    # Under ProtectSystem=strict, StateDirectory= is the service's ReadWritePaths=, made and owned for its DynamicUser.
    state = Path("/var/lib") / one(unit, "StateDirectory")
    args = _parser().parse_args(exec_args(unit))
    assert getattr(args, option) == state, f"{name}: --{option.replace('_', '-')} must be {state}, the one writable path"
    assert Path(one(unit, "WorkingDirectory")) == state, "relative paths in the config land where writes are allowed"
    assert set(unit["Service"].get("ReadWritePaths", [])) <= {str(state)}, "nothing else is writable"
    # But a cache that may be lost: fontconfig's, which XDG_CACHE_HOME points into.
    caches = [Path("/var/cache") / name for name in unit["Service"].get("CacheDirectory", [])]
    assert [Path(environment(unit)["XDG_CACHE_HOME"])] == caches if caches else "XDG_CACHE_HOME" not in environment(unit)


def test_the_collector_reloads_on_sighup_and_stops_within_its_grace() -> None:
    unit = load(COLLECTOR)
    assert shlex.split(one(unit, "ExecReload"))[1:] == ["-HUP", "$MAINPID"]
    args = _parser().parse_args(exec_args(unit))
    # SIGTERM lets runs in flight finish within --grace: systemd must wait longer before SIGKILL.
    assert float(one(unit, "TimeoutStopSec")) > args.grace
    # Secrets and per-host settings come from a file systemd reads as root, never from the unit.
    assert one(unit, "EnvironmentFile") == "-/etc/flowprobe/flowprobe.env"
    assert not [key for key in environment(unit) if re.search("PASSWORD|TOKEN|SECRET", key)]


def test_the_analytics_worker_has_no_reload() -> None:
    # The worker installs no SIGHUP handler, so `systemctl reload` would end it.
    assert "ExecReload" not in load(ANALYTICS)["Service"]


def test_exec_start_parses_with_the_real_cli() -> None:
    collector = load(COLLECTOR)
    args = _parser().parse_args(exec_args(collector))
    assert (args.command, args.config, args.shard, args.listen) == ("run", Path("/etc/flowprobe/workflows"), Shard(0, 1), ("127.0.0.1", 9700))
    assert one(collector, "ConfigurationDirectory") == args.config.parent.name
    # One collector of N: the shard and address come from the environment file.
    args = _parser().parse_args(exec_args(collector, {"FLOWPROBE_SHARD": "2/3", "FLOWPROBE_LISTEN": "0.0.0.0:9700"}))
    assert (args.shard, args.listen) == (Shard(2, 3), ("0.0.0.0", 9700))

    args = _parser().parse_args(exec_args(load(ANALYTICS)))
    assert (args.command, args.listen, args.source) == ("analytics", ("127.0.0.1", 9701), "prometheus:http://127.0.0.1:9090")


# ---------------------------------------------------------------- MemoryDenyWriteExecute=yes, for real

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
# Sets W^X on this process, which execve keeps, then becomes the command.
WX_LAUNCHER = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    f"assert libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def under_wx(*args: str) -> list[str]:
    return [sys.executable, "-c", WX_LAUNCHER, str(FLOWPROBE), *args]


def test_flowprobe_runs_with_writable_memory_never_executable(tmp_path: Path) -> None:
    probe = subprocess.run([sys.executable, "-c", WX_LAUNCHER, sys.executable, "-c", "pass"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"this kernel has no PR_SET_MDWE (Linux 6.3+): {probe.stderr.strip()[-200:]}")
    # The check has teeth: under it, writable and executable memory is refused.
    libc = "import ctypes; libc = ctypes.CDLL(None, use_errno=True); libc.mmap.restype = ctypes.c_void_p\n"
    refused = subprocess.run([sys.executable, "-c", WX_LAUNCHER, sys.executable, "-c",
                              libc + "assert libc.mmap(None, 4096, 7, 0x22, -1, 0) == ctypes.c_void_p(-1).value"], timeout=30)
    assert refused.returncode == 0, "PROT_WRITE|PROT_EXEC was allowed under PR_SET_MDWE"

    data = tmp_path / "data"
    with serve_in_thread(create_app(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD)) as target:
        env = {**os.environ, **probe_environment({"prod": target})}
        once = subprocess.run(under_wx("run", "--config", str(WORKFLOWS), "--env", "prod", "--data-dir", str(data), "--once"),
                              capture_output=True, text=True, env=env, timeout=90)
    assert once.returncode == 0, once.stdout[-2000:] + once.stderr[-2000:]
    assert len(once.stdout.splitlines()) == 6, "one result per shipped workflow in prod"

    # WeasyPrint reaches Pango through cffi: the PDF report is where W^X would break first.
    pdf = tmp_path / "report.pdf"
    report = subprocess.run(under_wx("report", "--period", "daily", "--format", "pdf", "--config", str(WORKFLOWS),
                                     "--data-dir", str(data), "--output", str(pdf)), capture_output=True, text=True, env=env, timeout=90)
    assert report.returncode == 0 and pdf.read_bytes().startswith(b"%PDF-"), report.stderr[-2000:]

    # The analytics worker: pandas, numpy and river score the history the collector wrote.
    url = f"http://127.0.0.1:{free_port()}"
    worker = under_wx("analytics", "--listen", url.removeprefix("http://"), "--interval", "1s",
                      "--source", f"history:{data / 'history.sqlite3'}", "--state-dir", str(tmp_path / "analytics"))
    with running_process(worker, log=tmp_path / "analytics.log") as process:
        try:
            wait_until(lambda: "flowprobe_anomaly_score{" in httpx.get(f"{url}/metrics", timeout=2).text, timeout=45, what="anomaly scores")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{(tmp_path / 'analytics.log').read_text(errors='replace')[-3000:]}") from None
        assert process.poll() is None


# ---------------------------------------------------------------- DEPLOYMENT.md


def fenced(lang: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"^```{lang}\n(.*?)^```", DEPLOYMENT.read_text(), re.M | re.S)]


def yaml_blocks(first_line: str) -> list[str]:
    """The ```yaml blocks whose first line is `first_line` (the file they stand for)."""
    return [block for block in fenced("yaml") if block.partition("\n")[0].strip() == first_line]


def shell_lines(program: str) -> list[list[str]]:
    """The command lines of the ```sh blocks that run `program`, as argv."""
    return [shlex.split(line) for block in fenced("sh") for line in block.splitlines() if line.startswith(f"{program} ")]


def knows_kubernetes_sd(promtool: str, tmp_path: Path) -> bool:
    """Debian builds Prometheus without the Kubernetes service discovery; upstream's binaries have it."""
    probe = tmp_path / "kubernetes-sd.yml"
    probe.write_text("scrape_configs: [{job_name: k, kubernetes_sd_configs: [{role: pod}]}]\n")
    return subprocess.run([promtool, "check", "config", str(probe)], capture_output=True, timeout=60).returncode == 0


def without_kubernetes_sd(block: str) -> str:
    """The configuration with its kubernetes_sd_configs left out (their role checked here), the rest for promtool."""
    config = yaml.safe_load(block)
    for scrape in config.get("scrape_configs", []):
        for sd in scrape.pop("kubernetes_sd_configs", []):
            assert sd["role"] in {"node", "pod", "service", "endpoints", "endpointslice", "ingress"}, sd
    return yaml.safe_dump(config)


def test_deployment_md_prometheus_configurations_pass_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    # The file_sd targets files go where the configurations look for them, so promtool checks them too.
    targets = [block for block in fenced("yaml") if block.startswith("# targets/")]
    for block in targets:
        path = tmp_path / block.partition("\n")[0].removeprefix("# ")
        path.parent.mkdir(exist_ok=True)
        path.write_text(block)
    checks = [(block, []) for block in yaml_blocks("# prometheus.yml")] + [(block, ["--agent"]) for block in yaml_blocks("# prometheus-agent.yml")]
    assert targets and len(checks) >= 7, "the static, file_sd, Kubernetes and HA configurations, and one agent per store"
    kubernetes_sd = knows_kubernetes_sd(promtool, tmp_path)
    for index, (block, flags) in enumerate(checks):
        config = tmp_path / f"prometheus-{index}.yml"
        config.write_text(block if kubernetes_sd else without_kubernetes_sd(block))
        checked = subprocess.run([promtool, "check", "config", *flags, str(config)], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, f"{block}\n{checked.stdout}{checked.stderr}"
    assert {bool(yaml.safe_load(block).get("remote_write")) for block, flags in checks if flags} == {True}, "every agent writes somewhere"

    rules = [block for block in fenced("yaml") if block.startswith("# rules/")]
    assert rules
    for index, block in enumerate(rules):
        path = tmp_path / f"rules-{index}.yml"
        path.write_text(block)
        checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, f"{block}\n{checked.stdout}{checked.stderr}"


def test_deployment_md_flowprobe_commands_parse_and_their_shards_cover_every_index() -> None:
    commands = shell_lines("flowprobe")
    assert commands
    shards = [args.shard for args in (_parser().parse_args(argv[1:]) for argv in commands) if args.command == "run"]
    count = shards[0].count
    assert sorted(shards, key=lambda shard: shard.index) == [Shard(i, count) for i in range(count)]

    (statefulset,) = [yaml.safe_load(block) for block in fenced("yaml") if block.startswith("# kubernetes:")]
    replicas = statefulset["spec"]["replicas"]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    (pod_index,) = [e for e in container["env"] if e["name"] == "POD_INDEX"]
    assert pod_index["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    parsed = [_parser().parse_args([arg.replace("$(POD_INDEX)", str(i)) for arg in container["args"]]) for i in range(replicas)]
    assert [args.shard for args in parsed] == [Shard(i, replicas) for i in range(replicas)], "replicas and the /N must agree"
    assert {args.listen[1] for args in parsed} == {port["containerPort"] for port in container["ports"]}


@pytest.mark.parametrize(("program", "binary"), [("prometheus", "prometheus"), ("alertmanager", "prometheus-alertmanager")])
def test_deployment_md_gives_servers_only_flags_they_have(program: str, binary: str) -> None:
    commands = shell_lines(program)
    assert commands, f"no {program} command in DEPLOYMENT.md"
    helped = subprocess.run([require_binary(binary), "--help"], capture_output=True, text=True, timeout=30)
    known = set(re.findall(r"--([\w.-]+)", helped.stdout + helped.stderr))
    for argv in commands:
        flags = {arg[2:].partition("=")[0] for arg in argv[1:] if arg.startswith("--")}
        assert flags and flags <= known, f"{program} has no {sorted(flags - known)}"


def test_deployment_md_quotes_the_units_and_their_environment_file() -> None:
    text = DEPLOYMENT.read_text()
    units = [load(COLLECTOR), load(ANALYTICS)]
    settings = {key: values for unit in units for section in unit.values() for key, values in section.items()}
    quoted = re.findall(r"`([A-Z]\w+)=([^`\s]+)`", text)
    checked = [(key, value) for key, value in quoted if key in settings]
    assert len(checked) >= 5
    for key, value in checked:
        assert value in settings[key], f"DEPLOYMENT.md says {key}={value}; the units have {settings[key]}"

    (env_file,) = [block for block in fenced("sh") if block.startswith("# /etc/flowprobe/flowprobe.env")]
    assert one(units[0], "EnvironmentFile").lstrip("-") == "/etc/flowprobe/flowprobe.env"
    names = {line.partition("=")[0] for line in env_file.splitlines()[1:] if line.strip()}
    secrets = set(re.findall(r"\{env: (\w+)\}", (WORKFLOWS / "environments.yaml").read_text()))
    assert names <= set(environment(units[0])) | secrets, "each variable is a unit setting or a secret the workflows read"
