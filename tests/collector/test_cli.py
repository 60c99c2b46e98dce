"""`flowprobe check` and `flowprobe schema`, in-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from collector.cli import main
from tests.helpers import WORKFLOWS, probe_environment


@pytest.fixture(autouse=True)
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in probe_environment().items():
        monkeypatch.setenv(name, value)


def test_check_exits_0_for_the_shipped_workflows(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(WORKFLOWS)]) == 0
    assert "SUCCESS: 6 workflow(s), 18 (workflow, env) pair(s) are valid" in capsys.readouterr().out


def test_check_exits_1_and_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "workflows"
    shutil.copytree(WORKFLOWS, config)
    (config / "extra.yaml").write_text("name: extra\nschedule: {every: 10s}\nsteps:\n  - name: a\n    request: {url: x, verb: GET}\n")
    (config / "user-login.yaml").write_text((config / "user-login.yaml").read_text().replace("{{ token }}", "{{ tokn }}"))
    assert main(["check", str(config)]) == 1
    err = capsys.readouterr().err
    assert "extra.yaml:5: steps[0].request.verb: unknown key" in err
    assert "user-login.yaml" in err and "unknown variable {{ tokn }} (did you mean token?)" in err
    assert err.rstrip().endswith("FAILED: 2 problem(s)")


def test_a_missing_secret_fails_check(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("FLOWPROBE_PROBE_PASSWORD")
    assert main(["check", str(WORKFLOWS)]) == 1
    assert "environment variable FLOWPROBE_PROBE_PASSWORD is not set" in capsys.readouterr().err


def test_schema_validates_the_shipped_workflows_and_rejects_unknown_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    for path in WORKFLOWS.glob("*.yaml"):
        if path.name != "environments.yaml":
            jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    bad = yaml.safe_load((WORKFLOWS / "health-check.yaml").read_text()) | {"timout": "5s"}
    with pytest.raises(jsonschema.ValidationError, match="timout"):
        jsonschema.validate(bad, schema)
    assert main(["schema", "--environments"]) == 0
    jsonschema.validate(yaml.safe_load((WORKFLOWS / "environments.yaml").read_text()), json.loads(capsys.readouterr().out))
