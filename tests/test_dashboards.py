"""The committed Grafana dashboards, linted without Grafana.

The rules follow grafana/dashboard-linter, re-implemented here: one
``datasource`` variable; data sources referenced by uid; every panel titled,
described and with a unit; ``$__rate_interval`` in ``rate``; ``_total``
counters only inside ``rate``/``irate``/``increase``; a fixed ``uid`` (the file
name) and no ``id``. Added for flowprobe: a 10 s refresh, sparklines on stat
panels, links between the dashboards, data source uids that provisioning
really defines, metric names that METRICS.md documents, and queries that
promtool parses. ``tests/e2e/test_dashboard_queries.py`` runs every query
against a real Prometheus, reusing the helpers below.

Exemptions live in ``tests/dashboard_exclusions.yml``, each with its reason.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO, require_binary

DASHBOARDS = REPO / "grafana" / "dashboards"
DATASOURCES = REPO / "provisioning" / "grafana" / "datasources" / "datasources.yml"
PROVIDERS = REPO / "provisioning" / "grafana" / "dashboards" / "dashboards.yml"
PROMETHEUS_CONFIG = REPO / "provisioning" / "prometheus" / "prometheus.yml"
EXCLUSIONS = REPO / "tests" / "dashboard_exclusions.yml"
METRICS = REPO / "METRICS.md"
DOC = REPO / "DASHBOARDS.md"

SCHEMA_VERSION = 39  # Grafana 10.4 / 11.0 classic dashboard JSON
REFRESH = "10s"
OVERVIEW, DETAIL = "flowprobe-overview", "flowprobe-workflow"

# Values the tests give Grafana's own variables: a 15 s scrape interval and a 5 minute dashboard.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m", "__range_s": "300", "__range_ms": "300000"}
# Built-ins that only exist in links (per field, per row, per time range).
LINK_BUILTINS = ("__field", "__data", "__value", "__series", "__url_time_range")

# Metrics a dashboard may use that are not flowprobe's: Prometheus's own.
PROMETHEUS_METRICS = {"ALERTS", "ALERTS_FOR_STATE", "up", "scrape_duration_seconds", "scrape_samples_scraped"}

# Grafana unit ids (packages/grafana-data/src/valueFormats/categories.ts) that fit these dashboards;
# a unit outside this list is most likely a typo, which Grafana silently shows as a plain number.
UNITS = {
    "none", "short", "string", "percent", "percentunit", "bool", "bool_yes_no", "bool_on_off",
    "ns", "µs", "ms", "s", "m", "h", "d", "dtdurationms", "dtdurations", "clockms", "clocks",
    "dateTimeAsIso", "dateTimeAsLocal", "dateTimeAsSystem", "dateTimeFromNow",
    "bytes", "decbytes", "bits", "decbits", "Bps", "bps", "binBps",
    "ops", "reqps", "rps", "wps", "iops", "cps", "opm", "rpm", "wpm", "cpm", "hertz",
}

KNOWN_CHECKS = {"unit", "series"}


# ---------------------------------------------------------------- reading the dashboards


@dataclass(frozen=True)
class Panel:
    dashboard: dict[str, Any]
    raw: dict[str, Any]

    @property
    def uid(self) -> str:
        return str(self.dashboard["uid"])

    @property
    def title(self) -> str:
        return str(self.raw.get("title", ""))

    @property
    def type(self) -> str:
        return str(self.raw.get("type", ""))

    @property
    def targets(self) -> list[dict[str, Any]]:
        return list(self.raw.get("targets") or [])

    def __str__(self) -> str:
        return f"{self.uid} / {self.title or self.raw.get('id')}"


def load_dashboards() -> list[dict[str, Any]]:
    found = sorted(DASHBOARDS.glob("*.json"))
    assert found, f"no dashboards in {DASHBOARDS}"
    return [json.loads(path.read_text(encoding="utf-8")) | {"__file__": path.name} for path in found]


def all_panels(dashboard: dict[str, Any], *, rows: bool = False) -> Iterator[Panel]:
    """Every panel, including those nested in collapsed rows; rows themselves only if asked."""
    for raw in dashboard.get("panels", []):
        if raw.get("type") == "row":
            if rows:
                yield Panel(dashboard, raw)
            for nested in raw.get("panels", []):
                yield Panel(dashboard, nested)
        else:
            yield Panel(dashboard, raw)


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query")
    return str(query.get("query", "") if isinstance(query, dict) else query or variable.get("definition", ""))


def variable_values(dashboard: dict[str, Any], picks: dict[str, str], *, all_multi: bool = True) -> dict[str, str]:
    """What each template variable stands for in a test.

    Multi-value variables take their "All" value (``allValue``, a regex) when
    ``all_multi``, else the picked value, like single-value variables. A
    repeated panel sees one value of its repeat variable: see ``panel_values``.
    """
    values = dict(BUILTINS)
    for name, var in variables(dashboard).items():
        kind = var.get("type")
        if kind == "datasource":
            values[name] = str(var.get("current", {}).get("value", ""))
        elif kind in {"textbox", "constant"}:
            values[name] = str(var.get("query", ""))
        elif kind == "custom" and not picks.get(name):
            values[name] = str(var.get("current", {}).get("value", ""))
        elif var.get("includeAll") and all_multi:
            values[name] = str(var.get("allValue") or ".*")
        else:
            assert name in picks, f"{dashboard['uid']}: no test value for the variable {name!r}"
            values[name] = picks[name]
    return values


def panel_values(panel: Panel, values: dict[str, str], picks: dict[str, str]) -> dict[str, str]:
    repeat = panel.raw.get("repeat")
    return values | {repeat: picks[repeat]} if repeat else values


_VARIABLE = re.compile(r"\$\{(\w+)(?:[.:][^}]*)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")


def used_variables(text: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in _VARIABLE.finditer(text)}


def substitute(text: str, values: dict[str, str]) -> str:
    """Replace Grafana variables (``$x``, ``${x}``, ``${x:fmt}``, ``[[x]]``) by their test values."""

    def one(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise KeyError(f"undefined variable ${name}")
        return values[name]

    return _VARIABLE.sub(one, text)


# ---------------------------------------------------------------- a small PromQL reader

_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>\#[^\n]*)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
    | (?P<variable>\$\{[^}]+\}|\$\w+|\[\[\w+(?::\w+)?\]\])
    | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w.]))
    | (?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<name>[A-Za-z_:][\w:]*)
    | (?P<op>==|!=|=~|!~|>=|<=|[-+*/%^<>=(){}\[\],@:])
    """,
    re.X,
)
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start", "end"} | LABEL_LISTS
RATE_FUNCTIONS = {"rate", "irate"}
COUNTER_FUNCTIONS = {"rate", "irate", "increase"}


@dataclass(frozen=True)
class Selector:
    """A metric selector in a query, with its range and the function it sits directly in."""

    metric: str
    range: str | None
    function: str | None


def tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read the query at {expr[pos:pos + 20]!r}")
        kind = match.lastgroup or ""
        if kind not in {"space", "comment"}:
            out.append((kind, match.group()))
        pos = match.end()
    return out


def selectors(expr: str) -> list[Selector]:
    """The metric selectors of a PromQL query, each with its range and enclosing function."""
    toks = tokens(expr)
    stack: list[tuple[str, str]] = []  # ("call", name) | ("labels", "") | ("paren", "") | ("braces", "")
    pending_call: str | None = None
    found: list[Selector] = []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        inside = stack[-1][0] if stack else ""
        if text == "(":
            if toks[i - 1][1].lower() in LABEL_LISTS if i else False:
                stack.append(("labels", ""))
            elif pending_call is not None:
                stack.append(("call", pending_call))
                pending_call = None
            else:
                stack.append(("paren", ""))
        elif text == "{":
            stack.append(("braces", ""))
        elif text in {")", "}"}:
            stack.pop()
        elif text == "[":  # a range or subquery after a parenthesis or a bare {..} selector
            end = next(j for j in range(i, len(toks)) if toks[j][1] == "]")
            found.append(Selector("", "".join(t for _, t in toks[i + 1:end]), _function(stack)))
            i = end
        elif kind == "name" and inside not in {"labels", "braces"}:
            lowered = text.lower()
            if lowered in AGGREGATIONS:
                pending_call = lowered
            elif nxt == "(" and lowered not in KEYWORDS:
                pending_call = text
            elif lowered not in KEYWORDS:
                j = i + 1
                if j < len(toks) and toks[j][1] == "{":
                    depth = 0
                    while True:
                        depth += {"{": 1, "}": -1}.get(toks[j][1], 0)
                        if depth == 0:
                            break
                        j += 1
                    j += 1
                rng = None
                if j < len(toks) and toks[j][1] == "[":
                    end = next(k for k in range(j, len(toks)) if toks[k][1] == "]")
                    rng = "".join(t for _, t in toks[j + 1:end])
                    j = end + 1
                found.append(Selector(text, rng, _function(stack)))
                i = j - 1
        i += 1
    return found


def _function(stack: list[tuple[str, str]]) -> str | None:
    return stack[-1][1] if stack and stack[-1][0] == "call" else None


def metric_names(expr: str) -> set[str]:
    return {s.metric for s in selectors(expr) if s.metric}


# ---------------------------------------------------------------- reading provisioning, METRICS.md, exclusions


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    return {ds["uid"]: ds for ds in config["datasources"]}


def documented_metrics() -> dict[str, str]:
    """Metric name -> type, from every table row of METRICS.md that starts with a metric and its type."""
    rows = re.findall(r"^\| `(\w+)` \| (gauge|counter|histogram|info|summary) \|", METRICS.read_text(encoding="utf-8"), re.M)
    metrics = dict(rows)
    for name, kind in rows:
        if kind == "histogram":
            metrics.update({f"{name}_bucket": "counter", f"{name}_sum": "counter", f"{name}_count": "counter"})
    return metrics


@dataclass(frozen=True)
class Exclusion:
    dashboard: str
    panel: str
    checks: tuple[str, ...]
    reason: str


def load_exclusions() -> list[Exclusion]:
    entries = yaml.safe_load(EXCLUSIONS.read_text(encoding="utf-8"))["exclusions"]
    for entry in entries:
        assert set(entry) <= {"dashboard", "panel", "checks", "reason"}, f"unknown keys in the exclusion {entry}"
    return [Exclusion(e.get("dashboard", ""), e.get("panel", ""), tuple(e.get("checks") or ()), str(e.get("reason") or "").strip())
            for e in entries]


def excluded(panel: Panel, check: str) -> Exclusion | None:
    for exclusion in load_exclusions():
        if (exclusion.dashboard, exclusion.panel) == (panel.uid, panel.title) and check in exclusion.checks:
            return exclusion
    return None


# ---------------------------------------------------------------- the rules

DASHBOARD_LIST = load_dashboards()
IDS = [d["uid"] for d in DASHBOARD_LIST]


def _unit(panel: Panel) -> list[str]:
    unit = panel.raw.get("fieldConfig", {}).get("defaults", {}).get("unit")
    if not unit:
        return ["has no unit (fieldConfig.defaults.unit)"]
    return [] if unit in UNITS else [f"has an unknown unit {unit!r}"]


PANEL_CHECKS: dict[str, Callable[[Panel], list[str]]] = {"unit": _unit}


@pytest.mark.parametrize("dashboard", DASHBOARD_LIST, ids=IDS)
def test_uid_is_the_file_name_and_there_is_no_id(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == dashboard["__file__"].removesuffix(".json")
    assert re.fullmatch(r"[a-z0-9-]{1,40}", dashboard["uid"])
    # A committed id clashes with whatever id the target Grafana has given another dashboard.
    assert "id" not in dashboard
    assert dashboard["title"].startswith("flowprobe / ")
    assert "flowprobe" in dashboard["tags"]


@pytest.mark.parametrize("dashboard", DASHBOARD_LIST, ids=IDS)
def test_schema_and_live_refresh(dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] == SCHEMA_VERSION
    assert dashboard["refresh"] == REFRESH
    assert REFRESH in dashboard["timepicker"]["refresh_intervals"]
    assert dashboard["time"]["to"] == "now"


@pytest.mark.parametrize("dashboard", DASHBOARD_LIST, ids=IDS)
def test_one_datasource_variable(dashboard: dict[str, Any]) -> None:
    found = [v for v in variables(dashboard).values() if v["type"] == "datasource"]
    assert len(found) == 1, "exactly one data source variable"
    (var,) = found
    assert (var["name"], var["label"], var["query"]) == ("datasource", "Data source", "prometheus")
    default = var["current"]["value"]
    assert provisioned_datasources()[default]["type"] == "prometheus", f"the default {default!r} is not a provisioned Prometheus"


def _datasource_refs(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield f"{path}.{key}", value
            yield from _datasource_refs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for n, value in enumerate(node):
            yield from _datasource_refs(value, f"{path}[{n}]")


@pytest.mark.parametrize("dashboard", DASHBOARD_LIST, ids=IDS)
def test_datasources_are_referenced_by_uid(dashboard: dict[str, Any]) -> None:
    provisioned = provisioned_datasources()
    refs = list(_datasource_refs(dashboard))
    assert refs
    for where, ref in refs:
        # A name (a plain string) breaks as soon as someone renames the data source.
        assert isinstance(ref, dict) and set(ref) == {"type", "uid"}, f"{where}: {ref!r} is not a {{type, uid}} reference"
        if ref["type"] == "grafana":  # the built-in annotation source
            continue
        if ref["uid"] in {"$datasource", "${datasource}"}:
            assert ref["type"] == "prometheus", where
        else:
            assert ref["uid"] in provisioned, f"{where}: {ref['uid']!r} is not provisioned"
            assert provisioned[ref["uid"]]["type"] == ref["type"], where
    for panel in all_panels(dashboard):
        for target in panel.targets:
            assert "datasource" in target, f"{panel}: target {target['refId']} has no data source"
        if panel.targets:
            assert "datasource" in panel.raw, f"{panel}: no data source"


@pytest.mark.parametrize("dashboard", DASHBOARD_LIST, ids=IDS)
def test_panels_are_titled_and_described(dashboard: dict[str, Any]) -> None:
    for panel in all_panels(dashboard, rows=True):
        assert panel.title.strip(), f"{panel}: no title"
        if panel.type != "row":
            assert len(str(panel.raw.get("description", "")).strip()) >= 20, f"{panel}: no description"


@pytest.mark.parametrize("dashboard", DASHBOARD_LIST, ids=IDS)
@pytest.mark.parametrize("check", sorted(PANEL_CHECKS))
def test_panel_rule(dashboard: dict[str, Any], check: str) -> None:
    problems = [f"{panel}: {problem}" for panel in all_panels(dashboard)
                for problem in PANEL_CHECKS[check](panel) if not excluded(panel, check)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("dashboard", DASHBOARD_LIST, ids=IDS)
def test_panel_ids_and_layout(dashboard: dict[str, Any]) -> None:
    ids = [p.raw["id"] for p in all_panels(dashboard, rows=True)]
    assert len(ids) == len(set(ids)), "panel ids must be unique (links and viewPanel use them)"
    taken: set[tuple[int, int]] = set()
    for panel in all_panels(dashboard, rows=True):
        grid = panel.raw["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, f"{panel}: {grid}"
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & taken, f"{panel} overlaps another panel"
        taken |= cells


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[Panel, dict[str, Any]]]:
    for panel in all_panels(dashboard):
        for target in panel.targets:
            yield panel, target


@pytest.mark.parametrize("dashboard", DASHBOARD_LIST, ids=IDS)
def test_rate_queries_use_rate_interval(dashboard: dict[str, Any]) -> None:
    """rate/irate over $__rate_interval; increase over it or the whole $__range; no fixed windows anywhere."""
    for panel, target in _queries(dashboard):
        for s in selectors(target["expr"]):
            if s.range is None:
                continue
            where = f"{panel} {target['refId']}: {s.metric or 'subquery'}[{s.range}] in {s.function}()"
            if s.function in RATE_FUNCTIONS:
                assert s.range == "$__rate_interval", where
            elif s.function == "increase":
                assert s.range in {"$__rate_interval", "$__range"}, where
            else:
                # A fixed window ignores the scrape interval and the zoom.
                assert s.range.startswith("$"), where


@pytest.mark.parametrize("dashboard", DASHBOARD_LIST, ids=IDS)
def test_counters_are_wrapped_in_rate(dashboard: dict[str, Any]) -> None:
    counters = {name for name, kind in documented_metrics().items() if kind == "counter"}
    for panel, target in _queries(dashboard):
        for s in selectors(target["expr"]):
            if s.metric.endswith("_total") or s.metric in counters:
                assert s.range is not None and s.function in COUNTER_FUNCTIONS, (
                    f"{panel} {target['refId']}: counter {s.metric} outside rate(), irate() or increase()")


@pytest.mark.parametrize("dashboard", DASHBOARD_LIST, ids=IDS)
def test_stat_panels_have_sparklines(dashboard: dict[str, Any]) -> None:
    for panel in all_panels(dashboard):
        if panel.type == "stat":
            assert panel.raw["options"].get("graphMode") == "area", f"{panel}: no sparkline"
            # A sparkline needs a range query.
            assert all(not t.get("instant") for t in panel.targets), f"{panel}: instant query, no sparkline"


@pytest.mark.parametrize("dashboard", DASHBOARD_LIST, ids=IDS)
def test_every_variable_used_is_defined(dashboard: dict[str, Any]) -> None:
    defined = set(variables(dashboard)) | set(BUILTINS)
    text = json.dumps(dashboard)
    for name in used_variables(text):
        assert name in defined or name.startswith(LINK_BUILTINS) or name == "__all", f"${name} is not defined"
    for panel, target in _queries(dashboard):
        assert used_variables(target["expr"]) <= defined, f"{panel}: {used_variables(target['expr']) - defined}"
    for name, var in variables(dashboard).items():
        if var["type"] == "query":
            assert variable_query(var).startswith("label_values("), name
            assert var["refresh"] == 2, f"{name}: refresh the values when the time range changes"
            assert var["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, name


@pytest.mark.parametrize("dashboard", DASHBOARD_LIST, ids=IDS)
def test_metrics_are_documented(dashboard: dict[str, Any]) -> None:
    documented = documented_metrics()
    exprs = [t["expr"] for _, t in _queries(dashboard)]
    exprs += [variable_query(v).removeprefix("label_values(").split(",")[0] for v in variables(dashboard).values() if v["type"] == "query"]
    for expr in exprs:
        for name in metric_names(expr):
            assert name in documented or name in PROMETHEUS_METRICS, f"{name} is not in METRICS.md"


def test_overview_filters_by_environment_and_workflow() -> None:
    (overview,) = [d for d in DASHBOARD_LIST if d["uid"] == OVERVIEW]
    found = variables(overview)
    for name, label in (("env", "env"), ("workflow", "workflow")):
        var = found[name]
        assert var["type"] == "query" and var["multi"] and var["includeAll"] and var["allValue"] == ".*"
        assert variable_query(var).startswith("label_values(flowprobe_workflow_success") and variable_query(var).endswith(f", {label})")
    (detail,) = [d for d in DASHBOARD_LIST if d["uid"] == DETAIL]
    for name in ("env", "workflow"):
        assert not variables(detail)[name]["multi"], f"the detail dashboard shows one {name}"
    assert variables(detail)["collector_url"]["query"] == "http://127.0.0.1:9700"


def test_dashboards_link_to_each_other() -> None:
    uids = {d["uid"] for d in DASHBOARD_LIST}
    for dashboard in DASHBOARD_LIST:
        linked = {m for link in dashboard["links"] for m in re.findall(r"/d/([\w-]+)", link.get("url", ""))}
        assert linked >= uids - {dashboard["uid"]}, f"{dashboard['uid']} does not link to {uids - {dashboard['uid']} - linked}"
        for link in dashboard["links"]:
            if link["url"].startswith("/d/"):
                assert link["includeVars"] and link["keepTime"], f"{dashboard['uid']}: {link['title']} drops the variables or time"
        # Every dashboard URL anywhere (panel and data links included) points at a dashboard that exists.
        for uid in re.findall(r"/d/([\w-]+)", json.dumps(dashboard)):
            assert uid in uids, f"{dashboard['uid']} links to a missing dashboard {uid}"
    # The overview's per-workflow panels open that workflow's detail.
    (overview,) = [d for d in DASHBOARD_LIST if d["uid"] == OVERVIEW]
    detail_links = [p for p in all_panels(overview) if f"/d/{DETAIL}?" in json.dumps(p.raw) and "var-workflow=" in json.dumps(p.raw)]
    assert len(detail_links) >= 2



def test_alert_link_opens_the_provisioned_alertmanager() -> None:
    """Grafana's alerting pages name an Alertmanager data source by its name, not its uid."""
    names = {ds["name"] for ds in provisioned_datasources().values() if ds["type"] == "alertmanager"}
    found = [m for d in DASHBOARD_LIST for m in re.findall(r"/alerting/groups\?alertmanager=([^&\"]+)", json.dumps(d))]
    assert found and set(found) <= names

def test_queries_parse_with_promtool(tmp_path: Path) -> None:
    """Every query and variable query, its variables substituted, parses (the linter's promql rule)."""
    promtool = require_binary("promtool")
    rules = []
    for dashboard in DASHBOARD_LIST:
        values = variable_values(dashboard, {"env": "prod", "workflow": "health-check"})
        for n, (panel, target) in enumerate(_queries(dashboard)):
            expr = substitute(target["expr"], panel_values(panel, values, {"env": "prod"}))
            rules.append({"record": f"dashboard:{dashboard['uid'].replace('-', '_')}:q{n}", "expr": expr})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promql_reader() -> None:
    found = selectors('histogram_quantile(0.9, sum by (le, job) (rate(a_bucket{x=~"$x", y="b"}[$__rate_interval]))) '
                      '/ on (job) group_left (team) info # a comment with rate(c_total[5m])\n'
                      '+ sum(increase(b_total[$__range])) by (job) + count(up offset 5m) + max_over_time(g[$__interval])')
    assert found == [Selector("a_bucket", "$__rate_interval", "rate"), Selector("info", None, None),
                     Selector("b_total", "$__range", "increase"), Selector("up", None, "count"),
                     Selector("g", "$__interval", "max_over_time")]
    assert selectors("c_total > 0") == [Selector("c_total", None, None)]


# ---------------------------------------------------------------- provisioning


def test_datasources_are_provisioned_by_uid() -> None:
    config = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))
    assert config["apiVersion"] == 1
    uids = [ds["uid"] for ds in config["datasources"]]
    assert len(uids) == len(set(uids))
    found = {ds["uid"]: (ds["type"], ds["url"]) for ds in config["datasources"]}
    assert found == {
        "flowprobe-prometheus": ("prometheus", "http://prometheus:9090"),
        "flowprobe-alertmanager": ("alertmanager", "http://alertmanager:9093"),
        "flowprobe-influxdb": ("influxdb", "http://influxdb:8086"),
    }
    by_uid = provisioned_datasources()
    assert by_uid["flowprobe-alertmanager"]["jsonData"]["implementation"] == "prometheus"
    assert by_uid["flowprobe-prometheus"]["jsonData"]["alertmanagerUid"] == "flowprobe-alertmanager"
    influx = by_uid["flowprobe-influxdb"]
    assert {k: influx["jsonData"][k] for k in ("version", "organization", "defaultBucket")} == {
        "version": "Flux", "organization": "flowprobe", "defaultBucket": "flowprobe"}
    assert [ds for ds in config["datasources"] if ds.get("isDefault")] == [by_uid["flowprobe-prometheus"]]


def test_no_secret_is_committed() -> None:
    for ds in provisioned_datasources().values():
        for key, value in (ds.get("secureJsonData") or {}).items():
            # Grafana expands $VAR / ${VAR} from its environment when it reads the file.
            assert re.fullmatch(r"\$(\{[A-Z_][A-Z0-9_]*\}|[A-Z_][A-Z0-9_]*)", str(value)), f"{ds['uid']}.{key} is not an environment reference"
        for key in ("password", "basicAuthPassword"):
            assert key not in ds, f"{ds['uid']}.{key}: put secrets in secureJsonData, from the environment"
    assert provisioned_datasources()["flowprobe-influxdb"]["secureJsonData"]["token"] == "$INFLUXDB_TOKEN"


def test_rate_interval_follows_the_scrape_interval() -> None:
    """Grafana derives $__rate_interval from timeInterval: it must be Prometheus's scrape interval."""
    scrape = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))["global"]["scrape_interval"]
    assert provisioned_datasources()["flowprobe-prometheus"]["jsonData"]["timeInterval"] == scrape


def test_dashboard_provider_loads_the_committed_folder() -> None:
    config = yaml.safe_load(PROVIDERS.read_text(encoding="utf-8"))
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert provider["allowUiUpdates"] is False


# ---------------------------------------------------------------- exclusions and docs


def test_exclusions_have_reasons_and_are_needed() -> None:
    entries = load_exclusions()
    assert entries
    panels = {(p.uid, p.title): p for d in DASHBOARD_LIST for p in all_panels(d)}
    for e in entries:
        assert len(e.reason) >= 20, f"{e.dashboard} / {e.panel}: an exclusion needs a reason"
        assert e.checks and set(e.checks) <= KNOWN_CHECKS, f"{e.dashboard} / {e.panel}: checks {e.checks} (known: {KNOWN_CHECKS})"
        panel = panels.get((e.dashboard, e.panel))
        assert panel is not None, f"the exclusion {e.dashboard} / {e.panel} names no panel"
        for check in set(e.checks) & set(PANEL_CHECKS):
            assert PANEL_CHECKS[check](panel), f"{panel} passes {check!r}: remove its exclusion"
        if "series" in e.checks:
            assert panel.targets, f"{panel} has no query to exclude"
    keys = [(e.dashboard, e.panel) for e in entries]
    assert len(keys) == len(set(keys)), "one entry per panel"


def test_dashboards_md_describes_every_panel_and_variable() -> None:
    text = DOC.read_text(encoding="utf-8")
    for dashboard in DASHBOARD_LIST:
        start = text.find(f"## {dashboard['title']}")
        assert start >= 0, f"DASHBOARDS.md has no section '## {dashboard['title']}'"
        end = text.find("\n## ", start + 1)
        section = text[start:end if end > 0 else None]
        assert f"`{dashboard['uid']}`" in section
        for name in variables(dashboard):
            assert f"`{name}`" in section, f"DASHBOARDS.md, {dashboard['title']}: variable {name} not described"
        for panel in all_panels(dashboard):
            assert panel.title.replace("$env", "<env>") in section, f"DASHBOARDS.md, {dashboard['title']}: panel {panel.title!r} not described"
