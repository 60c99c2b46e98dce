"""Every dashboard query against a real Prometheus that scraped a real collector.

One stack for the module: two demo targets (prod and staging) under uvicorn,
the collector running the six shipped workflows every second in all three
environments (dev points at a port nobody listens on), and Prometheus
scraping it every second with the repository's rules
(provisioning/prometheus/rules). Once every workflow has run in prod, prod's
database goes down (the chaos API), so health-check fails there, the
others are skipped, the generated FlowprobeWorkflowFailing alert fires, and
the failure and alert panels have something to show; dev's connection
failures open a circuit breaker.

Each panel query, with the dashboard's variables substituted, must parse and
return at least one series, whose labels fill the legend, unless
tests/dashboard_exclusions.yml exempts the panel with a reason. Queries run
twice: with every multi-value variable at "All", and narrowed to prod and
health-check.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.target import create_app
from tests.helpers import (
    PROBE_EMAIL, PROBE_PASSWORD, REPO, fast_copy, free_port, probe_environment, prometheus_config, running_process, running_prometheus,
    serve_in_thread, wait_until,
)
from tests.test_dashboards import (
    DASHBOARD_LIST,
    Panel,
    all_panels,
    excluded,
    panel_values,
    substitute,
    variable_query,
    variable_values,
    variables,
)

pytestmark = pytest.mark.e2e

RULES = sorted((REPO / "provisioning" / "prometheus" / "rules").glob("*.yml"))
WORKFLOWS = {"health-check", "user-login", "registration", "farm-creation", "product-listing", "order-placement"}
# Single-value picks: the broken pair, so its failure panels have data.
PICKS = {"env": "prod", "workflow": "health-check"}
PASSES = {"all": True, "prod": False}  # multi-value variables at "All", or narrowed to PICKS
DEADLINE_S = 45  # for the whole stack to have every series a panel needs


@dataclass
class Stack:
    prometheus: str
    collector: str
    logs: Path
    deadline: float

    def query(self, expr: str) -> dict[str, Any]:
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}\n-> {body.get('error', body)}"
        return body["data"]

    def series(self, expr: str) -> list[dict[str, Any]]:
        data = self.query(expr)
        assert data["resultType"] in {"vector", "matrix"}, data
        return list(data["result"])

    def wait_for(self, expr: str, what: str) -> list[dict[str, Any]]:
        """Poll until `expr` returns series, until the stack's deadline; the logs' tails on failure."""
        try:
            return wait_until(lambda: self.series(expr), timeout=max(1.0, self.deadline - time.monotonic()), interval=0.25, what=what)
        except AssertionError as exc:
            logs = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(self.logs.glob("*.log")))
            raise AssertionError(f"{exc}\n{logs}") from None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboards")
    deadline = time.monotonic() + DEADLINE_S
    apps = [create_app(demo_email=PROBE_EMAIL, demo_password=PROBE_PASSWORD) for _ in range(2)]
    # dev's port is bound but never listened on: connections are refused, and no other server can take it.
    with serve_in_thread(apps[0]) as prod, serve_in_thread(apps[1]) as staging, socket.socket() as refusing:
        refusing.bind(("127.0.0.1", 0))
        dev = f"http://127.0.0.1:{refusing.getsockname()[1]}"
        port = free_port()
        collector = f"http://127.0.0.1:{port}"
        args = [sys.executable, "-m", "collector.cli", "run", "--config", str(fast_copy(tmp / "workflows")),
                "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp / "data"), "--grace", "1"]
        env = probe_environment({"prod": prod, "staging": staging, "dev": dev})
        analytics_port = free_port()
        analytics = f"http://127.0.0.1:{analytics_port}"
        # The analytics worker reads the collector's history, as in the embedded default.
        worker = [sys.executable, "-m", "analytics", "--listen", f"127.0.0.1:{analytics_port}", "--interval", "1s",
                  "--source", f"history:{tmp / 'data' / 'history.sqlite3'}", "--state-dir", str(tmp / "analytics")]
        with running_process(args, env=env, log=tmp / "collector.log"), running_process(worker, log=tmp / "analytics.log"):
            wait_until(lambda: httpx.get(f"{collector}/readyz", timeout=2).status_code == 200, what="collector ready")
            wait_until(lambda: httpx.get(f"{analytics}/healthz", timeout=2).status_code == 200, what="analytics worker ready")
            config = prometheus_config({"flowprobe": [collector], "flowprobe-analytics": [analytics]}, rules=RULES)
            with running_prometheus(tmp, config) as prometheus:
                s = Stack(prometheus, collector, tmp, deadline)

                def workflows_with_steps(env: str) -> set[str]:
                    found = s.series(f'count by (workflow) (flowprobe_step_phase_seconds{{env="{env}"}})')
                    return {r["metric"]["workflow"] for r in found}

                # Healthy first, so every step of every workflow has series in prod...
                wait_until(lambda: workflows_with_steps("prod") == WORKFLOWS, timeout=deadline - time.monotonic(), interval=0.25,
                           what="every workflow's steps in prod")
                # ...then prod's database goes down: /health answers 503, health-check fails, the rest is skipped.
                httpx.put(f"{prod}/chaos/database", json={"outage": True}, timeout=5).raise_for_status()
                for what, expr in [
                    ("health-check failing in prod", 'flowprobe_workflow_failure_info{env="prod", workflow="health-check"}'),
                    # increase() needs two samples of the new failure series in its window.
                    ("failures counted in prod", 'increase(flowprobe_step_failures_total{env="prod"}[1m]) > 0'),
                    ("a circuit breaker (dev)", "flowprobe_circuit_open"),
                    ("skipped runs in prod", 'increase(flowprobe_workflow_runs_total{env="prod", result="skipped"}[1m]) > 0'),
                    ("the collector's process metrics", 'rate(process_cpu_seconds_total{job="flowprobe"}[1m])'),
                    ("anomaly scores from the analytics worker", 'flowprobe_anomaly_score{env="prod"}'),
                ] + ([("an alert firing", 'ALERTS{alertstate="firing"}')] if RULES else []):
                    s.wait_for(expr, what)
                yield s


# ---------------------------------------------------------------- the cases

@dataclass(frozen=True)
class Case:
    panel: Panel
    pass_name: str

    @property
    def id(self) -> str:
        return f"{self.panel.uid}/{self.panel.title}/{self.pass_name}"


CASES = [Case(panel, name) for d in DASHBOARD_LIST for panel in all_panels(d) if panel.targets for name in PASSES]


def _exprs(case: Case) -> list[tuple[str, str, str]]:
    """(refId, query with values, legend) for each target of the case's panel."""
    values = variable_values(case.panel.dashboard, PICKS, all_multi=PASSES[case.pass_name])
    values = panel_values(case.panel, values, PICKS)
    out = []
    for target in case.panel.targets:
        expr = substitute(target["expr"], values)
        assert "$" not in re.sub(r"#[^\n]*", "", expr), f"unsubstituted variable in {expr}"
        out.append((target["refId"], expr, target.get("legendFormat", "")))
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_panel_query_returns_series(stack: Stack, case: Case) -> None:
    exclusion = excluded(case.panel, "series")
    for ref, expr, legend in _exprs(case):
        if exclusion is not None:
            # Exempt from returning data, not from being valid PromQL; and an exemption must still be needed.
            assert not stack.series(expr), f"{case.panel} {ref} returns series: remove its exclusion ({exclusion.reason})"
            continue
        assert RULES or "ALERTS" not in expr, f"{case.panel} {ref}: ALERTS needs alerting rules in provisioning/prometheus/rules"
        found = stack.wait_for(expr, f"{case.panel} {ref} to return a series:\n{expr}")
        labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        for series in found:
            assert labels <= set(series["metric"]), f"{case.panel} {ref}: legend {legend!r} needs labels missing from {series['metric']}"


@pytest.mark.parametrize("dashboard", DASHBOARD_LIST, ids=[d["uid"] for d in DASHBOARD_LIST])
def test_variable_queries_list_the_environments_and_workflows(stack: Stack, dashboard: dict[str, Any]) -> None:
    values = variable_values(dashboard, PICKS)
    expected = {"env": {"prod", "staging", "dev"}, "workflow": WORKFLOWS}
    for name, var in variables(dashboard).items():
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", substitute(variable_query(var), values))
        assert match, variable_query(var)
        selector, label = match.groups()
        response = httpx.get(f"{stack.prometheus}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=10)
        assert response.status_code == 200, response.text
        assert set(response.json()["data"]) == expected[name], f"{dashboard['uid']}: ${name} from {selector}"


def test_links_to_the_collector_api_answer(stack: Stack) -> None:
    """The workflow dashboard's links to the run history reach the collector and list runs."""
    checked = 0
    for dashboard in DASHBOARD_LIST:
        values = variable_values(dashboard, PICKS)
        if "collector_url" not in values:
            continue
        values |= {"collector_url": stack.collector}
        urls = re.findall(r'"url": "(\$\{collector_url\}[^"]*)"', json.dumps(dashboard))
        assert urls, f"{dashboard['uid']} has a collector_url variable but no link using it"
        for url in set(urls):
            response = httpx.get(substitute(url, values), timeout=10)
            assert response.status_code == 200, f"{url}: {response.status_code} {response.text[:200]}"
            runs = response.json()["items"]
            assert runs and {(r["workflow"], r["env"]) for r in runs} == {(PICKS["workflow"], PICKS["env"])}, runs[:1]
            checked += 1
    assert checked

