"""`flowprobe grafana push` against a local HTTP server that answers like Grafana's API.

The fake keeps datasources, folders and dashboards in memory and records every
request grafana-client makes, so the tests assert on the calls Grafana would
have received: paths, bodies and the Authorization header.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from collector.cli import main
from tests.helpers import free_port, serve_in_thread

TOKEN = "glsa_test-token-that-must-never-be-printed"


@dataclass
class FakeGrafana:
    """Grafana's HTTP API, as far as a push uses it."""

    accept: set[str]
    calls: list[tuple[str, str, Any, str | None]] = field(default_factory=list)
    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)

    def paths(self, method: str | None = None) -> list[str]:
        return [f"{m} {p}" for m, p, _, _ in self.calls if method is None or m == method]

    def bodies(self, method: str, path: str) -> list[Any]:
        return [body for m, p, body, _ in self.calls if (m, p) == (method, path)]

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def record_and_authenticate(request: Request, call_next: Any) -> Any:
            raw = await request.body()
            auth = request.headers.get("authorization")
            self.calls.append((request.method, request.url.path, json.loads(raw) if raw else None, auth))
            if request.url.path != "/api/health" and auth not in self.accept:
                return JSONResponse({"message": "invalid API key"}, status_code=401)
            return await call_next(request)

        @app.get("/api/health")
        async def health() -> dict[str, str]:
            return {"database": "ok", "version": "11.3.0"}

        @app.get("/api/datasources/uid/{uid}")
        async def get_datasource(uid: str) -> JSONResponse:
            if uid not in self.datasources:
                return JSONResponse({"message": "Data source not found"}, status_code=404)
            return JSONResponse(self.datasources[uid])

        @app.post("/api/datasources")
        async def create_datasource(request: Request) -> JSONResponse:
            body = await request.json()
            if any(d["name"] == body["name"] for d in self.datasources.values()):
                return JSONResponse({"message": "data source with the same name already exists"}, status_code=409)
            self.datasources[body["uid"]] = body | {"id": len(self.datasources) + 1}
            return JSONResponse({"datasource": self.datasources[body["uid"]], "id": len(self.datasources), "message": "Datasource added"})

        @app.put("/api/datasources/uid/{uid}")
        async def update_datasource(uid: str, request: Request) -> JSONResponse:
            if uid not in self.datasources:
                return JSONResponse({"message": "Data source not found"}, status_code=404)
            self.datasources[uid] |= await request.json()
            return JSONResponse({"datasource": self.datasources[uid], "message": "Datasource updated"})

        @app.get("/api/folders/{uid}")
        async def get_folder(uid: str) -> JSONResponse:
            if uid not in self.folders:
                return JSONResponse({"message": "folder not found"}, status_code=404)
            return JSONResponse(self.folders[uid])

        @app.get("/api/folders")
        async def list_folders() -> list[dict[str, Any]]:
            return list(self.folders.values())

        @app.post("/api/folders")
        async def create_folder(request: Request) -> JSONResponse:
            body = await request.json()
            self.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "id": len(self.folders) + 1}
            return JSONResponse(self.folders[body["uid"]])

        @app.post("/api/dashboards/db")
        async def save_dashboard(request: Request) -> JSONResponse:
            body = await request.json()
            uid = body["dashboard"]["uid"]
            if uid in self.dashboards and not body.get("overwrite"):
                return JSONResponse({"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}, status_code=412)
            if body.get("folderUid") and body["folderUid"] not in self.folders:
                return JSONResponse({"message": "folder not found"}, status_code=400)
            version = self.dashboards.get(uid, {}).get("version", 0) + 1
            self.dashboards[uid] = {"body": body, "version": version}
            return JSONResponse({"id": 7, "uid": uid, "status": "success", "version": version, "url": f"/d/{uid}"})

        return app


@pytest.fixture
def grafana() -> Iterator[tuple[FakeGrafana, str]]:
    basic = "Basic " + base64.b64encode(b"admin:s3cret-password").decode()
    fake = FakeGrafana(accept={f"Bearer {TOKEN}", basic})
    with serve_in_thread(fake.app()) as url:
        yield fake, url


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """Placeholder dashboards and datasources, so these tests do not follow the shipped ones."""
    dashboards = tmp_path / "dashboards"
    dashboards.mkdir()
    for uid, title in (("fp-overview", "Overview"), ("fp-workflow", "Workflow")):
        (dashboards / f"{uid}.json").write_text(json.dumps({"uid": uid, "title": title, "id": 12, "panels": [], "schemaVersion": 39}))
    datasources = tmp_path / "datasources"
    datasources.mkdir()
    (datasources / "flowprobe.yml").write_text(
        """apiVersion: 1
datasources:
  - {name: flowprobe-prometheus, uid: flowprobe-prometheus, type: prometheus, access: proxy, url: http://prometheus:9090,
     isDefault: true, editable: false, orgId: 1, jsonData: {timeInterval: 15s}}
  - {name: flowprobe-alertmanager, uid: flowprobe-alertmanager, type: alertmanager, url: http://alertmanager:9093,
     jsonData: {implementation: prometheus}}
  - name: flowprobe-influxdb
    uid: flowprobe-influxdb
    type: influxdb
    url: http://influxdb:8086
    jsonData: {version: Flux, organization: flowprobe, defaultBucket: flowprobe}
    secureJsonData: {token: "${TEST_INFLUX_TOKEN}"}
"""
    )
    return dashboards, datasources


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "influx-token-value")
    monkeypatch.delenv("GRAFANA_URL", raising=False)


def push(url: str, files: tuple[Path, Path], *extra: str) -> int:
    dashboards, datasources = files
    return main(["grafana", "push", "--url", url, "--dashboards", str(dashboards), "--datasources", str(datasources), "--timeout", "5", *extra])


def test_push_creates_datasources_then_updates_them_and_overwrites_every_dashboard(
    grafana: tuple[FakeGrafana, str], files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = grafana
    uids = ["flowprobe-alertmanager", "flowprobe-influxdb", "flowprobe-prometheus"]

    assert push(url, files) == 0
    assert sorted(p.rsplit("/", 1)[1] for p in fake.paths("PUT")) == []
    assert [body["uid"] for body in fake.bodies("POST", "/api/datasources")] == ["flowprobe-prometheus", "flowprobe-alertmanager", "flowprobe-influxdb"]
    assert fake.bodies("POST", "/api/folders") == [{"title": "flowprobe", "uid": "flowprobe"}]
    first = capsys.readouterr()

    assert push(url, files) == 0
    assert sorted(p.rsplit("/", 1)[1] for p in fake.paths("PUT")) == uids
    assert len(fake.bodies("POST", "/api/datasources")) == 3, "the second push updates, it does not create again"
    assert len(fake.bodies("POST", "/api/folders")) == 1
    second = capsys.readouterr()

    # Each push: health first, then the datasources, then the dashboards that refer to them by uid.
    calls = fake.paths()
    starts = [i for i, call in enumerate(calls) if call == "GET /api/health"]
    pushes = [calls[a:b] for a, b in zip(starts, [*starts[1:], len(calls)])]
    assert len(pushes) == 2
    for order in pushes:
        assert max(i for i, p in enumerate(order) if "datasources" in p) < min(i for i, p in enumerate(order) if "dashboards" in p)
    posted = fake.bodies("POST", "/api/dashboards/db")
    assert [(b["dashboard"]["uid"], b["overwrite"], b["folderUid"], b["dashboard"]["id"]) for b in posted] == [
        ("fp-overview", True, "flowprobe", None),
        ("fp-workflow", True, "flowprobe", None),
    ] * 2
    assert {uid: d["version"] for uid, d in fake.dashboards.items()} == {"fp-overview": 2, "fp-workflow": 2}

    # Provisioning-only keys are dropped, variables expanded, and the token sent on every API call.
    influx = fake.datasources["flowprobe-influxdb"]
    assert influx["secureJsonData"] == {"token": "influx-token-value"} and influx["access"] == "proxy"
    assert "editable" not in fake.datasources["flowprobe-prometheus"] and "orgId" not in fake.datasources["flowprobe-prometheus"]
    assert {auth for _, path, _, auth in fake.calls if path != "/api/health"} == {f"Bearer {TOKEN}"}

    assert "datasource flowprobe-prometheus (prometheus): created" in first.out
    assert "datasource flowprobe-prometheus (prometheus): updated" in second.out
    assert "dashboard fp-workflow: saved in folder flowprobe (version 2)" in second.out
    assert "SUCCESS: 3 datasource(s) and 2 dashboard(s) pushed" in second.out
    assert TOKEN not in first.out + first.err + second.out + second.err


def test_url_options_replace_the_provisioned_urls(grafana: tuple[FakeGrafana, str], files: tuple[Path, Path]) -> None:
    fake, url = grafana
    assert push(url, files, "--prometheus-url", "https://prom.example:9090", "--alertmanager-url", "https://am.example") == 0
    assert {uid: d["url"] for uid, d in fake.datasources.items()} == {
        "flowprobe-prometheus": "https://prom.example:9090",
        "flowprobe-alertmanager": "https://am.example",
        "flowprobe-influxdb": "http://influxdb:8086",
    }


def test_basic_auth_with_a_user_and_a_password_from_the_environment(
    grafana: tuple[FakeGrafana, str], files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = grafana
    monkeypatch.setenv("GF_PW", "s3cret-password")
    assert push(url, files, "--user", "admin", "--password-env", "GF_PW") == 0
    assert {auth for _, path, _, auth in fake.calls if path != "/api/health"} == {"Basic " + base64.b64encode(b"admin:s3cret-password").decode()}
    assert "s3cret-password" not in capsys.readouterr().out


def test_an_existing_folder_titled_flowprobe_is_used(grafana: tuple[FakeGrafana, str], files: tuple[Path, Path]) -> None:
    fake, url = grafana
    fake.folders["hand-made"] = {"uid": "hand-made", "title": "flowprobe", "id": 3}
    assert push(url, files) == 0
    assert fake.bodies("POST", "/api/folders") == []
    assert {b["folderUid"] for b in fake.bodies("POST", "/api/dashboards/db")} == {"hand-made"}


def test_a_bad_token_exits_1_with_a_clear_message_and_never_prints_it(
    grafana: tuple[FakeGrafana, str], files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = grafana
    monkeypatch.setenv("GRAFANA_TOKEN", "glsa_wrong-token")
    assert push(url, files) == 1
    captured = capsys.readouterr()
    assert "flowprobe grafana push: Grafana refused the credentials (401 Unauthorized)" in captured.err
    assert "glsa_wrong-token" not in captured.out + captured.err
    assert "Traceback" not in captured.err
    assert fake.bodies("POST", "/api/dashboards/db") == [] and fake.datasources == {}


def test_an_unreachable_grafana_exits_1(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert push(url, files) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"flowprobe grafana push: cannot reach Grafana at {url}")
    assert TOKEN not in err


def test_invalid_json_exits_1_before_grafana_is_called(
    grafana: tuple[FakeGrafana, str], files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = grafana
    broken = files[0] / "fp-broken.json"
    broken.write_text('{"uid": "fp-broken",\n  "title": oops}\n')
    assert push(url, files) == 1
    assert f"flowprobe grafana push: {broken}:2:12: invalid JSON: Expecting value" in capsys.readouterr().err
    assert fake.calls == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"title": "no uid"}', "the dashboard has no uid"),
        ("[1, 2]", "a dashboard must be a JSON object, not list"),
    ],
)
def test_a_dashboard_without_a_uid_is_refused(files: tuple[Path, Path], content: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    (files[0] / "odd.json").write_text(content)
    assert push("http://127.0.0.1:9", files) == 1
    assert message in capsys.readouterr().err


def test_a_missing_variable_in_a_datasource_is_named(
    files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TEST_INFLUX_TOKEN")
    assert push("http://127.0.0.1:9", files) == 1
    assert "datasources[2].secureJsonData.token: refers to $TEST_INFLUX_TOKEN, which is not set" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"GRAFANA_TOKEN": ""}, "set GRAFANA_TOKEN to a Grafana service account token"),
        (("--user", "admin"), {}, "set GRAFANA_PASSWORD to the password of Grafana user 'admin'"),
    ],
)
def test_missing_credentials_are_explained(
    files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    monkeypatch.delenv("GRAFANA_PASSWORD", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert push("http://127.0.0.1:9", files, *args) == 1
    assert message in capsys.readouterr().err


def test_credentials_in_the_url_are_refused(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert push("http://admin:pw@127.0.0.1:9", files) == 1
    err = capsys.readouterr().err
    assert "--url must not carry credentials" in err and "pw@" not in err


def test_a_datasource_name_taken_by_another_uid_is_explained(
    grafana: tuple[FakeGrafana, str], files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fake, url = grafana
    fake.datasources["made-by-hand"] = {"uid": "made-by-hand", "name": "flowprobe-prometheus", "type": "prometheus", "id": 1}
    assert push(url, files) == 1
    assert (
        "Grafana refused creating datasource flowprobe-prometheus (409): a datasource with the same name but another uid exists"
        in capsys.readouterr().err
    )
    assert fake.bodies("POST", "/api/dashboards/db") == []
