"""Property tests of the template language: any text either renders or fails with TemplateError, nothing else.

Also: what a template is given as data (a captured value) comes out as it
went in, whatever template syntax it holds, and no parsed name reaches for
an attribute.
"""

from __future__ import annotations

import random
import string
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.template import HELPERS, Template, TemplateError, compile_value, referenced_names, render_value

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAMES = st.sampled_from(["base_url", "token", "secrets.KEY", "user_id", "a.b.c", "_x", "__class__", "x.__mro__", "x.__init__.__globals__"])
FRAGMENTS = st.one_of(
    st.sampled_from(["{{", "}}", "{", "}", " ", "(", ")", ".", "__", "{%", "%}", "'", '"', "[0]", "|", "+", "*"]),
    NAMES,
    st.sampled_from([f"{h}()" for h in HELPERS] + ["random_string(8)", "random_string(0)", "random_string(999999999999)", "uuid(1)",
                                                    "nope()", "random_string(" + "9" * 5000 + ")"]),
    st.text(max_size=8),
)
TEMPLATES = st.one_of(st.text(max_size=200), st.lists(FRAGMENTS, max_size=25).map("".join))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
SCOPES = st.dictionaries(st.sampled_from(["base_url", "token", "secrets.KEY", "user_id", "a.b.c", "_x"]), JSON, max_size=6)


@SETTINGS
@given(text=TEMPLATES, scope=SCOPES, seed=st.integers(0, 2**32))
def test_any_text_renders_or_fails_with_a_template_error(text: str, scope: dict[str, Any], seed: int) -> None:
    try:
        template = Template.parse(text)
    except TemplateError as exc:
        assert str(exc)
        return
    for name in template.names():
        assert not any(part.startswith("__") and part.endswith("__") for part in name.split("."))
    try:
        rendered = template.render(scope, random.Random(seed))
    except TemplateError as exc:
        assert str(exc).startswith("no value for {{ ")
        return
    if not (len(template.parts) == 1 and not isinstance(template.parts[0], str)):
        assert isinstance(rendered, str)


@SETTINGS
@given(value=st.text(max_size=100) | st.lists(FRAGMENTS, max_size=20).map("".join), prefix=st.text(string.ascii_letters, max_size=5))
def test_data_given_to_a_template_comes_out_as_it_went_in(value: str, prefix: str) -> None:
    """A captured value holding "{{ secrets.X }}" (or anything) is substituted as text, never parsed again."""
    rng = random.Random(0)
    scope = {"captured": value, "secrets.X": "the-secret"}
    assert Template.parse("{{ captured }}").render(scope, rng) == value
    assert Template.parse(prefix + "{{ captured }}/{{captured}}").render(scope, rng) == f"{prefix}{value}/{value}"


@SETTINGS
@given(data=st.recursive(TEMPLATES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                         max_leaves=8),
       scope=SCOPES)
def test_nested_values_compile_and_render_or_fail_with_a_template_error(data: Any, scope: dict[str, Any]) -> None:
    try:
        compiled = compile_value(data)
    except TemplateError:
        return
    names = list(referenced_names(compiled))
    try:
        render_value(compiled, scope, random.Random(0))
    except TemplateError as exc:
        assert any(f"{{{{ {name} }}}}" in str(exc) for name in names), exc
