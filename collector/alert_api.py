"""The alert endpoints of the collector's API: Alertmanager's webhook, history, acknowledge, resolve.

Every error is ``{"error": "..."}`` with its status: 400 malformed JSON,
401 no or unknown token, 403 a token without the role, 404 unknown alert,
409 a transition the lifecycle forbids, 422 a body or parameter of the wrong
shape, 502 Alertmanager failed, 503 alerting not ready or not set up.
The authentication runs before the body is read, so a caller without a
valid token learns nothing about what the body should be.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar, get_type_hints

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, ValidationError, WithJsonSchema, create_model

from collector.errors import ErrorRoute, describe_validation
from collector.alerting import AlertingUnavailable, AlertmanagerError, AlertService
from collector.alertstore import Alert, AlertEvent, InvalidTransition, Notification, Status, UnknownAlert
from collector.auth import READ, WEBHOOK, WRITE, Principal, TokenAuth
from collector.config import parse_duration

__all__ = ["AcknowledgeBody", "ResolveBody", "WebhookPayload", "alert_router"]

log = logging.getLogger("flowprobe.alerts")

M = TypeVar("M", bound=BaseModel)
# SQLite and PostgreSQL keep ids in 64 bits: a larger one is no alert's, and would fail in the driver, not here.
MAX_ID = 2**63 - 1
AlertId = Annotated[int, Path(ge=1, le=MAX_ID, description="The alert's id")]
_MAX_ACK = 30 * 86400.0

# ---------------------------------------------------------------- Alertmanager's webhook (version 4)


class _Incoming(BaseModel):
    # Not extra="forbid" like our config: Alertmanager adds fields in new
    # releases, and a webhook refused for a field we do not read loses alerts.
    model_config = ConfigDict(extra="ignore")


class WebhookAlert(_Incoming):
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = Field(min_length=1)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: AwareDatetime
    endsAt: AwareDatetime | None = Field(None, description="0001-01-01T00:00:00Z (no end) while firing")
    generatorURL: str = ""
    fingerprint: Annotated[str, StringConstraints(min_length=1, max_length=64)]

    def notification(self) -> Notification:
        ends_at = None if self.endsAt is None or self.endsAt.year <= 1 else self.endsAt
        return Notification(self.status, self.fingerprint, self.startsAt, ends_at, self.labels, self.annotations, self.generatorURL)


class WebhookPayload(_Incoming):
    """What Alertmanager's webhook_config posts (payload version 4)."""

    version: Literal["4"]
    groupKey: str
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str] = Field(default_factory=dict)
    commonLabels: dict[str, str] = Field(default_factory=dict)
    commonAnnotations: dict[str, str] = Field(default_factory=dict)
    externalURL: str = ""
    alerts: list[WebhookAlert]


# ---------------------------------------------------------------- request and response bodies


def _ack_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if not 0 < seconds <= _MAX_ACK:
        raise ValueError("must be more than 0 and at most 30d")
    return seconds


Comment = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
AckDuration = Annotated[
    float,
    BeforeValidator(_ack_duration),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"}], "description": "24h, 90m, 1h30m or seconds; at most 30d"}),
]


class AcknowledgeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: Comment = Field(description="Why; becomes the silence's comment")
    duration: AckDuration = Field(86400.0, description="How long the silence lasts (default 24h)")


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: Comment


class EventOut(BaseModel):
    at: datetime
    actor: str
    action: str = Field(description="fired, acknowledged, resolved, escalated or silence_expired")
    from_status: Status | None
    to_status: Status
    comment: str | None

    @classmethod
    def of(cls, event: AlertEvent) -> EventOut:
        return cls(at=event.at, actor=event.actor, action=event.action, from_status=event.from_status, to_status=event.to_status, comment=event.comment)


# The store's Alert owns an alert's fields; the API shows them all, in its order, but for the
# bookkeeping below, and describes the escalation ones.
_NOT_SHOWN = {"escalation_open", "events"}
_DESCRIBED: dict[str, Any] = {
    "escalation_level": (int, Field(description="How many escalation steps were reached (0: none)")),
    "escalations": (list[str], Field(description="The `to` of each step reached")),
}
_AlertFields = create_model(
    "_AlertFields",
    **{name: _DESCRIBED.get(name, (hint, ...)) for name, hint in get_type_hints(Alert).items() if name not in _NOT_SHOWN},
)


class AlertOut(_AlertFields):  # type: ignore[misc, valid-type]  # fields from create_model
    @classmethod
    def of(cls, alert: Alert) -> AlertOut:
        fields = {name: getattr(alert, name) for name in cls.model_fields}
        return cls(**{**fields, "escalations": list(alert.escalations)})


class AlertDetail(AlertOut):
    events: list[EventOut] = Field(description="The whole history, oldest first")

    @classmethod
    def of(cls, alert: Alert) -> AlertDetail:
        base = AlertOut.of(alert).model_dump()
        return cls(**base, events=[EventOut.of(e) for e in alert.events])


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_before: int | None = Field(description="Pass as `before` for the next page; null on the last page")


class WebhookOut(BaseModel):
    created: int
    updated: int
    resolved: int
    ignored: int = Field(description="Escalated copies the collector posted itself")


class ErrorOut(BaseModel):
    error: str


# ---------------------------------------------------------------- errors


class _AlertRoute(ErrorRoute):
    statuses = {UnknownAlert: 404, InvalidTransition: 409, AlertmanagerError: 502, AlertingUnavailable: 503}


async def _parse(request: Request, model: type[M], what: str) -> M:
    """The body, parsed by hand after authentication: 400 when it is not JSON, 422 when it has the wrong shape."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"malformed JSON in the {what}: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(422, f"invalid {what}: {describe_validation(exc.errors(include_url=False, include_input=False))}") from None


def _inline(schema: Any, defs: Mapping[str, Any]) -> Any:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, defs) for v in schema]
    return schema


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI requestBody of a body we parse ourselves (see _parse)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": _inline(schema, schema.get("$defs", {}))}}}}


def _responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    meaning = {
        400: "Malformed JSON",
        401: "No token, an unknown token, or no tokens configured",
        403: "The token's role may not do this",
        404: "Unknown alert",
        409: "The alert's status does not allow this",
        422: "Wrong shape",
        502: "Alertmanager could not be reached or refused",
        503: "Alerting is starting or not set up",
    }
    return {code: {"model": ErrorOut, "description": meaning[code]} for code in codes}


# ---------------------------------------------------------------- the router


def alert_router(alerts: AlertService, tokens: Callable[[], Mapping[str, tuple[str, str]]]) -> APIRouter:
    auth = TokenAuth(tokens)
    router = APIRouter(route_class=_AlertRoute, tags=["alerts"])
    reader = Depends(auth.require(READ))
    operator = Depends(auth.require(WRITE))

    @router.post(
        "/api/alertmanager/webhook",
        summary="Alertmanager's webhook (payload version 4): record firing and resolved alerts",
        response_model=WebhookOut,
        responses=_responses(400, 401, 403, 422, 503),
        openapi_extra=_body_doc(WebhookPayload),
    )
    async def webhook(request: Request, caller: Principal = Depends(auth.require(WEBHOOK))) -> WebhookOut:
        payload = await _parse(request, WebhookPayload, "Alertmanager webhook")
        result = await alerts.receive([a.notification() for a in payload.alerts])
        log.info(
            "webhook received",
            extra={"fields": {"from": caller.name, "group": payload.groupKey, "alerts": len(payload.alerts), **dataclasses.asdict(result)}},
        )
        return WebhookOut(**dataclasses.asdict(result))

    @router.get(
        "/api/alerts",
        summary="Alerts, newest first (paginated with `before`)",
        response_model=AlertPage,
        responses=_responses(401, 403, 422, 503),
    )
    async def list_alerts(
        _caller: Principal = reader,
        status: Annotated[
            str | None, Query(pattern=r"(?i)^(active|acknowledged|resolved|escalated)$", description="ACTIVE, ACKNOWLEDGED, RESOLVED or ESCALATED")
        ] = None,
        severity: str | None = None,
        workflow: str | None = None,
        env: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        before: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Page back: next_before of the previous page")] = None,
    ) -> AlertPage:
        found = await alerts.find(
            status=Status(status.upper()) if status else None, severity=severity, workflow=workflow, env=env, limit=limit, before=before
        )
        return AlertPage(items=[AlertOut.of(a) for a in found], next_before=found[-1].id if len(found) == limit else None)

    @router.get(
        "/api/alerts/{alert_id}",
        summary="One alert with its labels, annotations, silence, escalation and whole history",
        response_model=AlertDetail,
        responses=_responses(401, 403, 404, 422, 503),
    )
    async def get_alert(alert_id: AlertId, _caller: Principal = reader) -> AlertDetail:
        return AlertDetail.of(await alerts.get(alert_id))

    @router.post(
        "/api/alerts/{alert_id}/acknowledge",
        summary="Acknowledge: silence exactly this alert in Alertmanager and stop its escalation",
        response_model=AlertDetail,
        responses=_responses(400, 401, 403, 404, 409, 422, 502, 503),
        openapi_extra=_body_doc(AcknowledgeBody),
    )
    async def acknowledge(alert_id: AlertId, request: Request, caller: Principal = operator) -> AlertDetail:
        body = await _parse(request, AcknowledgeBody, "acknowledgement")
        alert = await alerts.acknowledge(alert_id, actor=caller.name, comment=body.comment, duration=timedelta(seconds=body.duration))
        return AlertDetail.of(alert)

    @router.post(
        "/api/alerts/{alert_id}/resolve",
        summary="Resolve by hand: expire its silence and stop its escalation",
        response_model=AlertDetail,
        responses=_responses(400, 401, 403, 404, 409, 422, 503),
        openapi_extra=_body_doc(ResolveBody),
    )
    async def resolve(alert_id: AlertId, request: Request, caller: Principal = operator) -> AlertDetail:
        body = await _parse(request, ResolveBody, "resolution")
        return AlertDetail.of(await alerts.resolve(alert_id, actor=caller.name, comment=body.comment))

    return router
