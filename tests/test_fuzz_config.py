"""Property tests of the config loader: whatever the files hold, `load_config` returns a Config or raises ConfigError.

Three sources of input: arbitrary text as a workflow file, arbitrary YAML
documents (data dumped as YAML), and the shipped workflows and settings with
one random mutation each (a key dropped, a value replaced by another of any
type, an unknown key added). Anything else escaping the loader is a crash of
`flowprobe check` and of a reload.

YAML tags, anchors and aliases, and nesting are all in the arbitrary text:
collector/document.py refuses them as ConfigErrors.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.config import Config, ConfigError, load_config
from tests.helpers import REPO, WORKFLOWS, probe_environment

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
ENVIRONMENTS = (WORKFLOWS / "environments.yaml").read_text()
SHIPPED = {path.name: yaml.safe_load(path.read_text()) for path in sorted(WORKFLOWS.glob("*.yaml")) if path.name != "environments.yaml"}
SETTINGS_FILE = yaml.safe_load((REPO / "deploy" / "collector" / "flowprobe.yaml").read_text()) | {
    "api": {"public_reads": False, "rate_limit": {"rate": 5, "burst": 10, "exempt": ["10.0.0.0/8"]}, "cors_origins": ["https://a.example"]},
}
SECRETS = {"FLOWPROBE_WEBHOOK_TOKEN": "w" * 20, "FLOWPROBE_OPERATOR_TOKEN": "o" * 20, "FLOWPROBE_INFLUX_TOKEN": "i" * 20}

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
    st.sampled_from(["30s", "1m", "{{ base_url }}", "{{ secrets.PROBE_PASSWORD }}", "{{ nope }}", "{{ a.__class__ }}", "$.x", "$[", "2xx",
                     "GET", "prod", "health-check", "{env: X}", "*/5 * * * *", "http://127.0.0.1:1"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12) | st.sampled_from(
    ["name", "schedule", "steps", "request", "url", "expect", "capture", "every", "cron", "json", "status", "secrets", "env", "file"]),
    inner, max_size=5), max_leaves=20)
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=300)
YAML_TEXT = st.lists(st.sampled_from(["name: x\n", "steps:\n", "  - ", "{", "}", "[", "]", ": ", "\n", "  ", "- ", "'", '"', "#", "---\n",
                                      "? ", "|\n", ">\n", "%YAML 1.1\n", "\t", ",", "schedule: {every: 1s}\n", "<<: ", "a: 1\na: 2\n"]),
                     max_size=30).map("".join)


class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_NoAliases, allow_unicode=True, sort_keys=False)


@pytest.fixture(scope="module")
def environment() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**probe_environment(), **SECRETS}.items():
            patch.setenv(name, value)
        yield


@contextmanager
def config_dir(files: dict[str, str]) -> Iterator[Path]:
    """A temporary config directory holding `files`, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
    try:
        for name, text in files.items():
            (directory / name).write_text(text, encoding="utf-8")
        yield directory
    finally:
        shutil.rmtree(directory)


def load(files: dict[str, str]) -> Config | None:
    """Load a config directory holding `files`: a Config, or None for a ConfigError (anything else fails the test)."""
    with config_dir(files) as directory:
        try:
            return load_config(directory)
        except ConfigError as exc:
            assert exc.problems and all(str(p) for p in exc.problems)
            return None


@SETTINGS
@given(text=st.one_of(TEXT, YAML_TEXT))
def test_any_text_as_a_workflow_is_a_config_or_a_config_error(environment: None, text: str) -> None:
    load({"environments.yaml": ENVIRONMENTS, "fuzzed.yaml": text})


@SETTINGS
@given(text=st.one_of(TEXT, YAML_TEXT))
def test_any_text_as_the_environments_or_settings_file_is_a_config_or_a_config_error(environment: None, text: str) -> None:
    workflow = dump(SHIPPED["health-check.yaml"])
    load({"environments.yaml": text, "health-check.yaml": workflow})
    load({"environments.yaml": ENVIRONMENTS, "health-check.yaml": workflow, "flowprobe.yaml": text})


@SETTINGS
@given(data=VALUES)
def test_any_yaml_document_is_a_config_or_a_config_error(environment: None, data: Any) -> None:
    load({"environments.yaml": ENVIRONMENTS, "fuzzed.yaml": dump(data)})
    load({"environments.yaml": ENVIRONMENTS, "health-check.yaml": dump(SHIPPED["health-check.yaml"]), "flowprobe.yaml": dump(data)})


def paths(data: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path to a value inside `data`."""
    yield prefix
    if isinstance(data, dict):
        for key, value in data.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from paths(value, (*prefix, index))


def mutate(data: Any, rng: random.Random, replacement: Any, key: str) -> Any:
    """`data` with one change at a random place: a key dropped, a value replaced, or an unknown key added."""
    data = json.loads(json.dumps(data))
    where = rng.choice([p for p in paths(data) if p])
    parent = data
    for part in where[:-1]:
        parent = parent[part]
    last = where[-1]
    action = rng.choice(["drop", "replace", "add"])
    if action == "drop":
        del parent[last]
    elif action == "replace":
        parent[last] = replacement
    elif isinstance(parent[last], dict):
        parent[last][key] = replacement
    elif isinstance(parent, list):
        parent.insert(last, replacement)
    else:
        parent[key] = replacement
    return data


@SETTINGS
@given(name=st.sampled_from(sorted(SHIPPED)), seed=st.integers(0, 2**32), replacement=VALUES, key=st.text(max_size=12))
def test_a_mutated_shipped_workflow_is_a_config_or_a_config_error(environment: None, name: str, seed: int, replacement: Any, key: str) -> None:
    files = {"environments.yaml": ENVIRONMENTS, **{n: dump(d) for n, d in SHIPPED.items()}}
    files[name] = dump(mutate(SHIPPED[name], random.Random(seed), replacement, key))
    load(files)


@SETTINGS
@given(seed=st.integers(0, 2**32), replacement=VALUES, key=st.text(max_size=12), target=st.sampled_from(["flowprobe.yaml", "environments.yaml"]))
def test_mutated_settings_and_environments_are_a_config_or_a_config_error(
    environment: None, seed: int, replacement: Any, key: str, target: str
) -> None:
    files = {"environments.yaml": ENVIRONMENTS, "health-check.yaml": dump(SHIPPED["health-check.yaml"]), "flowprobe.yaml": dump(SETTINGS_FILE)}
    original = SETTINGS_FILE if target == "flowprobe.yaml" else yaml.safe_load(ENVIRONMENTS)
    files[target] = dump(mutate(original, random.Random(seed), replacement, key))
    load(files)


def test_the_unmutated_inputs_load(environment: None) -> None:
    """The starting points are valid, so a mutation is what makes a ConfigError."""
    config = load({"environments.yaml": ENVIRONMENTS, **{n: dump(d) for n, d in SHIPPED.items()}, "flowprobe.yaml": dump(SETTINGS_FILE)})
    assert config is not None and len(config.workflows) == 6 and not config.settings.api.public_reads


@pytest.mark.parametrize("exempt", [False, 5])
def test_a_network_that_is_not_text_is_a_config_error(environment: None, exempt: Any) -> None:
    """Found by the mutation test above: `exempt: [false]` crashed the loader (a DeprecationWarning inside ipaddress),
    and `exempt: [5]` was taken as 0.0.0.5/32."""
    settings_file = SETTINGS_FILE | {"api": {"rate_limit": {"exempt": ["10.0.0.0/8", exempt]}}}
    files = {"environments.yaml": ENVIRONMENTS, "health-check.yaml": dump(SHIPPED["health-check.yaml"]), "flowprobe.yaml": dump(settings_file)}
    with config_dir(files) as directory, pytest.raises(ConfigError) as caught:
        load_config(directory)
    message = "\n".join(str(p) for p in caught.value.problems)
    assert "exempt" in message and "address or network as text" in message, message
