"""Runs can be asked to abort: who asked and when (the run finishes its step, then stops).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("run_record") as batch:
        batch.add_column(sa.Column("abort_requested_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("abort_requested_by", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run_record") as batch:
        batch.drop_column("abort_requested_by")
        batch.drop_column("abort_requested_at")
