"""Initial store: topology versions, runs, steps, audit events.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Written against plain SQLAlchemy types (no imports from revive or sqlmodel) so the migration
stays what it was when written, whatever the models become. Enum columns are VARCHAR(32),
timestamps are ``timestamptz`` on PostgreSQL, JSON columns are ``JSON``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "topology_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topology_version")),
    )
    op.create_index(
        op.f("ix_topology_version_content_hash"),
        "topology_version",
        ["content_hash"],
        unique=True,
    )

    op.create_table(
        "run_record",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("runbook", sa.String(), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("triggered_by", sa.String(), nullable=False),
        sa.Column("target_dc", sa.String(), nullable=True),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("topology_version_id", sa.Integer(), nullable=True),
        sa.Column("prefect_flow_run_id", sa.String(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["topology_version_id"],
            ["topology_version.id"],
            name=op.f("fk_run_record_topology_version_id_topology_version"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_record")),
    )
    op.create_index(op.f("ix_run_record_outcome"), "run_record", ["outcome"])
    op.create_index(op.f("ix_run_record_runbook"), "run_record", ["runbook"])
    op.create_index(op.f("ix_run_record_started_at"), "run_record", ["started_at"])
    op.create_index(
        op.f("ix_run_record_topology_version_id"), "run_record", ["topology_version_id"]
    )

    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("target", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["run_record.id"], name=op.f("fk_audit_event_run_id_run_record")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    op.create_index(op.f("ix_audit_event_at"), "audit_event", ["at"])
    op.create_index(op.f("ix_audit_event_run_id"), "audit_event", ["run_id"])

    op.create_table(
        "step_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("step_key", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["run_record.id"], name=op.f("fk_step_record_run_id_run_record")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_step_record")),
        sa.UniqueConstraint("run_id", "step_key", name=op.f("uq_step_record_run_id_step_key")),
    )
    op.create_index(op.f("ix_step_record_run_id"), "step_record", ["run_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_step_record_run_id"), table_name="step_record")
    op.drop_table("step_record")
    op.drop_index(op.f("ix_audit_event_run_id"), table_name="audit_event")
    op.drop_index(op.f("ix_audit_event_at"), table_name="audit_event")
    op.drop_table("audit_event")
    op.drop_index(op.f("ix_run_record_topology_version_id"), table_name="run_record")
    op.drop_index(op.f("ix_run_record_started_at"), table_name="run_record")
    op.drop_index(op.f("ix_run_record_runbook"), table_name="run_record")
    op.drop_index(op.f("ix_run_record_outcome"), table_name="run_record")
    op.drop_table("run_record")
    op.drop_index(op.f("ix_topology_version_content_hash"), table_name="topology_version")
    op.drop_table("topology_version")
