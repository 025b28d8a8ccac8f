"""Signed Slack requests are remembered for the signature window, so a replay is answered
from the record (even after a restart) instead of being acted on twice.

Revision ID: 0004_request_replay
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_request_replay"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "slack_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_key", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("summary", sa.String(), nullable=False),
        sa.Column("answer", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slack_request")),
    )
    op.create_index(
        op.f("ix_slack_request_request_key"), "slack_request", ["request_key"], unique=True
    )
    op.create_index(op.f("ix_slack_request_expires_at"), "slack_request", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_slack_request_expires_at"), table_name="slack_request")
    op.drop_index(op.f("ix_slack_request_request_key"), table_name="slack_request")
    op.drop_table("slack_request")
