"""alertmanager/: configuration, routes and templates checked with the real
amtool, and inhibition and silences checked on a running Alertmanager.

Routes are tested with `amtool config routes test`, one case per route of the
tree; a coverage test fails when a route is added without a case. Templates
are rendered with `amtool template render` from the exact strings the
receivers use. Inhibition has no amtool check, so a real Alertmanager runs on
a loopback port with every receiver pointed at a dead loopback port.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import REPO, free_port, require_binary, running_alertmanager, wait_until

AM_DIR = REPO / "alertmanager"
CONFIG = AM_DIR / "alertmanager.yml"
TEMPLATES = AM_DIR / "templates"
README = AM_DIR / "README.md"
SECRETS_DIR = "/etc/alertmanager/secrets/"

COLLECTOR = "collector-webhook"


@pytest.fixture(scope="module")
def amtool() -> str:
    return require_binary("amtool")


def run_amtool(amtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([amtool, *args], capture_output=True, text=True, timeout=30, cwd=REPO)


def load_config() -> dict[str, Any]:
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    assert isinstance(config, dict)
    return config


def receiver(config: dict[str, Any], name: str) -> dict[str, Any]:
    found = [r for r in config["receivers"] if r["name"] == name]
    assert len(found) == 1, f"receiver {name!r} defined {len(found)} times"
    return found[0]


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted path, value) in a parsed YAML document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}" if path else str(key), value
            yield from walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


# ---------------------------------------------------------------- the file


def test_check_config_passes(amtool: str) -> None:
    # The *_file secrets need not exist for check-config (it does not read
    # them), so the shipped file is checked as it is.
    result = run_amtool(amtool, "check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "6 receivers" in result.stdout and "5 inhibit rules" in result.stdout


def test_every_template_used_is_defined() -> None:
    # check-config ignores a template glob that matches nothing, and amtool
    # only fails on an undefined template when it is rendered: check both here.
    defined = {m for path in TEMPLATES.glob("*.tmpl") for m in re.findall(r'{{-? define "([^"]+)"', path.read_text(encoding="utf-8"))}
    used = set(re.findall(r'template "([^"]+)"', CONFIG.read_text(encoding="utf-8")))
    assert used, "no receiver uses the flowprobe templates"
    assert used <= defined, f"undefined templates: {sorted(used - defined)}"
    assert load_config()["templates"] == ["templates/*.tmpl"]


def test_secrets_are_only_referenced_by_file() -> None:
    inline = {
        "api_url",
        "slack_api_url",
        "auth_password",
        "smtp_auth_password",
        "credentials",
        "bearer_token",
        "password",
        "auth_secret",
        "smtp_auth_secret",
        "routing_key",
        "service_key",
    }
    files: dict[str, str] = {}
    for path, value in walk(load_config()):
        key = path.rsplit(".", 1)[-1]
        assert key not in inline, f"{path}: a secret inline; use {key}_file"
        if key.endswith("_file"):
            files[path] = value
    assert len(files) >= 4, files  # Slack URL (x2), SMTP password, webhook token
    for path, value in files.items():
        assert value.startswith(SECRETS_DIR), f"{path}: {value} is not under {SECRETS_DIR}"


# ---------------------------------------------------------------- routes

BASE = {"alertname": "FlowprobeWorkflowFailing", "workflow": "order-placement", "team": "marketplace"}

# (labels, receivers in tree order). One case per route of the tree.
ROUTE_CASES: dict[str, tuple[dict[str, str], list[str]]] = {
    "critical-prod": ({"severity": "critical", "env": "prod"}, [COLLECTOR, "slack-critical", "email-critical"]),
    "critical-staging": ({"severity": "critical", "env": "staging"}, [COLLECTOR, "slack-critical"]),
    "critical-dev": ({"severity": "critical", "env": "dev"}, [COLLECTOR, "slack-critical"]),
    "warning-prod": ({"alertname": "FlowprobeWorkflowDegraded", "severity": "warning", "env": "prod"}, [COLLECTOR, "slack-warning"]),
    "warning-staging": ({"alertname": "FlowprobeWorkflowDegraded", "severity": "warning", "env": "staging"}, [COLLECTOR, "slack-warning"]),
    "info-prod": ({"alertname": "FlowprobeAnomaly", "severity": "info", "env": "prod"}, [COLLECTOR]),
    "no-severity": ({"alertname": "FlowprobeFailurePredicted", "env": "prod"}, [COLLECTOR]),
    # routed by labels, not by name: a new analytics alert needs no route
    "analytics-warning": ({"alertname": "FlowprobeFailurePredicted", "severity": "warning", "env": "prod"}, [COLLECTOR, "slack-warning"]),
    "burn-critical": (
        {"alertname": "FlowprobeErrorBudgetBurn", "window": "1h", "severity": "critical", "env": "prod"},
        [COLLECTOR, "slack-critical", "email-critical"],
    ),
    "escalated-oncall": ({"severity": "critical", "env": "prod", "escalated": "true", "escalation": "oncall"}, ["email-oncall"]),
    "escalated-managers": ({"severity": "critical", "env": "prod", "escalated": "true", "escalation": "managers"}, ["email-managers"]),
    "escalated-oncall-staging": ({"severity": "critical", "env": "staging", "escalated": "true", "escalation": "oncall"}, ["email-oncall"]),
    "escalated-managers-staging": (
        {"severity": "critical", "env": "staging", "escalated": "true", "escalation": "managers"},
        ["email-managers"],
    ),
    "escalated-unknown-target": ({"severity": "warning", "env": "prod", "escalated": "true", "escalation": "cto"}, ["email-oncall"]),
}

# A route as amtool draws it: (its matchers and its ancestors', from the root down; its receiver).
Node = tuple[tuple[str, ...], str]

# amtool draws the tree with box characters and non-breaking spaces, 4 columns a level.
_TREE_LINE = re.compile("^(?P<indent>[ \u00a0│]*)[├└]── (?P<node>.*)$")


def _tree_nodes(text: str, *, matched_only: bool) -> set[Node]:
    """Routes in amtool's tree drawing, as (matchers from the root down, receiver).

    In the full tree every node shows its receiver; in a --tree match only the
    routes that matched do, their ancestors are drawn bare.
    """
    stack: list[str] = []
    nodes: set[Node] = set()
    for line in text.splitlines():
        m = _TREE_LINE.match(line)
        if not m:
            continue
        depth = len(m["indent"]) // 4
        node = m["node"].strip()
        matchers = node.split("  ", 1)[0] if node.startswith("{") else node.split(" ", 1)[0]
        del stack[depth:]
        stack.append(matchers)
        found = re.search(r"receiver: (\S+)", node)
        if found and (matched_only or depth > 0):
            nodes.add((tuple(stack[1:]), found[1]))
    return nodes


def _route_test(amtool: str, labels: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return run_amtool(amtool, "config", "routes", "test", f"--config.file={CONFIG}", *extra, *(f"{k}={v}" for k, v in labels.items()))


@pytest.mark.parametrize("case", ROUTE_CASES)
def test_route(amtool: str, case: str) -> None:
    labels, expected = ROUTE_CASES[case]
    labels = {**BASE, **labels}
    result = _route_test(amtool, labels, f"--verify.receivers={','.join(expected)}")
    assert result.returncode == 0, f"{case}: expected {expected}, amtool says: {result.stdout.strip()}"
    assert result.stdout.strip().split(",") == expected
    # The contract: the collector records every alert except the escalations it made itself.
    assert (COLLECTOR in expected) == (labels.get("escalated") != "true")


@pytest.fixture(scope="module")
def matched_routes(amtool: str) -> dict[str, set[Node]]:
    """The routes each case ends on, from `amtool config routes test --tree`."""
    matched = {}
    for case, (labels, _) in ROUTE_CASES.items():
        result = _route_test(amtool, {**BASE, **labels}, "--tree")
        assert result.returncode == 0, result.stderr
        matched[case] = _tree_nodes(result.stdout, matched_only=True)
    return matched


def test_every_route_has_a_case(amtool: str, matched_routes: dict[str, set[Node]]) -> None:
    tree = run_amtool(amtool, "config", "routes", f"--config.file={CONFIG}")
    assert tree.returncode == 0, tree.stderr
    routes = _tree_nodes(tree.stdout, matched_only=False)
    covered = set().union(*matched_routes.values())
    assert len(routes) == 11, tree.stdout
    assert routes - covered == set(), "routes without a case in ROUTE_CASES"
    assert covered <= routes
    receivers = {r["name"] for r in load_config()["receivers"]}
    assert receivers == {name for _, names in ROUTE_CASES.values() for name in names}


def _config_routes(route: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[Node, dict[str, Any]]]:
    """Config routes keyed like amtool draws them: sorted matchers in braces."""
    for child in route.get("routes", []):
        here = (*path, "{" + ",".join(sorted(child.get("matchers", []))) + "}")
        yield (here, child["receiver"]), child
        yield from _config_routes(child, here)


def test_staging_routes_to_people_are_muted_in_the_maintenance_window(matched_routes: dict[str, set[Node]]) -> None:
    config = load_config()
    assert [t["name"] for t in config["time_intervals"]] == ["staging-maintenance"]
    routes = dict(_config_routes(config["route"]))
    for case, nodes in matched_routes.items():
        staging = ROUTE_CASES[case][0]["env"] == "staging"
        for node in nodes:
            muted = routes[node].get("mute_time_intervals", [])
            # The collector records maintenance too; people are not told about it.
            expected = ["staging-maintenance"] if staging and node[1] != COLLECTOR else []
            assert muted == expected, f"{case}: route {node} has mute_time_intervals {muted}"


def test_readme_time_interval_example_is_valid(amtool: str, tmp_path: Path) -> None:
    block = re.search(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert block
    config = load_config()
    config["time_intervals"] += yaml.safe_load(block[1])["time_intervals"]
    config["templates"] = [str(TEMPLATES / "*.tmpl")]
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    result = run_amtool(amtool, "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- templates

RUN_42 = "http://127.0.0.1:9700/runs/order-placement/prod/42"
RUN_41 = "http://127.0.0.1:9700/runs/order-placement/prod/41"


def _alert(status: str, run_url: str, step: str, reason: str, description: str, **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {**BASE, "severity": "critical", "env": "prod", "step": step, "reason": reason, **labels},
        "annotations": {"summary": "order-placement is failing in prod", "description": description, "run_url": run_url},
        "startsAt": "2026-11-28T21:00:00Z",
        "endsAt": "2026-11-28T21:20:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://127.0.0.1:9090/graph",
        "fingerprint": hashlib.sha256(f"{run_url}{step}".encode()).hexdigest()[:16],
    }


def _data(name: str, alerts: list[dict[str, Any]]) -> dict[str, Any]:
    common = {k: v for k, v in alerts[0]["labels"].items() if all(a["labels"].get(k) == v for a in alerts)}
    common_annotations = {k: v for k, v in alerts[0]["annotations"].items() if all(a["annotations"].get(k) == v for a in alerts)}
    return {
        "receiver": name,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "alerts": alerts,
        "groupLabels": {k: common[k] for k in ("alertname", "env", "workflow")},
        "commonLabels": common,
        "commonAnnotations": common_annotations,
        "externalURL": "http://127.0.0.1:9093",
    }


PLACE_ORDER = ("place-order", "status", "place-order returned HTTP 500, expected 200 or 201")
LOGIN = ("login", "timeout", "login did not answer within 500ms")

# name -> (notification data, alerts [(step, reason, description, run_url)], one step to blame in the title?)
DATASETS: dict[str, tuple[dict[str, Any], list[tuple[str, str, str, str]], bool]] = {
    "firing-grouped": (
        _data("x", [_alert("firing", RUN_42, *PLACE_ORDER), _alert("resolved", RUN_41, *LOGIN)]),
        [(*PLACE_ORDER, RUN_42), (*LOGIN, RUN_41)],
        False,
    ),
    "resolved": (_data("x", [_alert("resolved", RUN_42, *PLACE_ORDER)]), [(*PLACE_ORDER, RUN_42)], True),
    "escalated": (
        _data("x", [_alert("firing", RUN_42, *PLACE_ORDER, escalated="true", escalation="oncall")]),
        [(*PLACE_ORDER, RUN_42)],
        True,
    ),
    "warning": (
        _data("x", [_alert("firing", RUN_42, *PLACE_ORDER, severity="warning", alertname="FlowprobeWorkflowDegraded")]),
        [(*PLACE_ORDER, RUN_42)],
        True,
    ),
}

TEMPLATE_CASES = [
    ("firing-grouped", "slack-critical"),
    ("firing-grouped", "email-critical"),
    ("resolved", "slack-critical"),
    ("resolved", "email-critical"),
    ("warning", "slack-warning"),
    ("escalated", "email-oncall"),
    ("escalated", "email-managers"),
]


def _render(amtool: str, text: str, data: Path, *, html: bool = False) -> str:
    result = run_amtool(
        amtool,
        "template",
        "render",
        f"--template.glob={TEMPLATES / '*.tmpl'}",
        f"--template.text={text}",
        f"--template.data={data}",
        f"--template.type={'html' if html else 'text'}",
    )
    assert result.returncode == 0, f"rendering {text!r}: {result.stderr}"
    return result.stdout


def _fields(receiver_config: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """The templated fields a receiver sends: name -> (template text, is HTML)."""
    if receiver_config.get("slack_configs"):
        (slack,) = receiver_config["slack_configs"]
        return {key: (slack[key], False) for key in ("title", "title_link", "text", "channel", "color", "fallback")}
    (email,) = receiver_config["email_configs"]
    return {"subject": (email["headers"]["Subject"], False), "text": (email["text"], False), "html": (email["html"], True)}


@pytest.mark.parametrize(("dataset", "name"), TEMPLATE_CASES)
def test_template_render(amtool: str, tmp_path: Path, dataset: str, name: str) -> None:
    data, alerts, one_step = DATASETS[dataset]
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps({**data, "receiver": name}), encoding="utf-8")
    out = {field: _render(amtool, text, data_file, html=html) for field, (text, html) in _fields(receiver(load_config(), name)).items()}
    status = data["status"].upper()
    titles = [out[k] for k in ("title", "fallback", "subject") if k in out]
    bodies = [out[k] for k in ("text", "html") if k in out]

    for title in titles:
        assert "\n" not in title.strip(), title
        assert title.startswith(f"[{status}"), title
        assert "order-placement" in title and "prod" in title, title
        if one_step:
            assert "place-order" in title and "(status)" in title, title
        if dataset == "escalated":
            assert "escalated to oncall" in title, title
    for body in bodies:
        for step, reason, description, run_url in alerts:
            assert "order-placement" in body and "prod" in body
            assert step in body and reason in body and description in body, body
            assert run_url in body, body
        if data["alerts"][-1]["status"] == "resolved":
            assert "Resolved (1)" in body
        if dataset == "escalated":
            assert re.search(r"Escalated to\W*oncall", body), body
    if "html" in out:
        assert f'<a href="{alerts[0][3]}">' in out["html"]
    if "title_link" in out:
        assert out["title_link"] == RUN_42
        assert out["color"] == {"firing": "danger" if name == "slack-critical" else "warning", "resolved": "good"}[data["status"]]
        assert out["channel"] == ("#flowprobe-prod" if name == "slack-critical" else "#flowprobe-prod-warnings")
        assert f"<{RUN_42}|Open the run>" in out["text"]


def test_slack_text_escapes_markup(amtool: str, tmp_path: Path) -> None:
    data = _data("slack-critical", [_alert("firing", RUN_42, "place-order", "assertion", "$.status was <null> & not created")])
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(data), encoding="utf-8")
    text = _render(amtool, receiver(load_config(), "slack-critical")["slack_configs"][0]["text"], data_file)
    assert "$.status was &lt;null&gt; &amp; not created" in text
    html = _render(amtool, receiver(load_config(), "email-critical")["email_configs"][0]["html"], data_file, html=True)
    assert "$.status was &lt;null&gt; &amp; not created" in html


# ---------------------------------------------------------------- a running Alertmanager


def _alertmanager() -> str:
    # Debian names it prometheus-alertmanager; upstream builds and images alertmanager.
    return shutil.which("alertmanager") or require_binary("prometheus-alertmanager")


def loopback_copy(tmp: Path) -> Path:
    """The shipped config with every destination on a dead loopback port and
    every secret in a temp file, so a running Alertmanager reaches nothing."""
    dead = f"127.0.0.1:{free_port()}"
    secrets = tmp / "secrets"
    secrets.mkdir()
    config = load_config()
    config["templates"] = [str(TEMPLATES / "*.tmpl")]

    def rewrite(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                rewrite(item)
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key in ("url", "api_url", "slack_api_url"):
                node[key] = f"http://{dead}/{key}"
            elif key in ("smarthost", "smtp_smarthost"):
                node[key] = dead
            elif key.endswith("_file") and isinstance(value, str):
                secret = secrets / Path(value).name
                secret.write_text(f"http://{dead}/slack\n" if "url" in key else "test-secret-0123456789\n", encoding="utf-8")
                node[key] = str(secret)
            else:
                rewrite(value)

    rewrite(config)
    for path, value in walk(config):
        key = path.rsplit(".", 1)[-1]
        if key in ("url", "api_url", "slack_api_url", "smarthost", "smtp_smarthost"):
            assert dead in value, f"{path} still points at {value}"
        if key.endswith("_file") and isinstance(value, str):
            assert value.startswith(str(secrets)), path
    for secret in secrets.iterdir():
        content = secret.read_text(encoding="utf-8")
        assert "://" not in content or dead in content
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    with running_alertmanager(tmp_path, loopback_copy(tmp_path)) as url:
        yield url


def _post(url: str, alerts: list[dict[str, str]]) -> None:
    payload = [{"labels": labels, "annotations": {"summary": "test", "run_url": "http://127.0.0.1:9700/runs/x"}} for labels in alerts]
    response = httpx.post(f"{url}/api/v2/alerts", json=payload, timeout=5)
    assert response.status_code == 200, response.text


def _alerts(url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/api/v2/alerts", timeout=5)
    response.raise_for_status()
    alerts = response.json()
    assert isinstance(alerts, list)
    return alerts


def _find(alerts: list[dict[str, Any]], **labels: str) -> dict[str, Any]:
    found = [a for a in alerts if all(a["labels"].get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{labels}: {len(found)} alerts"
    return found[0]


def test_inhibition_on_a_running_alertmanager(alertmanager: str) -> None:
    url = alertmanager
    failing = {"alertname": "FlowprobeWorkflowFailing", "severity": "critical"}
    _post(
        url,
        [
            {**failing, "workflow": "health-check", "env": "prod", "step": "health", "reason": "connect"},
            {**failing, "workflow": "order-placement", "env": "prod", "dependencies": ",health-check,user-login,"},
            {**failing, "workflow": "order-placement", "env": "staging", "dependencies": ",health-check,user-login,"},
            # named like the health check, but not it: the comma-wrapped list must not match
            {**failing, "workflow": "list-products", "env": "prod", "dependencies": ",health-check-v2,"},
            # critical inhibits the warning of the same alert, workflow and env (burn windows)
            {"alertname": "FlowprobeErrorBudgetBurn", "severity": "critical", "window": "1h", "workflow": "register", "env": "dev"},
            {"alertname": "FlowprobeErrorBudgetBurn", "severity": "warning", "window": "6h", "workflow": "register", "env": "dev"},
            {"alertname": "FlowprobeErrorBudgetBurn", "severity": "warning", "window": "6h", "workflow": "register", "env": "staging"},
            # a failing workflow's latency alert says nothing more
            {**failing, "workflow": "create-farm", "env": "dev"},
            {"alertname": "FlowprobeLatencySLOBreached", "severity": "warning", "workflow": "create-farm", "env": "dev"},
            {"alertname": "FlowprobeLatencySLOBreached", "severity": "warning", "workflow": "user-login", "env": "dev"},
        ],
    )

    def settled() -> list[dict[str, Any]] | None:
        alerts = _alerts(url)
        suppressed = [a for a in alerts if a["status"]["inhibitedBy"]]
        return alerts if len(alerts) == 10 and len(suppressed) >= 3 else None

    alerts = wait_until(settled, timeout=10, what="inhibition to apply")
    health = _find(alerts, workflow="health-check", env="prod")
    burn_critical = _find(alerts, alertname="FlowprobeErrorBudgetBurn", severity="critical")
    create_farm = _find(alerts, alertname="FlowprobeWorkflowFailing", workflow="create-farm")
    expected = {
        ("order-placement", "prod", "FlowprobeWorkflowFailing"): [health["fingerprint"]],
        ("order-placement", "staging", "FlowprobeWorkflowFailing"): [],
        ("list-products", "prod", "FlowprobeWorkflowFailing"): [],
        ("register", "dev", "FlowprobeErrorBudgetBurn", "warning"): [burn_critical["fingerprint"]],
        ("register", "staging", "FlowprobeErrorBudgetBurn", "warning"): [],
        ("create-farm", "dev", "FlowprobeLatencySLOBreached"): [create_farm["fingerprint"]],
        ("user-login", "dev", "FlowprobeLatencySLOBreached"): [],
        ("health-check", "prod", "FlowprobeWorkflowFailing"): [],
    }
    for key, inhibited_by in expected.items():
        labels = {"workflow": key[0], "env": key[1], "alertname": key[2], **({"severity": key[3]} if len(key) > 3 else {})}
        alert = _find(alerts, **labels)
        assert alert["status"]["inhibitedBy"] == inhibited_by, (labels, alert["status"])
        assert alert["status"]["state"] == ("suppressed" if inhibited_by else "active"), (labels, alert["status"])
    # The running instance routes as amtool said: the collector, then people.
    prod = _find(alerts, workflow="health-check", env="prod")
    assert [r["name"] for r in prod["receivers"]] == [COLLECTOR, "slack-critical", "email-critical"]


def test_readme_silence_commands_silence_alerts(amtool: str, alertmanager: str) -> None:
    url = alertmanager
    block = re.search(r"```sh\n(AM=.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert block, "README.md: no sh block starting with AM="
    commands = [
        shlex.split(line.replace("$AM", f"--alertmanager.url={url}").replace('"$USER"', "pytest"))
        for line in block[1].replace("\\\n", " ").splitlines()
        if " silence add " in line
    ]
    assert len(commands) == 2
    _post(
        url,
        [
            {"alertname": "FlowprobeWorkflowFailing", "severity": "critical", "workflow": "register", "env": "staging"},
            {"alertname": "FlowprobeWorkflowFailing", "severity": "critical", "workflow": "order-placement", "env": "prod"},
            {"alertname": "FlowprobeWorkflowFailing", "severity": "critical", "workflow": "user-login", "env": "prod"},
        ],
    )
    for argv in commands:
        assert argv[0] == "amtool"
        result = run_amtool(amtool, *argv[1:])
        assert result.returncode == 0, result.stderr
        assert re.fullmatch(r"[0-9a-f-]{36}", result.stdout.strip()), result.stdout

    def silenced() -> list[dict[str, Any]] | None:
        alerts = _alerts(url)
        return alerts if len([a for a in alerts if a["status"]["silencedBy"]]) == 2 else None

    alerts = wait_until(silenced, timeout=10, what="silences to apply")
    assert _find(alerts, workflow="register")["status"]["silencedBy"]
    assert _find(alerts, workflow="order-placement")["status"]["silencedBy"]
    assert _find(alerts, workflow="user-login")["status"]["silencedBy"] == []
