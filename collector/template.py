"""``{{ name }}`` templates: parsed once at load, rendered per request.

The language is deliberately tiny: a dotted name (``base_url``, ``token``,
``secrets.PROBE_PASSWORD``) or a helper call (``uuid()``, ``random_string(8)``,
``now()``, ``timestamp()``). There are no expressions, filters or loops, so a
template cannot do anything a reviewer cannot see at a glance.

Captured values are data: they are substituted as text and never parsed as
templates again, so a response cannot inject ``{{ secrets.X }}``.

No code runs from a template: a name is looked up whole in a flat mapping
(``secrets.X`` is one key, not an attribute), nothing is ever called but the
four helpers, and names of the ``__dunder__`` kind are refused at parse time
so a Jinja-style ``{{ x.__class__.__mro__ }}`` fails with a clear error.
Every failure, at parse or at render time, is a TemplateError
(tests/test_fuzz_template.py holds the property).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import string
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["HELPERS", "Template", "TemplateError", "compile_value", "referenced_names", "render_value"]


class TemplateError(ValueError):
    """A template that cannot be parsed, or a name with no value at render time."""


_RANDOM_STRING_MAX = 256


def _random_string(rng: random.Random, n: int = 12) -> str:
    if not 1 <= n <= _RANDOM_STRING_MAX:
        raise TemplateError(f"random_string(n) needs 1 <= n <= {_RANDOM_STRING_MAX}")
    return "".join(rng.choices(string.ascii_lowercase + string.digits, k=n))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _now(rng: random.Random) -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _timestamp(rng: random.Random) -> int:
    return int(dt.datetime.now(dt.timezone.utc).timestamp())


# Helpers take the run's random generator first so tests can seed them.
HELPERS: dict[str, tuple[Callable[..., Any], int]] = {
    "uuid": (_uuid, 0),
    "random_string": (_random_string, 1),
    "now": (_now, 0),
    "timestamp": (_timestamp, 0),
}

# An expression holds no braces, so "{{ a }/x {{ b }}" is a stray "{{", not one odd expression.
_EXPR = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_CALL = re.compile(r"^([a-z_]+)\(\s*([0-9]*)\s*\)$")
_MAX_DIGITS = 9  # int() of a long run of digits is slow, and past 4300 digits a ValueError
_SHOWN = 80  # characters of an expression quoted in an error
_DUNDER = re.compile(r"(^|\.)__\w*__($|\.)")


@dataclass(frozen=True)
class _Ref:
    name: str


@dataclass(frozen=True)
class _Call:
    helper: str
    args: tuple[int, ...]


_Part = str | _Ref | _Call


@dataclass(frozen=True)
class Template:
    """A parsed template string."""

    parts: tuple[_Part, ...]

    @classmethod
    def parse(cls, text: str) -> Template:
        parts: list[_Part] = []
        pos = 0
        for match in _EXPR.finditer(text):
            if match.start() > pos:
                parts.append(_literal(text[pos : match.start()], text))
            parts.append(_parse_expr(match.group(1)))
            pos = match.end()
        if pos < len(text):
            parts.append(_literal(text[pos:], text))
        return cls(tuple(parts))

    @property
    def is_static(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    def names(self) -> Iterator[str]:
        for part in self.parts:
            if isinstance(part, _Ref):
                yield part.name

    def render(self, scope: Mapping[str, Any], rng: random.Random) -> Any:
        """Render; a template that is exactly one expression keeps the value's type."""
        if len(self.parts) == 1 and not isinstance(self.parts[0], str):
            return _evaluate(self.parts[0], scope, rng)
        out = []
        for part in self.parts:
            out.append(part if isinstance(part, str) else _text(_evaluate(part, scope, rng)))
        return "".join(out)


def _literal(segment: str, text: str) -> str:
    # A lone "}}" stays text, as in Jinja: a JSON body string such as '{"a":{"b":1}}' ends with one.
    if "{{" in segment:
        raise TemplateError(f"unclosed '{{{{' in {text!r}")
    return segment


def _signature(helper: str) -> str:
    return f"{helper}(n)" if HELPERS[helper][1] else f"{helper}()"


def _parse_expr(expr: str) -> _Ref | _Call:
    call = _CALL.match(expr)
    if call:
        helper, arg = call.group(1), call.group(2)
        if helper not in HELPERS:
            raise TemplateError(f"unknown helper {helper}() (known: {', '.join(_signature(h) for h in HELPERS)})")
        args = (int(arg) if len(arg) <= _MAX_DIGITS else 10**_MAX_DIGITS,) if arg else ()
        if len(args) > HELPERS[helper][1]:
            raise TemplateError(f"{helper}() takes no arguments")
        # Checked here so a bad length fails at load, not on every run.
        if helper == "random_string" and args and not 1 <= args[0] <= _RANDOM_STRING_MAX:
            raise TemplateError(f"random_string(n) needs 1 <= n <= {_RANDOM_STRING_MAX}")
        return _Call(helper, args)
    shown = expr if len(expr) <= _SHOWN else expr[: _SHOWN - 3] + "..."
    if _NAME.match(expr):
        if _DUNDER.search(expr):
            raise TemplateError(f"{{{{ {shown} }}}}: names like __class__ are not allowed; a template reads values, never attributes")
        return _Ref(expr)
    raise TemplateError(f"cannot parse {{{{ {shown} }}}}: use a name like {{{{ token }}}} or a helper like {{{{ uuid() }}}}")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        # A captured object spliced into text is JSON, not a Python repr.
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else str(value)


def _evaluate(part: _Ref | _Call, scope: Mapping[str, Any], rng: random.Random) -> Any:
    if isinstance(part, _Call):
        func, _ = HELPERS[part.helper]
        return func(rng, *part.args)
    if part.name not in scope:
        raise TemplateError(f"no value for {{{{ {part.name} }}}}")
    return scope[part.name]


# Values in a workflow are strings, lists and maps; templates live in the strings.
Compiled = Any


def compile_value(value: Any) -> Compiled:
    """Parse every string inside a value into a Template (static strings stay str)."""
    if isinstance(value, str):
        template = Template.parse(value)
        return value if template.is_static else template
    if isinstance(value, dict):
        return {k: compile_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compile_value(v) for v in value]
    return value


def render_value(value: Compiled, scope: Mapping[str, Any], rng: random.Random) -> Any:
    if isinstance(value, Template):
        return value.render(scope, rng)
    if isinstance(value, dict):
        return {k: render_value(v, scope, rng) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, scope, rng) for v in value]
    return value


def referenced_names(value: Compiled) -> Iterator[str]:
    if isinstance(value, Template):
        yield from value.names()
    elif isinstance(value, dict):
        for v in value.values():
            yield from referenced_names(v)
    elif isinstance(value, list):
        for v in value:
            yield from referenced_names(v)
