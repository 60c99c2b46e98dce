"""YAML documents with line marks, and the located problems built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.document import ConfigError, Document, Problem, expand_environment, format_path, load_document

TEXT = """\
# a comment
name: order
schedule: {every: 60s}
steps:
  - name: login
    request:
      url: /login
  - name: order
    request: {url: /orders}
"""


def load(text: str) -> Document:
    return load_document("order.yaml", text)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return [str(p) for p in info.value.problems]


# ---------------------------------------------------------------- data and lines


def test_data_is_plain_python() -> None:
    doc = load(TEXT)
    assert doc.file == "order.yaml"
    assert doc.data == {
        "name": "order",
        "schedule": {"every": "60s"},
        "steps": [{"name": "login", "request": {"url": "/login"}}, {"name": "order", "request": {"url": "/orders"}}],
    }


def test_scalars_are_typed() -> None:
    doc = load("a: 1\nb: 1.5\nc: true\nd: null\ne: '1'\nf: 2xx\n")
    assert doc.data == {"a": 1, "b": 1.5, "c": True, "d": None, "e": "1", "f": "2xx"}


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("name",), 2),
        (("schedule",), 3),
        (("schedule", "every"), 3),
        (("steps",), 4),
        (("steps", 0), 5),
        (("steps", 0, "name"), 5),
        (("steps", 0, "request", "url"), 7),
        (("steps", 1), 8),
        (("steps", 1, "request", "url"), 9),
    ],
)
def test_every_key_and_item_has_its_line(path: tuple[str | int, ...], line: int) -> None:
    assert load(TEXT).line_of(path) == line


def test_a_missing_key_is_reported_on_its_parent() -> None:
    doc = load(TEXT)
    assert doc.line_of(("steps", 0, "request", "method")) == 6
    assert doc.line_of(("timeout",)) == 2  # the document starts at its first key
    assert doc.problem(("steps", 1, "expect"), "x") == Problem("order.yaml", 8, "steps[1].expect", "x")


def test_data_path_drops_validator_tags() -> None:
    doc = load(TEXT + "labels: {team: ops}\nvariables: {ids: [1]}\n")
    # Union members, function validators and [key] are not YAML paths.
    assert doc.data_path(("variables", "ids", "str")) == ("variables", "ids")
    assert doc.data_path(("steps", 1, "request", "function-after[_one(), Request]", "url")) == ("steps", 1, "request", "url")
    assert doc.data_path(("labels", "team", "[key]")) == ("labels", "team")
    assert doc.data_path(("steps", 7, "name")) == ("steps",)


def test_data_path_keeps_a_missing_key() -> None:
    doc = load(TEXT)
    assert doc.data_path(("steps", 0, "request", "method"), missing=True) == ("steps", 0, "request", "method")
    assert doc.data_path(("steps", 0, "request", "method")) == ("steps", 0, "request")


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), ""),
        (("name",), "name"),
        (("steps", 2, "expect", "status"), "steps[2].expect.status"),
        (("expect", "json", "$.token"), "expect.json.$.token"),
        ((0, "a"), "[0].a"),
    ],
)
def test_format_path(path: tuple[str | int, ...], text: str) -> None:
    assert format_path(path) == text


def test_problem_text() -> None:
    assert str(Problem("workflows/order.yaml", 14, "steps[2].expect.status", "bad")) == "workflows/order.yaml:14: steps[2].expect.status: bad"
    assert str(Problem("order.yaml", 3, "", "bad")) == "order.yaml:3: bad"
    assert str(Problem("order.yaml", None, "", "bad")) == "order.yaml: bad"
    error = ConfigError([Problem("a.yaml", 1, "x", "one"), Problem("b.yaml", 2, "", "two")])
    assert str(error) == "a.yaml:1: x: one\nb.yaml:2: two"


# ---------------------------------------------------------------- what plain safe_load would accept


def test_duplicate_keys_are_errors_with_both_lines() -> None:
    assert problems("name: a\nsteps: []\nname: b\n") == ["order.yaml:3: name: duplicate key (first on line 1)"]
    assert problems("schedule:\n  every: 1s\n  every: 2s\n") == ["order.yaml:3: schedule.every: duplicate key (first on line 2)"]


def test_every_duplicate_is_listed() -> None:
    assert problems("a: 1\na: 2\nb: {c: 1, c: 2}\n") == [
        "order.yaml:2: a: duplicate key (first on line 1)",
        "order.yaml:3: b.c: duplicate key (first on line 3)",
    ]


def test_merge_keys_are_rejected() -> None:
    assert problems("base: &b {x: 1}\nother:\n  <<: *b\n") == ["order.yaml:3: other: YAML merge keys (<<) are not supported"]


def test_keys_must_be_scalars() -> None:
    assert problems("? [a, b]\n: 1\n") == ["order.yaml:1: mapping keys must be scalars"]


def test_syntax_errors_carry_a_line() -> None:
    assert problems("name: a\nschedule: {every: 1s\nsteps: []\n") == ["order.yaml:3: invalid YAML: expected ',' or '}', but got ':'"]
    assert problems("name: a\n\tsteps: []\n") == ["order.yaml:2: invalid YAML: found character '\\t' that cannot start any token"]


def test_one_document_per_file() -> None:
    assert problems("name: a\n---\nname: b\n") == ["order.yaml:2: only one YAML document per file is allowed"]
    assert problems("---\nname: a\n---\nname: b\n") == ["order.yaml:3: only one YAML document per file is allowed"]
    assert load("---\nname: a\n").data == {"name": "a"}


def test_an_empty_file_has_no_data() -> None:
    assert load("").data is None
    assert load("# only a comment\n").data is None


def test_files_are_read_and_named_by_display(tmp_path: Path) -> None:
    path = tmp_path / "probe.yaml"
    path.write_text("name: probe\n", encoding="utf-8")
    assert load_document(path, display="workflows/probe.yaml").file == "workflows/probe.yaml"
    assert load_document(path).data == {"name": "probe"}


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_document(tmp_path / "missing.yaml", display="missing.yaml")
    assert [str(p) for p in info.value.problems] == ["missing.yaml: cannot read file: no such file or directory"]

    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_document(binary, display="binary.yaml")
    assert [str(p) for p in info.value.problems] == ["binary.yaml: file is not valid UTF-8"]


# ---------------------------------------------------------------- ${VAR} expansion


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("${URL}", "http://x"),
        ("${URL}/api", "http://x/api"),
        ("${MISSING:-http://default}", "http://default"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${MISSING:-}", ""),
        ("${URL:-unused}", "http://x"),
        ("${PORT}-${MISSING:-b}", "9-b"),
        ("$URL and $$ stay", "$URL and $$ stay"),
        ("no references", "no references"),
    ],
)
def test_expand_environment(text: str, expanded: str) -> None:
    environ = {"URL": "http://x", "PORT": "9", "EMPTY": ""}
    assert expand_environment(text, environ) == expanded


@pytest.mark.parametrize(("text", "name"), [("${MISSING}", "MISSING"), ("x-${EMPTY}", "EMPTY"), ("${SET}/${MISSING}", "MISSING")])
def test_an_unset_variable_without_default_names_itself(text: str, name: str) -> None:
    with pytest.raises(KeyError) as info:
        expand_environment(text, {"EMPTY": "", "SET": "x"})
    assert info.value.args == (name,)
