"""CONFIGURATION.md, METRICS.md and ALERTING.md against the code, so the user contract cannot drift.

The docs are read as data: reference tables marked ``<!-- keys: Model -->``,
the metric table marked ``<!-- metrics -->``, the bucket table marked
``<!-- buckets -->``, fenced ``yaml`` and ``promql`` blocks, and YAML blocks
whose first line names the file they quote (``# workflows/x.yaml``).
ALERTING.md is checked against the generated rules, alertmanager.yml and the
alert API's routes.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, cast

import pytest
import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from collector import cli, config
from collector.alert_api import alert_router
from collector.alerting import AlertService
from collector.config import AlertSettings, Workflow, load_config
from collector.engine import PHASES
from collector.metrics import State, new_registry
from collector.result import OUTCOMES, REASONS, CheckFailure, RunResult, StepResult
from collector.template import HELPERS

ROOT = Path(__file__).resolve().parent.parent
CONFIGURATION = ROOT / "CONFIGURATION.md"
METRICS = ROOT / "METRICS.md"
ALERTING = ROOT / "ALERTING.md"
WORKFLOWS = ROOT / "workflows"
RULES = ROOT / "provisioning" / "prometheus" / "rules" / "flowprobe.rules.yml"
ALERTMANAGER = ROOT / "alertmanager" / "alertmanager.yml"

# Reserved for the analytics worker; documented, not exported by the collector.
# What VictoriaMetrics calls the analytics worker's InfluxDB fields (analytics/influx.py), named in METRICS.md.
INFLUX_NAMES = {"flowprobe_prediction", "flowprobe_prediction_failure_probability", "flowprobe_anomaly_value"}
STATIC_LABELS = {"team": "x"}

# ---------------------------------------------------------------- reading the docs


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _blocks(text: str, lang: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"^```{lang}\n(.*?)^```", text, re.M | re.S)]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _table_at(lines: list[str], start: int) -> list[list[str]]:
    """The body rows of the Markdown table that starts at or after line `start`."""
    while start < len(lines) and not lines[start].startswith("|"):
        start += 1
    rows = []
    for line in lines[start + 2 :]:  # skip the header and the |---| line
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    return rows


def _marked_table(text: str, marker: str) -> list[list[str]]:
    lines = text.splitlines()
    found = [i for i, line in enumerate(lines) if line.strip() == f"<!-- {marker} -->"]
    assert len(found) == 1, f"expected one <!-- {marker} --> table, found {len(found)}"
    return _table_at(lines, found[0] + 1)


def _table_by_header(text: str, first_header: str) -> list[list[str]]:
    """Rows of every table whose first header cell is `first_header`."""
    lines = text.splitlines()
    rows: list[list[str]] = []
    for i, line in enumerate(lines):
        if line.startswith("|") and _cells(line)[0] == first_header and (i == 0 or not lines[i - 1].startswith("|")):
            rows += _table_at(lines, i)
    assert rows, f"no table headed {first_header!r}"
    return rows


def _code(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^(#+) {re.escape(heading)}\n(.*?)(?=^#{{1,3}} |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r}"
    return match.group(2)


# ---------------------------------------------------------------- what the collector exposes


def _state() -> State:
    """A pair with two runs (a flaky success and a failure), a skip, a breaker and lateness."""
    state = State()
    state.configure({("wf", "prod"): STATIC_LABELS})
    phases = {phase: 0.01 * (i + 1) for i, phase in enumerate(PHASES)}
    login = StepResult("login", "success", status=200, duration=0.12, phases=phases, attempts=1, cert_not_after=1_900_000_000.0)
    success = RunResult(
        "wf",
        "prod",
        "run-1",
        1_700_000_000.0,
        "success",
        duration=0.9,
        attempts=2,
        flaky=True,
        steps=[login, StepResult("place-order", "success", status=201, duration=0.3, phases=phases, attempts=1)],
    )
    failures = [
        CheckFailure("status", "status", "expected status 200-299, got 500"),
        CheckFailure("assertion", "json $.id", "$.id: expected to exist"),
    ]
    failure = RunResult(
        "wf",
        "prod",
        "run-2",
        1_700_000_060.0,
        "failure",
        duration=0.4,
        failed_step="place-order",
        reason="status",
        message=failures[0].message,
        steps=[
            login,
            StepResult("place-order", "failure", status=500, duration=0.2, phases=phases, failures=failures, attempts=1),
            StepResult("check-order", "skipped", message="skipped: an earlier step failed"),
            StepResult("cancel-order", "success", status=200, duration=0.05, phases=phases, attempts=1),
        ],
    )
    skipped = RunResult("wf", "prod", "skip-1", 1_700_000_120.0, "skipped", skip_reason="dependency", message="skipped: health-check is failing in prod")
    for result in (success, failure, skipped):
        state.record(result)
    state.lateness.observe(0.003)
    state.circuits = lambda: {"shop.example.com:443": "open"}
    state.internal_errors = lambda: 1
    state.sinks = lambda: {"influx": {"written": 5, "spooled": 1, "dropped": 0, "rejected": 0, "failed_writes": 1, "spool_points": 1}}
    return state


@pytest.fixture(scope="module")
def families() -> dict[str, Any]:
    return {family.name: family for family in new_registry(_state(), process=False).collect()}


def _exposed_name(family: Any) -> str:
    """The name a user queries: counters get _total."""
    return family.name + {"counter": "_total"}.get(family.type, "")


def _sample_names(families: dict[str, Any]) -> set[str]:
    return {sample.name for family in families.values() for sample in family.samples}


def _metric_rows() -> dict[str, list[str]]:
    rows = _marked_table(_text(METRICS), "metrics")
    table = {_code(row[0])[0]: row for row in rows}
    assert len(table) == len(rows), "a metric is listed twice"
    return table


# ---------------------------------------------------------------- METRICS.md


def test_every_exposed_series_name_is_documented(families: dict[str, Any]) -> None:
    text = _text(METRICS)
    for family in families.values():
        assert family.samples, f"the test state should give {family.name} samples"
        for name in {sample.name for sample in family.samples}:
            assert re.search(rf"(?<![\w:]){name}(?!\w)", text), f"{name} ({family.type}) is exposed but not in METRICS.md"


def test_every_documented_metric_name_is_exposed(families: dict[str, Any]) -> None:
    exposed = _sample_names(families) | {f.name for f in families.values() if f.type == "histogram"}
    mentioned = set(re.findall(r"(?<![\w:])flowprobe_[a-z0-9_]*[a-z0-9]", _text(METRICS)))
    unknown = sorted(mentioned - exposed - _worker_metrics() - INFLUX_NAMES)
    assert not unknown, f"METRICS.md names metrics neither the collector nor the analytics worker exposes: {unknown}"


def test_metric_table_lists_every_family_with_its_type(families: dict[str, Any]) -> None:
    table = _metric_rows()
    assert set(table) == {_exposed_name(f) for f in families.values()}
    for family in families.values():
        assert table[_exposed_name(family)][1] == family.type, f"{_exposed_name(family)} is a {family.type}"


def test_metric_table_labels_match_the_exposition(families: dict[str, Any]) -> None:
    table = _metric_rows()
    for family in families.values():
        name = _exposed_name(family)
        documented = set(_code(table[name][2]))
        exposed = {label for sample in family.samples for label in sample.labels} - {"le"}
        if name.endswith("_info") and "static labels" in table[name][2]:
            # The workflow's `labels:` keys come on top of the documented ones.
            assert set(STATIC_LABELS) <= exposed, name
            assert exposed - set(STATIC_LABELS) <= documented, name
        else:
            assert documented == exposed, f"{name}: documented {sorted(documented)}, exposed {sorted(exposed)}"


def test_workflow_info_carries_workflow_and_env(families: dict[str, Any]) -> None:
    (sample,) = families["flowprobe_workflow_info"].samples
    assert sample.labels == {"workflow": "wf", "env": "prod", **STATIC_LABELS}


def test_histogram_buckets_match(families: dict[str, Any]) -> None:
    documented = {_code(row[0])[0]: [float(b) for b in row[1].split(",")] for row in _marked_table(_text(METRICS), "buckets")}
    histograms = {f.name: f for f in families.values() if f.type == "histogram"}
    assert set(documented) == set(histograms)
    for name, family in histograms.items():
        first_series = next(s.labels for s in family.samples if s.name.endswith("_bucket"))
        bounds = [
            float(s.labels["le"])
            for s in family.samples
            if s.name.endswith("_bucket") and s.labels["le"] != "+Inf" and {**s.labels, "le": ""} == {**first_series, "le": ""}
        ]
        assert documented[name] == bounds, name


def test_no_created_series(families: dict[str, Any]) -> None:
    assert not [name for name in _sample_names(families) if name.endswith("_created")]
    assert "no `_created` series" in _text(METRICS)


@pytest.mark.parametrize(("label", "values"), [("result", OUTCOMES), ("reason", REASONS), ("phase", PHASES)])
def test_label_value_sets_match(label: str, values: tuple[str, ...]) -> None:
    text = _text(METRICS)
    labels = {_code(row[0])[0]: _code(row[1]) for row in _table_by_header(text, "Label") if _code(row[0])}
    assert set(labels[label]) == set(values), f"labels table, {label}"
    per_metric = [_code(row[0])[0] for row in _table_by_header(text, f"`{label}`")]
    assert sorted(per_metric) == sorted(values), f"the `{label}` table"


def test_process_metrics_are_documented() -> None:
    registry = new_registry(State(), process=True)
    process = {s.name for f in registry.collect() if f.name.startswith("process_") for s in f.samples}
    if not process:
        pytest.skip("process metrics are only exposed on Linux")
    documented = set(re.findall(r"(?<![\w:])process_[a-z0-9_]*[a-z0-9]", _text(METRICS)))
    assert documented == process


def _promql_expressions() -> Iterator[str]:
    for block in _blocks(_text(METRICS), "promql"):
        for chunk in re.split(r"\n\s*\n", block):
            lines = [line for line in chunk.splitlines() if line.strip() and not line.lstrip().startswith("#")]
            if lines:
                yield "\n".join(lines)


def test_promql_examples_parse(tmp_path: Path) -> None:
    expressions = list(_promql_expressions())
    assert len(expressions) >= 20
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (make test installs it)")
    rules = [
        {"record": f"docs:example_{i}:promql", "expr": expr.replace("$__rate_interval", "5m")} for i, expr in enumerate(expressions)
    ]
    path = tmp_path / "docs.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "metrics-md", "rules": rules}]}, sort_keys=False))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------- CONFIGURATION.md

MODELS = sorted(
    (
        obj
        for obj in vars(config).values()
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == config.__name__ and not obj.__name__.startswith("_")
    ),
    key=lambda model: model.__name__,
)


def _key(name: str, info: FieldInfo) -> str:
    return info.alias or name


def _key_rows(model: type[BaseModel]) -> dict[str, list[str]]:
    rows = _marked_table(_text(CONFIGURATION), f"keys: {model.__name__}")
    table = {_code(row[0])[0]: row for row in rows}
    assert len(table) == len(rows), f"{model.__name__}: a key is listed twice"
    return table


def test_every_config_model_is_checked() -> None:
    names = {model.__name__ for model in MODELS}
    assert {"Workflow", "Step", "Request", "TLSOptions", "Capture", "Expect", "Predicate", "Schedule", "RetryPolicy"} <= names
    assert {"AlertSettings", "SecretRef", "Environment", "EnvironmentsFile", "CircuitBreakerSettings", "HistorySettings"} <= names


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_every_key_is_documented(model: type[BaseModel]) -> None:
    keys = {_key(name, info) for name, info in model.model_fields.items()}
    documented = set(_key_rows(model))
    assert documented == keys, f"{model.__name__}: missing {sorted(keys - documented)}, not keys {sorted(documented - keys)}"


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_documented_defaults_match(model: type[BaseModel]) -> None:
    rows = _key_rows(model)
    for name, info in model.model_fields.items():
        key = _key(name, info)
        cell = rows[key][2]
        if info.is_required():
            assert cell == "required", f"{model.__name__}.{key} is required"
            continue
        assert cell != "required", f"{model.__name__}.{key} is optional"
        default = info.get_default(call_default_factory=True)
        literal = re.fullmatch(r"`([^`]*)`", cell)
        if literal is None:
            assert default is None or isinstance(default, (BaseModel, tuple)), f"{model.__name__}.{key}: write the default {default!r} as `value`"
            continue
        annotation = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        documented = TypeAdapter(annotation).validate_python(yaml.safe_load(literal.group(1)))
        assert documented == default, f"{model.__name__}.{key}: documented {literal.group(1)}, default {default!r}"


def _yaml_blocks() -> list[str]:
    return _blocks(_text(CONFIGURATION), "yaml")


def _complete_workflows() -> list[dict[str, Any]]:
    out = []
    for block in _yaml_blocks():
        data = yaml.safe_load(block)
        if isinstance(data, dict) and {"name", "schedule", "steps"} <= data.keys():
            out.append(data)
    return out


def test_complete_workflow_examples_validate() -> None:
    examples = _complete_workflows()
    assert len(examples) >= 3
    for data in examples:
        Workflow.model_validate(data)


def test_complete_workflow_examples_load_with_the_shipped_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond the schema: templates, dependencies and environments, next to the six real workflows."""
    shutil.copytree(WORKFLOWS, tmp_path, dirs_exist_ok=True)
    by_name = {yaml.safe_load(path.read_text())["name"]: path for path in tmp_path.glob("*.yaml") if path.name != "environments.yaml"}
    examples = _complete_workflows()
    assert len({data["name"] for data in examples}) == len(examples), "complete examples need distinct names"
    for index, data in enumerate(examples):
        target = by_name.get(data["name"], tmp_path / f"docs-example-{index}.yaml")
        target.write_text(yaml.safe_dump(data, sort_keys=False))
    env_file = yaml.safe_load((tmp_path / "environments.yaml").read_text())
    refs = [ref for env in env_file["environments"].values() for ref in env.get("secrets", {}).values()]
    refs += [ref for data in examples for ref in data.get("secrets", {}).values()]
    for ref in refs:
        monkeypatch.setenv(ref["env"], f"docs-test-{ref['env'].lower()}")
    loaded = load_config(tmp_path)
    assert {data["name"] for data in examples} <= set(loaded.workflows)


def _normalised(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        line = re.sub(r"\s+#\s.*$", "", line).rstrip()
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(line)
    return out


def test_quoted_examples_match_the_shipped_files() -> None:
    quoted = 0
    for block in _yaml_blocks():
        first, _, rest = block.partition("\n")
        source = re.fullmatch(r"# (workflows/[\w.-]+\.ya?ml)", first)
        if source is None:
            continue
        quoted += 1
        wanted = _normalised(rest.splitlines())
        have = _normalised((ROOT / source.group(1)).read_text().splitlines())
        assert any(have[i : i + len(wanted)] == wanted for i in range(len(have) - len(wanted) + 1)), (
            f"the block quoting {source.group(1)} is not in that file:\n{rest}"
        )
    assert quoted >= 8


def test_template_helpers_match() -> None:
    documented = set(re.findall(r"\{\{ (\w+)\(", _section(_text(CONFIGURATION), "Templates")))
    assert documented == set(HELPERS)


def test_results_and_reasons_match() -> None:
    text = _text(CONFIGURATION)
    assert {_code(row[0])[0] for row in _table_by_header(text, "Result")} == set(OUTCOMES)
    assert {_code(row[0])[0] for row in _table_by_header(text, "Reason")} == set(REASONS)


def _subcommands() -> dict[str, Any]:
    parser = cli._parser()
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return dict(action.choices)


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_command_line_flags_match(command: str) -> None:
    section = _section(_text(CONFIGURATION), f"flowprobe {command}")
    rows = _table_by_header(section, "Flag") if "| Flag |" in section else _table_by_header(section, "Argument")
    documented = [_code(row[0])[0].split()[0] for row in rows]
    parser = _subcommands()[command]
    # A command with one nested action (grafana push) documents that action's flags.
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if nested and len(nested[0].choices) == 1:
        parser = next(iter(nested[0].choices.values()))
    flags = {opt for a in parser._actions for opt in a.option_strings if opt not in ("-h", "--help")}
    positionals = [a for a in parser._actions if not a.option_strings]
    assert {d for d in documented if d.startswith("--")} == flags
    assert len([d for d in documented if not d.startswith("--")]) == len(positionals)


# ---------------------------------------------------------------- ALERTING.md


def _fenced(text: str, lang: str) -> list[str]:
    """Fenced blocks, also those indented inside list items, without the fence's indent."""
    blocks = []
    for match in re.finditer(rf"^([ \t]*)```{lang}\n(.*?)^\1```", text, re.M | re.S):
        indent = match.group(1)
        blocks.append("".join(line.removeprefix(indent) for line in match.group(2).splitlines(keepends=True)))
    return blocks


def _quoted_source(block: str) -> Path | None:
    """The repo file a YAML block quotes, named on its first line (``# alertmanager/alertmanager.yml``)."""
    first = block.partition("\n")[0]
    match = re.fullmatch(r"# ([\w./-]+\.ya?ml)", first)
    if match is None or not (ROOT / match.group(1)).is_file():
        return None
    return ROOT / match.group(1)


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(_text(RULES))["groups"] for rule in group["rules"]]


def _mentions(text: str, name: str) -> bool:
    return re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", text) is not None


def test_every_generated_alert_is_in_alerting_md() -> None:
    text = _text(ALERTING)
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert alerts, f"no alerting rules in {RULES}"
    missing = sorted(name for name in alerts if not _mentions(text, name))
    assert not missing, f"alerts in {RULES.name} that ALERTING.md does not describe: {missing}"
    invented = sorted(set(re.findall(r"\bFlowprobe[A-Z][A-Za-z]+\b", text)) - alerts)
    assert not invented, f"ALERTING.md names alerts that the rules do not have: {invented}"


def test_every_recording_rule_is_documented() -> None:
    texts = {path.name: _text(path) for path in (ALERTING, METRICS)}
    records = {rule["record"] for rule in _rules() if "record" in rule}
    assert records, f"no recording rules in {RULES}"
    missing = sorted(name for name in records if not any(_mentions(text, name) for text in texts.values()))
    assert not missing, f"recording rules in neither ALERTING.md nor METRICS.md: {missing}"
    for name, text in texts.items():
        invented = sorted(set(re.findall(r"\b[a-z_]+:flowprobe_[a-z0-9_]+:[a-z0-9_]+", text)) - records)
        assert not invented, f"{name} names recording rules that the rules file does not have: {invented}"


def test_every_receiver_is_in_alerting_md() -> None:
    text = _text(ALERTING)
    receivers = [receiver["name"] for receiver in yaml.safe_load(_text(ALERTMANAGER))["receivers"]]
    assert receivers
    missing = [name for name in receivers if not _mentions(text, name)]
    assert not missing, f"receivers of alertmanager.yml that ALERTING.md does not name: {missing}"


@pytest.mark.parametrize("section", ["route", "inhibit_rules", "time_intervals"])
def test_alerting_md_shows_the_whole_section_of_alertmanager_yml(section: str) -> None:
    """The route tree, every inhibition rule and the maintenance windows are shown in full, not in part."""
    shown = []
    for block in _fenced(_text(ALERTING), "yaml"):
        if _quoted_source(block) == ALERTMANAGER:
            data = yaml.safe_load(block)
            if isinstance(data, dict) and section in data:
                shown.append(data[section])
    assert len(shown) == 1, f"ALERTING.md should quote alertmanager.yml's {section} once, found {len(shown)}"
    assert shown[0] == yaml.safe_load(_text(ALERTMANAGER))[section]


def _alert_api_routes() -> list[tuple[str, str]]:
    # Building the router touches neither the service nor the tokens: no store, no app.
    router = alert_router(cast(AlertService, None), lambda: {})
    return sorted((method, route.path) for route in router.routes for method in getattr(route, "methods", ()))


def test_every_alert_api_path_is_in_alerting_md() -> None:
    text = _text(ALERTING)
    routes = _alert_api_routes()
    assert len(routes) >= 5
    missing = [f"{method} {path}" for method, path in routes if f"`{method} {path}`" not in text]
    assert not missing, f"alert API routes that ALERTING.md does not list: {missing}"


def test_alert_examples_validate() -> None:
    examples = 0
    for block in _fenced(_text(ALERTING), "yaml"):
        try:
            data = yaml.safe_load(block)
        except yaml.YAMLError:
            if _quoted_source(block) is not None:
                continue  # a part of a file may not parse on its own
            raise
        if isinstance(data, dict) and isinstance(data.get("alert"), dict):
            AlertSettings.model_validate(data["alert"])
            examples += 1
    assert examples >= 3


def test_alerting_md_quotes_are_in_their_files() -> None:
    quoted = 0
    for block in _fenced(_text(ALERTING), "yaml"):
        source = _quoted_source(block)
        if source is None:
            continue
        quoted += 1
        wanted = _normalised(block.partition("\n")[2].splitlines())
        have = _normalised(source.read_text(encoding="utf-8").splitlines())
        assert wanted, f"an empty quote of {source.name}"
        assert any(have[i : i + len(wanted)] == wanted for i in range(len(have) - len(wanted) + 1)), (
            f"the block quoting {source.relative_to(ROOT)} is not in that file:\n{block}"
        )
    assert quoted >= 10


def _worker_metrics() -> set[str]:
    """Every series name the analytics worker exposes, from its real renderer."""
    from analytics.emit import render
    from analytics.findings import Findings
    from analytics.worker import Worker

    class Source:
        name = "history"

        async def read(self) -> list[Any]:
            return []

        def resume(self, after: float) -> None:
            pass

    worker = Worker(Source(), lambda: None, findings=Findings.default())  # type: ignore[arg-type, return-value]
    worker.last_run = 1.0
    text = render(worker)
    return set(re.findall(r"^# TYPE (\S+)", text, re.M))


def test_the_worker_metrics_table_matches_what_the_worker_exposes() -> None:
    rows = _marked_table(_text(METRICS), "worker-metrics")
    documented = {_code(row[0])[0] for row in rows}
    assert documented == _worker_metrics()
