"""What ``revive status`` and Slack's ``/revive status`` show: recent runs and the DCs.

One set of functions serves both, so the CLI and chat can never disagree about a run's
state. DC states come from the ops tools themselves (traffic share from the GSLB, services
with a healthy instance from the health checker), asked with a short deadline: a status
answer must come back even when a tool does not.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from revive.errors import ReviveError
from revive.ops.toolbox import SIM_URL_ENV
from revive.store import db, service
from revive.topology import Topology

#: The longest a status answer waits for the ops tools.
DC_STATE_TIMEOUT_S = 2.0


def recent_runs(engine: Engine, *, limit: int = 20,
                stale_after_s: float | None = None) -> list[dict[str, Any]]:
    """Newest first: who started what where, its outcome, steps done and abort requests.

    A running run whose heartbeat stopped ``stale_after_s`` ago (two minutes by default) is
    shown ``crashed``: its process is gone, it holds nothing, and it can be resumed or
    aborted."""
    rows = []
    now = service.utcnow()
    with db.session(engine) as s:
        for run in service.get_all_runs(s, limit=limit):
            steps = service.get_steps(s, run_id=run.id)
            waiting = [st.step_key.removeprefix("approval:") for st in steps
                       if st.action == "approval" and str(st.state) == "started"]
            crashed = service.is_crashed(run, now=now, stale_after_s=stale_after_s)
            rows.append({
                "id": run.id, "runbook": run.runbook, "target_dc": run.target_dc,
                "trigger": str(run.trigger), "by": run.triggered_by,
                "started_at": run.started_at.isoformat(),
                "ended_at": run.ended_at.isoformat() if run.ended_at else None,
                "ago": ago(run.started_at),
                "outcome": "crashed" if crashed else str(run.outcome), "dry_run": run.dry_run,
                "crashed": crashed,
                "heartbeat_ago": ago(service.last_sign_of_life(run), now=now),
                "steps_done": sum(1 for st in steps if str(st.state) == "done"),
                "steps": len(steps),
                "abort_requested": run.abort_requested_at is not None,
                "waiting_for": waiting[0]
                if waiting and str(run.outcome) == "running" and not crashed else None,
            })
    return rows


def ago(when: datetime, *, now: datetime | None = None) -> str:
    """``42 s ago``, ``12 min ago``, ``3.5 h ago``."""
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def dc_states(topology: Topology, *, sim_url: str | None,
              timeout_s: float = DC_STATE_TIMEOUT_S) -> tuple[list[dict[str, Any]], str | None]:
    """Per DC: its traffic share and how many of its services have a healthy instance.

    Returns (rows, problem): no rows and the reason when the tools cannot be asked."""
    from revive.ops.toolbox import build_toolbox

    try:
        tools = build_toolbox(topology, sim_url=sim_url, run_dc=None, timeout_s=timeout_s / 2)
    except ReviveError as exc:
        return [], f"no ops tools configured ({exc})"

    async def ask() -> list[dict[str, Any]]:
        try:
            try:
                weights: dict[str, float] | None = await tools.traffic.weights()
            except Exception as exc:  # each fact is shown if it can be had
                weights, traffic_problem = None, _why(exc)
            rows = []
            for dc in topology.dc_names:
                expected = [svc.name for svc in topology.services if svc.runs_in(dc)]
                row: dict[str, Any] = {"dc": dc, "services": len(expected), "traffic": None,
                                       "services_up": None, "problem": None}
                if weights is not None:
                    row["traffic"] = float(weights.get(dc, 0.0))
                else:
                    row["problem"] = f"traffic share unknown ({traffic_problem})"
                try:
                    healthy = await tools.health.healthy(dc)
                except Exception as exc:
                    row["problem"] = "; ".join(filter(None, [
                        row["problem"], f"health unknown ({_why(exc)})"]))
                else:
                    row["services_up"] = sum(1 for n in expected if healthy.get(n, 0) > 0)
                rows.append(row)
            return rows
        finally:
            await tools.aclose()

    try:
        return asyncio.run(asyncio.wait_for(ask(), timeout_s)), None
    except TimeoutError:
        return [], f"the ops tools did not answer within {timeout_s:.0f} s"
    except Exception as exc:  # a status answer never fails because a tool did
        return [], f"the ops tools could not be asked ({type(exc).__name__}: {exc})"


def status_report(engine: Engine, topology: Callable[[], Topology], *, limit: int = 20,
                  sim_url: str | None = None) -> dict[str, Any]:
    """Recent runs and DC states together: ``{"runs", "dcs", "dc_problem"}``.

    ``topology`` gives the estate (the CLI loads the file; the Slack app keeps it parsed);
    ``sim_url`` defaults to ``$REVIVE_SIM_URL``. An unreadable topology is a problem to
    show, not a reason to fail the answer."""
    try:
        estate = topology()
    except (ReviveError, OSError) as exc:
        dcs, problem = [], f"topology unreadable: {exc}"
    else:
        dcs, problem = dc_states(estate, sim_url=sim_url or os.environ.get(SIM_URL_ENV))
    return {"runs": recent_runs(engine, limit=limit), "dcs": dcs, "dc_problem": problem}


def _why(exc: Exception) -> str:
    """The first line of an error, short enough for a status line."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 120 else text[:119] + "…"
