"""Alert history: one record per firing episode, its lifecycle and an audit trail.

An alert is what Alertmanager sends to the webhook, identified by its
``fingerprint`` and ``startsAt``: the same labels firing again later are a
new episode and a new record. Every change of status is an event (who, when,
from, to, why), written in the same transaction as the change.

The same SQLAlchemy models run on SQLite (the default, a file in the data
directory) and PostgreSQL; the schema is made and upgraded only by the
Alembic migrations in ``collector/migrations``.

    None ──fired──> ACTIVE ──escalated──> ESCALATED ──escalated (next step)──> ESCALATED
                      │  └──────acknowledged──────┐   │
                      │                           v   v
                      │                     ACKNOWLEDGED
                      v                           │
                   RESOLVED <─────────────────────┘   (and from ACTIVE and ESCALATED)

RESOLVED is final: a later notification of the same episode updates its
labels and annotations but does not reopen it.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    make_url,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

__all__ = [
    "Alert",
    "AlertEvent",
    "AlertStore",
    "InvalidTransition",
    "Notification",
    "Status",
    "TRANSITIONS",
    "UnknownAlert",
    "metadata",
]

log = logging.getLogger("flowprobe.alerts")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Not "alembic_version": the alert database may be shared with another application that uses Alembic.
VERSION_TABLE = "flowprobe_alembic_version"


class Status(str, enum.Enum):
    ACTIVE = "ACTIVE"
    ACKNOWLEDGED = "ACKNOWLEDGED"
    RESOLVED = "RESOLVED"
    ESCALATED = "ESCALATED"


# Which status may follow which; None is "no record yet".
TRANSITIONS: Mapping[Status | None, frozenset[Status]] = {
    None: frozenset({Status.ACTIVE}),
    Status.ACTIVE: frozenset({Status.ACKNOWLEDGED, Status.ESCALATED, Status.RESOLVED}),
    Status.ESCALATED: frozenset({Status.ACKNOWLEDGED, Status.ESCALATED, Status.RESOLVED}),
    Status.ACKNOWLEDGED: frozenset({Status.RESOLVED}),
    Status.RESOLVED: frozenset(),
}

_VERBS = {Status.ACKNOWLEDGED: "acknowledged", Status.RESOLVED: "resolved", Status.ESCALATED: "escalated", Status.ACTIVE: "reopened"}


class UnknownAlert(LookupError):
    def __init__(self, alert_id: int) -> None:
        super().__init__(f"unknown alert {alert_id}")
        self.alert_id = alert_id


class InvalidTransition(ValueError):
    def __init__(self, alert_id: int, current: Status, wanted: Status) -> None:
        super().__init__(f"alert {alert_id} is {current.value}; it cannot be {_VERBS[wanted]}")
        self.alert_id, self.current, self.wanted = alert_id, current, wanted


# ---------------------------------------------------------------- schema


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zone, so the value
    is stored as naive UTC and made aware again when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: alert times are aware (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Base(DeclarativeBase):
    metadata = metadata


class AlertRow(Base):
    __tablename__ = "alerts"
    __table_args__ = (
        UniqueConstraint("fingerprint", "starts_at"),
        CheckConstraint("status IN ('ACTIVE', 'ACKNOWLEDGED', 'RESOLVED', 'ESCALATED')", name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[datetime] = mapped_column(UtcDateTime())
    ends_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(16), index=True)
    # Copies of four labels, for filtering without JSON operators that differ per backend.
    alertname: Mapped[str] = mapped_column(String(255))
    severity: Mapped[str | None] = mapped_column(String(64), index=True)
    workflow: Mapped[str | None] = mapped_column(String(255), index=True)
    env: Mapped[str | None] = mapped_column(String(255))
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    annotations: Mapped[dict[str, str]] = mapped_column(JSON)
    generator_url: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    acknowledged_by: Mapped[str | None] = mapped_column(String(255))
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    resolved_by: Mapped[str | None] = mapped_column(String(255))
    silence_id: Mapped[str | None] = mapped_column(String(64))
    # Set once Alertmanager has expired the silence; a resolved alert with a
    # silence and no expiry time is still owed an expiry (retried each tick).
    silence_expired_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    escalation_level: Mapped[int] = mapped_column(Integer)
    # The `to` of every step reached, in order: their copies live in Alertmanager.
    escalations: Mapped[list[str]] = mapped_column(JSON)
    # Escalated copies were posted and not yet ended in Alertmanager.
    escalation_open: Mapped[bool] = mapped_column(Boolean)

    events: Mapped[list[EventRow]] = relationship(back_populates="alert", order_by="EventRow.id", cascade="all, delete-orphan")


class EventRow(Base):
    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    comment: Mapped[str | None] = mapped_column(Text)

    alert: Mapped[AlertRow] = relationship(back_populates="events")


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class Notification:
    """One alert of an Alertmanager webhook, as the store needs it."""

    status: str  # firing | resolved
    fingerprint: str
    starts_at: datetime
    ends_at: datetime | None
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    generator_url: str = ""


@dataclass(frozen=True)
class AlertEvent:
    id: int
    at: datetime
    actor: str
    action: str
    from_status: Status | None
    to_status: Status
    comment: str | None


@dataclass(frozen=True)
class Alert:
    """A snapshot of one alert; `events` is filled by `AlertStore.get` only."""

    id: int
    fingerprint: str
    status: Status
    alertname: str
    severity: str | None
    workflow: str | None
    env: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    generator_url: str
    starts_at: datetime
    ends_at: datetime | None
    received_at: datetime
    updated_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    silence_id: str | None
    silence_expired_at: datetime | None
    escalation_level: int
    escalations: tuple[str, ...]
    escalation_open: bool
    events: tuple[AlertEvent, ...] = ()

    @property
    def silence_pending_expiry(self) -> bool:
        return self.status is Status.RESOLVED and self.silence_id is not None and self.silence_expired_at is None


def _event(row: EventRow) -> AlertEvent:
    return AlertEvent(
        row.id, row.at, row.actor, row.action, Status(row.from_status) if row.from_status else None, Status(row.to_status), row.comment
    )


def _alert(row: AlertRow, *, events: bool = False) -> Alert:
    return Alert(
        id=row.id,
        fingerprint=row.fingerprint,
        status=Status(row.status),
        alertname=row.alertname,
        severity=row.severity,
        workflow=row.workflow,
        env=row.env,
        labels=dict(row.labels),
        annotations=dict(row.annotations),
        generator_url=row.generator_url,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        received_at=row.received_at,
        updated_at=row.updated_at,
        acknowledged_at=row.acknowledged_at,
        acknowledged_by=row.acknowledged_by,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        silence_id=row.silence_id,
        silence_expired_at=row.silence_expired_at,
        escalation_level=row.escalation_level,
        escalations=tuple(row.escalations),
        escalation_open=row.escalation_open,
        events=tuple(_event(e) for e in row.events) if events else (),
    )


@dataclass
class Received:
    """What one webhook changed, and the alerts it resolved (they may own a silence to expire)."""

    created: int = 0
    updated: int = 0
    resolved: list[Alert] = field(default_factory=list)


# ---------------------------------------------------------------- store


def _sqlite_engine(url: str) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own BEGIN is deferred and skipped before SELECT; we emit ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a read-then-write transaction
        # (every transition) cannot fail to upgrade when another writer committed.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class AlertStore:
    """Alert records and their events. Every method is one transaction; all are blocking."""

    def __init__(self, url_or_engine: str | Engine) -> None:
        if isinstance(url_or_engine, Engine):
            self.engine = url_or_engine
        elif make_url(url_or_engine).get_backend_name() == "sqlite":
            self.engine = _sqlite_engine(url_or_engine)
        else:
            self.engine = create_engine(url_or_engine, pool_pre_ping=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._migrated = threading.Event()

    @property
    def description(self) -> str:
        """The database, for messages: no password."""
        return self.engine.url.render_as_string(hide_password=True)

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        # Alembic narrates every start at INFO (plugins, context); one line of ours says what matters.
        alembic_log = logging.getLogger("alembic")
        if alembic_log.level == logging.NOTSET:
            alembic_log.setLevel(logging.WARNING)
        from alembic import command
        from alembic.config import Config as AlembicConfig
        from alembic.migration import MigrationContext

        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            before = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            after = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()
        fields = {"database": self.description, "revision": after}
        if before != after:
            fields["migrated_from"] = before or "empty"
        log.info("alert database ready", extra={"fields": fields})
        self._migrated.set()

    @property
    def migrated(self) -> bool:
        return self._migrated.is_set()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    @staticmethod
    def _locked(session: Session, alert_id: int) -> AlertRow:
        row = session.execute(select(AlertRow).where(AlertRow.id == alert_id).with_for_update()).scalar_one_or_none()
        if row is None:
            raise UnknownAlert(alert_id)
        return row

    @staticmethod
    def _record(session: Session, row: AlertRow, *, at: datetime, actor: str, action: str, to: Status, comment: str | None = None) -> None:
        """Move `row` to `to`, with its event; a transition the state machine forbids raises InvalidTransition."""
        current = Status(row.status) if row.status else None
        if to not in TRANSITIONS[current]:
            assert current is not None
            raise InvalidTransition(row.id, current, to)
        session.add(EventRow(alert=row, at=at, actor=actor, action=action, from_status=row.status, to_status=to.value, comment=comment))
        row.status = to.value
        row.updated_at = at

    @staticmethod
    def _note(session: Session, row: AlertRow, *, at: datetime, actor: str, action: str, comment: str) -> None:
        """An event that changes no status (from and to are the same)."""
        session.add(EventRow(alert=row, at=at, actor=actor, action=action, from_status=row.status, to_status=row.status, comment=comment))

    # ------------------------------------------------------------ webhook

    def receive(self, notifications: Sequence[Notification], *, now: datetime, actor: str = "alertmanager") -> Received:
        """Apply one webhook's alerts, all or nothing. Repeats change nothing but labels and annotations."""
        for attempt in range(3):
            try:
                return self._receive(notifications, now=now, actor=actor)
            except IntegrityError:
                # The same new alert inserted by a concurrent webhook (Alertmanager replicas
                # each notify): the unique (fingerprint, starts_at) refused ours. Again: now it is a repeat.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _receive(self, notifications: Sequence[Notification], *, now: datetime, actor: str) -> Received:
        received = Received()
        with self._transaction() as session:
            for note in notifications:
                row = session.execute(
                    select(AlertRow).where(AlertRow.fingerprint == note.fingerprint, AlertRow.starts_at == note.starts_at).with_for_update()
                ).scalar_one_or_none()
                if row is None:
                    row = AlertRow(
                        fingerprint=note.fingerprint,
                        starts_at=note.starts_at,
                        status=None,
                        received_at=now,
                        escalation_level=0,
                        escalations=[],
                        escalation_open=False,
                    )
                    self._refresh(row, note)
                    session.add(row)
                    self._record(session, row, at=now, actor=actor, action="fired", to=Status.ACTIVE)
                    received.created += 1
                else:
                    self._refresh(row, note)
                    row.updated_at = now
                    received.updated += 1
                if note.status == "resolved" and row.status != Status.RESOLVED.value:
                    row.ends_at = note.ends_at
                    row.resolved_at = note.ends_at or now
                    row.resolved_by = actor
                    self._record(session, row, at=now, actor=actor, action="resolved", to=Status.RESOLVED, comment="resolved in Alertmanager")
                    session.flush()
                    received.resolved.append(_alert(row))
        return received

    @staticmethod
    def _refresh(row: AlertRow, note: Notification) -> None:
        labels = dict(note.labels)
        row.labels = labels
        row.annotations = dict(note.annotations)
        row.generator_url = note.generator_url
        row.alertname = labels.get("alertname", "")
        row.severity = labels.get("severity")
        row.workflow = labels.get("workflow")
        row.env = labels.get("env")

    # ------------------------------------------------------------ reads

    def get(self, alert_id: int) -> Alert:
        with self._transaction() as session:
            row = session.get(AlertRow, alert_id)
            if row is None:
                raise UnknownAlert(alert_id)
            return _alert(row, events=True)

    def find(
        self,
        *,
        status: Status | Sequence[Status] | None = None,
        severity: str | None = None,
        workflow: str | None = None,
        env: str | None = None,
        limit: int = 50,
        before: int | None = None,
    ) -> list[Alert]:
        """Newest first (by id: the order alerts were first received); `before` pages back from an id."""
        query = select(AlertRow).order_by(AlertRow.id.desc()).limit(limit)
        if status is not None:
            statuses = [status] if isinstance(status, Status) else list(status)
            query = query.where(AlertRow.status.in_([s.value for s in statuses]))
        for column, value in ((AlertRow.severity, severity), (AlertRow.workflow, workflow), (AlertRow.env, env)):
            if value is not None:
                query = query.where(column == value)
        if before is not None:
            query = query.where(AlertRow.id < before)
        with self._transaction() as session:
            return [_alert(row) for row in session.execute(query).scalars()]

    def needing_cleanup(self) -> list[Alert]:
        """Acknowledged or resolved alerts that still owe Alertmanager a silence expiry or an end to their escalation."""
        query = select(AlertRow).where(
            AlertRow.status.in_([Status.ACKNOWLEDGED.value, Status.RESOLVED.value]),
            (AlertRow.escalation_open.is_(True))
            | ((AlertRow.status == Status.RESOLVED.value) & AlertRow.silence_id.is_not(None) & AlertRow.silence_expired_at.is_(None)),
        )
        with self._transaction() as session:
            return [_alert(row) for row in session.execute(query.order_by(AlertRow.id)).scalars()]

    # ------------------------------------------------------------ changes

    def acknowledge(self, alert_id: int, *, actor: str, comment: str, silence_id: str | None, now: datetime) -> Alert:
        with self._transaction() as session:
            row = self._locked(session, alert_id)
            self._record(session, row, at=now, actor=actor, action="acknowledged", to=Status.ACKNOWLEDGED, comment=comment)
            row.acknowledged_at, row.acknowledged_by, row.silence_id = now, actor, silence_id
            return _alert(row)

    def resolve(self, alert_id: int, *, actor: str, comment: str, now: datetime) -> Alert:
        with self._transaction() as session:
            row = self._locked(session, alert_id)
            self._record(session, row, at=now, actor=actor, action="resolved", to=Status.RESOLVED, comment=comment)
            row.resolved_at, row.resolved_by = now, actor
            return _alert(row)

    def escalate(self, alert_id: int, steps: Sequence[tuple[str, str]], *, from_level: int, now: datetime, actor: str = "flowprobe") -> Alert:
        """Record the steps newly reached, as (to, comment); only if still unacknowledged and still at `from_level`."""
        with self._transaction() as session:
            row = self._locked(session, alert_id)
            status = Status(row.status)
            if status not in (Status.ACTIVE, Status.ESCALATED) or row.escalation_level != from_level or not steps:
                raise InvalidTransition(alert_id, status, Status.ESCALATED)
            for _to, comment in steps:
                self._record(session, row, at=now, actor=actor, action="escalated", to=Status.ESCALATED, comment=comment)
            row.escalation_level = from_level + len(steps)
            row.escalations = [*row.escalations, *(to for to, _ in steps)]
            row.escalation_open = True
            return _alert(row)

    def silence_expired(self, alert_id: int, *, now: datetime, actor: str = "flowprobe") -> None:
        with self._transaction() as session:
            row = self._locked(session, alert_id)
            if row.silence_expired_at is None:
                row.silence_expired_at = now
                self._note(session, row, at=now, actor=actor, action="silence_expired", comment=f"silence {row.silence_id} expired")

    def escalation_ended(self, alert_id: int) -> None:
        with self._transaction() as session:
            self._locked(session, alert_id).escalation_open = False
