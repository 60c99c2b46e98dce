"""Templates: parsed once, rendered per request, with seeded helpers."""

from __future__ import annotations

import datetime as dt
import random
import re
import time
import uuid
from typing import Any

import pytest

from collector.template import HELPERS, Template, TemplateError, compile_value, referenced_names, render_value
from collector.template import _Call, _Ref

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def render(text: str, scope: dict[str, Any] | None = None, seed: int = 0) -> Any:
    return Template.parse(text).render(scope or {}, random.Random(seed))


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("plain text", ("plain text",)),
        ("", ()),
        ("{{ token }}", (_Ref("token"),)),
        ("{{token}}", (_Ref("token"),)),
        ("Bearer {{ token }}", ("Bearer ", _Ref("token"))),
        ("{{ base_url }}/users/{{ user_id }}?x=1", (_Ref("base_url"), "/users/", _Ref("user_id"), "?x=1")),
        ("{{ secrets.PROBE_PASSWORD }}", (_Ref("secrets.PROBE_PASSWORD"),)),
        ("id-{{ uuid() }}", ("id-", _Call("uuid", ()))),
        ("{{ random_string(8) }}", (_Call("random_string", (8,)),)),
        ("{{ random_string( 8 ) }}", (_Call("random_string", (8,)),)),
        ("{{ random_string() }}", (_Call("random_string", ()),)),
        # A lone }} is text: JSON written as a string ends with one.
        ('{"a":{"b":1}}', ('{"a":{"b":1}}',)),
        ("{single} braces", ("{single} braces",)),
    ],
)
def test_parse(text: str, parts: tuple[Any, ...]) -> None:
    template = Template.parse(text)
    assert template.parts == parts
    assert template.is_static == all(isinstance(p, str) for p in parts)


def test_names_lists_references_not_helpers() -> None:
    template = Template.parse("{{ base_url }}/{{ uuid() }}/{{ secrets.KEY }}/{{ base_url }}")
    assert list(template.names()) == ["base_url", "secrets.KEY", "base_url"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{ base_url }/health", "unclosed '{{' in '{{ base_url }/health'"),
        ("{{ a }/x {{ b }}", "unclosed '{{' in '{{ a }/x {{ b }}'"),
        ("trailing {{", "unclosed '{{' in 'trailing {{'"),
        ("{{ base_url + 1 }}", "cannot parse {{ base_url + 1 }}: use a name like {{ token }} or a helper like {{ uuid() }}"),
        ("{{ }}", "cannot parse {{  }}: use a name like {{ token }} or a helper like {{ uuid() }}"),
        ("{{ 1abc }}", "cannot parse {{ 1abc }}: use a name like {{ token }} or a helper like {{ uuid() }}"),
        ("{{ random_int(5) }}", "unknown helper random_int() (known: uuid(), random_string(n), now(), timestamp())"),
        ("{{ uuid(4) }}", "uuid() takes no arguments"),
        ("{{ random_string(0) }}", "random_string(n) needs 1 <= n <= 256"),
        ("{{ random_string(257) }}", "random_string(n) needs 1 <= n <= 256"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as info:
        Template.parse(text)
    assert str(info.value) == message


# ---------------------------------------------------------------- rendering


@pytest.mark.parametrize("value", [42, 1.5, True, None, [1, "a"], {"id": 7}, "text"])
def test_a_single_expression_keeps_its_type(value: Any) -> None:
    assert render("{{ value }}", {"value": value}) == value
    assert type(render("{{ value }}", {"value": value})) is type(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (42, "id=42"),
        (1.5, "id=1.5"),
        (True, "id=true"),
        (False, "id=false"),
        (None, "id="),
        ([1, "a"], 'id=[1,"a"]'),
        ({"id": 7}, 'id={"id":7}'),
    ],
)
def test_mixed_text_becomes_a_string(value: Any, text: str) -> None:
    assert render("id={{ value }}", {"value": value}) == text


def test_render_joins_text_and_values() -> None:
    scope = {"base_url": "http://127.0.0.1:8080", "user_id": 7, "secrets.KEY": "k-1"}
    assert render("{{ base_url }}/users/{{ user_id }}?key={{ secrets.KEY }}", scope) == "http://127.0.0.1:8080/users/7?key=k-1"


def test_a_missing_name_fails_at_render() -> None:
    with pytest.raises(TemplateError) as info:
        render("Bearer {{ token }}", {"other": 1})
    assert str(info.value) == "no value for {{ token }}"


def test_captured_values_are_never_rendered_again() -> None:
    # A response could try to smuggle a template in; it must stay text.
    scope = {"token": "{{ secrets.KEY }}", "secrets.KEY": "k-1", "name": "{{ uuid() }}"}
    assert render("Bearer {{ token }}", scope) == "Bearer {{ secrets.KEY }}"
    assert render("{{ name }}", scope) == "{{ uuid() }}"
    compiled = compile_value({"headers": {"Authorization": "Bearer {{ token }}"}, "json": ["{{ name }}"]})
    assert render_value(compiled, scope, random.Random(0)) == {
        "headers": {"Authorization": "Bearer {{ secrets.KEY }}"},
        "json": ["{{ uuid() }}"],
    }


# ---------------------------------------------------------------- helpers


def test_helpers_are_reproducible_with_a_seed() -> None:
    text = "{{ uuid() }} {{ random_string(10) }} {{ random_string() }}"
    first, second, other = render(text, seed=7), render(text, seed=7), render(text, seed=8)
    assert first == second
    assert first != other


def test_uuid_is_a_version_4_uuid() -> None:
    values = {render("{{ uuid() }}", seed=seed) for seed in range(20)}
    assert len(values) == 20
    for value in values:
        assert UUID4.match(value), value
        assert uuid.UUID(value).version == 4


@pytest.mark.parametrize(("text", "length"), [("{{ random_string(1) }}", 1), ("{{ random_string(10) }}", 10), ("{{ random_string() }}", 12), ("{{ random_string(256) }}", 256)])
def test_random_string_length_and_alphabet(text: str, length: int) -> None:
    value = render(text, seed=3)
    assert len(value) == length
    assert re.fullmatch(r"[a-z0-9]+", value)


def test_now_is_utc_iso_with_milliseconds() -> None:
    before = dt.datetime.now(dt.timezone.utc)
    value = render("{{ now() }}")
    after = dt.datetime.now(dt.timezone.utc)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", value)
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert before - dt.timedelta(milliseconds=1) <= parsed <= after


def test_timestamp_is_unix_seconds() -> None:
    before = int(time.time())
    value = render("{{ timestamp() }}")
    assert isinstance(value, int)
    assert before <= value <= int(time.time())


def test_every_helper_is_documented_in_the_unknown_helper_message() -> None:
    with pytest.raises(TemplateError) as info:
        Template.parse("{{ nope() }}")
    for helper in HELPERS:
        assert f"{helper}(" in str(info.value)


# ---------------------------------------------------------------- values


def test_compile_value_parses_strings_inside_structures() -> None:
    compiled = compile_value({"url": "{{ base_url }}/x", "static": "plain", "n": 3, "items": ["{{ a }}", True]})
    assert isinstance(compiled["url"], Template)
    assert compiled["static"] == "plain"
    assert compiled["n"] == 3
    assert isinstance(compiled["items"][0], Template) and compiled["items"][1] is True
    assert sorted(referenced_names(compiled)) == ["a", "base_url"]


def test_render_value_renders_nested_templates() -> None:
    compiled = compile_value({"q": {"limit": "{{ limit }}", "tag": "t-{{ limit }}"}, "ids": ["{{ ids }}"]})
    rendered = render_value(compiled, {"limit": 5, "ids": [1, 2]}, random.Random(0))
    assert rendered == {"q": {"limit": 5, "tag": "t-5"}, "ids": [[1, 2]]}


def test_compile_value_reports_parse_errors() -> None:
    with pytest.raises(TemplateError):
        compile_value({"headers": {"X": "{{ broken"}})
