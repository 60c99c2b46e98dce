"""`flowprobe grafana push`: load the dashboards and datasources into a Grafana that already runs.

This is for people who bring their own Grafana (DESIGN.md, "Bring your own"). The stack
provisions the same files from disk; this command sends them through Grafana's HTTP API
with grafana-client:

- datasources first (dashboards refer to them by uid): each one is looked up by uid
  (``GET /api/datasources/uid/{uid}``), then updated (``PUT /api/datasources/uid/{uid}``)
  or created (``POST /api/datasources``);
- then the folder ``flowprobe`` (``GET /api/folders/{uid}``, else ``POST /api/folders``);
- then every dashboard into it, by its own uid, overwriting (``POST /api/dashboards/db``).

Every file is read and checked before Grafana is contacted, so a broken file changes
nothing. The token or password is read from an environment variable, sent only in the
Authorization header, and never printed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar
from urllib.parse import urlsplit

import yaml

if TYPE_CHECKING:
    from grafana_client import GrafanaApi

__all__ = ["FOLDER_TITLE", "FOLDER_UID", "Dashboard", "Datasource", "PushError", "command", "load_dashboards", "load_datasources", "push"]

FOLDER_UID = "flowprobe"
FOLDER_TITLE = "flowprobe"

# Keys of a provisioning file's datasource that the HTTP API takes as they are. The
# others (orgId, version, editable) belong to provisioning and are left out.
_API_KEYS = (
    "uid", "name", "type", "access", "url", "user", "database", "basicAuth", "basicAuthUser",
    "withCredentials", "isDefault", "jsonData", "secureJsonData",
)  # fmt: skip
# Grafana expands $VAR and ${VAR} in provisioning files; $$ is a literal $.
_ENV_REFERENCE = re.compile(r"\$\$|\$\{(\w+)\}|\$(\w+)")
_T = TypeVar("_T")


class PushError(Exception):
    """A problem worth one line to the user; the command exits 1."""


@dataclass(frozen=True)
class Dashboard:
    path: Path
    uid: str
    title: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Datasource:
    path: Path
    uid: str
    name: str
    type: str
    payload: dict[str, Any]


# ---------------------------------------------------------------- files


def load_dashboards(directory: Path) -> list[Dashboard]:
    """Every ``*.json`` in `directory`, each a dashboard with a fixed uid."""
    if not directory.is_dir():
        raise PushError(f"{directory}: no such directory (--dashboards)")
    dashboards: list[Dashboard] = []
    seen: dict[str, Path] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PushError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
        if not isinstance(body, dict):
            raise PushError(f"{path}: a dashboard must be a JSON object, not {type(body).__name__}")
        uid = body.get("uid")
        if not isinstance(uid, str) or not uid:
            raise PushError(f"{path}: the dashboard has no uid; a fixed uid is what lets a push update it")
        if len(uid) > 40:
            raise PushError(f"{path}: uid {uid!r} is longer than Grafana's 40 characters")
        if uid in seen:
            raise PushError(f"{path}: uid {uid!r} is also the uid of {seen[uid]}")
        seen[uid] = path
        title = body.get("title")
        dashboards.append(Dashboard(path, uid, title if isinstance(title, str) else uid, body))
    if not dashboards:
        raise PushError(f"{directory}: no *.json dashboards")
    return dashboards


def load_datasources(
    directory: Path, *, urls: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
) -> list[Datasource]:
    """The datasources of every provisioning file (``*.yml``, ``*.yaml``) in `directory`.

    `urls` maps a datasource type (``prometheus``) to the URL that replaces the
    provisioned one: the stack's ``http://prometheus:9090`` means nothing to a Grafana
    elsewhere. ``$VAR`` and ``${VAR}`` are expanded from `environ`, as Grafana does.
    """
    environ = os.environ if environ is None else environ
    if not directory.is_dir():
        raise PushError(f"{directory}: no such directory (--datasources)")
    datasources: list[Datasource] = []
    seen: dict[str, Path] = {}
    for path in sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")]):
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise PushError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
        entries = document.get("datasources") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise PushError(f"{path}: not a Grafana datasource provisioning file (no datasources: list)")
        for index, entry in enumerate(entries):
            where = f"{path}: datasources[{index}]"
            if not isinstance(entry, dict):
                raise PushError(f"{where}: must be a mapping")
            for key in ("uid", "name", "type"):
                if not isinstance(entry.get(key), str) or not entry[key]:
                    raise PushError(f"{where}: {key} is required (datasources are matched by uid)")
            payload = {key: _expand(entry[key], environ, f"{where}.{key}") for key in _API_KEYS if key in entry}
            payload.setdefault("access", "proxy")
            if urls and entry["type"] in urls:
                payload["url"] = urls[entry["type"]]
            uid = payload["uid"]
            if uid in seen:
                raise PushError(f"{where}: uid {uid!r} is also in {seen[uid]}")
            seen[uid] = path
            datasources.append(Datasource(path, uid, payload["name"], payload["type"], payload))
    return datasources


def _expand(value: Any, environ: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1) or match.group(2)
            if name not in environ:
                raise PushError(f"{where}: refers to ${name}, which is not set in this environment")
            return environ[name]

        return _ENV_REFERENCE.sub(replace, value)
    if isinstance(value, dict):
        return {key: _expand(item, environ, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, environ, f"{where}[{index}]") for index, item in enumerate(value)]
    return value


# ---------------------------------------------------------------- Grafana


def push(api: GrafanaApi, dashboards: list[Dashboard], datasources: list[Datasource], *, out: TextIO) -> None:
    """Create or update every datasource (by uid), then every dashboard (overwrite) in the flowprobe folder."""
    for datasource in datasources:
        if _lookup(f"looking up datasource {datasource.uid}", api.datasource.get_datasource_by_uid, datasource.uid) is None:
            _call(f"creating datasource {datasource.uid}", api.datasource.create_datasource, datasource.payload)
            print(f"datasource {datasource.uid} ({datasource.type}): created", file=out)
        else:
            _call(f"updating datasource {datasource.uid}", api.datasource.update_datasource_by_uid, datasource.uid, datasource.payload)
            print(f"datasource {datasource.uid} ({datasource.type}): updated", file=out)

    if not dashboards:
        return
    folder_uid = _folder(api, out)
    for dashboard in dashboards:
        body = copy.deepcopy(dashboard.body)
        body["id"] = None  # ids are per Grafana install; the uid says which dashboard this is
        request = {"dashboard": body, "folderUid": folder_uid, "overwrite": True, "message": "flowprobe grafana push"}
        saved = _call(f"saving dashboard {dashboard.uid} ({dashboard.path.name})", api.dashboard.update_dashboard, request)
        version = saved.get("version") if isinstance(saved, dict) else None
        print(f"dashboard {dashboard.uid}: saved in folder {FOLDER_TITLE}" + (f" (version {version})" if version is not None else ""), file=out)


def _folder(api: GrafanaApi, out: TextIO) -> str:
    """The uid of the flowprobe folder, made if missing. One made by hand with that title is used as it is."""
    if _lookup(f"looking up folder {FOLDER_UID}", api.folder.get_folder, FOLDER_UID) is not None:
        return FOLDER_UID
    for folder in _call("listing folders", api.folder.get_all_folders) or []:
        if isinstance(folder, dict) and folder.get("title") == FOLDER_TITLE and folder.get("uid"):
            return str(folder["uid"])
    _call(f"creating folder {FOLDER_TITLE}", api.folder.create_folder, FOLDER_TITLE, FOLDER_UID)
    print(f"folder {FOLDER_TITLE}: created", file=out)
    return FOLDER_UID


def _call(what: str, function: Callable[..., _T], *args: Any) -> _T:
    """Run one API call; a refusal (4xx) becomes a PushError that says what was being done."""
    from grafana_client.client import GrafanaClientError

    try:
        return function(*args)
    except GrafanaClientError as exc:
        raise _explain(what, exc) from None


def _lookup(what: str, function: Callable[..., _T], *args: Any) -> _T | None:
    """Like _call, but a 404 means "not there yet": None."""
    from grafana_client.client import GrafanaClientError

    try:
        return function(*args)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise _explain(what, exc) from None


def _explain(what: str, exc: Any) -> PushError:
    status, message = exc.status_code, _message(exc.response) or exc.message
    if status == 401:
        return PushError(f"Grafana refused the credentials (401 Unauthorized) while {what}: check the token or password")
    if status == 403:
        return PushError(f"Grafana denied {what} (403 Forbidden: {message}); pushing needs the Editor role, and Admin for datasources")
    if status == 409 and what.startswith("creating datasource"):
        return PushError(f"Grafana refused {what} (409): a datasource with the same name but another uid exists ({message})")
    return PushError(f"Grafana refused {what} ({status}): {message}")


def _message(response: Any) -> str:
    if isinstance(response, dict) and isinstance(response.get("message"), str):
        return response["message"]
    return str(response or "").strip()[:200]


def _client(url: str, credential: str | tuple[str, str], timeout: float) -> GrafanaApi:
    from grafana_client import GrafanaApi

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PushError(f"--url {url!r}: expected http(s)://HOST[:PORT][/PATH]")
    if parts.username or parts.password:
        raise PushError("--url must not carry credentials: use --token-env, or --user with --password-env")
    # grafana-client appends "api" to the path as it is: a sub-path needs its trailing slash.
    prefix = parts.path.strip("/")
    return GrafanaApi(
        auth=credential,
        protocol=parts.scheme,
        host=parts.hostname,
        port=parts.port,
        url_path_prefix=f"{prefix}/" if prefix else "",
        timeout=timeout,
    )


def _credential(args: argparse.Namespace) -> str | tuple[str, str]:
    if args.user:
        password = os.environ.get(args.password_env)
        if not password:
            raise PushError(f"set {args.password_env} to the password of Grafana user {args.user!r} (--password-env)")
        return (args.user, password)
    token = os.environ.get(args.token_env)
    if not token:
        raise PushError(f"set {args.token_env} to a Grafana service account token (--token-env), or use --user with --password-env")
    return token


def command(args: argparse.Namespace) -> int:
    """`flowprobe grafana push`: exit 0 when everything was pushed, 1 with one line on stderr otherwise."""
    try:
        import grafana_client  # noqa: F401
    except ImportError:
        print("flowprobe grafana push: needs the grafana-client package (pip install grafana-client)", file=sys.stderr)
        return 1
    secret: str | None = None
    try:
        credential = _credential(args)
        secret = credential if isinstance(credential, str) else credential[1]
        urls = {kind: url for kind, url in (("prometheus", args.prometheus_url), ("alertmanager", args.alertmanager_url), ("influxdb", args.influxdb_url)) if url}
        dashboards = load_dashboards(args.dashboards)
        datasources = load_datasources(args.datasources, urls=urls)
        api = _client(args.url, credential, args.timeout)
        try:
            _reach(api, args.url)
            _transport_errors_explained(args.url, push, api, dashboards, datasources, out=sys.stdout)
        finally:
            api.client.s.close()
    except PushError as exc:
        text = str(exc)
        if secret:
            text = text.replace(secret, "<redacted>")
        print(f"flowprobe grafana push: {text}", file=sys.stderr)
        return 1
    print(f"SUCCESS: {len(datasources)} datasource(s) and {len(dashboards)} dashboard(s) pushed to {args.url}")
    return 0


def _transport_errors_explained(url: str, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Grafana failing (5xx) or going away in the middle of a push: one line, not a traceback."""
    import niquests
    from grafana_client.client import GrafanaException

    try:
        return function(*args, **kwargs)
    except GrafanaException as exc:
        if exc.status_code:
            raise PushError(f"Grafana at {url} failed: {exc.message}") from None
        raise PushError(f"lost Grafana at {url}: {exc.message}") from None
    except niquests.exceptions.RequestException as exc:
        raise PushError(f"lost Grafana at {url}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """The socket's own words ("Connection refused") from under urllib3's layers, else the whole text."""
    text = str(getattr(exc, "message", None) or exc)
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if found:
        return found.group(1).strip()
    found = re.search(r"Failed to resolve '([^']+)'", text)
    if found:
        return f"cannot resolve {found.group(1)}"
    return "timed out" if "timed out" in text.lower() else text


def _reach(api: GrafanaApi, url: str) -> None:
    """Fail early, and clearly, when nothing (or not Grafana) answers at `url`."""
    import niquests
    from grafana_client.client import GrafanaException

    try:
        health = api.client.GET("/health")
    except GrafanaException as exc:
        if exc.status_code:
            raise PushError(f"{url} does not look like Grafana: /api/health answered {exc.status_code}") from None
        raise PushError(f"cannot reach Grafana at {url}: {_reason(exc)}") from None
    except niquests.exceptions.RequestException as exc:
        raise PushError(f"cannot reach Grafana at {url}: {_reason(exc)}") from None
    except ValueError:
        raise PushError(f"{url} does not look like Grafana: /api/health did not answer JSON") from None
    if not isinstance(health, dict) or "database" not in health:
        raise PushError(f"{url} does not look like Grafana: /api/health answered {str(health)[:100]!r}")
