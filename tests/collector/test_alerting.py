"""The alert service against a real Alertmanager: silences, their expiry, escalation, failures."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.alerting import AlertingUnavailable, AlertmanagerError, AlertService
from collector.alertstore import AlertStore, InvalidTransition, Notification, Status
from collector.config import AlertingSettings
from tests.helpers import free_port, running_alertmanager

@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_alertmanager(tmp_path_factory.mktemp("alertmanager")) as url:
        yield url


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class Settings:
    """What flowprobe.yaml's alerting section would say; tests change it as a reload would."""

    def __init__(self, **values: Any) -> None:
        self.value = AlertingSettings.model_validate(values)

    def __call__(self) -> AlertingSettings:
        return self.value

    def change(self, **values: Any) -> None:
        self.value = self.value.model_copy(update=values)


ESCALATION = {"critical": [{"after": "15m", "to": "oncall"}, {"after": "30m", "to": "managers"}]}


@pytest.fixture
def settings(alertmanager: str) -> Settings:
    return Settings(alertmanager_url=alertmanager, escalation=ESCALATION, escalation_check="10m")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(tmp_path: Path, settings: Settings, clock: Clock) -> Iterator[AlertService]:
    alerts = AlertService(AlertStore(f"sqlite:///{tmp_path}/alerts.sqlite3"), settings, clock=clock)
    alerts.open()
    yield alerts
    alerts.store.close()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def fire(service: AlertService, *, starts_at: datetime, severity: str = "critical", status: str = "firing", name: str = "") -> int:
    labels = {"alertname": name or f"WorkflowFailing{uuid.uuid4().hex[:8]}", "severity": severity, "workflow": "order-placement", "env": "prod"}
    ends_at = starts_at + timedelta(minutes=1) if status == "resolved" else None
    note = Notification(status, f"fp-{labels['alertname']}", starts_at, ends_at, labels, {"summary": "order placement fails"}, "http://prom/graph")
    asyncio.run(service.receive([note]))
    return next(a.id for a in service.store.find(limit=500) if a.labels["alertname"] == labels["alertname"])


def silence(alertmanager: str, silence_id: str) -> dict[str, Any]:
    response = httpx.get(f"{alertmanager}/api/v2/silence/{silence_id}")
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def escalated_copies(alertmanager: str, alertname: str) -> dict[str, dict[str, Any]]:
    """The escalated copies Alertmanager holds as firing, by their escalation label."""
    alerts = httpx.get(f"{alertmanager}/api/v2/alerts", params={"filter": f'alertname="{alertname}"'}).json()
    return {a["labels"]["escalation"]: a for a in alerts if a["labels"].get("escalated") == "true"}


# ---------------------------------------------------------------- acknowledge


def test_acknowledging_silences_exactly_that_alert_in_alertmanager(service: AlertService, alertmanager: str, clock: Clock) -> None:
    alert_id = fire(service, starts_at=clock.now - timedelta(minutes=3))
    alert = asyncio.run(service.acknowledge(alert_id, actor="alice", comment="deploy rolled back", duration=timedelta(hours=2)))

    assert alert.status is Status.ACKNOWLEDGED and alert.acknowledged_by == "alice" and alert.silence_id
    made = silence(alertmanager, alert.silence_id)
    assert made["status"]["state"] == "active"
    assert made["createdBy"] == "alice" and made["comment"] == "deploy rolled back"
    expected = [{"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in sorted(alert.labels.items())]
    assert sorted(made["matchers"], key=lambda m: m["name"]) == expected
    ends_at = datetime.fromisoformat(made["endsAt"].replace("Z", "+00:00"))
    assert abs(ends_at - (clock.now + timedelta(hours=2))) < timedelta(seconds=1)
    last = alert.events[-1]
    assert (last.actor, last.action, last.from_status, last.to_status, last.comment) == (
        "alice", "acknowledged", Status.ACTIVE, Status.ACKNOWLEDGED, "deploy rolled back",
    )

    # The silence really mutes the alert, and only it.
    posted = [{"labels": alert.labels, "startsAt": alert.starts_at.isoformat()}, {"labels": {**alert.labels, "env": "staging"}}]
    httpx.post(f"{alertmanager}/api/v2/alerts", json=posted).raise_for_status()
    states = {
        a["labels"]["env"]: a["status"]
        for a in httpx.get(f"{alertmanager}/api/v2/alerts", params={"filter": f'alertname="{alert.alertname}"'}).json()
    }
    assert states["prod"]["state"] == "suppressed" and states["prod"]["silencedBy"] == [alert.silence_id]
    assert states["staging"]["state"] == "active"


def test_alertmanager_down_during_acknowledge_leaves_the_alert_unchanged(service: AlertService, settings: Settings, clock: Clock) -> None:
    alert_id = fire(service, starts_at=clock.now)
    before = service.store.get(alert_id)
    settings.change(alertmanager_url=dead_url().replace("//", "//flowprobe:s3cret@"))
    with pytest.raises(AlertmanagerError, match=r"^cannot create a silence: Alertmanager at http://127\.0\.0\.1:\d+ is unreachable \(ConnectError") as raised:
        asyncio.run(service.acknowledge(alert_id, actor="alice", comment="mine"))
    assert "s3cret" not in str(raised.value)  # credentials in the URL stay out of messages
    assert service.store.get(alert_id) == before


def test_acknowledge_needs_an_alertmanager_and_an_acknowledgeable_alert(service: AlertService, settings: Settings, clock: Clock) -> None:
    alert_id = fire(service, starts_at=clock.now, status="resolved")
    with pytest.raises(InvalidTransition, match="is RESOLVED; it cannot be acknowledged"):
        asyncio.run(service.acknowledge(alert_id, actor="alice", comment="mine"))
    settings.change(alertmanager_url=None)
    active = fire(service, starts_at=clock.now)
    with pytest.raises(AlertingUnavailable, match="alertmanager_url is not set"):
        asyncio.run(service.acknowledge(active, actor="alice", comment="mine"))


def test_a_silence_made_for_an_alert_resolved_meanwhile_is_taken_back(service: AlertService, alertmanager: str, clock: Clock) -> None:
    alert_id = fire(service, starts_at=clock.now)
    acknowledge = service.store.acknowledge
    made: list[str] = []

    def resolved_first(alert_id: int, **kwargs: Any) -> Any:
        made.append(kwargs["silence_id"])
        service.store.resolve(alert_id, actor="bob", comment="fixed it first", now=clock.now)
        return acknowledge(alert_id, **kwargs)

    service.store.acknowledge = resolved_first  # type: ignore[method-assign]
    with pytest.raises(InvalidTransition):
        asyncio.run(service.acknowledge(alert_id, actor="alice", comment="mine"))
    assert silence(alertmanager, made[0])["status"]["state"] == "expired"
    assert service.store.get(alert_id).resolved_by == "bob"


# ---------------------------------------------------------------- resolve: the silence goes


@pytest.mark.parametrize("how", ["by hand", "by the webhook"])
def test_resolving_expires_the_silence_so_the_next_incident_pages(service: AlertService, alertmanager: str, clock: Clock, how: str) -> None:
    alert_id = fire(service, starts_at=clock.now - timedelta(minutes=5), name=f"Flapping{uuid.uuid4().hex[:8]}")
    acknowledged = asyncio.run(service.acknowledge(alert_id, actor="alice", comment="looking"))
    assert acknowledged.silence_id is not None
    if how == "by hand":
        asyncio.run(service.resolve(alert_id, actor="alice", comment="fixed"))
    else:
        fire(service, starts_at=acknowledged.starts_at, status="resolved", name=acknowledged.alertname)
    assert silence(alertmanager, acknowledged.silence_id)["status"]["state"] == "expired"
    alert = service.store.get(alert_id)
    assert alert.status is Status.RESOLVED and alert.resolved_by == ("alice" if how == "by hand" else "alertmanager")
    assert alert.silence_expired_at is not None and alert.events[-1].action == "silence_expired"
    assert service.store.needing_cleanup() == []


def test_a_failed_silence_expiry_is_logged_and_retried_at_the_next_check(
    service: AlertService, settings: Settings, alertmanager: str, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    alert_id = fire(service, starts_at=clock.now)
    silence_id = asyncio.run(service.acknowledge(alert_id, actor="alice", comment="looking")).silence_id
    assert silence_id is not None
    settings.change(alertmanager_url=dead_url())
    with caplog.at_level(logging.WARNING, logger="flowprobe.alerting"):
        alert = asyncio.run(service.resolve(alert_id, actor="alice", comment="fixed"))
    assert alert.status is Status.RESOLVED and alert.silence_expired_at is None
    [record] = [r for r in caplog.records if r.name == "flowprobe.alerting"]
    assert record.getMessage() == "Alertmanager call failed; retried at the next escalation check"
    assert record.fields["action"] == "expire its silence" and "unreachable" in record.fields["error"]  # type: ignore[attr-defined]
    assert silence(alertmanager, silence_id)["status"]["state"] == "active"

    asyncio.run(service.check())  # still down: still owed
    assert [a.id for a in service.store.needing_cleanup()] == [alert_id]
    settings.change(alertmanager_url=alertmanager)
    asyncio.run(service.check())
    assert silence(alertmanager, silence_id)["status"]["state"] == "expired"
    assert service.store.needing_cleanup() == []


def test_an_acknowledged_alert_gone_from_alertmanager_is_resolved_and_its_silence_expired(
    service: AlertService, alertmanager: str, clock: Clock
) -> None:
    # Alertmanager mutes the resolved notification of a silenced alert: the webhook never tells.
    labels = {"alertname": f"Acknowledged{uuid.uuid4().hex[:8]}", "severity": "warning", "env": "prod"}
    starts_at = clock.now - timedelta(minutes=5)

    def in_alertmanager(ends_at: datetime) -> None:
        body = [{"labels": labels, "startsAt": starts_at.isoformat(), "endsAt": ends_at.isoformat()}]
        httpx.post(f"{alertmanager}/api/v2/alerts", json=body).raise_for_status()

    in_alertmanager(clock.now + timedelta(minutes=10))
    [held] = httpx.get(f"{alertmanager}/api/v2/alerts", params={"filter": f'alertname="{labels["alertname"]}"'}).json()
    asyncio.run(service.receive([Notification("firing", held["fingerprint"], starts_at, None, labels)]))
    [alert] = service.store.find(status=Status.ACTIVE)
    silence_id = asyncio.run(service.acknowledge(alert.id, actor="alice", comment="on it")).silence_id
    assert silence_id is not None

    asyncio.run(service.check())  # still firing (silenced): stays acknowledged
    assert service.store.get(alert.id).status is Status.ACKNOWLEDGED

    in_alertmanager(datetime.now(UTC))  # resolves
    asyncio.run(service.check())
    clock.now += timedelta(minutes=2)
    in_alertmanager(clock.now + timedelta(minutes=10))  # back (as after an Alertmanager restart): not resolved
    asyncio.run(service.check())
    in_alertmanager(datetime.now(UTC))
    clock.now += timedelta(minutes=2)
    asyncio.run(service.check())  # gone again, but only just: the grace starts over
    assert service.store.get(alert.id).status is Status.ACKNOWLEDGED

    clock.now += timedelta(minutes=3)
    asyncio.run(service.check())
    resolved = service.store.get(alert.id)
    assert (resolved.status, resolved.resolved_by) == (Status.RESOLVED, "alertmanager")
    assert resolved.events[-2].comment is not None and resolved.events[-2].comment.startswith("no longer firing in Alertmanager")
    assert resolved.events[-1].action == "silence_expired"
    assert silence(alertmanager, silence_id)["status"]["state"] == "expired"


# ---------------------------------------------------------------- escalation


@pytest.mark.parametrize("stop", ["acknowledge", "resolve by hand", "resolve by the webhook"])
def test_escalation_walks_the_steps_until_someone_acknowledges(service: AlertService, alertmanager: str, clock: Clock, stop: str) -> None:
    real_now = clock.now
    alert_id = fire(service, starts_at=real_now - timedelta(minutes=40))
    alertname = service.store.get(alert_id).alertname

    clock.now = real_now - timedelta(minutes=26)  # 14 minutes in: nothing due yet
    asyncio.run(service.check())
    assert service.store.get(alert_id).status is Status.ACTIVE and escalated_copies(alertmanager, alertname) == {}

    clock.now = real_now - timedelta(minutes=20)  # 20 minutes in: the first step
    asyncio.run(service.check())
    alert = service.store.get(alert_id)
    assert (alert.status, alert.escalation_level, alert.escalations) == (Status.ESCALATED, 1, ("oncall",))
    assert (alert.events[-1].action, alert.events[-1].actor, alert.events[-1].comment) == ("escalated", "flowprobe", "step 1: oncall (15m after it started)")
    copies = escalated_copies(alertmanager, alertname)
    assert list(copies) == ["oncall"]
    assert copies["oncall"]["labels"] == {**alert.labels, "escalated": "true", "escalation": "oncall"}
    assert copies["oncall"]["annotations"] == alert.annotations and copies["oncall"]["generatorURL"] == "http://prom/graph"
    assert datetime.fromisoformat(copies["oncall"]["startsAt"].replace("Z", "+00:00")) == alert.starts_at.replace(microsecond=alert.starts_at.microsecond // 1000 * 1000)

    asyncio.run(service.check())  # a check with nothing new due only keeps the copy alive
    assert service.store.get(alert_id).escalation_level == 1

    clock.now = real_now  # 40 minutes in: the second step; the first stays firing
    asyncio.run(service.check())
    alert = service.store.get(alert_id)
    assert (alert.escalation_level, alert.escalations) == (2, ("oncall", "managers"))
    assert sorted(escalated_copies(alertmanager, alertname)) == ["managers", "oncall"]

    if stop == "acknowledge":
        asyncio.run(service.acknowledge(alert_id, actor="alice", comment="on it"))
    elif stop == "resolve by hand":
        asyncio.run(service.resolve(alert_id, actor="alice", comment="fixed"))
    else:
        fire(service, starts_at=alert.starts_at, status="resolved", name=alertname)
    assert escalated_copies(alertmanager, alertname) == {}  # ended at once, not left to lapse
    assert not service.store.get(alert_id).escalation_open
    asyncio.run(service.check())
    assert escalated_copies(alertmanager, alertname) == {} and service.store.get(alert_id).escalation_level == 2


def test_an_acknowledgement_racing_a_check_does_not_bring_the_escalation_back(service: AlertService, alertmanager: str, clock: Clock) -> None:
    alert_id = fire(service, starts_at=clock.now - timedelta(minutes=20))
    alertname = service.store.get(alert_id).alertname
    asyncio.run(service.check())
    assert list(escalated_copies(alertmanager, alertname)) == ["oncall"]
    find = service.store.find

    def acknowledged_right_after(**filters: Any) -> Any:
        found = find(**filters)
        if filters.get("status") == [Status.ACTIVE, Status.ESCALATED]:  # the check's list is now stale
            asyncio.run(service.acknowledge(alert_id, actor="alice", comment="on it"))
        return found

    service.store.find = acknowledged_right_after  # type: ignore[method-assign]
    asyncio.run(service.check())
    assert escalated_copies(alertmanager, alertname) == {}
    assert service.store.get(alert_id).status is Status.ACKNOWLEDGED and not service.store.get(alert_id).escalation_open


def test_only_severities_with_steps_escalate_and_only_when_due(service: AlertService, clock: Clock) -> None:
    young = fire(service, starts_at=clock.now - timedelta(minutes=14))
    info = fire(service, starts_at=clock.now - timedelta(hours=5), severity="info")
    old = fire(service, starts_at=clock.now - timedelta(hours=5))
    asyncio.run(service.check())
    assert [service.store.get(i).status for i in (young, info, old)] == [Status.ACTIVE, Status.ACTIVE, Status.ESCALATED]
    assert service.store.get(old).escalation_level == 2  # both steps are past: both reached in one check


def test_escalated_copies_coming_back_through_the_webhook_are_ignored(service: AlertService, clock: Clock) -> None:
    labels = {"alertname": "WorkflowFailing", "severity": "critical", "escalated": "true", "escalation": "oncall"}
    result = asyncio.run(service.receive([Notification("firing", "fp-copy", clock.now, None, labels)]))
    assert (result.created, result.ignored) == (0, 1) and service.store.find() == []


def test_the_escalation_loop_runs_between_start_and_stop(tmp_path: Path, alertmanager: str, clock: Clock) -> None:
    settings = Settings(alertmanager_url=alertmanager, escalation=ESCALATION, escalation_check=0.05)
    service = AlertService(AlertStore(f"sqlite:///{tmp_path}/alerts.sqlite3"), settings, clock=clock)

    async def main() -> tuple[Status, bool]:
        await service.start()
        note = Notification("firing", "fp-loop", clock.now - timedelta(minutes=16), None, {"alertname": "Loop", "severity": "critical"})
        await service.receive([note])
        [alert] = service.store.find()
        for _ in range(200):
            alert = service.store.get(alert.id)
            if alert.status is Status.ESCALATED:
                break
            await asyncio.sleep(0.02)
        task = service._task
        await service.stop()
        return alert.status, task is not None and task.cancelled()

    assert asyncio.run(main()) == (Status.ESCALATED, True)


def test_an_unreachable_alert_database_does_not_stop_the_collector(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    service = AlertService(AlertStore(f"postgresql+psycopg://nobody:hunter2-db-pass@127.0.0.1:{free_port()}/none"),
                           settings=lambda: AlertingSettings(escalation_check=0.05))

    async def main() -> bool:
        await service.start()  # no exception: probing goes on
        ready = service.ready
        await service.stop()
        return ready

    assert asyncio.run(main()) is False
    assert "the alert API answers 503" in caplog.text
    assert "hunter2-db-pass" not in caplog.text
