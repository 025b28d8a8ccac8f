"""Drill history: one row per drill, however started, with its RTO per tier and step times.

Revision ID: 0006_drill_history
Revises: 0005_run_liveness
Create Date: 2026-12-01

The full report stays on disk (``report_dir``); the row holds what the history view needs
(outcome, RTO per tier against its target) and each step's duration, so the next drill can
tell a step slower than its own past without reading old reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_drill_history"
down_revision: str | None = "0005_run_liveness"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "drill_record",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scenario", sa.String(), nullable=False),
        sa.Column("lost_dc", sa.String(), nullable=False),
        sa.Column("target", sa.String(length=32), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("triggered_by", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("headline", sa.String(), nullable=False),
        sa.Column("rto_s", sa.JSON(), nullable=False),
        sa.Column("target_s", sa.JSON(), nullable=False),
        sa.Column("step_seconds", sa.JSON(), nullable=False),
        sa.Column("slow_steps", sa.JSON(), nullable=False),
        sa.Column("report_dir", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drill_record")),
    )
    op.create_index(op.f("ix_drill_record_started_at"), "drill_record", ["started_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_drill_record_started_at"), table_name="drill_record")
    op.drop_table("drill_record")
