"""Expectations and captures against hand-built responses: no engine, no sockets."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from collector.assertion import capture, check_expect, evaluate_predicate, expected_names
from collector.config import Capture, Expect, Predicate
from collector.engine import PHASES, Response
from collector.secret import Redactor

RNG = random.Random(0)


def response(
    body: Any = b"",
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    duration: float = 0.01,
) -> Response:
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    return Response(
        status=status,
        headers=headers or {},
        body=body,
        cookies=cookies or {},
        duration=duration,
        phases=dict.fromkeys(PHASES, 0.0),
    )


def expect(**spec: Any) -> Expect:
    return Expect.model_validate(spec)


def failures_of(spec: dict[str, Any], resp: Response, scope: dict[str, Any] | None = None) -> list[tuple[str, str, str]]:
    return [(f.reason, f.check, f.message) for f in check_expect(expect(**spec), resp, scope or {}, RNG)]


def check(spec: Any) -> Predicate:
    """A check as the config reads one, shorthand included."""
    predicate = expect(body=spec).body
    assert predicate is not None
    return predicate


def holds(predicate: Any, actual: Any, scope: dict[str, Any] | None = None) -> bool:
    return evaluate_predicate(check(predicate), actual, scope or {}, RNG) == []


# ---------------------------------------------------------------- status


@pytest.mark.parametrize(
    ("status_spec", "passing", "failing"),
    [
        (200, [200], [201, 404]),
        ([200, 204], [200, 204], [201, 500]),
        ("2xx", [200, 299], [199, 300]),
        ("200-201", [200, 201], [202, 302]),
        (["2xx", 404], [250, 404], [403, 500]),
    ],
)
def test_status_forms(status_spec: Any, passing: list[int], failing: list[int]) -> None:
    for code in passing:
        assert failures_of({"status": status_spec}, response(status=code)) == []
    for code in failing:
        (failure,) = failures_of({"status": status_spec}, response(status=code))
        assert failure[0] == "status"
        assert failure[2].endswith(f"got {code}")


def test_status_message_lists_what_was_wanted() -> None:
    assert failures_of({"status": ["2xx", 404]}, response(status=500)) == [
        ("status", "status", "expected status 200-299, 404, got 500")
    ]


def test_default_status_is_2xx() -> None:
    assert failures_of({}, response(status=204)) == []
    assert failures_of({}, response(status=302))[0][0] == "status"


# ---------------------------------------------------------------- JSON predicates


@pytest.mark.parametrize(
    ("predicate", "actual", "expected"),
    [
        ({"eq": 3}, 3, True),
        ({"eq": 3}, 4, False),
        ("created", "created", True),  # shorthand for eq
        ({"eq": None}, None, True),
        ({"ne": "x"}, "y", True),
        ({"ne": "x"}, "x", False),
        ({"lt": 5}, 4, True),
        ({"lt": 5}, 5, False),
        ({"le": 5}, 5, True),
        ({"le": 5}, 5.5, False),
        ({"gt": 1.5}, 2, True),
        ({"gt": 2}, 2, False),
        ({"ge": 2}, 2, True),
        ({"ge": 2}, 1, False),
        ({"lt": "b"}, "a", True),  # strings compare as strings (ISO dates sort this way)
        ({"lt": "2024-02-01"}, "2024-03-01", False),
        ({"lt": 1000}, "512", True),  # a header is text: numeric text compares as a number
        ({"lt": "1000"}, "512", True),
        ({"lt": "1000"}, 512, True),
        ({"gt": 1}, True, False),  # booleans are not numbers
        ({"gt": 1}, [2], False),
        ({"contains": "ell"}, "hello", True),
        ({"contains": "xyz"}, "hello", False),
        ({"contains": 2}, [1, 2, 3], True),
        ({"contains": 4}, [1, 2, 3], False),
        ({"contains": {"id": 1}}, [{"id": 1}, {"id": 2}], True),
        ({"contains": "id"}, {"id": 1}, True),
        ({"contains": 1}, 12, False),
        ({"matches": r"^ord-\d+$"}, "ord-42", True),
        ({"matches": r"^ord-\d+$"}, "ord-x", False),
        ({"matches": r"\d"}, 5, False),  # only text matches a regex
        ({"length": 3}, [1, 2, 3], True),
        ({"length": 3}, "abcd", False),
        ({"length": 0}, {}, True),
        ({"length": {"ge": 2, "lt": 4}}, [1, 2, 3], True),
        ({"length": {"ge": 2}}, [1], False),
        ({"length": 1}, 7, False),
        ({"gt": 0, "lt": 10}, 5, True),  # every key must hold
        ({"gt": 0, "lt": 10}, 11, False),
    ],
)
def test_predicate(predicate: Any, actual: Any, expected: bool) -> None:
    assert holds(predicate, actual) is expected


def test_exists_true_and_false() -> None:
    body = {"a": 1, "b": None}
    assert failures_of({"json": {"$.a": {"exists": True}, "$.zz": {"exists": False}}}, response(body)) == []
    assert failures_of({"json": {"$.zz": {"exists": True}}}, response(body)) == [
        ("assertion", "json $.zz", "$.zz: expected to exist")
    ]
    assert failures_of({"json": {"$.a": {"exists": False}}}, response(body)) == [
        ("assertion", "json $.a", "$.a: expected not to exist, got 1")
    ]


def test_messages_come_in_declaration_order() -> None:
    # The first message becomes the run's message: it must not depend on set order.
    assert evaluate_predicate(check({"gt": 10, "lt": 0, "eq": 1}), 5, {}, RNG) == [
        "expected 1, got 5",
        "expected lt 0.0, got 5",
        "expected gt 10.0, got 5",
    ]


def test_missing_value_fails_every_other_predicate() -> None:
    (failure,) = failures_of({"json": {"$.nope": {"eq": 1}}}, response({"a": 1}))
    assert failure == ("assertion", "json $.nope", "$.nope: eq 1: value is missing")


def test_json_path_with_several_matches_gives_the_list() -> None:
    body = {"items": [{"id": 1}, {"id": 2}]}
    assert failures_of({"json": {"$.items[*].id": {"eq": [1, 2]}, "$.items": {"length": 2}}}, response(body)) == []


def test_failure_messages_say_what_was_seen() -> None:
    failures = failures_of(
        {"json": {"$.n": {"lt": 3}, "$.s": {"matches": "^a"}, "$.l": {"length": {"gt": 5}}}},
        response({"n": 7, "s": "bcd", "l": [1]}),
    )
    assert failures == [
        ("assertion", "json $.n", "$.n: expected lt 3.0, got 7"),
        ("assertion", "json $.s", "$.s: expected to match /^a/, got 'bcd'"),
        ("assertion", "json $.l", "$.l: length: expected gt 5.0, got 1"),
    ]


def test_predicate_values_are_templates() -> None:
    scope = {"user_id": 42, "name": "ann", "limit": "10"}
    resp = response({"owner": 42, "tags": ["ann"], "who": "user ann", "count": 3})
    spec = {
        "json": {
            "$.owner": {"eq": "{{ user_id }}"},  # one expression keeps the int
            "$.tags": {"contains": "{{ name }}"},
            "$.who": {"eq": "user {{ name }}"},
            "$.count": {"lt": "{{ limit }}", "ne": "{{ user_id }}"},
        }
    }
    assert failures_of(spec, resp, scope) == []
    (failure,) = failures_of({"json": {"$.owner": {"eq": "{{ user_id }}"}}}, resp, {"user_id": 7})
    assert failure[2] == "$.owner: expected 7, got 42"


def test_a_template_naming_a_missing_value_fails_instead_of_raising() -> None:
    (failure,) = failures_of({"json": {"$.owner": {"eq": "{{ user_id }}"}}}, response({"owner": 1}))
    assert failure[0] == "assertion"
    assert "user_id" in failure[2]


def test_non_json_body_fails_json_checks_clearly() -> None:
    failures = failures_of({"json": {"$.a": 1, "$.b": {"exists": False}}}, response(b"<html>oops</html>"))
    assert [f[:2] for f in failures] == [("assertion", "json $.a"), ("assertion", "json $.b")]
    assert all(f[2].startswith("body is not JSON") for f in failures)


def test_status_and_json_failures_are_all_reported_status_first() -> None:
    failures = failures_of({"status": 200, "json": {"$.ok": True}}, response({"ok": False}, status=500))
    assert [f[0] for f in failures] == ["status", "assertion"]


# ---------------------------------------------------------------- headers, body, duration


def test_header_checks_are_case_insensitive_on_the_name() -> None:
    resp = response(headers={"content-type": "application/json; charset=utf-8"})
    ok = {"headers": {"Content-Type": {"contains": "json", "matches": "^application/"}}}
    assert failures_of(ok, resp) == []
    bad = {"headers": {"Content-Type": {"contains": "xml"}, "X-Missing": {"exists": True}}}
    assert failures_of(bad, resp) == [
        ("assertion", "headers.Content-Type", "header Content-Type: expected to contain 'xml', got 'application/json; charset=utf-8'"),
        ("assertion", "headers.X-Missing", "header X-Missing: expected to exist"),
    ]


def test_body_contains_and_matches() -> None:
    resp = response(b"Welcome to the market")
    assert failures_of({"body": {"contains": "market", "matches": r"^Welcome\b"}}, resp) == []
    assert failures_of({"body": {"contains": "closed"}}, resp) == [
        ("assertion", "body", "body: expected to contain 'closed', got 'Welcome to the market'")
    ]
    assert failures_of({"body": {"matches": "^market"}}, resp)[0][0] == "assertion"


def test_max_duration_is_an_assertion() -> None:
    assert failures_of({"max_duration": "500ms"}, response(duration=0.4)) == []
    assert failures_of({"max_duration": "500ms"}, response(duration=0.75)) == [
        ("assertion", "max_duration", "took 750ms, more than max_duration 500ms")
    ]


def test_tls_cert_valid_for() -> None:
    resp = response()
    resp.cert_not_after = 1_000_000.0 + 10 * 86400
    spec = expect(tls_cert_valid_for="14d")
    (failure,) = check_expect(spec, resp, {}, RNG, now=1_000_000.0)
    assert (failure.reason, failure.check) == ("tls", "tls_cert_valid_for")
    assert "10.0 days" in failure.message
    assert check_expect(expect(tls_cert_valid_for="7d"), resp, {}, RNG, now=1_000_000.0) == []
    (plain,) = check_expect(spec, response(), {}, RNG)
    assert plain.message == "no TLS certificate (is the URL https?)"


# ---------------------------------------------------------------- captures


def captures(spec: dict[str, Any], resp: Response) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    values, failures = capture({k: Capture.model_validate(v) for k, v in spec.items()}, resp)
    return values, [(f.reason, f.check, f.message) for f in failures]


def test_capture_kinds() -> None:
    resp = response(
        {"token": "t-1", "user": {"id": 42}, "note": "order ord-77 placed"},
        status=201,
        headers={"location": "/orders/77"},
        cookies={"session": "abc123"},
    )
    values, failures = captures(
        {
            "token": {"json": "$.token"},
            "user_id": {"json": "$.user.id"},
            "where": {"header": "Location"},
            "session": {"cookie": "session"},
            "order": {"regex": r"ord-(\d+)"},
            "whole": {"regex": r"ord-\d+"},
            "code": {"status": True},
        },
        resp,
    )
    assert failures == []
    assert values == {
        "token": "t-1",
        "user_id": 42,
        "where": "/orders/77",
        "session": "abc123",
        "order": "77",
        "whole": "ord-77",
        "code": 201,
    }


def test_capture_that_finds_nothing_is_a_capture_failure() -> None:
    values, failures = captures(
        {
            "a": {"json": "$.missing"},
            "b": {"header": "X-Nope"},
            "c": {"cookie": "nope"},
            "d": {"regex": "zzz(\\d)"},
            "e": {"json": "$.null"},
        },
        response({"null": None}),
    )
    assert values == {}
    assert failures == [
        ("capture", "capture a", "capture a: json $.missing found nothing"),
        ("capture", "capture b", "capture b: header X-Nope found nothing"),
        ("capture", "capture c", "capture c: cookie nope found nothing"),
        ("capture", "capture d", "capture d: regex /zzz(\\d)/ found nothing"),
        ("capture", "capture e", "capture e: json $.null found nothing"),
    ]


def test_json_capture_from_a_non_json_body() -> None:
    values, failures = captures({"t": {"json": "$.t"}, "n": {"regex": "(o+)"}}, response(b"not json, oops"))
    assert values == {"n": "o"}
    assert len(failures) == 1
    assert failures[0][0] == "capture"
    assert failures[0][2].startswith("capture t: body is not JSON")


# ---------------------------------------------------------------- redaction and names


def test_values_are_redacted_before_messages_cut_them() -> None:
    secret = "tok-" + "9" * 20
    redactor = Redactor([secret])
    resp = response({"token": "y" * 70 + secret})
    (failure,) = check_expect(expect(json={"$.token": {"eq": secret}}), resp, {}, RNG, redact=redactor.data)
    assert "tok-" not in failure.message
    assert failure.message.startswith("$.token: expected '[REDACTED]', got 'yyy")


def test_expected_names() -> None:
    spec = expect(
        json={"$.a": {"eq": "{{ a }}"}, "$.n": {"length": {"lt": "{{ c }}"}}},
        headers={"X-B": {"contains": "x-{{ b }}", "matches": "{{ not_a_template_name }}"}},
        body={"ne": "{{ uuid() }}"},
    )
    assert expected_names(spec) == {"a", "b", "c"}
    assert expected_names(expect()) == set()
