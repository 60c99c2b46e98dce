"""The workflow format: strict pydantic models, loaded once with located errors.

A config directory holds ``environments.yaml`` and one workflow per
``*.yaml`` file. Everything is checked at load: unknown keys, types,
templates that name unknown variables, duplicate names, missing secrets and
unknown dependencies. CONFIGURATION.md documents every key.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from jsonpath import JSONPathEnvironment
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    IPvAnyNetwork,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from collector.cron import crontab_trigger
from collector.document import ConfigError, Document, Problem, PathKey, expand_environment, load_document
from collector.secret import global_redactor
from collector.template import Template, TemplateError

__all__ = [
    "AlertSettings",
    "Capture",
    "CircuitBreakerSettings",
    "Config",
    "ConfigError",
    "Environment",
    "Expect",
    "Predicate",
    "Request",
    "RetryPolicy",
    "Schedule",
    "SecretRef",
    "Step",
    "Workflow",
    "environments_json_schema",
    "json_schema",
    "load_config",
    "parse_duration",
]

ENVIRONMENTS_FILE = "environments.yaml"
SETTINGS_FILE = "flowprobe.yaml"
JSONPATH = JSONPathEnvironment()

# ---------------------------------------------------------------- scalar types


def _kind(value: Any) -> str:
    """What a YAML value is, in the words an error message uses."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _show(value: Any) -> str:
    """A scalar as it would appear in YAML (true, not True)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, (int, float)):
        return repr(value)
    return _kind(value)


def _or(words: Sequence[str], conjunction: str = "or") -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATIONS = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# The same language for editors; parse_duration also ignores spaces.
_DURATION_PATTERN = r"^( *[0-9]+(\.[0-9]+)? *(ms|s|m|h|d))+ *$"
_DURATION_HELP = "a number of seconds or a duration like 500ms, 10s, 1m30s or 7d"


def parse_duration(value: Any) -> float:
    """``500ms``, ``1.5s``, ``1m30s``, ``2h``, ``7d`` or a number of seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and _DURATIONS.fullmatch(value.replace(" ", "")):
        seconds = sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(value.replace(" ", "")))
    elif isinstance(value, str):
        raise ValueError(f"invalid duration {value!r}: use {_DURATION_HELP}")
    else:
        raise ValueError(f"must be {_DURATION_HELP}, not {_kind(value)}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be zero or more")
    return seconds


def _duration_schema(exclusive_minimum: bool) -> dict[str, Any]:
    number: dict[str, Any] = {"type": "number", "exclusiveMinimum" if exclusive_minimum else "minimum": 0}
    return {
        "anyOf": [number, {"type": "string", "pattern": _DURATION_PATTERN}],
        "description": "Seconds, or a duration like 500ms, 10s, 1m30s or 7d.",
    }


Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_duration_schema(False))]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0), WithJsonSchema(_duration_schema(True))]

_SLUG = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$"
# Names flowprobe sets on series (metrics) or alerts (generated rules) itself.
_RESERVED_LABELS = {
    "workflow", "env", "step", "phase", "reason", "result", "target", "job", "instance", "le",
    "severity", "window", "dependencies", "alertname", "escalated", "escalation",
}
Scalar = str | int | float | bool


class _Strict(BaseModel):
    # strict: YAML already typed every scalar, so "3" for an integer is a mistake, not a coercion.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False, strict=True)


def _exactly_one(given: Sequence[str], names: Sequence[str]) -> None:
    if not given:
        raise ValueError(f"needs one of: {', '.join(names)}")
    if len(given) > 1:
        raise ValueError(f"takes only one of: {', '.join(names)} (got {_or(given, 'and')})")


def _status_ranges(value: Any) -> tuple[tuple[int, int], ...]:
    """200, [200, 201], "2xx", "200-299" or a list mixing them."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("must not be empty")
    ranges: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            ranges.append((item, item))
        elif isinstance(item, str) and re.fullmatch(r"[1-5]xx", item):
            base = int(item[0]) * 100
            ranges.append((base, base + 99))
        elif isinstance(item, str) and (m := re.fullmatch(r"([1-5]\d\d)-([1-5]\d\d)", item)) and m.group(1) <= m.group(2):
            ranges.append((int(m.group(1)), int(m.group(2))))
        else:
            raise ValueError(f"invalid status {_show(item)}: use a code (200), a class (2xx), a range (200-299) or a list of them")
    return tuple(ranges)


_STATUS_ITEM: dict[str, Any] = {
    "anyOf": [
        {"type": "integer", "minimum": 100, "maximum": 599},
        {"type": "string", "pattern": r"^([1-5]xx|[1-5][0-9][0-9]-[1-5][0-9][0-9])$"},
    ]
}
StatusRanges = Annotated[
    tuple[tuple[int, int], ...],
    BeforeValidator(_status_ranges),
    WithJsonSchema(
        {
            "anyOf": [*_STATUS_ITEM["anyOf"], {"type": "array", "items": _STATUS_ITEM, "minItems": 1}],
            "description": "A code (200), a class (2xx), a range (200-299) or a list of them.",
        }
    ),
]


def _jsonpath(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a JSONPath like $.token, not {_kind(value)}")
    if not value.startswith("$"):
        raise ValueError(f"invalid JSONPath {value!r}: it starts with $ (like $.token)")
    try:
        JSONPATH.compile(value)
    except Exception as exc:  # the library raises several types; all mean "bad path"
        # Its message goes on with a multi-line caret diagram; the first line says it.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"invalid JSONPath {value!r}: {reason}") from None
    return value


def _regex(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a regular expression string, not {_kind(value)}")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


JsonPath = Annotated[str, BeforeValidator(_jsonpath)]
Regex = Annotated[str, BeforeValidator(_regex)]


def _network_text(value: Any) -> Any:
    """An address or network written as text: a YAML integer or boolean would otherwise become 0.0.0.5/32 or 0.0.0.0/32."""
    if isinstance(value, (str, IPv4Network, IPv6Network)):
        return value
    raise ValueError(f"must be an address or network as text (10.0.0.0/8, \"::1/128\"), not {_kind(value)}")


Network = Annotated[IPvAnyNetwork, BeforeValidator(_network_text)]


def _not_reserved(name: str) -> str:
    if name in _RESERVED_LABELS or name.startswith("__"):
        raise ValueError(f"reserved label name (reserved: {', '.join(sorted(_RESERVED_LABELS))}, __*)")
    return name


LabelName = Annotated[str, Field(pattern=_LABEL_NAME), AfterValidator(_not_reserved)]

# ---------------------------------------------------------------- models


class Schedule(_Strict):
    """When a workflow runs: every interval, or on a cron schedule (UTC)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["every"]}, {"required": ["cron"]}]})

    every: PositiveDuration | None = None
    cron: str | None = None

    @field_validator("every")
    @classmethod
    def _not_too_often(cls, value: float | None) -> float | None:
        if value is not None and value < 1:
            raise ValueError("must be at least 1s")
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                crontab_trigger(value)
            except ValueError as exc:
                reason = str(exc)
                raise ValueError(f"invalid cron expression {value!r}: {reason[:1].lower()}{reason[1:]}") from None
        return value

    @model_validator(mode="after")
    def _one(self) -> Schedule:
        _exactly_one([n for n in ("every", "cron") if getattr(self, n) is not None], ("every", "cron"))
        return self


class RetryPolicy(_Strict):
    """Exponential backoff with full jitter (AWS architecture blog), capped at `max`."""

    attempts: int = Field(1, ge=1, le=10)
    backoff: Literal["exponential", "constant"] = "exponential"
    initial: Duration = 0.5
    max: Duration = 5.0

    def delay(self, retry: int, uniform: float) -> float:
        """Sleep before retry number `retry` (1-based); `uniform` is in [0, 1)."""
        ceiling = self.initial if self.backoff == "constant" else self.initial * 2 ** (retry - 1)
        return min(self.max, ceiling) * uniform


class AlertSettings(_Strict):
    """Stored now; the alerting rules are generated from these."""

    severity: Literal["critical", "warning", "info"] = "warning"
    after_failures: int = Field(1, ge=1, le=100)
    latency_slo: PositiveDuration | None = None
    availability_slo: float | None = Field(None, gt=0, lt=1)
    cert_expiry: Duration = 14 * 86400.0


class SecretRef(_Strict):
    """Where a secret's value is read from: an environment variable or a file."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["env"]}, {"required": ["file"]}]})

    env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_a_value(cls, value: Any) -> Any:
        # Never echo the value: it is probably the secret itself.
        if not isinstance(value, (dict, SecretRef)):
            raise ValueError("a secret is read from {env: NAME} or {file: PATH}; its value never goes in the YAML")
        return value

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        _exactly_one([n for n in ("env", "file") if getattr(self, n) is not None], ("env", "file"))
        return self


_PREDICATE_KEYS = ("eq", "ne", "lt", "le", "gt", "ge", "exists", "contains", "matches", "length")


class Predicate(_Strict):
    """Checks on one value; every key given must hold."""

    eq: Any = None
    ne: Any = None
    lt: float | str | None = None
    le: float | str | None = None
    gt: float | str | None = None
    ge: float | str | None = None
    exists: bool | None = None
    contains: Any = None
    matches: Regex | None = None
    length: Annotated[int, Field(ge=0)] | Predicate | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Predicate:
        if not self.model_fields_set:
            raise ValueError(f"needs at least one of: {', '.join(_PREDICATE_KEYS)}")
        return self


def _shorthand(value: Any) -> Any:
    # `"$.status": created` means `{eq: created}`; a mapping is always a check.
    return value if isinstance(value, (dict, Predicate)) else {"eq": value}


class _ShorthandSchema:
    """Tells editors that a check may also be a bare value (meaning eq)."""

    def __get_pydantic_json_schema__(self, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"anyOf": [handler(core_schema), {"type": ["string", "number", "boolean", "array", "null"]}]}


Check = Annotated[Predicate, BeforeValidator(_shorthand), _ShorthandSchema()]


class Expect(_Strict):
    status: StatusRanges = Field(((200, 299),), json_schema_extra={"default": "2xx"})
    json_: dict[JsonPath, Check] = Field(default_factory=dict, alias="json")
    headers: dict[str, Check] = Field(default_factory=dict)
    body: Check | None = None
    max_duration: PositiveDuration | None = None
    tls_cert_valid_for: Duration | None = None


class TLSOptions(_Strict):
    verify: bool = True
    ca_file: str | None = None
    server_name: str | None = None


Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_METHODS = get_args(Method)


class Request(_Strict):
    method: Annotated[
        Method,
        BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
        WithJsonSchema({"enum": [*_METHODS, *(m.lower() for m in _METHODS)], "description": "Case-insensitive."}),
    ] = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, Scalar] = Field(default_factory=dict)
    json_: Any = Field(None, alias="json")
    form: dict[str, Scalar] | None = None
    body: str | None = None
    timeout: PositiveDuration = 10.0
    follow_redirects: bool = True
    tls: TLSOptions = TLSOptions()

    @model_validator(mode="after")
    def _one_body(self) -> Request:
        bodies = [n for n, v in (("json", self.json_), ("form", self.form), ("body", self.body)) if v is not None]
        if len(bodies) > 1:
            raise ValueError(f"takes only one body: json, form or body (got {_or(bodies, 'and')})")
        return self


_CAPTURE_SOURCES = ("json", "header", "cookie", "regex", "status")


class Capture(_Strict):
    json_: JsonPath | None = Field(None, alias="json")
    header: str | None = None
    cookie: str | None = None
    regex: Regex | None = None
    status: bool | None = None
    secret: bool = False

    @model_validator(mode="after")
    def _one(self) -> Capture:
        values = (self.json_, self.header, self.cookie, self.regex, self.status)
        _exactly_one([n for n, v in zip(_CAPTURE_SOURCES, values) if v not in (None, False)], _CAPTURE_SOURCES)
        return self


_CAPTURE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
Identifier = Annotated[str, Field(pattern=_CAPTURE_NAME)]


class Step(_Strict):
    name: str = Field(pattern=_SLUG)
    request: Request
    capture: dict[Identifier, Capture] = Field(default_factory=dict)
    expect: Expect = Expect()
    always_run: bool = False
    retries: RetryPolicy | None = None


class Workflow(_Strict):
    """A flowprobe workflow: ordered HTTP steps run on a schedule in each environment."""

    name: str = Field(pattern=_SLUG)
    description: str = ""
    schedule: Schedule
    timeout: PositiveDuration = 30.0
    environments: Annotated[list[str], Field(min_length=1)] | None = None
    depends_on: list[str] = Field(default_factory=list)
    labels: dict[LabelName, str] = Field(default_factory=dict, max_length=10)
    alert: AlertSettings = AlertSettings()
    retries: RetryPolicy = RetryPolicy()
    variables: dict[Identifier, Scalar] = Field(default_factory=dict)
    secrets: dict[Identifier, SecretRef] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)


class Environment(_Strict):
    # The schema also admits ${VAR...}: editors see the file before expansion.
    base_url: str = Field(pattern=r"^https?://", json_schema_extra={"pattern": r"^(https?://|\$\{)"})
    variables: dict[Identifier, Scalar] = Field(default_factory=dict)
    secrets: dict[Identifier, SecretRef] = Field(default_factory=dict)


class CircuitBreakerSettings(_Strict):
    failures: int = Field(5, ge=1)
    cool_down: PositiveDuration = 60.0


class HistorySettings(_Strict):
    runs_per_pair: int = Field(1000, ge=1)
    max_age: PositiveDuration = 7 * 86400.0


class EnvironmentsFile(_Strict):
    """flowprobe environments.yaml: where each environment lives, and shared settings."""

    environments: dict[Annotated[str, Field(pattern=_SLUG)], Environment] = Field(min_length=1)
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    history: HistorySettings = HistorySettings()


Role = Literal["viewer", "operator", "admin", "webhook"]


class ApiToken(_Strict):
    """A bearer token for the collector's API. viewer reads; operator also
    acknowledges and resolves; admin also reloads the config and runs reports;
    webhook can only post Alertmanager's webhook (collector/auth.py)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$")]
    role: Role
    token: SecretRef


class EscalationStep(_Strict):
    after: PositiveDuration
    to: Identifier


class AlertingSettings(_Strict):
    alertmanager_url: str | None = Field(None, pattern=r"^https?://")
    database: str | SecretRef | None = None
    tokens: list[ApiToken] = Field(default_factory=list)
    escalation: dict[Literal["critical", "warning", "info"], list[EscalationStep]] = Field(default_factory=dict)
    escalation_check: PositiveDuration = 30.0
    # A silenced alert's resolved notification is muted too, so an acknowledged
    # alert is resolved when Alertmanager has not had it for this long.
    resolved_after_missing: PositiveDuration = 180.0

    @field_validator("escalation")
    @classmethod
    def _steps_in_order(cls, value: dict[str, list[EscalationStep]]) -> dict[str, list[EscalationStep]]:
        for severity, steps in value.items():
            if [s.after for s in steps] != sorted(s.after for s in steps):
                raise ValueError(f"escalation steps for {severity} must be in order of after")
        return value


class InfluxSettings(_Strict):
    """Where run points go, and how hard to try. Points wait in a bounded disk
    spool while InfluxDB is away, so an outage loses nothing up to its size."""

    url: str = Field(pattern=r"^https?://")
    org: str = Field(min_length=1)
    bucket: str = Field(min_length=1)
    token: SecretRef
    batch_size: int = Field(500, ge=1, le=50_000)
    flush_interval: PositiveDuration = 1.0
    timeout: PositiveDuration = 10.0
    retry_initial: PositiveDuration = 1.0
    retry_max: PositiveDuration = 30.0
    spool_max_points: int = Field(1_000_000, ge=1)


class SmtpSettings(_Strict):
    host: str = Field(min_length=1)
    port: int = Field(25, ge=1, le=65535)
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    username: str | None = None
    password: SecretRef | None = None
    starttls: bool = False


class ReportSchedule(_Strict):
    """One scheduled report: when (cron, UTC), over what period, in which formats, to whom."""

    cron: str
    period: Literal["daily", "weekly", "monthly"]
    formats: list[Literal["html", "pdf", "csv", "json"]] = Field(default_factory=lambda: ["html"], min_length=1)
    env: str | None = None
    email: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(default_factory=list)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        try:
            crontab_trigger(value)
        except ValueError as exc:
            raise ValueError(f"invalid cron expression {value!r}: {exc}") from None
        return value


class ReportsSettings(_Strict):
    directory: str | None = None
    schedules: list[ReportSchedule] = Field(default_factory=list)
    smtp: SmtpSettings | None = None


class RateLimitSettings(_Strict):
    """A token bucket per client address (IPv6: per /64), collector/apisecurity.py."""

    rate: float = Field(20.0, gt=0, le=1_000_000)
    burst: int = Field(100, ge=1, le=1_000_000)
    # /metrics, /healthz and /readyz have a bucket of their own, so the API's traffic never starves Prometheus.
    scrape_rate: float = Field(2.0, gt=0, le=1_000_000)
    scrape_burst: int = Field(20, ge=1, le=1_000_000)
    exempt: list[Network] = Field(default_factory=lambda: [IPv4Network("127.0.0.0/8"), IPv6Network("::1/128")])


def _origin(value: str) -> str:
    if value != "*" and not re.fullmatch(r"https?://[^/\s?#]+", value):
        raise ValueError(f"{value!r} is not an origin: scheme://host[:port] with no path (https://status.example.com), or *")
    return value


class ApiSettings(_Strict):
    """The API's exposure: who may read, how much, how big, from which web origins."""

    public_reads: bool = True
    rate_limit: RateLimitSettings | None = RateLimitSettings()
    max_body_size: int = Field(1024 * 1024, ge=1024, le=1024**3)
    cors_origins: list[Annotated[str, AfterValidator(_origin)]] = Field(default_factory=list)


class SettingsFile(_Strict):
    """flowprobe.yaml: settings of the collector itself (optional)."""

    public_url: str = Field("http://127.0.0.1:9700", pattern=r"^https?://")
    prometheus_url: str | None = Field(None, pattern=r"^https?://")
    analytics_url: str | None = Field(None, pattern=r"^https?://")
    alerting: AlertingSettings = AlertingSettings()
    influx: InfluxSettings | None = None
    reports: ReportsSettings = ReportsSettings()
    api: ApiSettings = ApiSettings()


# ---------------------------------------------------------------- JSON Schema

_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a workflow file, for editors such as yaml-language-server.

    The schema checks shape only; `flowprobe check` also checks templates,
    names across files, dependencies and secrets.
    """
    return _schema_of(Workflow, "flowprobe workflow")


def environments_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of environments.yaml."""
    return _schema_of(EnvironmentsFile, "flowprobe environments")


def _schema_of(model: type[BaseModel], title: str) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": _DIALECT, **schema, "title": title}


# ---------------------------------------------------------------- loading

BUILTIN_NAMES = ("base_url", "env", "workflow")


@dataclass(frozen=True)
class Config:
    """A loaded, fully checked config directory."""

    workflows: dict[str, Workflow]
    environments: dict[str, Environment]
    circuit_breaker: CircuitBreakerSettings
    history: HistorySettings
    sources: dict[str, str] = field(default_factory=dict)
    # Resolved secret values per (workflow, env); never logged, never serialised.
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict, repr=False)
    settings: SettingsFile = field(default_factory=SettingsFile)
    # Resolved API tokens (token value -> (name, role)) and the alert database URL.
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    database_url: str | None = field(default=None, repr=False)
    influx_token: str | None = field(default=None, repr=False)
    smtp_password: str | None = field(default=None, repr=False)

    def environments_of(self, workflow: Workflow) -> list[str]:
        return list(workflow.environments) if workflow.environments is not None else list(self.environments)

    def pairs(self) -> list[tuple[Workflow, str]]:
        return [(wf, env) for wf in self.workflows.values() for env in self.environments_of(wf)]


# ---------------------------------------------------------------- error messages

# Pydantic error types that mean "the value has the wrong type", and what was wanted.
_TYPE_NOUNS = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
    "none_required": "null",
}

_BOUNDS = {
    "greater_than": ("gt", "must be greater than"),
    "greater_than_equal": ("ge", "must be at least"),
    "less_than": ("lt", "must be less than"),
    "less_than_equal": ("le", "must be at most"),
}


def _validation_problems(doc: Document, exc: ValidationError, root: type[BaseModel]) -> list[Problem]:
    """One problem per located mistake.

    A union (``str | int | float | bool``, ``int | Predicate``) reports one
    error per member. Type mismatches at one path become one message, and are
    dropped where a member that took the value's shape explained what was
    wrong inside it.
    """
    located = [
        (doc.data_path(tuple(error["loc"]), missing=error["type"] == "missing"), error)
        for error in exc.errors(include_url=False)
    ]
    explained = [path for path, error in located if error["type"] not in _TYPE_NOUNS]
    mismatches: dict[PathKey, list[Any]] = {}
    entries: list[tuple[PathKey, Any]] = []
    for path, error in located:
        if error["type"] not in _TYPE_NOUNS:
            entries.append((path, error))
        elif any(other[: len(path)] == path for other in explained):
            continue
        elif path in mismatches:
            mismatches[path].append(error)
        else:
            mismatches[path] = [error]
            entries.append((path, mismatches[path]))
    problems: list[Problem] = []
    seen: set[tuple[PathKey, str]] = set()
    for path, item in entries:
        message = _mismatch(item) if isinstance(item, list) else _message(item, path, root)
        if (path, message) not in seen:
            seen.add((path, message))
            problems.append(doc.problem(path, message))
    return problems


def _mismatch(errors: list[Any]) -> str:
    wanted = list(dict.fromkeys(_TYPE_NOUNS[e["type"]] for e in errors))
    if "an integer" in wanted and "a number" in wanted:
        wanted.remove("an integer")
    got = _kind(errors[0]["input"])
    if wanted == ["a boolean"]:
        return f"must be true or false, not {got}"
    return f"must be {_or(wanted)}, not {got}"


def _message(error: Any, path: PathKey, root: type[BaseModel]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return _unknown_key(root, path)
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        if pattern == _SLUG:
            return "must be 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        if pattern in (_CAPTURE_NAME, _LABEL_NAME):
            return "must be a letter or '_' followed by letters, digits or '_'"
        if pattern == r"^https?://":
            return "must start with http:// or https://"
        return f"must match {pattern}"
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        return f"must be one of: {', '.join(allowed)}"
    if kind == "too_short":
        return "must not be empty" if ctx.get("min_length") == 1 else f"needs at least {ctx.get('min_length')} entries"
    if kind == "too_long":
        return f"takes at most {ctx.get('max_length')} entries"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"{words} {ctx.get(key)}"
    message: str = error["msg"]
    return message[:1].lower() + message[1:] if message else kind


def _unknown_key(root: type[BaseModel], path: PathKey) -> str:
    model = _model_at(root, path[:-1])
    if model is None:
        return "unknown key"
    allowed = [info.alias or name for name, info in model.model_fields.items()]
    close = difflib.get_close_matches(str(path[-1]), allowed, n=1)
    return f"unknown key (did you mean {close[0]}?)" if close else f"unknown key (allowed: {', '.join(allowed)})"


def _members(annotation: Any) -> list[Any]:
    """The types an annotation can hold, without Annotated and unions."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _model_at(root: type[BaseModel], path: PathKey) -> type[BaseModel] | None:
    """The model that validates the mapping at a data path, if one does."""
    current: list[Any] = [root]
    for part in path:
        following: list[Any] = []
        for member in (m for c in current for m in _members(c)):
            if isinstance(member, type) and issubclass(member, BaseModel):
                following += [info.annotation for name, info in member.model_fields.items() if (info.alias or name) == part]
            elif get_origin(member) is list and isinstance(part, int):
                following.append(get_args(member)[0])
            elif get_origin(member) is dict:
                following.append(get_args(member)[1])
        current = following
    models = [m for c in current for m in _members(c) if isinstance(m, type) and issubclass(m, BaseModel)]
    return models[0] if len(models) == 1 else None


# ---------------------------------------------------------------- secrets


def _read_secret(env: Any, file: Any, base_dir: Path) -> str:
    """A secret's value. Messages name where it was looked for, never the value."""
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise LookupError(f"environment variable {env} is not set")
        return value
    # A relative file is relative to environments.yaml, not to where flowprobe runs.
    path = Path(file) if Path(file).is_absolute() else base_dir / file
    try:
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise LookupError(f"cannot read file {_display(path)}: {(exc.strerror or str(exc)).lower()}") from None
    except UnicodeDecodeError:
        raise LookupError(f"file {_display(path)} is not valid UTF-8") from None
    if not value:
        raise LookupError(f"file {_display(path)} is empty")
    return value


def _resolve_secret(ref: SecretRef, base_dir: Path) -> str:
    return _read_secret(ref.env, ref.file, base_dir)


def _raw_secret_values(secrets: Any, base_dir: Path) -> list[str]:
    """Values of the secret references in not yet validated data, to mask in errors."""
    values: list[str] = []
    for ref in secrets.values() if isinstance(secrets, dict) else ():
        if isinstance(ref, dict) and (ref.get("env") is not None or ref.get("file") is not None):
            try:
                values.append(_read_secret(ref.get("env"), ref.get("file"), base_dir))
            except (LookupError, TypeError, ValueError):
                pass
    return values


# ---------------------------------------------------------------- templates


def _expand_strings(doc: Document, value: Any, path: PathKey, problems: list[Problem]) -> Any:
    if isinstance(value, str):
        try:
            return expand_environment(value, os.environ)
        except KeyError as exc:
            problems.append(doc.problem(path, f"environment variable {exc.args[0]} is not set and has no default"))
            return value
    if isinstance(value, dict):
        return {k: _expand_strings(doc, v, path + (k,), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_strings(doc, v, path + (i,), problems) for i, v in enumerate(value)]
    return value


def _strings(value: Any, path: PathKey) -> Iterable[tuple[PathKey, str]]:
    """Every string under value, with its path. ``matches`` is a regex, never rendered."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            if k != "matches":
                yield from _strings(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, path + (i,))


# The request fields the runner renders; the others are taken literally.
_RENDERED = ("url", "headers", "query", "json", "form", "body")


def _step_templates(raw_step: dict[str, Any], index: int) -> Iterable[tuple[PathKey, str]]:
    request = raw_step["request"]
    for key in _RENDERED:
        if key in request:
            yield from _strings(request[key], ("steps", index, "request", key))
    if "expect" in raw_step:
        yield from _strings(raw_step["expect"], ("steps", index, "expect"))


def _check_templates(doc: Document, workflow: Workflow, config_envs: Mapping[str, Environment], env_names: list[str]) -> list[Problem]:
    problems: list[Problem] = []
    # A name must have a value in every environment the workflow runs in.
    per_env = {
        e: set(config_envs[e].variables) | {f"secrets.{n}" for n in config_envs[e].secrets} for e in env_names if e in config_envs
    }
    available = set(BUILTIN_NAMES) | set(workflow.variables) | {f"secrets.{n}" for n in workflow.secrets}
    if per_env:
        available |= set.intersection(*per_env.values())
    captured_by: dict[str, int] = {}
    for index, step in enumerate(workflow.steps):
        for name in step.capture:
            captured_by.setdefault(name, index)
            if name in available or any(name in names for names in per_env.values()):
                # A capture would silently replace the variable for every later step.
                problems.append(doc.problem(("steps", index, "capture", name), f"capture name {name} is already a variable; choose another name"))
        ca_file = step.request.tls.ca_file
        if ca_file is not None and not Path(ca_file).is_file():
            problems.append(doc.problem(("steps", index, "request", "tls", "ca_file"), f"no such file: {ca_file} (relative paths start at the working directory)"))
    for index, step in enumerate(workflow.steps):
        for path, text in _step_templates(doc.data["steps"][index], index):
            try:
                template = Template.parse(text)
            except TemplateError as exc:
                problems.append(doc.problem(path, str(exc)))
                continue
            for name in template.names():
                if name not in available:
                    problems.append(doc.problem(path, _unknown_variable(name, index, workflow, per_env, available, captured_by)))
        available |= set(step.capture)
    return problems


def _unknown_variable(
    name: str, index: int, workflow: Workflow, per_env: Mapping[str, set[str]], available: set[str], captured_by: Mapping[str, int]
) -> str:
    what = f"unknown variable {{{{ {name} }}}}"
    capturing = captured_by.get(name)
    if capturing is not None and capturing > index:
        return f"{what}: captured by a later step ({workflow.steps[capturing].name})"
    if capturing == index:
        return f"{what}: captured by this step, so usable from the next step on"
    missing_from = [e for e, names in per_env.items() if name not in names]
    if 0 < len(missing_from) < len(per_env):
        return f"{what}: missing from environment{'s' if len(missing_from) > 1 else ''} {', '.join(missing_from)}"
    if name.startswith("secrets."):
        return f"{what}: declare {name[len('secrets.'):]} under secrets: in environments.yaml or in this workflow"
    close = difflib.get_close_matches(name, sorted(available), n=1)
    if close:
        return f"{what} (did you mean {close[0]}?)"
    return f"{what} (known: {', '.join(sorted(available))})"


# ---------------------------------------------------------------- files


def _load_environments(path: Path, secret_values: list[str]) -> tuple[Document, EnvironmentsFile]:
    doc = load_document(path, display=_display(path))
    if doc.data is None:
        raise ConfigError([doc.problem((), "file is empty; it needs environments: with a base_url for each")])
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.problem((), f"must be a mapping with an environments: key, not {_kind(doc.data)}")])
    problems: list[Problem] = []
    doc.data = _expand_strings(doc, doc.data, (), problems)
    environments = doc.data.get("environments")
    for env in environments.values() if isinstance(environments, dict) else ():
        if isinstance(env, dict):
            secret_values += _raw_secret_values(env.get("secrets"), path.parent)
    if problems:
        raise ConfigError(problems)
    try:
        return doc, EnvironmentsFile.model_validate(doc.data)
    except ValidationError as exc:
        raise ConfigError(_validation_problems(doc, exc, EnvironmentsFile)) from None


def _workflow_files(paths: Iterable[Path]) -> tuple[list[Path], Path | None]:
    files: list[Path] = []
    environments: Path | None = None
    for path in paths:
        candidates = sorted([*path.glob("*.yaml"), *path.glob("*.yml")]) if path.is_dir() else [path]
        for candidate in candidates:
            if candidate.name in (ENVIRONMENTS_FILE, "environments.yml"):
                environments = candidate
            elif candidate.name == SETTINGS_FILE:
                continue  # read by _load_settings beside environments.yaml
            else:
                files.append(candidate)
    return files, environments


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_config(*paths: Path | str, environments: Path | str | None = None) -> Config:
    """Load and check workflows and environments. Raises ConfigError listing every problem.

    File names in problems are relative to the working directory. No message
    carries a secret's value: a validator may echo a value that ``${VAR}``
    took from a secret's variable, so every message is redacted.
    """
    secret_values: list[str] = []
    try:
        return _load([Path(p) for p in paths], None if environments is None else Path(environments), secret_values)
    except ConfigError as exc:
        redactor = global_redactor.child()
        redactor.add(*secret_values)
        raise ConfigError([replace(p, message=redactor.text(p.message)) for p in exc.problems]) from None


def _load(given: list[Path], environments: Path | None, secret_values: list[str]) -> Config:
    missing = [p for p in given if not p.exists()]
    if missing:
        raise ConfigError([Problem(str(p), None, "", "no such file or directory") for p in missing])
    files, env_path = _workflow_files(given)
    if environments is not None:
        env_path = environments
    if env_path is None:
        # A single workflow file can be checked with the environments.yaml beside it.
        siblings = {f.parent / ENVIRONMENTS_FILE for f in files}
        env_path = next((s for s in sorted(siblings) if s.exists()), None)
    if env_path is None:
        where = given[0] if given and given[0].is_dir() else (given[0].parent if given else Path("."))
        raise ConfigError([Problem(_display(where / ENVIRONMENTS_FILE), None, "", "environments file not found")])

    problems: list[Problem] = []
    base_dir = env_path.parent
    env_file: EnvironmentsFile | None = None
    env_secrets: dict[str, dict[str, str]] = {}
    try:
        env_doc, env_file = _load_environments(env_path, secret_values)
    except ConfigError as exc:
        # Go on: the workflows' own problems are worth listing in the same run.
        problems.extend(exc.problems)
    else:
        for env_name, env in env_file.environments.items():
            env_secrets[env_name] = {}
            for secret_name, ref in env.secrets.items():
                try:
                    env_secrets[env_name][secret_name] = _resolve_secret(ref, base_dir)
                except LookupError as exc:
                    problems.append(env_doc.problem(("environments", env_name, "secrets", secret_name), str(exc)))

    workflows: dict[str, Workflow] = {}
    sources: dict[str, str] = {}
    docs: dict[str, Document] = {}
    for file in files:
        try:
            doc = load_document(file, display=_display(file))
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if doc.data is None:
            problems.append(doc.problem((), "file is empty; a workflow needs name, schedule and steps"))
            continue
        if not isinstance(doc.data, dict):
            problems.append(doc.problem((), f"a workflow must be a mapping with name, schedule and steps, not {_kind(doc.data)}"))
            continue
        secret_values += _raw_secret_values(doc.data.get("secrets"), base_dir)
        try:
            workflow = Workflow.model_validate(doc.data)
        except ValidationError as exc:
            problems.extend(_validation_problems(doc, exc, Workflow))
            continue
        if workflow.name in workflows:
            problems.append(doc.problem(("name",), f"duplicate workflow name {workflow.name!r} (also in {sources[workflow.name]})"))
            continue
        step_names = [s.name for s in workflow.steps]
        for index, name in enumerate(step_names):
            if name in step_names[:index]:
                problems.append(doc.problem(("steps", index, "name"), f"duplicate step name {name!r} (also steps[{step_names.index(name)}])"))
        workflows[workflow.name] = workflow
        sources[workflow.name] = doc.file
        docs[workflow.name] = doc

    settings = _load_settings(base_dir / SETTINGS_FILE, problems, secret_values)

    resolved: dict[tuple[str, str], dict[str, str]] = {}
    for name, workflow in workflows.items():
        doc = docs[name]
        for index, dependency in enumerate(workflow.depends_on):
            if dependency == name:
                problems.append(doc.problem(("depends_on", index), "a workflow cannot depend on itself"))
            elif dependency not in workflows:
                problems.append(doc.problem(("depends_on", index), f"unknown workflow {dependency!r} (defined: {', '.join(sorted(workflows))})"))
        own: dict[str, str] = {}
        for secret_name, ref in workflow.secrets.items():
            try:
                own[secret_name] = _resolve_secret(ref, base_dir)
            except LookupError as exc:
                problems.append(doc.problem(("secrets", secret_name), str(exc)))
        if env_file is None:
            continue  # environments.yaml has problems of its own; checks against it would only guess
        env_names = workflow.environments if workflow.environments is not None else list(env_file.environments)
        for index, env_name in enumerate(workflow.environments or []):
            if env_name not in env_file.environments:
                problems.append(doc.problem(("environments", index), f"unknown environment {env_name!r} (defined: {', '.join(env_file.environments)})"))
        problems.extend(_check_templates(doc, workflow, env_file.environments, env_names))
        for env_name in env_names:
            resolved[(name, env_name)] = {**env_secrets.get(env_name, {}), **own}
    problems.extend(_dependency_cycles(workflows, docs))

    if problems or env_file is None:
        raise ConfigError(sorted(problems, key=lambda p: (p.file, p.line or 0)))
    # Every resolved value, also one that a workflow's own secret overrides: it is still a secret.
    for values in [*env_secrets.values(), *resolved.values()]:
        global_redactor.add(*values.values())
    global_redactor.add(*settings.tokens)
    if settings.database_url is not None and isinstance(settings.file.alerting.database, SecretRef):
        global_redactor.add(settings.database_url)
    if settings.influx_token is not None:
        global_redactor.add(settings.influx_token)
    if settings.smtp_password is not None:
        global_redactor.add(settings.smtp_password)
    return Config(
        workflows=workflows,
        environments=dict(env_file.environments),
        circuit_breaker=env_file.circuit_breaker,
        history=env_file.history,
        sources=sources,
        secrets=resolved,
        settings=settings.file,
        tokens=settings.tokens,
        database_url=settings.database_url,
        influx_token=settings.influx_token,
        smtp_password=settings.smtp_password,
    )


@dataclass(frozen=True)
class _Settings:
    file: SettingsFile = field(default_factory=SettingsFile)
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)
    database_url: str | None = None
    influx_token: str | None = None
    smtp_password: str | None = None


def _load_settings(path: Path, problems: list[Problem], secret_values: list[str]) -> _Settings:
    """flowprobe.yaml beside environments.yaml, if there is one; problems are appended."""
    empty = _Settings()
    if not path.exists():
        return empty
    try:
        doc = load_document(path, display=_display(path))
    except ConfigError as exc:
        problems.extend(exc.problems)
        return empty
    if doc.data is None:
        return empty
    if not isinstance(doc.data, dict):
        problems.append(doc.problem((), f"must be a mapping, not {_kind(doc.data)}"))
        return empty
    # The secrets are gathered before validation, so that a validation message can never echo one: read what is there
    # with no assumption about its shape (validation says what is wrong with it).
    alerting = doc.data.get("alerting")
    if isinstance(alerting, dict):
        given = alerting.get("tokens")
        for token in given if isinstance(given, list) else []:
            if isinstance(token, dict):
                secret_values += _raw_secret_values({"token": token.get("token")}, path.parent)
    influx = doc.data.get("influx")
    if isinstance(influx, dict):
        secret_values += _raw_secret_values({"token": influx.get("token")}, path.parent)
    reports = doc.data.get("reports")
    if isinstance(reports, dict) and isinstance(reports.get("smtp"), dict):
        secret_values += _raw_secret_values({"password": reports["smtp"].get("password")}, path.parent)
    try:
        settings = SettingsFile.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(_validation_problems(doc, exc, SettingsFile))
        return empty
    tokens: dict[str, tuple[str, str]] = {}
    for index, token in enumerate(settings.alerting.tokens):
        try:
            value = _resolve_secret(token.token, path.parent)
        except LookupError as exc:
            problems.append(doc.problem(("alerting", "tokens", index, "token"), str(exc)))
            continue
        if len(value) < 16:
            problems.append(doc.problem(("alerting", "tokens", index, "token"), "a token must be at least 16 characters"))
        elif value in tokens:
            problems.append(doc.problem(("alerting", "tokens", index, "token"), f"the same token as {tokens[value][0]}"))
        else:
            tokens[value] = (token.name, token.role)
    database = settings.alerting.database
    database_url: str | None = database if isinstance(database, str) else None
    if isinstance(database, SecretRef):
        try:
            database_url = _resolve_secret(database, path.parent)
        except LookupError as exc:
            problems.append(doc.problem(("alerting", "database"), str(exc)))
    influx_token: str | None = None
    if settings.influx is not None:
        try:
            influx_token = _resolve_secret(settings.influx.token, path.parent)
        except LookupError as exc:
            problems.append(doc.problem(("influx", "token"), str(exc)))
    smtp_password: str | None = None
    smtp = settings.reports.smtp
    if smtp is not None and smtp.password is not None:
        try:
            smtp_password = _resolve_secret(smtp.password, path.parent)
        except LookupError as exc:
            problems.append(doc.problem(("reports", "smtp", "password"), str(exc)))
    return _Settings(settings, tokens, database_url, influx_token, smtp_password)


def _dependency_cycles(workflows: Mapping[str, Workflow], docs: Mapping[str, Document]) -> list[Problem]:
    """Each cycle once, reported on the edge that closes it."""
    problems: list[Problem] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for index, dep in enumerate(workflows[name].depends_on):
            if dep not in workflows or dep == name:
                continue  # reported as unknown or as a self-dependency
            if state.get(dep) == 1:
                cycle = trail[trail.index(dep) :] + [dep]
                problems.append(docs[name].problem(("depends_on", index), f"dependency cycle: {' -> '.join(cycle)}"))
            elif dep not in state:
                visit(dep, trail + [dep])
        state[name] = 2

    for name in workflows:
        if name not in state:
            visit(name, [name])
    return problems
