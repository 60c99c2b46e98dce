"""alert history: alerts and their events

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = True) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        _time("starts_at", nullable=False),
        _time("ends_at"),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("alertname", sa.String(length=255), nullable=False),
        sa.Column("severity", sa.String(length=64), nullable=True),
        sa.Column("workflow", sa.String(length=255), nullable=True),
        sa.Column("env", sa.String(length=255), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("annotations", sa.JSON(), nullable=False),
        sa.Column("generator_url", sa.Text(), nullable=False),
        _time("received_at", nullable=False),
        _time("updated_at", nullable=False),
        _time("acknowledged_at"),
        sa.Column("acknowledged_by", sa.String(length=255), nullable=True),
        _time("resolved_at"),
        sa.Column("resolved_by", sa.String(length=255), nullable=True),
        sa.Column("silence_id", sa.String(length=64), nullable=True),
        _time("silence_expired_at"),
        sa.Column("escalation_level", sa.Integer(), nullable=False),
        sa.Column("escalations", sa.JSON(), nullable=False),
        sa.Column("escalation_open", sa.Boolean(), nullable=False),
        sa.CheckConstraint("status IN ('ACTIVE', 'ACKNOWLEDGED', 'RESOLVED', 'ESCALATED')", name=op.f("ck_alerts_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("fingerprint", "starts_at", name=op.f("uq_alerts_fingerprint_starts_at")),
    )
    op.create_index(op.f("ix_alerts_status"), "alerts", ["status"])
    op.create_index(op.f("ix_alerts_severity"), "alerts", ["severity"])
    op.create_index(op.f("ix_alerts_workflow"), "alerts", ["workflow"])
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        _time("at", nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["alert_id"], ["alerts.id"], name=op.f("fk_alert_events_alert_id_alerts"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_events")),
    )
    op.create_index(op.f("ix_alert_events_alert_id"), "alert_events", ["alert_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_alert_events_alert_id"), table_name="alert_events")
    op.drop_table("alert_events")
    op.drop_index(op.f("ix_alerts_workflow"), table_name="alerts")
    op.drop_index(op.f("ix_alerts_severity"), table_name="alerts")
    op.drop_index(op.f("ix_alerts_status"), table_name="alerts")
    op.drop_table("alerts")
