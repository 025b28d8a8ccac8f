"""The history of drills: every drill, however started, leaves a summary row in the store.

The status board and ``revive drills`` read it to show the trend of each tier's RTO; the
next drill reads its step durations (:func:`step_history`) to tell a step slower than its own
past. The reports themselves stay on disk, under :func:`reports_dir` unless a drill was told
another directory; the row says where.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from revive.drill.models import DrillReport, SlowStep
from revive.store import db
from revive.store.models import DrillRecord, TriggerSource

REPORTS_DIR_ENV = "REVIVE_REPORTS_DIR"
"""Where drills write their reports (one directory per drill) unless told otherwise."""
DEFAULT_REPORTS_DIR = Path(".revive") / "drills"


def reports_dir() -> Path:
    """``REVIVE_REPORTS_DIR``, else ``.revive/drills`` under the current directory; absolute,
    so the path the history keeps still points at the report from anywhere."""
    raw = os.environ.get(REPORTS_DIR_ENV, "").strip()
    return (Path(raw).expanduser() if raw else Path.cwd() / DEFAULT_REPORTS_DIR).resolve()


def report_dir_name(started_at: datetime, drill_id: str) -> str:
    """``<UTC time>-<id prefix>``: sorts by time, and two drills started in the same second
    (a schedule and a Slack command) never share a directory."""
    return f"{started_at.strftime('%Y%m%dT%H%M%SZ')}-{drill_id.replace('-', '')[:8]}"


def new_drill_id() -> str:
    """An id for a drill that ran outside Prefect (no flow run id to use)."""
    return uuid.uuid4().hex


class DrillSummary(BaseModel):
    """One drill as the history shows it; the full report stays in ``report_dir``."""

    run_id: str
    """The drill's Prefect flow run id (a fresh uuid when it ran outside Prefect)."""
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
    triggered_by: str = ""
    headline: str = ""
    target: str = Field("simulator", description="What the drill ran on: simulator or lab.")
    slow_steps: list[SlowStep] = Field(
        default_factory=list, description="Steps slower than the p75 of their own history.")

    @classmethod
    def of(cls, report: DrillReport, *, run_id: str, started_at: datetime,
           finished_at: datetime | None, trigger: str, triggered_by: str,
           report_dir: Path | str) -> DrillSummary:
        """The summary of ``report`` for the history."""
        tiers = sorted(report.tiers, key=lambda t: t.tier)
        return cls(
            run_id=run_id, started_at=started_at, finished_at=finished_at,
            scenario=report.scenario, lost_dc=report.lost_dc, trigger=str(trigger),
            triggered_by=triggered_by, outcome=report.outcome, headline=report.headline,
            rto_s={f"tier{t.tier}": t.rto_s for t in tiers},
            target_s={f"tier{t.tier}": t.target_s for t in tiers},
            report_dir=str(report_dir), target=report.target, slow_steps=report.slow_steps,
        )


def _summary(row: DrillRecord) -> DrillSummary:
    return DrillSummary(
        run_id=row.id, started_at=row.started_at, finished_at=row.finished_at,
        scenario=row.scenario, lost_dc=row.lost_dc, trigger=str(row.trigger),
        triggered_by=row.triggered_by, outcome=row.outcome, headline=row.headline,
        rto_s=row.rto_s, target_s=row.target_s, report_dir=row.report_dir, target=row.target,
        slow_steps=[SlowStep.model_validate(s) for s in row.slow_steps],
    )


def record_drill(engine: Engine, summary: DrillSummary, *,
                 step_seconds: Mapping[str, float]) -> None:
    """Keep ``summary`` (and how long each step took) in the history; recording the same
    drill again replaces its row, so a retried flow run leaves one."""
    row = DrillRecord(
        id=summary.run_id, started_at=summary.started_at, finished_at=summary.finished_at,
        scenario=summary.scenario, lost_dc=summary.lost_dc, target=summary.target,
        trigger=TriggerSource(summary.trigger), triggered_by=summary.triggered_by,
        outcome=summary.outcome, headline=summary.headline, rto_s=dict(summary.rto_s),
        target_s=dict(summary.target_s), step_seconds=dict(step_seconds),
        slow_steps=[s.model_dump(mode="json") for s in summary.slow_steps],
        report_dir=summary.report_dir,
    )
    with db.session(engine) as session:
        session.merge(row)
        session.commit()


def _newest(limit: int, *, scenario: str | None = None,
            target: str | None = None) -> SelectOfScalar[DrillRecord]:
    query = select(DrillRecord)
    if scenario is not None:
        query = query.where(DrillRecord.scenario == scenario)
    if target is not None:
        query = query.where(DrillRecord.target == target)
    return query.order_by(col(DrillRecord.started_at).desc(), col(DrillRecord.id).desc()).limit(
        limit)


def recent_drills(engine: Engine, limit: int = 20) -> list[DrillSummary]:
    """The newest ``limit`` drills, newest first."""
    with db.session(engine) as session:
        return [_summary(row) for row in session.exec(_newest(limit))]


def step_history(engine: Engine, *, scenario: str | None = None, target: str | None = None,
                 limit: int = 20) -> dict[str, list[float]]:
    """Per step key, its durations in the newest ``limit`` drills (of ``scenario`` on
    ``target`` when given: a step's time depends on the fault and on the clock it ran on),
    newest first."""
    return earlier_drills(engine, scenario=scenario, target=target, limit=limit).steps


class Earlier(BaseModel):
    """What the drills before this one say, newest first."""

    drills: list[DrillSummary] = []
    steps: dict[str, list[float]] = {}
    """Per step key, its durations."""


def earlier_drills(engine: Engine, *, scenario: str | None, target: str | None,
                   limit: int = 20) -> Earlier:
    """The newest ``limit`` drills of ``scenario`` on ``target`` (any when ``None``), and
    their step durations: what a new drill is compared with."""
    earlier = Earlier()
    with db.session(engine) as session:
        for row in session.exec(_newest(limit, scenario=scenario, target=target)):
            earlier.drills.append(_summary(row))
            for key, seconds in row.step_seconds.items():
                if isinstance(seconds, int | float):
                    earlier.steps.setdefault(key, []).append(float(seconds))
    return earlier
