"""What ``revive status`` and Slack's ``/revive status`` show: one summary per recent run.

One function serves both, so the CLI and chat can never disagree about a run's state.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from revive.store import db, service


def recent_runs(engine: Engine, *, limit: int = 20) -> list[dict[str, Any]]:
    """Newest first: who started what where, its outcome, steps done and abort requests."""
    rows = []
    with db.session(engine) as s:
        for run in service.get_all_runs(s, limit=limit):
            steps = service.get_steps(s, run_id=run.id)
            rows.append({
                "id": run.id, "runbook": run.runbook, "target_dc": run.target_dc,
                "trigger": str(run.trigger), "by": run.triggered_by,
                "started_at": run.started_at.isoformat(),
                "ended_at": run.ended_at.isoformat() if run.ended_at else None,
                "ago": ago(run.started_at),
                "outcome": str(run.outcome), "dry_run": run.dry_run,
                "steps_done": sum(1 for st in steps if str(st.state) == "done"),
                "steps": len(steps),
                "abort_requested": run.abort_requested_at is not None,
            })
    return rows


def ago(when: datetime) -> str:
    """``42 s ago``, ``12 min ago``, ``3.5 h ago``."""
    seconds = (datetime.now(UTC) - when).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
