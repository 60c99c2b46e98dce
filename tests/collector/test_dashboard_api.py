"""The dashboard API through a FastAPI app: shapes (checked against the OpenAPI models), filters, pagination, auth, exports."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from collector.alertstore import Notification
from collector.dashboard import Dashboard, HistoryReader
from collector.dashboard_api import AlertsOut, ExecutionsOut, HealthOut, MetricsOut, OverviewOut, dashboard_router
from collector.engine import HttpxEngine
from collector.export import METRIC_COLUMNS, RUN_COLUMNS
from collector.result import RunResult
from collector.service import Service
from tests.helpers import WORKFLOWS, serve_in_thread

pytestmark = pytest.mark.usefixtures("offline_environments")

NOW = float(int(time.time()))
MIN, HOUR, DAY = 60.0, 3600.0, 86400.0
BASE = "/api/monitoring/dashboard"
STARTS = datetime.fromtimestamp(NOW - 300, UTC)
VIEWER = "viewer-token-0123456789abcdef"
WEBHOOK = "webhook-token-0123456789abcdef"


def run(workflow: str, env: str, ago: float, outcome: str = "success", duration: float = 0.1, **fields: Any) -> RunResult:
    return RunResult(workflow, env, fields.pop("run_id", f"{workflow}-{env}-{ago:g}"), NOW - ago, outcome, duration, **fields)  # type: ignore[arg-type]


RUNS = [
    run("health-check", "prod", 10, "success", 0.02),
    run("health-check", "prod", 20, "failure", 0.03, failed_step="health", reason="status"),
    run("product-listing", "prod", 30, "skipped", skip_reason="dependency", message="skipped: health-check is failing in prod"),
    run("health-check", "staging", 5 * MIN, "success", 0.02),
    run("user-login", "prod", 2 * HOUR, "failure", 0.3, failed_step="login", reason="connect"),
    run("user-login", "prod", 3 * HOUR, "success", 0.25, flaky=True, attempts=2),
    run("user-login", "dev", 2 * DAY, "error", 0.1, message="internal error: boom"),
    # three runs that started at the same instant: pagination must not lose one
    *[run(wf, "staging", HOUR, "success", 0.1) for wf in ("registration", "farm-creation", "order-placement")],
]


@pytest.fixture
def svc(tmp_path: Path) -> Iterator[Service]:
    service = Service([WORKFLOWS], data_dir=tmp_path, engine=HttpxEngine(httpx.MockTransport(lambda r: httpx.Response(200))), watch=False)
    service.config = dataclasses.replace(service.config, tokens={VIEWER: ("grafana", "viewer"), WEBHOOK: ("alertmanager", "webhook")})
    for result in RUNS:
        service.store.add(result)
    service.store.flush()
    yield service
    service.alerts.store.close()
    service.store.close()


def app_for(service: Service, **options: Any) -> FastAPI:
    app = FastAPI()
    app.include_router(dashboard_router(service, dashboard=Dashboard(service, clock=lambda: NOW, **options)))
    return app


@pytest.fixture
def client(svc: Service) -> Iterator[TestClient]:
    with TestClient(app_for(svc)) as test_client:
        yield test_client


def error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    return str(body["error"])


# ---------------------------------------------------------------- overview


def test_overview_shape_totals_and_filters(client: TestClient) -> None:
    response = client.get(f"{BASE}/overview")
    assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"  # the client asked for it
    data = response.json()
    OverviewOut.model_validate(data)
    assert data["source"] == "history" and data["generated_at"] == NOW
    statuses = {(i["workflow"], i["env"]): i["status"] for i in data["items"]}
    assert statuses[("health-check", "prod")] == "up"
    assert statuses[("health-check", "staging")] == "up"
    assert statuses[("product-listing", "prod")] == "skipped"
    assert statuses[("user-login", "prod")] == "down"
    assert statuses[("user-login", "dev")] == "down"
    assert data["totals"] == {"up": 5, "degraded": 0, "down": 2, "skipped": 1, "unknown": 10}
    hc = next(i for i in data["items"] if (i["workflow"], i["env"]) == ("health-check", "prod"))
    assert hc["uptime"] == {"1h": 50.0, "24h": 50.0, "7d": 50.0, "30d": 50.0} and hc["reachability"]["1h"] == 100.0
    assert hc["labels"] == {"team": "platform", "tier": "0"} and hc["latency_slo"] == 0.25

    plain = client.get(f"{BASE}/overview", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.json() == data

    prod = client.get(f"{BASE}/overview", params={"env": "prod"}).json()
    assert {i["env"] for i in prod["items"]} == {"prod"} and len(prod["items"]) == 6
    assert prod["totals"] == {"up": 1, "degraded": 0, "down": 1, "skipped": 1, "unknown": 3}
    down = client.get(f"{BASE}/overview", params={"status": "down", "workflow": "user-login"}).json()
    assert [(i["workflow"], i["env"]) for i in down["items"]] == [("user-login", "dev"), ("user-login", "prod")]
    assert error(client.get(f"{BASE}/overview", params={"workflow": "nope"}), 404) == "unknown workflow 'nope'"
    assert error(client.get(f"{BASE}/overview", params={"env": "qa"}), 404) == "unknown environment 'qa'"
    assert "status" in error(client.get(f"{BASE}/overview", params={"status": "sideways"}), 422)


def test_overview_is_cached(svc: Service) -> None:
    board = Dashboard(svc, clock=lambda: NOW)
    app = FastAPI()
    app.include_router(dashboard_router(svc, dashboard=board))
    with TestClient(app) as client:
        first = client.get(f"{BASE}/overview").json()
        svc.store.add(run("registration", "prod", 1, "failure", 0.1))
        svc.store.flush()
        assert client.get(f"{BASE}/overview").json() == first  # within the TTL
        board.cache.clear()
        assert client.get(f"{BASE}/overview").json()["totals"]["down"] == first["totals"]["down"] + 1
    assert board.cache.computations == 2


# ---------------------------------------------------------------- executions


def test_executions_paginate_without_losing_ties(client: TestClient) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 3}
    pages = 0
    while True:
        page = client.get(f"{BASE}/executions", params=params).json()
        ExecutionsOut.model_validate(page)
        seen += [r["run_id"] for r in page["items"]]
        pages += 1
        if page["next_before"] is None:
            break
        params["before"] = page["next_before"]
    expected = sorted(RUNS, key=lambda r: (r.started_at, r.run_id), reverse=True)
    assert seen == [r.run_id for r in expected] and pages == 4
    first = client.get(f"{BASE}/executions", params={"limit": 1}).json()["items"][0]
    assert first == {
        "run_id": "health-check-prod-10", "workflow": "health-check", "env": "prod", "started_at": NOW - 10, "duration": 0.02,
        "outcome": "success", "failed_step": None, "reason": None, "flaky": False, "attempts": 1, "message": "", "skip_reason": None,
    }
    # a plain unix time works as a cursor too: runs strictly before it
    older = client.get(f"{BASE}/executions", params={"before": repr(NOW - HOUR)}).json()["items"]
    assert [r["run_id"] for r in older] == ["user-login-prod-7200", "user-login-prod-10800", "user-login-dev-172800"]


def test_executions_filters(client: TestClient) -> None:
    def ids(**params: Any) -> list[str]:
        response = client.get(f"{BASE}/executions", params=params)
        assert response.status_code == 200, response.text
        return [r["run_id"] for r in response.json()["items"]]

    assert ids(workflow="health-check") == ["health-check-prod-10", "health-check-prod-20", "health-check-staging-300"]
    assert ids(workflow="health-check", env="prod", outcome="failure") == ["health-check-prod-20"]
    assert ids(outcome=["failure", "error"]) == ["health-check-prod-20", "user-login-prod-7200", "user-login-dev-172800"]
    assert ids(env="dev") == ["user-login-dev-172800"]
    assert ids(since="10m", outcome="success") == ["health-check-prod-10", "health-check-staging-300"]
    iso = datetime.fromtimestamp(NOW - 2 * HOUR, UTC).isoformat()
    assert ids(until=iso) == ["user-login-prod-10800", "user-login-dev-172800"]  # until is exclusive
    assert ids(since=repr(NOW - 3 * HOUR), until=iso) == ["user-login-prod-10800"]
    skipped = client.get(f"{BASE}/executions", params={"outcome": "skipped"}).json()["items"][0]
    assert (skipped["skip_reason"], skipped["message"]) == ("dependency", "skipped: health-check is failing in prod")


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"workflow": "nope"}, 404, "unknown workflow 'nope'"),
        ({"env": "qa"}, 404, "unknown environment 'qa'"),
        ({"limit": 0}, 422, "limit"),
        ({"limit": 501}, 422, "limit"),
        ({"outcome": "maybe"}, 422, "outcome"),
        ({"since": "yesterday"}, 422, "invalid time 'yesterday'"),
        ({"since": "1h", "until": "2h"}, 422, "since is after until"),
        ({"before": "page-2"}, 422, "invalid cursor 'page-2'"),
    ],
)
def test_executions_refuse_bad_parameters(client: TestClient, params: dict[str, Any], status: int, message: str) -> None:
    assert message in error(client.get(f"{BASE}/executions", params=params), status)


# ---------------------------------------------------------------- alerts


def notification(name: str, severity: str, *, status: str = "firing", env: str = "prod") -> Notification:
    labels = {"alertname": name, "severity": severity, "workflow": "health-check", "env": env}
    return Notification(status, f"fp-{name}-{env}", STARTS, None, labels, {"summary": name})


def test_alerts_need_a_viewer_token(client: TestClient, svc: Service) -> None:
    assert error(client.get(f"{BASE}/alerts"), 401).startswith("missing bearer token")
    assert error(client.get(f"{BASE}/alerts", headers={"Authorization": "Bearer not-a-token-at-all-really"}), 401) == "invalid bearer token"
    assert "needs viewer or operator" in error(client.get(f"{BASE}/alerts", headers={"Authorization": f"Bearer {WEBHOOK}"}), 403)
    svc.config = dataclasses.replace(svc.config, tokens={})
    assert "no API tokens are configured" in error(client.get(f"{BASE}/alerts", headers={"Authorization": f"Bearer {VIEWER}"}), 401)


def test_alerts_summary(client: TestClient, svc: Service) -> None:
    auth = {"Authorization": f"Bearer {VIEWER}"}
    before = client.get(f"{BASE}/alerts", headers=auth).json()
    AlertsOut.model_validate(before)
    assert before["available"] is False and before["items"] == [] and before["reason"] == "the alert store is not ready yet"

    svc.alerts.open()
    now = datetime.now(UTC)
    svc.alerts.store.receive(
        [
            notification("FlowprobeWorkflowFailing", "critical"),
            notification("FlowprobeWorkflowFailing", "critical", env="staging"),
            notification("FlowprobeLatencySLOBreached", "warning"),
            notification("FlowprobeWorkflowDegraded", "info"),
            notification("FlowprobeCertificateExpiring", "warning", env="dev"),
        ],
        now=now,
    )
    svc.alerts.store.receive([notification("FlowprobeCertificateExpiring", "warning", status="resolved", env="dev")], now=now)
    acked = svc.alerts.store.find(severity="info")[0]
    svc.alerts.store.acknowledge(acked.id, actor="alice", comment="known", silence_id=None, now=now)

    data = client.get(f"{BASE}/alerts", headers=auth, params={"limit": 2}).json()
    AlertsOut.model_validate(data)
    assert (data["available"], data["total"], data["truncated"]) == (True, 4, False)
    assert data["by_severity"] == {"critical": 2, "warning": 1, "info": 1}
    assert data["by_status"] == {"ACTIVE": 3, "ESCALATED": 0, "ACKNOWLEDGED": 1}
    assert len(data["items"]) == 2 and data["items"][0]["id"] > data["items"][1]["id"]  # newest first
    assert {"status", "severity", "alertname", "workflow", "env", "starts_at"} <= set(data["items"][0])
    assert "limit" in error(client.get(f"{BASE}/alerts", headers=auth, params={"limit": 0}), 422)


# ---------------------------------------------------------------- the collector's own metrics, health history


def test_metrics_of_the_collector(client: TestClient, svc: Service) -> None:
    data = client.get(f"{BASE}/metrics").json()
    MetricsOut.model_validate(data)
    # in the last minute: a success, a failure and a skipped run
    assert data["runs"] == {
        "window_seconds": 60.0, "total": 3, "per_second": 0.05,
        "by_outcome": {"success": 1, "failure": 1, "error": 0, "skipped": 1}, "error_rate_percent": 50.0,
    }
    history = data["history"]
    assert history["rows"] == len(RUNS) and history["file_bytes"] > 0 and history["wal_bytes"] is not None
    assert history["path"] == svc.store.path and history["runs_per_pair"] == 1000 and history["write_errors"] == 0
    assert data["alert_database"]["backend"] == "sqlite" and data["alert_database"]["ready"] is False
    assert "class" in data["alert_database"]["pool"] and "status" in data["alert_database"]["pool"]
    assert data["process"]["rss_bytes"] > 0 and data["process"]["cpu_seconds_total"] > 0


def test_health_history_of_the_root_workflows(client: TestClient) -> None:
    data = client.get(f"{BASE}/health", params={"limit": 1}).json()
    HealthOut.model_validate(data)
    assert data["workflows"] == ["health-check"]  # the only workflow without depends_on
    assert [(i["workflow"], i["env"]) for i in data["items"]] == [("health-check", "dev"), ("health-check", "prod"), ("health-check", "staging")]
    prod = client.get(f"{BASE}/health", params={"env": "prod"}).json()["items"]
    assert len(prod) == 1 and prod[0]["status"] == "up" and (prod[0]["passed"], prod[0]["failed"]) == (1, 1)
    assert [(r["outcome"], r["reason"]) for r in prod[0]["runs"]] == [("success", None), ("failure", "status")]
    assert data["items"][0]["runs"] == [] and data["items"][0]["status"] == "unknown"
    assert error(client.get(f"{BASE}/health", params={"env": "qa"}), 404) == "unknown environment 'qa'"
    assert "limit" in error(client.get(f"{BASE}/health", params={"limit": 0}), 422)


# ---------------------------------------------------------------- exports


def test_export_runs_as_csv_round_trips(client: TestClient) -> None:
    response = client.get("/api/monitoring/export", params={"format": "csv", "kind": "runs"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith('attachment; filename="flowprobe-runs-')
    rows = list(csv.DictReader(io.StringIO(response.text, newline="")))
    assert list(rows[0]) == list(RUN_COLUMNS)
    by_id = {r.run_id: r for r in RUNS}
    assert sorted(r["run_id"] for r in rows) == sorted(by_id)
    for row in rows:
        original = by_id[row["run_id"]]
        started = datetime.fromisoformat(row["started_at"]).timestamp()
        assert started == pytest.approx(original.started_at, abs=1e-6)
        assert float(row["duration"]) == original.duration and row["outcome"] == original.outcome
        assert (row["failed_step"] or None, row["reason"] or None, int(row["attempts"])) == (original.failed_step, original.reason, original.attempts)
        assert row["flaky"] == str(original.flaky).lower()


def test_export_json_and_metrics(client: TestClient) -> None:
    response = client.get("/api/monitoring/export", params={"format": "json", "workflow": "user-login", "since": "7d"})
    assert response.headers["content-type"] == "application/json"
    rows = response.json()
    assert [(r["run_id"], r["flaky"], r["attempts"]) for r in rows] == [
        ("user-login-dev-172800", False, 1), ("user-login-prod-10800", True, 2), ("user-login-prod-7200", False, 1),
    ]
    metrics = client.get("/api/monitoring/export", params={"format": "json", "kind": "metrics", "workflow": "health-check", "env": "prod"}).json()
    # its two runs, 10 s apart, fall in one hour or two
    assert {(m["workflow"], m["env"]) for m in metrics} == {("health-check", "prod")} and set(metrics[0]) == set(METRIC_COLUMNS)
    assert (sum(m["runs"] for m in metrics), sum(m["failures"] for m in metrics), sum(m["skipped"] for m in metrics)) == (2, 1, 0)
    if len(metrics) == 1:
        assert metrics[0]["uptime"] == 50.0 and metrics[0]["p50"] == pytest.approx(0.025)
    csv_metrics = client.get("/api/monitoring/export", params={"kind": "metrics"}).text
    assert csv_metrics.splitlines()[0] == ",".join(METRIC_COLUMNS)


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"format": "xml"}, 422, "format"),
        ({"kind": "logs"}, 422, "kind"),
        ({"workflow": "nope"}, 404, "unknown workflow 'nope'"),
        ({"env": "qa"}, 404, "unknown environment 'qa'"),
        ({"since": "soon"}, 422, "invalid time 'soon'"),
        ({"since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"}, 422, "since is after until"),
    ],
)

def test_export_refuses_bad_parameters(client: TestClient, params: dict[str, Any], status: int, message: str) -> None:
    assert message in error(client.get("/api/monitoring/export", params=params), status)


def test_large_exports_stream_page_by_page(svc: Service) -> None:
    many = [run("health-check", "prod", 3 * DAY + i, "success", 0.01 + i / 1e6, run_id=f"bulk-{i:05d}") for i in range(5000)]
    for result in many:
        svc.store.add(result)
    svc.store.flush()
    with serve_in_thread(app_for(svc)) as url, httpx.Client(base_url=url, timeout=30) as http:
        with http.stream("GET", "/api/monitoring/export", params={"format": "csv", "workflow": "health-check", "env": "prod"}) as response:
            assert response.status_code == 200 and "content-length" not in response.headers
            assert response.headers["transfer-encoding"] == "chunked"
            chunks = list(response.iter_raw())
        rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode(), newline="")))
        assert len(rows) == 5000 + 2 and len({r["run_id"] for r in rows}) == len(rows)
        assert len(chunks) >= 6  # the header, then a chunk per page of 1000 rows
        body = http.get("/api/monitoring/export", params={"format": "json", "since": "4d", "until": "2d"}).json()
        assert len(body) == 5000 and body[0]["run_id"] == "bulk-04999"  # oldest first


# ---------------------------------------------------------------- the OpenAPI document


def test_openapi_documents_every_endpoint(svc: Service) -> None:
    schema = app_for(svc).openapi()
    paths = schema["paths"]
    for name, model in (("overview", "OverviewOut"), ("executions", "ExecutionsOut"), ("alerts", "AlertsOut"), ("metrics", "MetricsOut"), ("health", "HealthOut")):
        ok = paths[f"{BASE}/{name}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{model}"}, name
    assert paths[f"{BASE}/alerts"]["get"]["security"] == [{"HTTPBearer": []}]
    export = paths["/api/monitoring/export"]["get"]
    assert {"text/csv", "application/json"} <= set(export["responses"]["200"]["content"])
    assert {p["name"] for p in export["parameters"]} == {"format", "kind", "workflow", "env", "since", "until"}
    windows = schema["components"]["schemas"]["Windows"]["properties"]
    assert set(windows) == {"1h", "24h", "7d", "30d"}
    assert json.dumps(schema)  # serialisable as served


def test_the_collector_app_includes_the_router(svc: Service) -> None:
    """collector/api.py includes it: no clash of paths or operation ids with the app's own routes."""
    from collector.api import create_app

    app = create_app(svc)
    schema = app.openapi()  # a duplicate operation id would warn, and warnings are errors here
    assert f"{BASE}/overview" in schema["paths"] and "/api/alerts" in schema["paths"] and "/metrics" in schema["paths"]
    with TestClient(app) as client:
        assert client.get(f"{BASE}/overview").json()["totals"]["down"] == 2
        assert client.get(f"{BASE}/executions", params={"limit": 0}).json() == {"error": "query.limit: Input should be greater than or equal to 1"}  # as /api/alerts says it


def test_an_unreadable_history_is_a_503(svc: Service, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    board = Dashboard(svc, clock=lambda: NOW)
    board.reader = HistoryReader(garbage)
    app = FastAPI()
    app.include_router(dashboard_router(svc, dashboard=board))
    with TestClient(app) as client:
        for path in ("executions", "overview", "metrics", "health"):
            assert error(client.get(f"{BASE}/{path}"), 503) == "cannot read the run history: file is not a database", path
