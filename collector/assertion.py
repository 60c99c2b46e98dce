"""Expectations and captures, evaluated against one response.

Both return data: a list of `CheckFailure` and the captured values. Nothing
here raises on a bad response; a body that is not JSON fails the JSON checks
that needed it, with a message that says so.
"""

from __future__ import annotations

import functools
import operator
import random
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from jsonpath import JSONPath, JSONPathEnvironment

from collector.config import Capture, Expect, Predicate
from collector.engine import Response
from collector.result import CheckFailure
from collector.template import TemplateError, compile_value, referenced_names, render_value

__all__ = ["capture", "check_expect", "evaluate_predicate", "expected_names"]

_JSONPATH = JSONPathEnvironment()
_MISSING = object()

# Masks secrets in a value before it is quoted into a message. It must run
# before `_short` cuts the text: half a secret can no longer be found.
Redact = Callable[[Any], Any]


def _unchanged(value: Any) -> Any:
    return value


# `$.a.b`: a chain of plain member names, the most common expectation. It is walked
# directly, as python-jsonpath's name selectors would (a member of an object, else no
# match), at a tenth of the cost of its general machinery.
_NAME_CHAIN = re.compile(r"\$(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


@functools.lru_cache(maxsize=4096)
def _path(expression: str) -> JSONPath | tuple[str, ...]:
    if _NAME_CHAIN.fullmatch(expression):
        return tuple(expression.split(".")[1:])
    return _JSONPATH.compile(expression)  # type: ignore[return-value]


@functools.lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _json_value(response: Response, expression: str) -> Any:
    """The single match, the list of matches for several, or _MISSING. Raises ValueError for non-JSON."""
    path = _path(expression)
    if isinstance(path, tuple):
        value = response.json()
        for name in path:
            if not isinstance(value, Mapping) or name not in value:
                return _MISSING
            value = value[name]
        return value
    matches = path.findall(response.json())
    if not matches:
        return _MISSING
    return matches[0] if len(matches) == 1 else matches


def _short(value: Any, redact: Redact, limit: int = 80) -> str:
    text = repr(redact(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


_COMPARE = {"lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge}


def _number(value: Any) -> float | None:
    """`value` as a number: ints, floats and numeric text (headers are text); never booleans."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _ordered(op: str, actual: Any, expected: Any) -> bool | None:
    """The comparison, or None when the two cannot be ordered.

    Numbers compare as numbers even when one side is text, so ``lt: "1000"``
    holds for a ``Content-Length: 512`` header; other text compares as text
    (ISO dates sort correctly that way).
    """
    left, right = _number(actual), _number(expected)
    if left is not None and right is not None:
        return bool(_COMPARE[op](left, right))
    if isinstance(actual, str) and isinstance(expected, str):
        return bool(_COMPARE[op](actual, expected))
    return None


# Keys whose expected values are rendered as templates. `matches` is not: a
# captured value spliced into a regex would be read as regex syntax.
_TEMPLATED = ("eq", "ne", "contains", "lt", "le", "gt", "ge")


@functools.lru_cache(maxsize=256)
def _checks(fields_set: frozenset[str]) -> tuple[str, ...]:
    """The predicate's checks in declaration order, not the set's: the first message
    becomes the run's message and must be stable."""
    return tuple(k for k in Predicate.model_fields if k in fields_set)


@functools.lru_cache(maxsize=4096)
def _compiled_text(text: str) -> Any:
    return compile_value(text)


def _compiled(expected: Any) -> Any:
    """An expected value with its templates parsed; texts are parsed once, not per check."""
    return _compiled_text(expected) if isinstance(expected, str) else compile_value(expected)


def evaluate_predicate(
    predicate: Predicate, actual: Any, scope: Mapping[str, Any], rng: random.Random, redact: Redact = _unchanged
) -> list[str]:
    """Messages for each check of `predicate` that `actual` fails (empty: all hold).

    `actual` is `_MISSING` when the value is absent. Expected values may be
    templates (``eq: "{{ user_id }}"``), rendered with the run's scope.
    """
    errors: list[str] = []
    present = actual is not _MISSING
    for key in _checks(frozenset(predicate.model_fields_set)):
        expected = getattr(predicate, key)
        if key in _TEMPLATED:
            try:
                expected = render_value(_compiled(expected), scope, rng)
            except TemplateError as exc:
                # A cleanup step's expectation can name a capture an earlier failure never made.
                errors.append(f"{key}: {exc}")
                continue
        if key == "exists":
            if present != expected:
                errors.append("expected to exist" if expected else f"expected not to exist, got {_short(actual, redact)}")
            continue
        if not present:
            errors.append(f"{key} {_short(expected, redact)}: value is missing")
            continue
        if key == "eq" and actual != expected:
            errors.append(f"expected {_short(expected, redact)}, got {_short(actual, redact)}")
        elif key == "ne" and actual == expected:
            errors.append(f"expected anything but {_short(expected, redact)}")
        elif key in ("lt", "le", "gt", "ge"):
            holds = _ordered(key, actual, expected)
            if holds is None:
                errors.append(f"cannot compare {_short(actual, redact)} with {_short(expected, redact)}")
            elif not holds:
                errors.append(f"expected {key} {_short(expected, redact)}, got {_short(actual, redact)}")
        elif key == "contains":
            if isinstance(actual, str):
                ok = isinstance(expected, str) and expected in actual
            elif isinstance(actual, list):
                ok = expected in actual
            elif isinstance(actual, dict):
                ok = expected in actual.keys()
            else:
                ok = False
            if not ok:
                errors.append(f"expected to contain {_short(expected, redact)}, got {_short(actual, redact)}")
        elif key == "matches":
            if not isinstance(actual, str) or _regex(expected).search(actual) is None:
                errors.append(f"expected to match /{expected}/, got {_short(actual, redact)}")
        elif key == "length":
            if not isinstance(actual, (str, list, dict)):
                errors.append(f"length: {_short(actual, redact)} has no length")
            elif isinstance(expected, int):
                if len(actual) != expected:
                    errors.append(f"expected length {expected}, got {len(actual)}")
            else:
                errors.extend(f"length: {m}" for m in evaluate_predicate(expected, len(actual), scope, rng, redact))
    return errors


def expected_names(expect: Expect) -> set[str]:
    """The names the expectations' templates need, so a step can be skipped before it is sent."""
    names: set[str] = set()
    pending = [*expect.headers.values(), *expect.json_.values(), *([expect.body] if expect.body is not None else [])]
    while pending:
        predicate = pending.pop()
        for key in _TEMPLATED:
            if key in predicate.model_fields_set:
                names.update(referenced_names(compile_value(getattr(predicate, key))))
        if isinstance(predicate.length, Predicate):
            pending.append(predicate.length)
    return names


def check_expect(
    expect: Expect,
    response: Response,
    scope: Mapping[str, Any],
    rng: random.Random,
    *,
    now: float | None = None,
    redact: Redact = _unchanged,
) -> list[CheckFailure]:
    failures: list[CheckFailure] = []
    if not any(lo <= response.status <= hi for lo, hi in expect.status):
        wanted = ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in expect.status)
        failures.append(CheckFailure("status", "status", f"expected status {wanted}, got {response.status}"))
    if expect.max_duration is not None and response.duration > expect.max_duration:
        failures.append(
            CheckFailure(
                "assertion",
                "max_duration",
                f"took {response.duration * 1000:.0f}ms, more than max_duration {expect.max_duration * 1000:.0f}ms",
            )
        )
    for name, predicate in expect.headers.items():
        value = response.headers.get(name.lower(), _MISSING)
        for message in evaluate_predicate(predicate, value, scope, rng, redact):
            failures.append(CheckFailure("assertion", f"headers.{name}", f"header {name}: {message}"))
    if expect.body is not None:
        for message in evaluate_predicate(expect.body, response.text, scope, rng, redact):
            failures.append(CheckFailure("assertion", "body", f"body: {message}"))
    for expression, predicate in expect.json_.items():
        try:
            value = _json_value(response, expression)
        except ValueError as exc:
            failures.append(CheckFailure("assertion", f"json {expression}", str(exc)))
            continue
        for message in evaluate_predicate(predicate, value, scope, rng, redact):
            failures.append(CheckFailure("assertion", f"json {expression}", f"{expression}: {message}"))
    if expect.tls_cert_valid_for is not None:
        if response.cert_not_after is None:
            failures.append(CheckFailure("tls", "tls_cert_valid_for", "no TLS certificate (is the URL https?)"))
        else:
            left = response.cert_not_after - (time.time() if now is None else now)
            if left < expect.tls_cert_valid_for:
                days = left / 86400
                failures.append(
                    CheckFailure(
                        "tls",
                        "tls_cert_valid_for",
                        f"certificate expires in {days:.1f} days, less than {expect.tls_cert_valid_for / 86400:.1f}",
                    )
                )
    return failures


def capture(captures: Mapping[str, Capture], response: Response) -> tuple[dict[str, Any], list[CheckFailure]]:
    """Values for each capture, and a failure for each that found nothing."""
    values: dict[str, Any] = {}
    failures: list[CheckFailure] = []
    for name, spec in captures.items():
        value: Any = _MISSING
        where = ""
        try:
            if spec.json_ is not None:
                where = f"json {spec.json_}"
                value = _json_value(response, spec.json_)
            elif spec.header is not None:
                where = f"header {spec.header}"
                value = response.headers.get(spec.header.lower(), _MISSING)
            elif spec.cookie is not None:
                where = f"cookie {spec.cookie}"
                value = response.cookies.get(spec.cookie, _MISSING)
            elif spec.regex is not None:
                where = f"regex /{spec.regex}/"
                match = _regex(spec.regex).search(response.text)
                if match:
                    value = match.group(1) if match.groups() else match.group(0)
            elif spec.status:
                where = "status"
                value = response.status
        except ValueError as exc:
            failures.append(CheckFailure("capture", f"capture {name}", f"capture {name}: {exc}"))
            continue
        if value is _MISSING or value is None:
            failures.append(CheckFailure("capture", f"capture {name}", f"capture {name}: {where} found nothing"))
        else:
            values[name] = value
    return values, failures
