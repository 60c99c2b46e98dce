"""`flowprobe rules`: the committed Prometheus rules, their promtool tests, drift, and the generator."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from collector.cli import main
from collector.config import load_config
from collector.rules import ERROR_RATIO, Generated, generate, humanize_duration
from tests.helpers import REPO, WORKFLOWS, probe_environment, require_binary

RULES = REPO / "provisioning" / "prometheus" / "rules" / "flowprobe.rules.yml"
TESTS = REPO / "provisioning" / "prometheus" / "tests" / "flowprobe.test.yml"
ANNOTATIONS = {"summary", "description", "run_url"}


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in probe_environment().items():
        monkeypatch.setenv(name, value)


def _rules(config: Path, rules: Path = RULES, tests: Path = TESTS, *, check: bool = True) -> int:
    return main(["rules", "--config", str(config), "--rules", str(rules), "--tests", str(tests), *(["--check"] if check else [])])


def _alert_rules(text: str) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"] if "alert" in rule]


def _promtool(*args: str) -> None:
    promtool = require_binary("promtool")
    result = subprocess.run([promtool, *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _synthetic(tmp_path: Path, workflows: dict[str, str], settings: str = "") -> Path:
    """A config directory with two environments behind a secret-bearing target."""
    config = tmp_path / "config"
    config.mkdir()
    secret = "    secrets: {TOKEN: {env: FLOWPROBE_PROBE_PASSWORD}}\n"
    (config / "environments.yaml").write_text(
        "environments:\n"
        f"  prod:\n    base_url: https://target.example.com\n{secret}"
        f"  staging:\n    base_url: https://staging.target.example.com\n{secret}"
    )
    if settings:
        (config / "flowprobe.yaml").write_text(settings)
    for name, alert in workflows.items():
        (config / f"{name}.yaml").write_text(
            f"name: {name}\nschedule: {{every: 60s}}\n{alert}\n"
            "steps:\n  - name: first\n    request: {url: '{{ base_url }}/x', headers: {X-Token: '{{ secrets.TOKEN }}'}}\n"
        )
    return config


def _generate(config: Path) -> Generated:
    return generate(load_config(config), rules_path=Path("rules/r.yml"), tests_path=Path("tests/t.yml"))


# ---------------------------------------------------------------- the committed files


def test_the_committed_rules_pass_promtool_check() -> None:
    _promtool("check", "rules", str(RULES.relative_to(REPO)))


def test_the_committed_promtool_tests_pass() -> None:
    # From the repository root, as CI and the docs run it; the test file names the rules relatively.
    _promtool("test", "rules", str(TESTS.relative_to(REPO)))


def test_the_committed_files_match_the_shipped_workflows(capsys: pytest.CaptureFixture[str]) -> None:
    assert _rules(WORKFLOWS) == 0, capsys.readouterr().out
    assert "SUCCESS" in capsys.readouterr().out


def test_an_alert_setting_changed_without_regenerating_is_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "workflows"
    shutil.copytree(WORKFLOWS, config)
    order = config / "order-placement.yaml"
    order.write_text(order.read_text().replace("after_failures: 3", "after_failures: 5"))
    before = RULES.read_bytes(), TESTS.read_bytes()
    assert _rules(config) == 1
    out = capsys.readouterr().out
    assert f"DRIFT: {RULES} differs from what the workflows give" in out
    assert f"DRIFT: {TESTS} differs" in out
    lines = [line.replace(" ", "") for line in out.splitlines()]
    assert '-flowprobe_workflow_consecutive_failures{workflow="order-placement"}>=3' in lines
    assert '+flowprobe_workflow_consecutive_failures{workflow="order-placement"}>=5' in lines
    assert "Run `flowprobe rules` to regenerate them" in out
    assert (RULES.read_bytes(), TESTS.read_bytes()) == before  # --check writes nothing


def test_rules_writes_both_files_and_check_then_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules, tests = tmp_path / "out" / "rules" / "x.rules.yml", tmp_path / "out" / "tests" / "x.test.yml"
    assert _rules(WORKFLOWS, rules, tests, check=True) == 1
    assert f"DRIFT: {rules} is missing" in capsys.readouterr().out
    assert _rules(WORKFLOWS, rules, tests, check=False) == 0
    out = capsys.readouterr().out
    assert f"wrote {rules} (6 workflow group(s), 46 alerting rule(s), 9 recording rule(s))" in out
    assert yaml.safe_load(tests.read_text())["rule_files"] == ["../rules/x.rules.yml"]
    assert rules.read_text() == RULES.read_text()
    assert _rules(WORKFLOWS, rules, tests) == 0


def test_a_config_that_does_not_load_is_reported(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FLOWPROBE_PROBE_PASSWORD")
    assert _rules(WORKFLOWS) == 1
    err = capsys.readouterr().err
    assert "environment variable FLOWPROBE_PROBE_PASSWORD is not set" in err
    assert f"flowprobe rules: cannot load {WORKFLOWS}:" in err


def test_every_alert_rule_is_quiet_then_firing_then_quiet_in_the_promtool_tests() -> None:
    tests = yaml.safe_load(TESTS.read_text())["tests"]
    for rule in _alert_rules(RULES.read_text()):
        want = rule["labels"]
        firing: list[int] = []
        quiet: list[int] = []
        for group in tests:
            series = " ".join(s["series"] for s in group["input_series"])
            if f'workflow="{want["workflow"]}"' not in series:
                continue
            for case in group["alert_rule_test"]:
                if case["alertname"] != rule["alert"]:
                    continue
                minute = int(case["eval_time"].removesuffix("m"))
                found = [a for a in case.get("exp_alerts") or [] if want.items() <= a["exp_labels"].items()]
                (firing if found else quiet).append(minute)
                for alert in found:
                    assert set(alert["exp_annotations"]) == ANNOTATIONS
                    assert "{{" not in " ".join(alert["exp_annotations"].values())
        where = f"{rule['alert']} {want}"
        assert firing, f"no firing case for {where}"
        assert any(q < min(firing) for q in quiet), f"no quiet case before {where} fires"
        assert any(q > min(firing) for q in quiet), f"no quiet case after {where} resolves"


def test_every_alert_carries_the_contract_labels_and_annotations() -> None:
    config = load_config(WORKFLOWS)
    rules = _alert_rules(RULES.read_text())
    names = {(r["labels"]["workflow"], r["alert"], r["labels"].get("window")) for r in rules}
    for name, workflow in config.workflows.items():
        alert = workflow.alert
        expected = {(name, "FlowprobeWorkflowFailing", None), (name, "FlowprobeCertificateExpiring", None),
                    (name, "FlowprobeAnomalyDetected", None), (name, "FlowprobeFailurePredicted", None)}
        if alert.latency_slo is not None:
            expected |= {(name, "FlowprobeLatencySLOBreached", None), (name, "FlowprobeWorkflowDegraded", None)}
        if alert.availability_slo is not None:
            expected |= {(name, "FlowprobeErrorBudgetBurn", w) for w in ("1h", "6h", "1d", "3d")}
        assert {n for n in names if n[0] == name} == expected
    for rule in rules:
        labels, workflow = rule["labels"], config.workflows[rule["labels"]["workflow"]]
        assert labels["severity"] in ("critical", "warning", "info")
        assert f'{{workflow="{workflow.name}"' in rule["expr"]
        assert workflow.labels.items() <= labels.items()
        assert labels.get("dependencies") == ("," + ",".join(sorted(workflow.depends_on)) + "," if workflow.depends_on else None)
        assert set(rule["annotations"]) == ANNOTATIONS
        assert rule["annotations"]["run_url"] == f"http://127.0.0.1:9700/api/workflows/{workflow.name}/runs?env={{{{ $labels.env }}}}"
        assert workflow.name in rule["annotations"]["summary"] and "{{ $labels.env }}" in rule["annotations"]["summary"]
    failing = next(r for r in rules if r["alert"] == "FlowprobeWorkflowFailing" and r["labels"]["workflow"] == "order-placement")
    assert failing["labels"] == {
        "severity": "critical",
        "workflow": "order-placement",
        "team": "marketplace",
        "dependencies": ",health-check,product-listing,user-login,",
    }
    assert "* on (workflow, env) group_left (step, reason)" in failing["expr"]
    assert "or on (workflow, env)" in failing["expr"]
    assert "for" not in failing


def test_no_secrets_or_target_urls_in_the_generated_files() -> None:
    config = load_config(WORKFLOWS)
    text = RULES.read_text() + TESTS.read_text()
    for env in config.environments.values():
        assert env.base_url not in text
    for values in config.secrets.values():
        for value in values.values():
            assert value not in text
    urls = re.findall(r"https?://[^\s'\"]+", text)
    assert urls and all(u.startswith(config.settings.public_url + "/api/workflows/") for u in urls)


# ---------------------------------------------------------------- the generator


def test_a_workflow_without_slos_gets_the_failing_certificate_and_analytics_alerts(tmp_path: Path) -> None:
    config = _synthetic(tmp_path, {"plain": "alert: {severity: warning, after_failures: 2}"})
    rules = _alert_rules(_generate(config).rules)
    assert [r["alert"] for r in rules] == ["FlowprobeWorkflowFailing", "FlowprobeCertificateExpiring",
                                           "FlowprobeAnomalyDetected", "FlowprobeFailurePredicted"]
    anomaly, predicted = rules[2:]
    assert anomaly["expr"] == 'flowprobe_anomaly{workflow="plain", signal=~"latency|error_rate"} == 1'
    assert (anomaly["for"], anomaly["labels"]["severity"]) == ("10m", "info")
    assert predicted["expr"] == 'flowprobe_failure_probability{workflow="plain"} >= 0.2'
    assert (predicted["for"], predicted["labels"]["severity"]) == ("5m", "warning")
    assert rules[0]["labels"] == {"severity": "warning", "workflow": "plain"}  # no dependencies, no static labels
    assert rules[1]["expr"] == 'flowprobe_ssl_earliest_cert_expiry{workflow="plain"} - time() < 1209600'
    assert rules[1]["for"] == "10m" and rules[1]["labels"]["severity"] == "warning"


def test_burn_thresholds_and_severities_follow_the_workbook(tmp_path: Path) -> None:
    config = _synthetic(
        tmp_path,
        {
            "paged": "alert: {severity: critical, availability_slo: 0.99}",
            "quiet": "alert: {severity: info, availability_slo: 0.999}",
        },
    )
    burns = [r for r in _alert_rules(_generate(config).rules) if r["alert"] == "FlowprobeErrorBudgetBurn"]
    paged = [(r["labels"]["window"], r["labels"]["severity"], r["expr"]) for r in burns if r["labels"]["workflow"] == "paged"]
    ratio = ERROR_RATIO.format(window="{}") + '{{workflow="paged"}} > {}'
    assert paged == [
        ("1h", "critical", ratio.format("1h", "0.144") + "\nand\n" + ratio.format("5m", "0.144")),
        ("6h", "critical", ratio.format("6h", "0.06") + "\nand\n" + ratio.format("30m", "0.06")),
        ("1d", "warning", ratio.format("1d", "0.03") + "\nand\n" + ratio.format("2h", "0.03")),
        ("3d", "warning", ratio.format("3d", "0.01") + "\nand\n" + ratio.format("6h", "0.01")),
    ]
    quiet = [(r["labels"]["severity"], r["expr"].split(" > ")[1].split("\n")[0]) for r in burns if r["labels"]["workflow"] == "quiet"]
    assert quiet == [("info", "0.0144"), ("info", "0.006"), ("info", "0.003"), ("info", "0.001")]
    assert all("for" not in r for r in burns)


def test_a_burn_that_cannot_happen_is_left_out_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _synthetic(tmp_path, {"loose": "alert: {availability_slo: 0.9}"})
    generated = _generate(config)
    windows = [r["labels"]["window"] for r in _alert_rules(generated.rules) if r["alert"] == "FlowprobeErrorBudgetBurn"]
    assert windows == ["6h", "1d", "3d"]
    assert generated.warnings == [
        "loose: availability_slo 0.9 leaves a 10% error budget; a 14.4x burn would need 144% of runs to fail, "
        "so the 1h burn-rate alert is left out"
    ]
    assert _rules(config, tmp_path / "r.yml", tmp_path / "t.yml", check=False) == 0
    assert "flowprobe rules: warning: loose: availability_slo 0.9" in capsys.readouterr().err


def test_a_static_label_that_would_overwrite_a_rule_label_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _synthetic(tmp_path, {"clash": "labels: {severity: high, team: a}"})
    assert _rules(config, tmp_path / "r.yml", tmp_path / "t.yml", check=False) == 1
    # The config refuses it (flowprobe sets severity on alerts), so no rule is written.
    assert "labels.severity: reserved label name" in capsys.readouterr().err
    assert not (tmp_path / "r.yml").exists()


def test_generation_is_deterministic_and_sorted(tmp_path: Path) -> None:
    config = _synthetic(tmp_path, {"zeta": "depends_on: [alpha, mid]", "alpha": "", "mid": "depends_on: [alpha]"})
    first, second = _generate(config), _generate(config)
    assert (first.rules, first.tests) == (second.rules, second.tests)
    groups = [g["name"] for g in yaml.safe_load(first.rules)["groups"]]
    assert groups == ["flowprobe.recording", "flowprobe.workflow.alpha", "flowprobe.workflow.mid", "flowprobe.workflow.zeta"]
    assert first.rules.startswith("# Generated by `flowprobe rules`")
    assert _alert_rules(first.rules)[-1]["labels"]["dependencies"] == ",alpha,mid,"


def test_generated_tests_pass_promtool_for_edge_settings(tmp_path: Path) -> None:
    """Info severity, one failure, a coarse SLO, an odd latency SLO, a public URL with a slash, one environment."""
    config = _synthetic(
        tmp_path,
        {
            "edge": "labels: {team: z}\nalert: {severity: info, after_failures: 1, latency_slo: 1.25s, availability_slo: 0.93, cert_expiry: 1h}",
            "dependent": "environments: [prod]\ndepends_on: [edge]\nalert: {severity: critical, after_failures: 4, availability_slo: 0.9995}",
        },
        settings="public_url: https://flowprobe.example.com/\n",
    )
    rules, tests = tmp_path / "out" / "rules" / "r.yml", tmp_path / "out" / "tests" / "t.yml"
    assert _rules(config, rules, tests, check=False) == 0
    assert "run_url: https://flowprobe.example.com/api/workflows/edge/runs?env={{ $labels.env }}" in rules.read_text()
    assert "target.example.com" not in rules.read_text() + tests.read_text()
    _promtool("check", "rules", str(rules))
    _promtool("test", "rules", str(tests))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.6, "600ms"), (1.6, "1.6s"), (2.5, "2.5s"), (90, "1m 30s"), (-660, "-11m 0s"), (7200, "2h 0m 0s"), (1208940, "13d 23h 49m 0s")],
)
def test_humanize_duration_is_prometheus_template_function(seconds: float, text: str) -> None:
    assert humanize_duration(seconds) == text
