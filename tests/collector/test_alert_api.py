"""The alert endpoints of the collector's API, through the real app: webhook, auth, history, acknowledge, resolve."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from collector.api import create_app
from collector.engine import HttpxEngine
from collector.service import Service
from tests.helpers import alertmanager_for_module, closing, free_port

TOKENS = {
    "viewer": "viewer-token-0123456789abcdef",
    "operator": "operator-token-0123456789abcdef",
    "admin": "admin-token-0123456789abcdef",
    "webhook": "webhook-token-0123456789abcdef",
}
NAMES = {"viewer": "grafana", "operator": "alice", "admin": "root", "webhook": "alertmanager"}
WORKFLOW = """\
name: health-check
schedule: {every: 60s}
steps:
  - name: health
    request: {url: "{{ base_url }}/health"}
"""


def write_config(directory: Path, alertmanager_url: str | None, *, tokens: bool = True) -> Path:
    """A config directory with one workflow and a flowprobe.yaml whose tokens come from FLOWPROBE_TEST_* variables."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "environments.yaml").write_text("environments:\n  prod: {base_url: http://prod.test}\n")
    (directory / "health-check.yaml").write_text(WORKFLOW)
    alerting: dict[str, Any] = {"escalation": {"critical": [{"after": "15m", "to": "oncall"}]}}
    if alertmanager_url:
        alerting["alertmanager_url"] = alertmanager_url
    if tokens:
        alerting["tokens"] = [{"name": NAMES[role], "role": role, "token": {"env": f"FLOWPROBE_TEST_{role.upper()}_TOKEN"}} for role in TOKENS]
    (directory / "flowprobe.yaml").write_text(json.dumps({"alerting": alerting}))  # JSON is YAML
    return directory


def collector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alertmanager_url: str | None, *, tokens: bool = True, open_store: bool = True) -> Service:
    for role, value in TOKENS.items():
        monkeypatch.setenv(f"FLOWPROBE_TEST_{role.upper()}_TOKEN", value)
    config = write_config(tmp_path / "config", alertmanager_url, tokens=tokens)
    service = Service([config], data_dir=tmp_path / "data", engine=HttpxEngine(httpx.MockTransport(lambda r: httpx.Response(200))), watch=False)
    if open_store:
        service.alerts.open()
    return service


def bearer(role: str | None) -> dict[str, str]:
    if role is None:
        return {}
    return {"Authorization": f"Bearer {TOKENS.get(role, 'not-a-token-of-this-collector')}"}


def payload(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "receiver": "flowprobe",
        "status": status,
        "alerts": list(alerts),
        "groupLabels": {"alertname": "WorkflowFailing"},
        "commonLabels": {"alertname": "WorkflowFailing"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}:{alertname="WorkflowFailing"}',
        "truncatedAlerts": 0,
    }


STARTS = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="microseconds").replace("+00:00", "Z")


def webhook_alert(name: str = "prod", status: str = "firing", starts_at: str = STARTS, **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "WorkflowFailing", "severity": "critical", "workflow": "order-placement", "env": name, **labels},
        "annotations": {"summary": f"order-placement fails in {name}"},
        "startsAt": starts_at,
        "endsAt": "2026-01-01T00:10:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=...",
        "fingerprint": f"fp-{name}-{'-'.join(sorted(labels.values()))}",
    }


alertmanager = pytest.fixture(scope="module", name="alertmanager")(alertmanager_for_module)


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alertmanager: str) -> Iterator[Service]:
    with closing(collector(tmp_path, monkeypatch, alertmanager)) as svc:
        yield svc


@pytest.fixture
def client(service: Service) -> Iterator[TestClient]:
    with TestClient(create_app(service)) as test_client:
        yield test_client


def post_webhook(client: TestClient, body: Any, role: str | None = "webhook") -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post("/api/alertmanager/webhook", content=content, headers={**bearer(role), "Content-Type": "application/json"})


def listing(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/api/alerts", params=params, headers=bearer("viewer"))
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


def everything(client: TestClient) -> list[dict[str, Any]]:
    """Every alert with its whole history: what must not change."""
    return [client.get(f"/api/alerts/{a['id']}", headers=bearer("viewer")).json() for a in listing(client, limit=500)]


# ---------------------------------------------------------------- the webhook


def test_the_webhook_records_firing_alerts_as_active(client: TestClient) -> None:
    response = post_webhook(client, payload(webhook_alert("prod"), webhook_alert("staging")))
    assert response.status_code == 200 and response.json() == {"created": 2, "updated": 0, "resolved": 0, "ignored": 0}
    alerts = listing(client)
    assert [(a["env"], a["status"], a["severity"], a["workflow"]) for a in alerts] == [
        ("staging", "ACTIVE", "critical", "order-placement"),
        ("prod", "ACTIVE", "critical", "order-placement"),
    ]
    detail = client.get(f"/api/alerts/{alerts[1]['id']}", headers=bearer("operator")).json()
    assert detail["labels"]["env"] == "prod" and detail["annotations"] == {"summary": "order-placement fails in prod"}
    assert detail["generator_url"].startswith("http://prometheus:9090/graph") and detail["fingerprint"] == "fp-prod-"
    assert detail["silence_id"] is None and detail["escalation_level"] == 0 and detail["ends_at"] is None
    assert [(e["action"], e["actor"], e["from_status"], e["to_status"]) for e in detail["events"]] == [("fired", "alertmanager", None, "ACTIVE")]


def test_a_repeated_notification_is_idempotent(client: TestClient) -> None:
    body = payload(webhook_alert("prod"))
    post_webhook(client, body)
    before = everything(client)
    again = post_webhook(client, body)
    assert again.json() == {"created": 0, "updated": 1, "resolved": 0, "ignored": 0}
    after = everything(client)
    assert [{**a, "updated_at": None} for a in after] == [{**b, "updated_at": None} for b in before]


def test_a_resolved_notification_resolves_the_alert(client: TestClient) -> None:
    post_webhook(client, payload(webhook_alert("prod")))
    response = post_webhook(client, payload(webhook_alert("prod", status="resolved"), status="resolved"))
    assert response.json()["resolved"] == 1
    [alert] = listing(client, status="resolved")
    detail = client.get(f"/api/alerts/{alert['id']}", headers=bearer("viewer")).json()
    assert detail["resolved_by"] == "alertmanager" and detail["ends_at"] == "2026-01-01T00:10:00Z"
    assert [e["action"] for e in detail["events"]] == ["fired", "resolved"]


def test_escalated_copies_are_ignored(client: TestClient) -> None:
    response = post_webhook(client, payload(webhook_alert("prod", escalated="true", escalation="oncall")))
    assert response.json() == {"created": 0, "updated": 0, "resolved": 0, "ignored": 1}
    assert listing(client) == []


def test_malformed_json_is_refused_with_400_and_changes_nothing(client: TestClient) -> None:
    post_webhook(client, payload(webhook_alert("prod")))
    before = everything(client)
    for body in (b'{"version": "4", "alerts": [', b"\xff\xfe not utf-8", b""):
        response = post_webhook(client, body)
        assert response.status_code == 400
        assert response.json()["error"].startswith("malformed JSON in the Alertmanager webhook: ")
    assert everything(client) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("alerts"), "invalid Alertmanager webhook: alerts: Field required"),
        (lambda p: p.update(version="3"), "invalid Alertmanager webhook: version: Input should be '4'"),
        (lambda p: p.update(alerts={"a": 1}), "invalid Alertmanager webhook: alerts: Input should be a valid list"),
        (lambda p: p["alerts"][1].update(startsAt="yesterday"), "invalid Alertmanager webhook: alerts.1.startsAt: Input should be a valid datetime"),
        (lambda p: p["alerts"][1].update(startsAt="2026-01-01T00:00:00"), "invalid Alertmanager webhook: alerts.1.startsAt: Input should have timezone info"),
        (lambda p: p["alerts"][1]["labels"].update(env=3), "invalid Alertmanager webhook: alerts.1.labels.env: Input should be a valid string"),
        (lambda p: p["alerts"][1].pop("fingerprint"), "invalid Alertmanager webhook: alerts.1.fingerprint: Field required"),
        (lambda p: p["alerts"][1].update(status="pending"), "invalid Alertmanager webhook: alerts.1.status: Input should be 'firing' or 'resolved'"),
    ],
)
def test_a_payload_of_the_wrong_shape_is_refused_with_422_and_changes_nothing(client: TestClient, change: Any, message: str) -> None:
    post_webhook(client, payload(webhook_alert("prod")))
    before = everything(client)
    # The first alert is valid and new: it must not be stored either (all or nothing).
    body = payload(webhook_alert("dev"), webhook_alert("staging"))
    change(body)
    response = post_webhook(client, body)
    assert response.status_code == 422
    assert response.json()["error"].startswith(message)
    assert everything(client) == before


def test_a_json_array_is_the_wrong_shape(client: TestClient) -> None:
    response = post_webhook(client, [])
    assert response.status_code == 422 and response.json()["error"].startswith("invalid Alertmanager webhook: Input should be a valid dictionary")


# ---------------------------------------------------------------- auth


ENDPOINTS = {
    "webhook": ("POST", "/api/alertmanager/webhook", ("webhook",)),
    "list": ("GET", "/api/alerts", ("viewer", "operator", "admin")),
    "show": ("GET", "/api/alerts/{id}", ("viewer", "operator", "admin")),
    "acknowledge": ("POST", "/api/alerts/{id}/acknowledge", ("operator", "admin")),
    "resolve": ("POST", "/api/alerts/{id}/resolve", ("operator", "admin")),
}
ROLES = [None, "stranger", "viewer", "operator", "webhook", "admin"]


def call(client: TestClient, endpoint: str, role: str | None, alert_id: int = 1) -> httpx.Response:
    method, path, _ = ENDPOINTS[endpoint]
    body: Any = payload(webhook_alert("auth")) if endpoint == "webhook" else {"comment": "auth matrix"}
    return client.request(method, path.format(id=alert_id), headers=bearer(role), json=body if method == "POST" else None)


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_every_endpoint_takes_only_its_roles(client: TestClient, endpoint: str) -> None:
    post_webhook(client, payload(webhook_alert("prod")))
    allowed = ENDPOINTS[endpoint][2]
    alert_id, acted = 1, False
    for role in ROLES:
        before = everything(client)
        if role in allowed and acted and endpoint in ("acknowledge", "resolve"):
            # Each allowed writer (operator, then admin) acts on an alert of its own: the first one's is done with.
            post_webhook(client, payload(webhook_alert(f"for-{role}")))
            alert_id = client.get("/api/alerts", headers=bearer("viewer")).json()["items"][0]["id"]
        response = call(client, endpoint, role, alert_id)
        if role in allowed:
            acted = True
            assert response.status_code == 200, (role, response.text)
            continue
        expected = 401 if role in (None, "stranger") else 403
        assert response.status_code == expected, role
        error = response.json()["error"]
        if expected == 401:
            assert error == ("missing bearer token (Authorization: Bearer <token>)" if role is None else "invalid bearer token")
            assert response.headers["www-authenticate"] == "Bearer"
        else:
            assert error == f"the token {NAMES[role]!r} has the role {role}; this needs {' or '.join(allowed)}"  # type: ignore[index]
        assert everything(client) == before, role


def test_without_configured_tokens_every_call_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with closing(collector(tmp_path, monkeypatch, None, tokens=False)) as service, TestClient(create_app(service)) as client:
        for endpoint in ENDPOINTS:
            for role in ROLES:
                response = call(client, endpoint, role)
                assert response.status_code == 401, (endpoint, role)
                assert response.json() == {"error": "no API tokens are configured (alerting.tokens in flowprobe.yaml)"}
        assert client.get("/healthz").status_code == 200  # the rest of the API is not behind tokens


def test_a_malformed_body_without_a_token_gets_401_not_a_hint(client: TestClient) -> None:
    assert post_webhook(client, b"{oops", role=None).status_code == 401
    assert client.post("/api/alerts/1/acknowledge", content=b"{oops", headers=bearer("viewer")).status_code == 403


def test_token_values_never_appear_in_responses_or_logs(client: TestClient, alertmanager: str, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        for endpoint in ENDPOINTS:
            for role in ROLES:
                response = call(client, endpoint, role)
                seen += [response.text, json.dumps(dict(response.headers))]
        seen.append(client.get("/openapi.json").text)
    records = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert any(r.name == "flowprobe.alerts" for r in caplog.records)  # something was logged, with the caller's name
    for token in [*TOKENS.values(), "not-a-token-of-this-collector"]:
        assert all(token not in text for text in seen)
        assert token not in caplog.text and token not in records


# ---------------------------------------------------------------- acknowledge and resolve through the API


def test_acknowledge_through_the_api(client: TestClient, alertmanager: str) -> None:
    post_webhook(client, payload(webhook_alert("prod", team=uuid.uuid4().hex)))
    [alert] = listing(client)
    response = client.post(f"/api/alerts/{alert['id']}/acknowledge", headers=bearer("operator"), json={"comment": "  rolling back  ", "duration": "90m"})
    assert response.status_code == 200, response.text
    acknowledged = response.json()
    assert acknowledged["status"] == "ACKNOWLEDGED" and acknowledged["acknowledged_by"] == "alice"
    assert acknowledged["events"][-1] == {**acknowledged["events"][-1], "actor": "alice", "action": "acknowledged", "comment": "rolling back"}
    silence = httpx.get(f"{alertmanager}/api/v2/silence/{acknowledged['silence_id']}").json()
    assert silence["createdBy"] == "alice" and silence["comment"] == "rolling back"
    starts, ends = (datetime.fromisoformat(silence[k].replace("Z", "+00:00")) for k in ("startsAt", "endsAt"))
    assert abs((ends - starts) - timedelta(minutes=90)) < timedelta(seconds=1)
    assert {m["name"]: m["value"] for m in silence["matchers"]} == alert["labels"]

    again = client.post(f"/api/alerts/{alert['id']}/acknowledge", headers=bearer("operator"), json={"comment": "again"})
    assert again.status_code == 409 and again.json() == {"error": f"alert {alert['id']} is ACKNOWLEDGED; it cannot be acknowledged"}

    resolved = client.post(f"/api/alerts/{alert['id']}/resolve", headers=bearer("operator"), json={"comment": "fixed"})
    assert resolved.status_code == 200 and resolved.json()["status"] == "RESOLVED" and resolved.json()["resolved_by"] == "alice"
    assert httpx.get(f"{alertmanager}/api/v2/silence/{acknowledged['silence_id']}").json()["status"]["state"] == "expired"
    assert [e["action"] for e in resolved.json()["events"]] == ["fired", "acknowledged", "resolved", "silence_expired"]
    twice = client.post(f"/api/alerts/{alert['id']}/resolve", headers=bearer("operator"), json={"comment": "fixed"})
    assert twice.status_code == 409 and twice.json() == {"error": f"alert {alert['id']} is RESOLVED; it cannot be resolved"}


def test_alertmanager_down_during_acknowledge_is_a_502_and_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with closing(collector(tmp_path, monkeypatch, down)) as service, TestClient(create_app(service)) as client:
        post_webhook(client, payload(webhook_alert("prod")))
        before = everything(client)
        response = client.post("/api/alerts/1/acknowledge", headers=bearer("operator"), json={"comment": "mine"})
        assert response.status_code == 502
        assert response.json()["error"].startswith(f"cannot create a silence: Alertmanager at {down} is unreachable")
        assert everything(client) == before


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{", 400, "malformed JSON in the acknowledgement: "),
        ({}, 422, "invalid acknowledgement: comment: Field required"),
        ({"comment": "   "}, 422, "invalid acknowledgement: comment: String should have at least 1 character"),
        ({"comment": "x", "duration": "forever"}, 422, "invalid acknowledgement: duration: Value error, invalid duration 'forever'"),
        ({"comment": "x", "duration": "31d"}, 422, "invalid acknowledgement: duration: Value error, must be more than 0 and at most 30d"),
        ({"comment": "x", "until": "tomorrow"}, 422, "invalid acknowledgement: until: Extra inputs are not permitted"),
    ],
)
def test_a_bad_acknowledgement_body_is_refused(client: TestClient, body: Any, status: int, error: str) -> None:
    post_webhook(client, payload(webhook_alert("prod")))
    before = everything(client)
    content = body if isinstance(body, bytes) else json.dumps(body)
    response = client.post("/api/alerts/1/acknowledge", headers={**bearer("operator"), "Content-Type": "application/json"}, content=content)
    assert response.status_code == status and response.json()["error"].startswith(error)
    assert everything(client) == before


def test_unknown_alerts_and_bad_parameters(client: TestClient) -> None:
    assert client.get("/api/alerts/42", headers=bearer("viewer")).json() == {"error": "unknown alert 42"}
    assert client.post("/api/alerts/42/resolve", headers=bearer("operator"), json={"comment": "x"}).status_code == 404
    response = client.get("/api/alerts/abc", headers=bearer("viewer"))
    assert response.status_code == 422 and response.json()["error"].startswith("path.alert_id: Input should be a valid integer")
    response = client.get("/api/alerts", params={"status": "sleeping"}, headers=bearer("viewer"))
    assert response.status_code == 422 and response.json()["error"].startswith("query.status: String should match pattern")
    assert client.get("/api/alerts", params={"limit": 0}, headers=bearer("viewer")).status_code == 422


# ---------------------------------------------------------------- reading


def test_the_list_filters_and_pages_newest_first(client: TestClient) -> None:
    post_webhook(client, payload(*(webhook_alert(f"env{i}", severity="critical" if i % 2 else "warning") for i in range(5))))
    post_webhook(client, payload(webhook_alert("env4", status="resolved", severity="warning"), status="resolved"))
    ids = [a["id"] for a in listing(client)]
    assert ids == [5, 4, 3, 2, 1]
    first = client.get("/api/alerts", params={"limit": 2}, headers=bearer("viewer")).json()
    assert [a["id"] for a in first["items"]] == [5, 4] and first["next_before"] == 4
    second = client.get("/api/alerts", params={"limit": 2, "before": first["next_before"]}, headers=bearer("viewer")).json()
    assert [a["id"] for a in second["items"]] == [3, 2]
    last = client.get("/api/alerts", params={"limit": 2, "before": 2}, headers=bearer("viewer")).json()
    assert [a["id"] for a in last["items"]] == [1] and last["next_before"] is None
    assert [a["env"] for a in listing(client, severity="critical")] == ["env3", "env1"]
    assert [a["env"] for a in listing(client, status="RESOLVED")] == ["env4"]
    assert [a["env"] for a in listing(client, status="active", env="env0", workflow="order-placement")] == ["env0"]
    assert "events" not in listing(client)[0]


def test_the_alert_endpoints_are_in_the_openapi_document(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    assert set(ENDPOINTS_PATHS) <= set(paths)
    webhook = paths["/api/alertmanager/webhook"]["post"]
    schema = webhook["requestBody"]["content"]["application/json"]["schema"]
    assert {"version", "alerts", "groupKey", "status", "receiver"} <= set(schema["required"])
    assert schema["properties"]["alerts"]["items"]["properties"]["fingerprint"]["type"] == "string"
    assert {"401", "403", "422", "400"} <= set(webhook["responses"])
    acknowledge = paths["/api/alerts/{alert_id}/acknowledge"]["post"]
    assert acknowledge["requestBody"]["content"]["application/json"]["schema"]["required"] == ["comment"]
    assert {"409", "502"} <= set(acknowledge["responses"])
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert paths["/api/alerts"]["get"]["security"] == [{"HTTPBearer": []}]


ENDPOINTS_PATHS = ["/api/alertmanager/webhook", "/api/alerts", "/api/alerts/{alert_id}", "/api/alerts/{alert_id}/acknowledge", "/api/alerts/{alert_id}/resolve"]


def test_alert_endpoints_answer_503_until_the_store_is_migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with closing(collector(tmp_path, monkeypatch, None, open_store=False)) as service, TestClient(create_app(service)) as client:
        response = client.get("/api/alerts", headers=bearer("viewer"))
        assert response.status_code == 503 and response.json() == {"error": "the alert store is not ready yet (the collector is starting)"}
        assert post_webhook(client, payload(webhook_alert("prod"))).status_code == 503
