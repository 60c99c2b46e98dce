"""Loading a config directory: the shipped workflows, values, secrets, errors and the JSON Schema.

Every error message has one fixture under tests/fixtures/invalid/<case>/:
the config files and expected.txt, the exact `check` output with file names
relative to the case directory.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from collector.config import (
    Config,
    ConfigError,
    Expect,
    Workflow,
    environments_json_schema,
    json_schema,
    load_config,
    parse_duration,
)
from collector.secret import MASK, global_redactor

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
INVALID = ROOT / "tests" / "fixtures" / "invalid"
SHIPPED = ["farm-creation", "health-check", "order-placement", "product-listing", "registration", "user-login"]

# Distinctive, so a leak into a message cannot be a coincidence.
FIXTURE_SECRET = "s3cret-fixture-value-7f3a"
PROBE_EMAIL = "probe-7c1e@flowprobe.invalid"
PROBE_PASSWORD = "probe-password-5b9d"

ENVIRONMENTS = """\
environments:
  prod:
    base_url: http://127.0.0.1:8080
"""
WORKFLOW = """\
name: probe
schedule: {every: 30s}
steps:
  - name: ping
    request:
      url: "{{ base_url }}/health"
"""


@pytest.fixture
def probe_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWPROBE_PROBE_EMAIL", PROBE_EMAIL)
    monkeypatch.setenv("FLOWPROBE_PROBE_PASSWORD", PROBE_PASSWORD)
    for name in ("FLOWPROBE_PROD_URL", "FLOWPROBE_STAGING_URL", "FLOWPROBE_DEV_URL"):
        monkeypatch.delenv(name, raising=False)


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return directory


def problems_of(*paths: Path | str, **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(*paths, **kwargs)
    return [str(p) for p in info.value.problems]


# ---------------------------------------------------------------- invalid fixtures

CASES = sorted(p.name for p in INVALID.iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES)
def test_invalid_fixture_reports_its_exact_message(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(INVALID / case)
    monkeypatch.setenv("FLOWPROBE_FIXTURE_SECRET", FIXTURE_SECRET)
    monkeypatch.delenv("FLOWPROBE_FIXTURE_UNSET", raising=False)
    expected = (INVALID / case / "expected.txt").read_text(encoding="utf-8").splitlines()

    with pytest.raises(ConfigError) as info:
        load_config(".")

    assert [str(p) for p in info.value.problems] == expected
    assert str(info.value) == "\n".join(expected)
    assert FIXTURE_SECRET not in str(info.value)


def test_invalid_fixtures_cover_every_kind_of_error() -> None:
    assert len(CASES) >= 40
    # file[:line]: [path: ]message, lowercase apart from names the user wrote.
    shape = re.compile(r"^[\w./-]+\.ya?ml(:\d+)?: .+$")
    seen: dict[str, str] = {}
    for case in CASES:
        text = (INVALID / case / "expected.txt").read_text(encoding="utf-8")
        assert text.endswith("\n") and text.strip(), case
        for line in text.splitlines():
            assert shape.match(line), (case, line)
        assert text not in seen, f"{case} repeats {seen.get(text)}: one fixture per message"
        seen[text] = case


def test_problems_carry_file_line_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "workflows", {"environments.yaml": ENVIRONMENTS, "order.yaml": WORKFLOW + "    expect: {status: 99}\n"})
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ConfigError) as info:
        load_config("workflows")

    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.path) == ("workflows/order.yaml", 7, "steps[0].expect.status")
    assert problem.message.startswith("invalid status 99: ")


def test_a_broken_environments_file_does_not_hide_workflow_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, {"environments.yaml": "environments: {}\n", "probe.yaml": WORKFLOW.replace("steps:", "owner: ops\nsteps:")})
    monkeypatch.chdir(tmp_path)

    problems = problems_of(".")

    assert problems[0] == "environments.yaml:1: environments: must not be empty"
    assert problems[1].startswith("probe.yaml:3: owner: unknown key")
    assert len(problems) == 2


def test_missing_path_is_a_config_error(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nowhere") == [f"{tmp_path / 'nowhere'}: no such file or directory"]


# ---------------------------------------------------------------- secrets never leak


@pytest.mark.parametrize(
    ("environments", "workflow", "files"),
    [
        pytest.param(
            """\
            environments:
              prod:
                base_url: http://127.0.0.1:8080
                secrets: {TOKEN: {env: FLOWPROBE_LEAK}}
            history: {max_age: "${FLOWPROBE_LEAK}"}
            """,
            WORKFLOW,
            {},
            id="environment-secret-from-env",
        ),
        pytest.param(
            """\
            environments:
              prod:
                base_url: http://127.0.0.1:8080
                secrets: {TOKEN: {file: secrets/token}}
            circuit_breaker: {cool_down: "${FLOWPROBE_LEAK}"}
            """,
            WORKFLOW,
            {"secrets/token": "{value}\n"},
            id="environment-secret-from-file",
        ),
        pytest.param(
            """\
            environments:
              prod:
                base_url: http://127.0.0.1:8080
            history: {max_age: "${FLOWPROBE_LEAK}"}
            """,
            WORKFLOW.replace("steps:", "secrets: {TOKEN: {env: FLOWPROBE_LEAK}}\nsteps:"),
            {},
            id="workflow-secret",
        ),
        pytest.param(
            ENVIRONMENTS + "    secrets: {TOKEN: {env: FLOWPROBE_LEAK}}\n",
            WORKFLOW.replace("steps:", "owner: ops\ndepends_on: [nothing]\nsteps:").replace("/health", "/{{ nope }}"),
            {"other.yaml": "name: probe\nschedule: {every: 30s}\nsteps:\n  - name: ping\n    request: {url: x}\n"},
            id="errors-around-a-valid-secret",
        ),
    ],
)
def test_secret_values_never_appear_in_errors(
    environments: str, workflow: str, files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = "leak-canary-1d4e8a"
    monkeypatch.setenv("FLOWPROBE_LEAK", value)
    write(tmp_path, {"environments.yaml": environments, "probe.yaml": workflow})
    write(tmp_path, {name: text.replace("{value}", value) for name, text in files.items()})
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ConfigError) as info:
        load_config(".")

    assert info.value.problems
    assert value not in str(info.value)
    assert all(value not in p.message for p in info.value.problems)


def test_an_echoed_secret_value_is_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWPROBE_LEAK", "leak-canary-1d4e8a")
    write(
        tmp_path,
        {
            "environments.yaml": ENVIRONMENTS + '    secrets: {TOKEN: {env: FLOWPROBE_LEAK}}\nhistory: {max_age: "${FLOWPROBE_LEAK}"}\n',
            "probe.yaml": WORKFLOW,
        },
    )
    monkeypatch.chdir(tmp_path)

    assert problems_of(".") == [
        f"environments.yaml:5: history.max_age: invalid duration '{MASK}': use a number of seconds or a duration like 500ms, 10s, 1m30s or 7d"
    ]


# ---------------------------------------------------------------- the shipped workflows


def test_shipped_workflows_load(probe_secrets: None) -> None:
    config = load_config(WORKFLOWS)

    assert isinstance(config, Config)
    assert sorted(config.workflows) == SHIPPED
    assert sorted(config.environments) == ["dev", "prod", "staging"]
    assert len(config.pairs()) == 6 * 3
    assert {Path(source).name for source in config.sources.values()} == {f"{name}.yaml" for name in SHIPPED}
    assert config.environments["prod"].base_url == "http://127.0.0.1:8080"
    assert config.circuit_breaker.failures == 5 and config.circuit_breaker.cool_down == 60.0
    assert config.history.max_age == 7 * 86400.0


def test_shipped_workflow_values_are_parsed(probe_secrets: None) -> None:
    workflows = load_config(WORKFLOWS).workflows

    health = workflows["health-check"]
    assert health.schedule.every == 15.0 and health.schedule.cron is None
    assert health.timeout == 5.0
    assert health.alert.latency_slo == pytest.approx(0.25)
    assert (health.retries.attempts, health.retries.initial, health.retries.max) == (2, 0.2, 1.0)
    assert health.steps[0].request.timeout == 2.0
    assert health.steps[0].expect.json_["$.status"].ne == "down"

    order = workflows["order-placement"]
    assert order.depends_on == ["health-check", "user-login", "product-listing"]
    assert [s.name for s in order.steps] == ["login", "find-product", "place-order", "check-order", "cancel-order"]
    assert order.steps[2].expect.status == ((200, 200), (201, 201))
    assert order.steps[2].expect.json_["$.quantity"].eq == 1  # shorthand for {eq: 1}
    assert order.steps[0].capture["token"].secret is True
    assert order.steps[4].always_run is True
    assert order.alert.availability_slo == 0.99


def test_shipped_secrets_resolve_per_pair_and_join_the_redactor(probe_secrets: None) -> None:
    config = load_config(WORKFLOWS)

    expected = {"PROBE_EMAIL": PROBE_EMAIL, "PROBE_PASSWORD": PROBE_PASSWORD}
    assert all(config.secrets[(wf.name, env)] == expected for wf, env in config.pairs())
    assert global_redactor.text(f"login {PROBE_EMAIL} / {PROBE_PASSWORD}") == f"login {MASK} / {MASK}"
    assert PROBE_PASSWORD not in repr(config)


def test_shipped_workflows_without_their_secrets_are_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWPROBE_PROBE_EMAIL", raising=False)
    monkeypatch.setenv("FLOWPROBE_PROBE_PASSWORD", PROBE_PASSWORD)
    monkeypatch.chdir(ROOT)

    # The lines come from the file, which may move; the point is one problem per environment.
    text = (WORKFLOWS / "environments.yaml").read_text(encoding="utf-8").splitlines()
    lines = [n for n, line in enumerate(text, 1) if line.strip().startswith("PROBE_EMAIL:")]
    envs = list(yaml.safe_load("\n".join(text))["environments"])
    assert problems_of("workflows") == [
        f"workflows/environments.yaml:{line}: environments.{env}.secrets.PROBE_EMAIL: environment variable FLOWPROBE_PROBE_EMAIL is not set"
        for line, env in zip(lines, envs, strict=True)
    ]


def test_one_workflow_file_is_checked_with_the_environments_beside_it(probe_secrets: None) -> None:
    config = load_config(WORKFLOWS / "health-check.yaml")

    assert list(config.workflows) == ["health-check"]
    assert sorted(config.environments) == ["dev", "prod", "staging"]


def test_environments_file_can_be_given_explicitly(tmp_path: Path) -> None:
    write(tmp_path / "envs", {"staging.yaml": ENVIRONMENTS.replace("prod", "staging")})
    write(tmp_path / "flows", {"probe.yaml": WORKFLOW})

    config = load_config(tmp_path / "flows", environments=tmp_path / "envs" / "staging.yaml")

    assert list(config.environments) == ["staging"]
    assert [(wf.name, env) for wf, env in config.pairs()] == [("probe", "staging")]


# ---------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1m30s", 90.0),
        ("1h 30m", 5400.0),
        ("2h", 7200.0),
        ("7d", 604800.0),
        ("0s", 0.0),
        (10, 10.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_durations_parse(text: Any, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10 seconds", "invalid duration '10 seconds': use a number of seconds or a duration like 500ms, 10s, 1m30s or 7d"),
        ("1x", "invalid duration '1x': use a number of seconds or a duration like 500ms, 10s, 1m30s or 7d"),
        ("", "invalid duration '': use a number of seconds or a duration like 500ms, 10s, 1m30s or 7d"),
        ("-1s", "invalid duration '-1s': use a number of seconds or a duration like 500ms, 10s, 1m30s or 7d"),
        (-1, "a duration must be zero or more"),
        (float("inf"), "a duration must be zero or more"),
        (True, "must be a number of seconds or a duration like 500ms, 10s, 1m30s or 7d, not a boolean"),
        (None, "must be a number of seconds or a duration like 500ms, 10s, 1m30s or 7d, not null"),
        ([1], "must be a number of seconds or a duration like 500ms, 10s, 1m30s or 7d, not a list"),
    ],
)
def test_invalid_durations_say_what_is_allowed(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("status", "ranges"),
    [
        (200, ((200, 200),)),
        ([200, 201], ((200, 200), (201, 201))),
        ("2xx", ((200, 299),)),
        ("200-299", ((200, 299),)),
        ("301-302", ((301, 302),)),
        (["2xx", 404], ((200, 299), (404, 404))),
    ],
)
def test_status_forms_normalise_to_ranges(status: Any, ranges: tuple[tuple[int, int], ...]) -> None:
    assert Expect.model_validate({"status": status}).status == ranges


def test_status_defaults_to_any_2xx() -> None:
    assert Expect().status == ((200, 299),)


def test_environment_variables_expand_with_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWPROBE_TEST_UNSET", raising=False)
    monkeypatch.setenv("FLOWPROBE_TEST_EMPTY", "")
    monkeypatch.setenv("FLOWPROBE_TEST_URL", "https://staging.example.test")
    write(
        tmp_path,
        {
            "environments.yaml": """\
            environments:
              prod:
                base_url: "${FLOWPROBE_TEST_UNSET:-http://127.0.0.1:8080}"
                variables: {tenant: "${FLOWPROBE_TEST_EMPTY:-acme}", region: "eu-${FLOWPROBE_TEST_UNSET:-west}-1"}
              staging:
                base_url: "${FLOWPROBE_TEST_URL}"
                variables: {tenant: "${FLOWPROBE_TEST_UNSET:-}", region: plain}
            """,
            "probe.yaml": WORKFLOW.replace("/health", "/{{ tenant }}/{{ region }}"),
        },
    )

    environments = load_config(tmp_path).environments

    assert environments["prod"].base_url == "http://127.0.0.1:8080"
    assert environments["prod"].variables == {"tenant": "acme", "region": "eu-west-1"}
    assert environments["staging"].base_url == "https://staging.example.test"
    assert environments["staging"].variables == {"tenant": "", "region": "plain"}


def test_secrets_come_from_env_and_from_files_beside_environments_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWPROBE_TEST_TOKEN", "env-token-3e7f")
    monkeypatch.setenv("FLOWPROBE_TEST_OVERRIDE", "workflow-token-0a9c")
    write(
        tmp_path / "config",
        {
            "environments.yaml": """\
            environments:
              prod:
                base_url: http://127.0.0.1:8080
                secrets:
                  TOKEN: {env: FLOWPROBE_TEST_TOKEN}
                  PASSWORD: {file: secrets/password}
            """,
            "secrets/password": "file-password-6b2d\n",
            "probe.yaml": WORKFLOW.replace("steps:", "secrets: {TOKEN: {env: FLOWPROBE_TEST_OVERRIDE}}\nsteps:")
            + '      headers: {Authorization: "Bearer {{ secrets.TOKEN }}", X-Password: "{{ secrets.PASSWORD }}"}\n',
        },
    )
    # Elsewhere, so a file path relative to the working directory would not be found.
    monkeypatch.chdir(tmp_path)

    config = load_config("config")

    # The file's trailing newline is not part of the secret; the workflow's own secret wins.
    assert config.secrets[("probe", "prod")] == {"TOKEN": "workflow-token-0a9c", "PASSWORD": "file-password-6b2d"}
    for value in ("workflow-token-0a9c", "file-password-6b2d", "env-token-3e7f"):
        assert global_redactor.text(f"[{value}]") == f"[{MASK}]"


def test_a_workflow_limited_to_some_environments_needs_variables_only_there(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "environments.yaml": ENVIRONMENTS.replace("8080\n", "8080\n    variables: {tenant: acme}\n")
            + "  staging:\n    base_url: http://127.0.0.1:8081\n",
            "probe.yaml": WORKFLOW.replace("steps:", "environments: [prod]\nsteps:").replace("/health", "/{{ tenant }}"),
        },
    )

    config = load_config(tmp_path)

    assert [(wf.name, env) for wf, env in config.pairs()] == [("probe", "prod")]


def test_templates_may_use_builtins_variables_and_earlier_captures(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "environments.yaml": ENVIRONMENTS,
            "probe.yaml": """\
            name: probe
            schedule: {cron: "*/5 * * * *"}
            variables: {limit: 5}
            steps:
              - name: first
                request:
                  url: "{{ base_url }}/items?limit={{ limit }}&env={{ env }}&wf={{ workflow }}"
                  json: {ref: "{{ uuid() }}", tag: "{{ random_string(8) }}", at: "{{ now() }}", ts: "{{ timestamp() }}"}
                capture: {item_id: {json: "$.items[0].id"}}
                expect:
                  body: {matches: "^{{ not a template"}
              - name: second
                request:
                  url: "{{ base_url }}/items/{{ item_id }}"
                  body: '{"nested":{"ok":true}}'
                expect:
                  json: {"$.id": "{{ item_id }}"}
            """,
        },
    )

    workflow = load_config(tmp_path).workflows["probe"]

    assert workflow.schedule.cron == "*/5 * * * *"
    assert workflow.steps[1].request.body == '{"nested":{"ok":true}}'


def test_dependencies_between_files_are_checked(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "environments.yaml": ENVIRONMENTS,
            "a.yaml": WORKFLOW.replace("name: probe", "name: a"),
            "b.yaml": WORKFLOW.replace("name: probe", "name: b").replace("steps:", "depends_on: [a]\nsteps:"),
        },
    )

    assert load_config(tmp_path).workflows["b"].depends_on == ["a"]


def test_labels_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = ", ".join(f"l{i}: v" for i in range(11))
    write(tmp_path, {"environments.yaml": ENVIRONMENTS, "probe.yaml": WORKFLOW.replace("steps:", f"labels: {{{labels}}}\nsteps:")})
    monkeypatch.chdir(tmp_path)

    assert problems_of(".") == ["probe.yaml:3: labels: takes at most 10 entries"]


# ---------------------------------------------------------------- JSON Schema


def _objects(schema: Any) -> list[dict[str, Any]]:
    """Every sub-schema that describes an object with named properties."""
    found: list[dict[str, Any]] = []
    if isinstance(schema, dict):
        if "properties" in schema:
            found.append(schema)
        for value in schema.values():
            found += _objects(value)
    elif isinstance(schema, list):
        for value in schema:
            found += _objects(value)
    return found


def test_workflow_schema_describes_the_file() -> None:
    schema = json.loads(json.dumps(json_schema()))

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "flowprobe workflow"
    assert set(schema["properties"]) == {info.alias or name for name, info in Workflow.model_fields.items()}
    assert set(schema["required"]) == {"name", "schedule", "steps"}
    assert schema["additionalProperties"] is False
    objects = _objects(schema)
    assert len(objects) >= 10
    assert all(o["additionalProperties"] is False for o in objects)
    defs = schema["$defs"]
    for name in ("Step", "Request", "Expect", "Capture", "Schedule", "Predicate", "RetryPolicy", "AlertSettings"):
        assert defs[name]["additionalProperties"] is False, name
    # Keys are the YAML spelling, not the Python attribute names.
    assert "json" in defs["Request"]["properties"] and "json_" not in defs["Request"]["properties"]
    assert "json" in defs["Expect"]["properties"] and "json" in defs["Capture"]["properties"]


def test_schema_documents_durations_and_status_as_strings() -> None:
    schema = json_schema()

    timeout = schema["properties"]["timeout"]
    types = {branch["type"] for branch in timeout["anyOf"]}
    assert types == {"number", "string"}
    pattern = next(b["pattern"] for b in timeout["anyOf"] if b["type"] == "string")
    for text in ("500ms", "10s", "1m30s", "7d", "1h 30m", "10 seconds", "1x", "s"):
        matches = re.fullmatch(pattern, text) is not None
        try:
            parse_duration(text)
            parses = True
        except ValueError:
            parses = False
        assert matches == parses, text

    status = schema["$defs"]["Expect"]["properties"]["status"]
    assert status["default"] == "2xx"
    assert {b["type"] for b in status["anyOf"]} == {"integer", "string", "array"}
    # A check may be a bare value, meaning eq.
    check = schema["$defs"]["Expect"]["properties"]["json"]["additionalProperties"]
    assert {"$ref": "#/$defs/Predicate"} in check["anyOf"]


def test_environments_schema_describes_environments_yaml() -> None:
    schema = json.loads(json.dumps(environments_json_schema()))

    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "flowprobe environments"
    assert set(schema["properties"]) == {"environments", "circuit_breaker", "history"}
    assert schema["required"] == ["environments"]
    assert all(o["additionalProperties"] is False for o in _objects(schema))
    assert set(schema["$defs"]["Environment"]["properties"]) == {"base_url", "variables", "secrets"}


def _shipped_documents() -> list[tuple[str, Any]]:
    return [(p.name, yaml.safe_load(p.read_text(encoding="utf-8"))) for p in sorted(WORKFLOWS.glob("*.yaml"))]


def test_shipped_files_validate_against_the_schemas() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    workflow = jsonschema.Draft202012Validator(json_schema())
    environments = jsonschema.Draft202012Validator(environments_json_schema())
    jsonschema.Draft202012Validator.check_schema(workflow.schema)
    jsonschema.Draft202012Validator.check_schema(environments.schema)

    documents = _shipped_documents()
    assert len(documents) == 7
    for name, document in documents:
        validator = environments if name == "environments.yaml" else workflow
        assert list(validator.iter_errors(document)) == [], name


@pytest.mark.parametrize(
    "change",
    [
        {"owner": "ops"},
        {"timeout": "10 seconds"},
        {"schedule": {"every": "30s", "cron": "* * * * *"}},
        {"steps": [{"name": "x", "request": {"url": "u", "verb": "GET"}}]},
        {"steps": [{"name": "x", "request": {"url": "u"}, "expect": {"status": "abc"}}]},
        {"steps": [{"name": "x", "request": {"url": "u"}, "expect": {"json": {"$.a": {"eq": 1, "near": 2}}}}]},
    ],
)
def test_schema_rejects_what_the_loader_rejects(change: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    valid = {"name": "probe", "schedule": {"every": "30s"}, "steps": [{"name": "x", "request": {"url": "u"}}]}
    validator = jsonschema.Draft202012Validator(json_schema())
    document = {**valid, **change}

    assert validator.is_valid(valid)
    assert not validator.is_valid(document)
    with pytest.raises(ValidationError):
        Workflow.model_validate(document)
