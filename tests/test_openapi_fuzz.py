"""schemathesis against the collector's own OpenAPI document: no request it can make gets a 500.

The app is the real one (`create_app`) over a real `Service` with the shipped
workflows, a run history with real runs against the in-process demo target,
an open alert store holding an alert, and tokens of every role, so most
operations get past authentication into their handlers. Each request is
sent with the token of a role that may make it (admin, or webhook for
Alertmanager's webhook), and once more without a token where the route is
open, so both sides of the read policy are exercised.

It runs in `make test` with a bounded number of examples per operation
(`FLOWPROBE_FUZZ_EXAMPLES`, default 15, about 30 s here).
`FLOWPROBE_FUZZ_TIMES=1` prints the time spent on each operation.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from collector.api import create_app
from collector.service import Service
from tests.helpers import closing, config_with_tokens, demo_service, serve_in_thread

EXAMPLES = int(os.environ.get("FLOWPROBE_FUZZ_EXAMPLES", "15"))
# No shrinking: a failure is reported with the example that found it, and the run stays bounded.
PHASES = (Phase.explicit, Phase.generate)
TOKENS = {role: f"{role}-token-of-the-openapi-fuzz" for role in ("viewer", "operator", "admin", "webhook")}
ALERT = {
    "version": "4", "groupKey": "{}:{}", "status": "firing", "receiver": "flowprobe", "groupLabels": {}, "commonLabels": {},
    "commonAnnotations": {}, "externalURL": "http://alertmanager.invalid", "truncatedAlerts": 0,
    "alerts": [{
        "status": "firing", "labels": {"alertname": "FlowprobeWorkflowFailing", "workflow": "user-login", "env": "prod", "severity": "critical"},
        "annotations": {"summary": "user-login fails"}, "startsAt": "2025-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "", "fingerprint": "fuzz-1",
    }],
}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("openapi-fuzz")
    config = tmp / "config"
    environment = config_with_tokens(config, TOKENS, name="fuzz-{role}", variable="FUZZ_{ROLE}_TOKEN")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        with closing(demo_service(config, tmp / "data")) as svc:
            async def history() -> None:
                for workflow in ("health-check", "user-login", "product-listing"):
                    await svc.run_pair(workflow, "prod")
                await svc.alerts.receive([])

            asyncio.run(history())
            svc.store.flush()
            svc.ready = True
            # A stopping service ends every live stream at once: the SSE endpoint answers its snapshot and closes.
            svc.live.close()
            yield svc


@pytest.fixture(scope="module")
def app(service: Service) -> Any:
    return create_app(service)


@pytest.fixture(scope="module")
def base(app: Any) -> Iterator[str]:
    with serve_in_thread(app) as url:
        posted = httpx.post(f"{url}/api/alertmanager/webhook", json=ALERT, headers={"Authorization": f"Bearer {TOKENS['webhook']}"})
        assert posted.status_code == 200, posted.text
        yield url


def _token_for(path: str) -> str:
    return TOKENS["webhook"] if path == "/api/alertmanager/webhook" else TOKENS["admin"]


def _send(client: httpx.Client, case: Any, base: str, headers: dict[str, str]) -> httpx.Response:
    """The case as schemathesis would send it, through httpx (schemathesis's own requests transport
    breaks on the urllib3-future that grafana-client's niquests installs over urllib3)."""
    kwargs = case.as_transport_kwargs(base_url=base, headers=headers)
    body: dict[str, Any] = {}
    if "json" in kwargs:
        body["json"] = kwargs["json"]
    elif isinstance(kwargs.get("data"), (bytes, str)):
        body["content"] = kwargs["data"]
    elif kwargs.get("data") is not None:
        body["data"] = kwargs["data"]
    try:
        request = client.build_request(kwargs["method"], kwargs["url"], headers=kwargs.get("headers"), params=kwargs.get("params"),
                                       cookies=kwargs.get("cookies") or None, **body)
    except (UnicodeEncodeError, TypeError, ValueError, httpx.InvalidURL):
        reject()  # a request no HTTP client could send (a header outside latin-1, say)
    try:
        return client.send(request)
    except httpx.LocalProtocolError:
        reject()  # h11 refuses to send it (an illegal header value): no server would see it either
        raise


def _check(client: httpx.Client, case: Any, base: str) -> None:
    for headers in ({"Authorization": f"Bearer {_token_for(case.path)}"}, {}):
        response = _send(client, case, base, headers)
        where = f"{case.method} {case.formatted_path} ({'with' if headers else 'without'} a token)"
        # 502 and 503 are answers (Alertmanager away, not ready yet); 500 is a bug.
        assert response.status_code != 500, f"{where} -> {response.status_code}: {response.text[:500]}"
        if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
            error = response.json()
            assert isinstance(error, dict) and isinstance(error.get("error"), str), f"{where}: not the error shape: {response.text[:300]}"


def test_no_request_gets_a_server_error(app: Any, base: str) -> None:
    """Every operation, with valid (positive) and invalid (negative) requests, through uvicorn.

    schemathesis's pytest plugin (`from_fixture`) does not run under pytest 9 here, so the
    operations are driven with Hypothesis directly, and every failing one is reported."""
    document = schemathesis.openapi.from_dict(app.openapi())
    failures: list[str] = []
    operations = 0
    with httpx.Client(timeout=10) as client:
        for result in document.get_all_operations():
            operation = result.ok()
            operations += 1
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True, phases=PHASES)
                def fuzz(case: Any) -> None:
                    _check(client, case, base)

                started = time.monotonic()
                try:
                    fuzz()
                except Unsatisfiable:
                    assert mode is GenerationMode.NEGATIVE, operation.label  # nothing in the operation to make invalid
                except AssertionError as exc:
                    failures.append(f"{operation.label} [{mode.value}]: {exc}")
                if os.environ.get("FLOWPROBE_FUZZ_TIMES"):
                    print(f"{time.monotonic() - started:6.2f}s {operation.label} [{mode.value}]")
    assert operations >= 20
    assert not failures, "\n".join(failures)
