"""Approval gates: the one decision per (run, gate), who took it, from where, and when.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gate_decision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=32), nullable=False),
        sa.Column("gate", sa.String(), nullable=False),
        sa.Column("decision", sa.String(), nullable=False),
        sa.Column("decided_by", sa.String(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["run_record.id"], name=op.f("fk_gate_decision_run_id_run_record")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gate_decision")),
        sa.UniqueConstraint("run_id", "gate", name=op.f("uq_gate_decision_run_id_gate")),
    )
    op.create_index(op.f("ix_gate_decision_run_id"), "gate_decision", ["run_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_gate_decision_run_id"), table_name="gate_decision")
    op.drop_table("gate_decision")
