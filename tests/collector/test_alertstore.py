"""The alert store on SQLite and on PostgreSQL: migrations, webhook records, the state machine, queries."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from collector.alertstore import VERSION_TABLE, AlertStore, InvalidTransition, Notification, Status, UnknownAlert, metadata

POSTGRES_URL = os.environ.get("FLOWPROBE_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AlertStore]:
    if request.param == "sqlite":
        sqlite = AlertStore(f"sqlite:///{tmp_path}/alerts.sqlite3")
        sqlite.migrate()
        yield sqlite
        sqlite.close()
        return
    with postgres_schema() as url_and_options:
        url, options = url_and_options
        postgres = AlertStore(create_engine(url, connect_args={"options": options}))
        postgres.migrate()
        yield postgres
        postgres.close()


class postgres_schema:
    """A schema of its own per test (search_path), dropped afterwards: parallel runs never collide."""

    def __enter__(self) -> tuple[str, str]:
        shown = make_url(POSTGRES_URL).render_as_string(hide_password=True)
        self.admin = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        self.schema = f"t_{uuid.uuid4().hex[:16]}"
        try:
            with self.admin.begin() as connection:
                connection.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        except OperationalError as exc:
            self.admin.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            pytest.skip(f"PostgreSQL not reachable at {shown} (the PostgreSQL path of the alert store is untested): {reason}")
        return POSTGRES_URL, f"-csearch_path={self.schema}"

    def __exit__(self, *exc: object) -> None:
        with self.admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
        self.admin.dispose()


def firing(fingerprint: str = "f1", starts_at: datetime = T0, **labels: str) -> Notification:
    labels = {"alertname": "WorkflowFailing", "severity": "critical", "workflow": "order-placement", "env": "prod", **labels}
    return Notification("firing", fingerprint, starts_at, None, labels, {"summary": "order-placement fails in prod"}, "http://prom/graph")


def resolved(fingerprint: str = "f1", starts_at: datetime = T0, ends_at: datetime = T0 + timedelta(minutes=7)) -> Notification:
    note = firing(fingerprint, starts_at)
    return Notification("resolved", fingerprint, starts_at, ends_at, note.labels, note.annotations, note.generator_url)


def one(store: AlertStore) -> int:
    [alert] = store.find()
    return alert.id


# ---------------------------------------------------------------- migrations


def test_migrations_make_exactly_the_schema_of_the_models(store: AlertStore) -> None:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE, "compare_type": True})
        assert compare_metadata(context, metadata) == []
        assert context.get_current_revision() == "0001"


def test_migrating_again_changes_nothing_and_keeps_the_data(store: AlertStore) -> None:
    store.receive([firing()], now=T0)
    store.migrate()
    assert len(store.find()) == 1


def test_migrate_creates_the_sqlite_file_and_its_directory(tmp_path: Path) -> None:
    fresh = AlertStore(f"sqlite:///{tmp_path}/new/dir/alerts.sqlite3")
    assert not fresh.migrated
    fresh.migrate()
    assert fresh.migrated and fresh.find() == []
    fresh.close()


# ---------------------------------------------------------------- webhook records


def test_a_firing_notification_creates_an_active_alert_with_its_first_event(store: AlertStore) -> None:
    received = store.receive([firing()], now=T0 + timedelta(seconds=30))
    assert (received.created, received.updated, received.resolved) == (1, 0, [])
    alert = store.get(one(store))
    assert alert.status is Status.ACTIVE
    assert (alert.alertname, alert.severity, alert.workflow, alert.env) == ("WorkflowFailing", "critical", "order-placement", "prod")
    assert alert.labels["alertname"] == "WorkflowFailing" and alert.annotations == {"summary": "order-placement fails in prod"}
    assert alert.starts_at == T0 and alert.received_at == T0 + timedelta(seconds=30)
    assert alert.starts_at.tzinfo is not None
    [event] = alert.events
    assert (event.actor, event.action, event.from_status, event.to_status, event.comment) == ("alertmanager", "fired", None, Status.ACTIVE, None)


def test_a_repeated_notification_updates_the_same_alert_without_a_new_event(store: AlertStore) -> None:
    store.receive([firing()], now=T0)
    changed = firing()
    changed = Notification("firing", "f1", T0, None, changed.labels, {"summary": "still failing"}, changed.generator_url)
    for _ in range(3):
        received = store.receive([changed], now=T0 + timedelta(minutes=5))
    assert (received.created, received.updated) == (0, 1)
    alert = store.get(one(store))
    assert alert.annotations == {"summary": "still failing"} and len(alert.events) == 1
    assert alert.updated_at == T0 + timedelta(minutes=5)


def test_the_same_labels_firing_again_later_are_a_new_episode(store: AlertStore) -> None:
    store.receive([firing(), resolved()], now=T0)
    store.receive([firing(starts_at=T0 + timedelta(hours=1))], now=T0 + timedelta(hours=1))
    newest, oldest = store.find()
    assert (newest.status, oldest.status) == (Status.ACTIVE, Status.RESOLVED)
    assert newest.fingerprint == oldest.fingerprint


def test_a_resolved_notification_resolves_the_alert_as_alertmanager(store: AlertStore) -> None:
    store.receive([firing()], now=T0)
    received = store.receive([resolved()], now=T0 + timedelta(minutes=8))
    assert [a.status for a in received.resolved] == [Status.RESOLVED]
    alert = store.get(one(store))
    assert alert.status is Status.RESOLVED and alert.resolved_by == "alertmanager"
    assert alert.resolved_at == alert.ends_at == T0 + timedelta(minutes=7)
    assert [(e.action, e.from_status, e.to_status, e.actor) for e in alert.events] == [
        ("fired", None, Status.ACTIVE, "alertmanager"),
        ("resolved", Status.ACTIVE, Status.RESOLVED, "alertmanager"),
    ]
    assert store.receive([resolved()], now=T0 + timedelta(minutes=9)).resolved == []  # idempotent
    assert len(store.get(alert.id).events) == 2


def test_a_resolved_notification_of_an_unknown_alert_is_kept_as_fired_then_resolved(store: AlertStore) -> None:
    store.receive([resolved()], now=T0 + timedelta(minutes=8))
    alert = store.get(one(store))
    assert alert.status is Status.RESOLVED and [e.action for e in alert.events] == ["fired", "resolved"]


def test_a_firing_notification_does_not_reopen_a_resolved_alert(store: AlertStore) -> None:
    store.receive([firing()], now=T0)
    store.resolve(one(store), actor="alice", comment="fixed the deploy", now=T0 + timedelta(minutes=1))
    store.receive([firing()], now=T0 + timedelta(minutes=2))
    alert = store.get(one(store))
    assert alert.status is Status.RESOLVED and alert.resolved_by == "alice" and len(alert.events) == 2


def test_times_keep_their_instant_whatever_the_offset_they_came_with(store: AlertStore) -> None:
    # Alertmanager sends nanoseconds and any offset; the instant is the identity, to the microsecond.
    plus_two = T0.astimezone(timezone(timedelta(hours=2)))
    store.receive([firing(starts_at=plus_two)], now=T0)
    store.receive([firing(starts_at=T0)], now=T0)
    alert = store.get(one(store))
    assert alert.starts_at == T0 and alert.starts_at.utcoffset() == timedelta(0)


# ---------------------------------------------------------------- the state machine


def _in(store: AlertStore, status: Status) -> int:
    store.receive([firing(fingerprint=status.value)], now=T0)
    [alert] = store.find(status=Status.ACTIVE)
    if status is Status.ACKNOWLEDGED:
        store.acknowledge(alert.id, actor="op", comment="looking", silence_id="s-1", now=T0)
    elif status is Status.ESCALATED:
        store.escalate(alert.id, [("oncall", "step 1")], from_level=0, now=T0)
    elif status is Status.RESOLVED:
        store.resolve(alert.id, actor="op", comment="done", now=T0)
    return alert.id


@pytest.mark.parametrize(
    ("start", "action", "allowed"),
    [
        (Status.ACTIVE, "acknowledge", True),
        (Status.ACTIVE, "resolve", True),
        (Status.ESCALATED, "acknowledge", True),
        (Status.ESCALATED, "resolve", True),
        (Status.ACKNOWLEDGED, "acknowledge", False),
        (Status.ACKNOWLEDGED, "resolve", True),
        (Status.RESOLVED, "acknowledge", False),
        (Status.RESOLVED, "resolve", False),
    ],
)
def test_transitions_follow_the_state_machine(store: AlertStore, start: Status, action: str, allowed: bool) -> None:
    alert_id = _in(store, start)
    before = store.get(alert_id)
    call = {
        "acknowledge": lambda: store.acknowledge(alert_id, actor="bob", comment="mine", silence_id="s-2", now=T0 + timedelta(minutes=1)),
        "resolve": lambda: store.resolve(alert_id, actor="bob", comment="fixed", now=T0 + timedelta(minutes=1)),
    }[action]
    if allowed:
        after = call()
        assert after.status is (Status.ACKNOWLEDGED if action == "acknowledge" else Status.RESOLVED)
        last = store.get(alert_id).events[-1]
        assert (last.actor, last.action, last.from_status, last.to_status) == ("bob", f"{action}d", start, after.status)
        assert last.comment == ("mine" if action == "acknowledge" else "fixed")
    else:
        with pytest.raises(InvalidTransition, match=f"^alert {alert_id} is {start.value}; it cannot be {action}d$"):
            call()
        assert store.get(alert_id) == before  # nothing changed, no event


def test_escalation_only_moves_forward_and_only_while_unacknowledged(store: AlertStore) -> None:
    alert_id = _in(store, Status.ACTIVE)
    store.escalate(alert_id, [("oncall", "step 1: oncall")], from_level=0, now=T0 + timedelta(minutes=15))
    alert = store.escalate(alert_id, [("managers", "step 2: managers")], from_level=1, now=T0 + timedelta(minutes=30))
    assert (alert.status, alert.escalation_level, alert.escalations, alert.escalation_open) == (Status.ESCALATED, 2, ("oncall", "managers"), True)
    with pytest.raises(InvalidTransition):
        store.escalate(alert_id, [("managers", "again")], from_level=1, now=T0 + timedelta(minutes=31))  # stale level
    events = store.get(alert_id).events
    assert [(e.action, e.from_status, e.to_status, e.comment) for e in events[1:]] == [
        ("escalated", Status.ACTIVE, Status.ESCALATED, "step 1: oncall"),
        ("escalated", Status.ESCALATED, Status.ESCALATED, "step 2: managers"),
    ]
    store.acknowledge(alert_id, actor="op", comment="on it", silence_id="s", now=T0 + timedelta(minutes=32))
    with pytest.raises(InvalidTransition, match="is ACKNOWLEDGED; it cannot be escalated"):
        store.escalate(alert_id, [("ceo", "step 3")], from_level=2, now=T0 + timedelta(minutes=45))


def test_unknown_alerts_raise(store: AlertStore) -> None:
    with pytest.raises(UnknownAlert, match="^unknown alert 99$"):
        store.get(99)
    with pytest.raises(UnknownAlert):
        store.resolve(99, actor="op", comment="x", now=T0)


def test_one_of_many_concurrent_transitions_wins(store: AlertStore) -> None:
    alert_id = _in(store, Status.ACTIVE)
    outcomes: list[str] = []
    barrier = threading.Barrier(6)

    def act(index: int) -> None:
        barrier.wait()
        try:
            if index % 2:
                store.resolve(alert_id, actor=f"op{index}", comment="fixed", now=T0)
            else:
                store.acknowledge(alert_id, actor=f"op{index}", comment="mine", silence_id=None, now=T0)
            outcomes.append("ok")
        except InvalidTransition:
            outcomes.append("conflict")

    threads = [threading.Thread(target=act, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = store.get(alert_id).events
    # Either one resolve, or one acknowledge then one resolve: never two of the same, never a lost update.
    assert [e.from_status for e in events[1:]] == [e.to_status for e in events[:-1]]
    assert outcomes.count("ok") == len(events) - 1 and outcomes.count("ok") in (1, 2)


def test_the_same_webhook_arriving_concurrently_makes_one_alert(store: AlertStore) -> None:
    # Every Alertmanager replica of a cluster may notify: the same new alert at the same moment.
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def deliver() -> None:
        barrier.wait()
        try:
            store.receive([firing(), firing(fingerprint="f2")], now=T0)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    alerts = store.find()
    assert sorted(a.fingerprint for a in alerts) == ["f1", "f2"]
    assert [len(store.get(a.id).events) for a in alerts] == [1, 1]


# ---------------------------------------------------------------- queries and clean-up


def test_find_filters_and_pages_newest_first(store: AlertStore) -> None:
    for index in range(5):
        store.receive([firing(fingerprint=f"f{index}", severity="critical" if index % 2 else "warning", env=f"e{index % 2}")], now=T0)
    store.resolve(store.find()[0].id, actor="op", comment="x", now=T0)
    ids = [a.id for a in store.find()]
    assert ids == sorted(ids, reverse=True) and len(ids) == 5
    first = store.find(limit=2)
    second = store.find(limit=2, before=first[-1].id)
    assert [a.id for a in first + second] == ids[:4]
    assert {a.fingerprint for a in store.find(severity="critical")} == {"f1", "f3"}
    assert {a.fingerprint for a in store.find(env="e0", severity="warning")} == {"f0", "f2", "f4"}
    assert [a.fingerprint for a in store.find(status=Status.RESOLVED)] == ["f4"]
    assert len(store.find(status=[Status.ACTIVE, Status.RESOLVED], workflow="order-placement")) == 5
    assert store.find(workflow="nope") == []


def test_owed_silence_expiries_and_open_escalations_are_listed_until_done(store: AlertStore) -> None:
    alert_id = _in(store, Status.ACTIVE)
    store.escalate(alert_id, [("oncall", "step 1")], from_level=0, now=T0)
    assert store.needing_cleanup() == []  # still escalating: the copy must stay
    store.acknowledge(alert_id, actor="op", comment="mine", silence_id="s-9", now=T0)
    [owed] = store.needing_cleanup()
    assert owed.escalation_open and not owed.silence_pending_expiry
    store.escalation_ended(alert_id)
    assert store.needing_cleanup() == []
    store.resolve(alert_id, actor="op", comment="fixed", now=T0)
    [owed] = store.needing_cleanup()
    assert owed.silence_pending_expiry
    store.silence_expired(alert_id, now=T0 + timedelta(seconds=1))
    store.silence_expired(alert_id, now=T0 + timedelta(seconds=2))  # once only
    assert store.needing_cleanup() == []
    last = store.get(alert_id).events[-1]
    assert (last.action, last.from_status, last.to_status, last.comment) == ("silence_expired", Status.RESOLVED, Status.RESOLVED, "silence s-9 expired")
    assert store.get(alert_id).silence_expired_at == T0 + timedelta(seconds=1)
