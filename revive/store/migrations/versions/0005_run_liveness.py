"""Run liveness: a heartbeat per run, and one active run per (runbook, DC) as a unique index.

Revision ID: 0005_run_liveness
Revises: 0004_request_replay
Create Date: 2026-11-26

The partial unique index makes "one active run per (runbook, DC)" a rule of the database
itself, so two processes creating the same run at once cannot both succeed. A store written
before this rule may hold several running real runs of one (runbook, DC) (runs stranded by a
restart, or a lost race): all but the newest are marked ``crashed`` first, or the index could
not be built. ``crashed`` is also what a run whose heartbeat stopped becomes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_run_liveness"
down_revision: str | None = "0004_request_replay"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ux_run_record_one_active"
ACTIVE = "outcome = 'running' AND NOT dry_run"

#: Every running real run that a newer running real run of the same (runbook, DC) shadows.
_SHADOWED = f"""
UPDATE run_record SET outcome = 'crashed'
WHERE {ACTIVE} AND EXISTS (
    SELECT 1 FROM run_record AS newer
    WHERE newer.outcome = 'running' AND NOT newer.dry_run
      AND newer.runbook = run_record.runbook AND newer.target_dc = run_record.target_dc
      AND (newer.started_at > run_record.started_at
           OR (newer.started_at = run_record.started_at AND newer.id > run_record.id))
)
"""


def upgrade() -> None:
    with op.batch_alter_table("run_record") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(sa.text(_SHADOWED))
    op.create_index(
        INDEX, "run_record", ["runbook", "target_dc"], unique=True,
        sqlite_where=sa.text(ACTIVE), postgresql_where=sa.text(ACTIVE),
    )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="run_record")
    # Older code knows no ``crashed`` outcome: such a run ended, and not well.
    op.execute(sa.text("UPDATE run_record SET outcome = 'failed' WHERE outcome = 'crashed'"))
    with op.batch_alter_table("run_record") as batch:
        batch.drop_column("heartbeat_at")
