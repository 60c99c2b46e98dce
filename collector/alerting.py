"""Alert lifecycle against Alertmanager: webhook, acknowledge (a silence), resolve, escalate.

Alertmanager stays the one that notifies. The collector
- records what its webhook says (firing, resolved) in the alert store;
- acknowledges an alert by silencing exactly that alert
  (``POST /api/v2/silences``, one equality matcher per label);
- expires that silence when the alert resolves, so the next incident with
  the same labels pages again (prometheus/alertmanager#1860). An expiry that
  fails is retried on every escalation check until it succeeds. Alertmanager
  mutes the resolved notification of a silenced alert too, so the webhook
  never says that an acknowledged alert resolved: each check looks for
  acknowledged alerts in Alertmanager's API instead, and resolves those gone
  for longer than ``resolved_after_missing`` (Alertmanager keeps no alerts over a
  restart; Prometheus sends them again within a minute);
- escalates an alert nobody acknowledged: at each step due for its severity
  it posts a copy of the alert (``POST /api/v2/alerts``) with the labels
  ``escalated="true"`` and ``escalation="<to>"``, for Alertmanager's routes
  to send to that step's receiver. The copies of every step reached are
  re-posted at each check with a short ``endsAt``, so they stay firing while
  the alert is unacknowledged (an earlier step is not told "resolved" when the
  next one is paged) and lapse on their own if the collector goes away.
  Acknowledging or resolving ends them at once (``endsAt`` = now).

Copies come back through the webhook like any alert; they carry
``escalated="true"`` and are ignored there.

Times (startsAt, silences, escalation due times) come from an injectable
clock, so tests can move through the steps without waiting.

``AlertService.listeners`` are called on the event loop with each alert that
was created (fired) or changed status (acknowledged, resolved, escalated),
right after the change is stored; the live updates (collector/live.py) use it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from collector.alertstore import TRANSITIONS, Alert, AlertStore, InvalidTransition, Notification, Status, UnknownAlert
from collector.config import AlertingSettings

__all__ = [
    "ESCALATED_LABEL",
    "ESCALATION_LABEL",
    "AlertDatabaseError",
    "AlertService",
    "Alertmanager",
    "AlertmanagerError",
    "AlertingUnavailable",
    "utc_now",
]

log = logging.getLogger("flowprobe.alerting")

ESCALATED_LABEL = "escalated"
ESCALATION_LABEL = "escalation"
WEBHOOK_ACTOR = "alertmanager"
SYSTEM_ACTOR = "flowprobe"
DEFAULT_ACK = timedelta(hours=24)
# An escalated copy lives this many checks past the last one, then lapses in Alertmanager.
_COPY_LIFETIME_CHECKS = 3
_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AlertmanagerError(Exception):
    """Alertmanager could not be reached or refused the request; the message says which, without secrets."""


class AlertingUnavailable(Exception):
    """Alerting is not set up for what was asked (no Alertmanager URL, store not ready)."""


class AlertDatabaseError(OSError):
    """The alert database cannot be opened or migrated at start (an OSError: `flowprobe run` reports it and exits 1)."""


# ---------------------------------------------------------------- Alertmanager API v2


class Alertmanager:
    """The calls of Alertmanager's API v2 that the collector makes."""

    def __init__(self, base_url: str, client: httpx.AsyncClient) -> None:
        self.url = base_url.rstrip("/")
        # For messages (API errors, logs): without user:password, should the URL carry them.
        self.base_url = str(httpx.URL(self.url).copy_with(username=None, password=None)) if "@" in self.url else self.url
        self.client = client

    async def _call(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        url = f"{self.url}/api/v2{path}"
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise AlertmanagerError(f"cannot {what}: Alertmanager at {self.base_url} is unreachable ({type(exc).__name__}: {exc})") from None
        if response.status_code >= 300:
            raise AlertmanagerError(f"cannot {what}: Alertmanager at {self.base_url} answered {response.status_code}: {response.text.strip()[:300]}")
        return response

    async def create_silence(self, labels: Mapping[str, str], *, starts_at: datetime, ends_at: datetime, created_by: str, comment: str) -> str:
        body = {
            "matchers": [{"name": name, "value": value, "isRegex": False, "isEqual": True} for name, value in sorted(labels.items())],
            "startsAt": _rfc3339(starts_at),
            "endsAt": _rfc3339(ends_at),
            "createdBy": created_by,
            "comment": comment,
        }
        response = await self._call("POST", "/silences", "create a silence", json=body)
        try:
            return str(response.json()["silenceID"])
        except (ValueError, KeyError, TypeError):
            raise AlertmanagerError(f"cannot create a silence: Alertmanager at {self.base_url} answered without a silenceID") from None

    async def expire_silence(self, silence_id: str) -> None:
        try:
            await self._call("DELETE", f"/silence/{silence_id}", f"expire silence {silence_id}")
        except AlertmanagerError as exc:
            # Gone already (deleted by hand, or Alertmanager lost its state): nothing left to expire.
            # Alertmanager 0.25 answers 500 "silence not found"; later versions 404.
            if "silence not found" in str(exc) or " answered 404" in str(exc):
                log.info("silence already gone", extra={"fields": {"silence_id": silence_id}})
                return
            raise

    async def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        await self._call("POST", "/alerts", "post alerts", json=list(alerts))

    async def firing(self) -> set[tuple[str, datetime]]:
        """(fingerprint, startsAt) of every alert not resolved, silenced ones included; startsAt to the millisecond."""
        response = await self._call("GET", "/alerts", "list alerts", params={"active": "true", "silenced": "true", "inhibited": "true"})
        try:
            return {(str(a["fingerprint"]), datetime.fromisoformat(str(a["startsAt"]).replace("Z", "+00:00"))) for a in response.json()}
        except (ValueError, KeyError, TypeError):
            raise AlertmanagerError(f"cannot list alerts: Alertmanager at {self.base_url} answered something else than a list of alerts") from None


# ---------------------------------------------------------------- the service


@dataclass(frozen=True)
class WebhookResult:
    created: int
    updated: int
    resolved: int
    ignored: int


class AlertService:
    """The alert store plus Alertmanager, used by the API and by the escalation loop.

    `settings` is called for every operation, so a config reload (new
    escalation steps, another Alertmanager) applies at once.
    """

    def __init__(
        self,
        store: AlertStore,
        settings: Callable[[], AlertingSettings],
        *,
        clock: Callable[[], datetime] = utc_now,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.transport = transport
        self._task: asyncio.Task[None] | None = None
        # Acknowledged alerts not seen in Alertmanager, since when (see resolved_after_missing).
        self._missing_since: dict[int, datetime] = {}
        # Called with each alert created or changed (fired, acknowledged, resolved, escalated).
        self.listeners: list[Callable[[Alert], None]] = []

    def _notify(self, alerts: Iterable[Alert]) -> None:
        for alert in alerts:
            for listener in list(self.listeners):
                try:
                    listener(alert)
                except Exception:
                    log.exception("alert listener failed")

    def _created(self, notifications: Sequence[Notification], now: datetime) -> list[Alert]:
        """The alerts that `receive` just created: the store returns only their count."""
        firing = {(n.fingerprint, n.starts_at) for n in notifications if n.status == "firing"}
        recent = self.store.find(status=Status.ACTIVE, limit=len(firing) + 100)
        return sorted((a for a in recent if (a.fingerprint, a.starts_at) in firing and a.received_at == now), key=lambda a: a.id)

    # ------------------------------------------------------------ lifecycle

    @property
    def ready(self) -> bool:
        return self.store.migrated

    def open(self) -> None:
        """Migrate the schema; the API answers 503 until this is done."""
        try:
            self.store.migrate()
        except Exception as exc:
            raise AlertDatabaseError(f"cannot open the alert database {self.store.description}: {type(exc).__name__}: {_first_line(exc)}") from exc

    async def start(self) -> None:
        # Probing must not wait on the alert database: if it cannot be opened now,
        # the alert endpoints answer 503 and each check tries again.
        await self._try_open()
        self._task = asyncio.create_task(self._loop(), name="alert-escalation")

    async def _try_open(self) -> None:
        try:
            await asyncio.to_thread(self.open)
        except AlertDatabaseError as exc:
            log.error("%s; the alert API answers 503 until it opens", exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.store.close()

    async def _loop(self) -> None:
        while True:
            if not self.ready:
                await asyncio.sleep(self.settings().escalation_check)
                await self._try_open()
                continue
            try:
                await self.check()
            except Exception:
                log.exception("escalation check failed; next check as scheduled")
            await asyncio.sleep(self.settings().escalation_check)

    def _alertmanager(self, client: httpx.AsyncClient) -> Alertmanager | None:
        url = self.settings().alertmanager_url
        return Alertmanager(url, client) if url else None

    def _client(self) -> httpx.AsyncClient:
        # One client per operation: the API and the loop may run on different event loops (tests, TestClient).
        return httpx.AsyncClient(timeout=_TIMEOUT, transport=self.transport)

    def _require_ready(self) -> None:
        if not self.ready:
            raise AlertingUnavailable("the alert store is not ready yet (the collector is starting)")

    # ------------------------------------------------------------ reads

    async def get(self, alert_id: int) -> Alert:
        self._require_ready()
        return await asyncio.to_thread(self.store.get, alert_id)

    async def find(self, **filters: Any) -> list[Alert]:
        self._require_ready()
        return await asyncio.to_thread(lambda: self.store.find(**filters))

    # ------------------------------------------------------------ webhook

    async def receive(self, notifications: Sequence[Notification]) -> WebhookResult:
        """Record one webhook's alerts; copies we posted ourselves (escalated="true") are skipped."""
        self._require_ready()
        own = [n for n in notifications if n.labels.get(ESCALATED_LABEL) != "true"]
        now = self.clock()
        received = await asyncio.to_thread(self.store.receive, own, now=now, actor=WEBHOOK_ACTOR)
        if self.listeners and received.created:
            self._notify(await asyncio.to_thread(self._created, own, now))
        self._notify(received.resolved)
        if received.resolved:
            await self._clean_up(received.resolved)
        return WebhookResult(received.created, received.updated, len(received.resolved), len(notifications) - len(own))

    # ------------------------------------------------------------ acknowledge, resolve

    async def acknowledge(self, alert_id: int, *, actor: str, comment: str, duration: timedelta = DEFAULT_ACK) -> Alert:
        """Silence exactly this alert in Alertmanager, then record it; Alertmanager failing changes nothing."""
        self._require_ready()
        alert = await asyncio.to_thread(self.store.get, alert_id)
        if Status.ACKNOWLEDGED not in TRANSITIONS[alert.status]:
            raise InvalidTransition(alert.id, alert.status, Status.ACKNOWLEDGED)
        async with self._client() as client:
            alertmanager = self._alertmanager(client)
            if alertmanager is None:
                raise AlertingUnavailable("cannot acknowledge: alerting.alertmanager_url is not set in flowprobe.yaml (the acknowledgement is a silence)")
            now = self.clock()
            silence_id = await alertmanager.create_silence(alert.labels, starts_at=now, ends_at=now + duration, created_by=actor, comment=comment)
            try:
                acknowledged = await asyncio.to_thread(
                    self.store.acknowledge, alert_id, actor=actor, comment=comment, silence_id=silence_id, now=now
                )
            except (InvalidTransition, UnknownAlert):
                # Resolved (or acknowledged) meanwhile: take back the silence we just made.
                await self._try(alertmanager.expire_silence(silence_id), "expire an unneeded silence", alert_id)
                raise
            log.info("alert acknowledged", extra={"fields": {"alert_id": alert_id, "actor": actor, "silence_id": silence_id}})
            self._notify([acknowledged])
            if acknowledged.escalation_open:
                await self._end_escalation(alertmanager, acknowledged)
        return await asyncio.to_thread(self.store.get, alert_id)

    async def resolve(self, alert_id: int, *, actor: str, comment: str) -> Alert:
        self._require_ready()
        resolved = await asyncio.to_thread(self.store.resolve, alert_id, actor=actor, comment=comment, now=self.clock())
        log.info("alert resolved", extra={"fields": {"alert_id": alert_id, "actor": actor}})
        self._notify([resolved])
        await self._clean_up([resolved])
        return await asyncio.to_thread(self.store.get, alert_id)

    async def _clean_up(self, alerts: Sequence[Alert]) -> None:
        """Expire silences and end escalations of alerts that no longer need them; failures wait for the next check."""
        pending = [a for a in alerts if a.silence_pending_expiry or a.escalation_open]
        if not pending:
            return
        async with self._client() as client:
            alertmanager = self._alertmanager(client)
            if alertmanager is None:
                log.warning("alerting.alertmanager_url is not set: silences and escalations are left to lapse")
                return
            for alert in pending:
                if alert.silence_pending_expiry:
                    await self._expire(alertmanager, alert)
                if alert.escalation_open:
                    await self._end_escalation(alertmanager, alert)

    async def _expire(self, alertmanager: Alertmanager, alert: Alert) -> None:
        assert alert.silence_id is not None
        if await self._try(alertmanager.expire_silence(alert.silence_id), "expire its silence", alert.id):
            await asyncio.to_thread(self.store.silence_expired, alert.id, now=self.clock())

    async def _end_escalation(self, alertmanager: Alertmanager, alert: Alert) -> None:
        now = self.clock()
        if await self._try(alertmanager.post_alerts(self._copies(alert, ends_at=now)), "end its escalation", alert.id):
            await asyncio.to_thread(self.store.escalation_ended, alert.id)

    @staticmethod
    async def _try(call: Awaitable[object], what: str, alert_id: int) -> bool:
        try:
            await call
        except AlertmanagerError as exc:
            log.warning("Alertmanager call failed; retried at the next escalation check", extra={"fields": {"alert_id": alert_id, "action": what, "error": str(exc)}})
            return False
        return True

    # ------------------------------------------------------------ escalation

    @staticmethod
    def _copies(alert: Alert, *, ends_at: datetime) -> list[dict[str, Any]]:
        """The escalated copies of every step reached, as Alertmanager's postable alerts."""
        copies = []
        for target in alert.escalations:
            copy: dict[str, Any] = {
                "labels": {**alert.labels, ESCALATED_LABEL: "true", ESCALATION_LABEL: target},
                "annotations": dict(alert.annotations),
                "startsAt": _rfc3339(alert.starts_at),
                "endsAt": _rfc3339(ends_at),
            }
            if alert.generator_url:
                copy["generatorURL"] = alert.generator_url
            copies.append(copy)
        return copies

    async def check(self) -> None:
        """One escalation check: retry owed clean-ups, notice acknowledged alerts that resolved,
        escalate what is due, keep escalated copies firing."""
        if not self.ready:
            return
        settings = self.settings()
        owed = await asyncio.to_thread(self.store.needing_cleanup)
        if owed:
            await self._clean_up(owed)
        if not settings.alertmanager_url:
            return
        candidates = await asyncio.to_thread(self.store.find, status=[Status.ACTIVE, Status.ESCALATED], limit=10_000)
        async with self._client() as client:
            alertmanager = self._alertmanager(client)
            assert alertmanager is not None
            await self._resolve_gone(alertmanager, timedelta(seconds=settings.resolved_after_missing))
            for alert in sorted(candidates, key=lambda a: a.id):
                alert = await self._escalate_if_due(alert, settings)
                if alert.status is Status.ESCALATED:
                    await self._keep_alive(alertmanager, alert, settings)

    async def _keep_alive(self, alertmanager: Alertmanager, alert: Alert, settings: AlertingSettings) -> None:
        ends_at = self.clock() + timedelta(seconds=settings.escalation_check * _COPY_LIFETIME_CHECKS)
        if not await self._try(alertmanager.post_alerts(self._copies(alert, ends_at=ends_at)), "post its escalation", alert.id):
            return
        # Acknowledged or resolved while we posted: its end may have gone out before our copy; end it again.
        current = await asyncio.to_thread(self.store.get, alert.id)
        if current.status is not Status.ESCALATED:
            await self._end_escalation(alertmanager, current)

    async def _resolve_gone(self, alertmanager: Alertmanager, grace: timedelta) -> None:
        """Resolve acknowledged alerts that Alertmanager no longer has: their resolved notification was muted by our silence."""
        acknowledged = await asyncio.to_thread(self.store.find, status=Status.ACKNOWLEDGED, limit=10_000)
        self._missing_since = {k: v for k, v in self._missing_since.items() if k in {a.id for a in acknowledged}}
        if not acknowledged:
            return
        try:
            firing = await alertmanager.firing()
        except AlertmanagerError as exc:
            log.warning("cannot tell which acknowledged alerts resolved", extra={"fields": {"error": str(exc)}})
            return
        now = self.clock()
        for alert in acknowledged:
            starts_at = alert.starts_at.replace(microsecond=alert.starts_at.microsecond // 1000 * 1000)
            if (alert.fingerprint, starts_at) in firing:
                self._missing_since.pop(alert.id, None)
                continue
            since = self._missing_since.setdefault(alert.id, now)
            if now - since < grace:
                continue
            comment = f"no longer firing in Alertmanager (checked since {_rfc3339(since)}); its silence muted the resolved notification"
            try:
                resolved = await asyncio.to_thread(self.store.resolve, alert.id, actor=WEBHOOK_ACTOR, comment=comment, now=now)
            except (InvalidTransition, UnknownAlert):
                continue
            del self._missing_since[alert.id]
            log.info("acknowledged alert resolved in Alertmanager", extra={"fields": {"alert_id": alert.id, "alertname": alert.alertname}})
            self._notify([resolved])
            await self._clean_up([resolved])

    async def _escalate_if_due(self, alert: Alert, settings: AlertingSettings) -> Alert:
        steps = settings.escalation.get(alert.severity or "", [])  # type: ignore[call-overload]
        elapsed = (self.clock() - alert.starts_at).total_seconds()
        due = [(index, step) for index, step in enumerate(steps) if step.after <= elapsed and index >= alert.escalation_level]
        if not due:
            return alert
        reached = [(step.to, f"step {index + 1}: {step.to} ({_human(step.after)} after it started)") for index, step in due]
        try:
            escalated = await asyncio.to_thread(
                self.store.escalate, alert.id, reached, from_level=alert.escalation_level, now=self.clock(), actor=SYSTEM_ACTOR
            )
        except UnknownAlert:
            return alert
        except InvalidTransition:
            # Acknowledged, resolved or escalated elsewhere since the list was read.
            return await asyncio.to_thread(self.store.get, alert.id)
        log.info("alert escalated", extra={"fields": {"alert_id": alert.id, "alertname": alert.alertname, "to": reached[-1][0], "escalation_level": escalated.escalation_level}})
        self._notify([escalated])
        return escalated


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""
