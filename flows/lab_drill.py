"""A DR drill on the lab: real processes burn (or are cut off), real adapters recover them.

The lab (``revive lab up``) runs every DC as real processes; this flow measures the users'
success per class as a baseline, kills the lost DC's processes (``dc-fire``) or cuts it off
(``partition``), runs the same failover flow the simulator drill runs, now through the
haproxy, prometheus, registry-v2, supervisord, zookeeper and http-health adapters in real
time, and judges each tier's RTO from what the users saw. The report is the simulator
drill's report, with ``target: lab`` and ``ramp_holds``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from prefect import flow, tags
from prefect.states import State
from pydantic import Field
from sqlalchemy import Engine

from flows.approval import rehearsal
from flows.context import known_dc, using_store
from flows.drill import current_drill_id, default_out, publish
from flows.failover import FailoverParams, failover
from revive.drill.models import (
    DrillReport,
    FindingRow,
    GraphStep,
    RampPoint,
    StepResult,
    TierResult,
)
from revive.errors import InputError
from revive.lab import estate
from revive.lab.recorder import LabRecorder
from revive.ops.toolbox import build_toolbox
from revive.readiness import run_check
from revive.runs import RunSession
from revive.runs.form import FormModel
from revive.runs.origin import current_origin, origin_tags
from revive.store import db
from revive.topology import content_hash, load
from revive.verdict import TierRto, headline, outcome

BASELINE_S = 3.0


class LabDrillParams(FormModel):
    lab_dir: str | None = Field(None, description="The lab (default: the one `lab up` started).")
    scenario: Literal["dc-fire", "partition"] = Field("dc-fire", description="The fault.")
    lost_dc: str | None = Field(None, description="The DC the fault takes out (default: first).")
    out: str | None = Field(None, description="Report directory (default .revive/drills/<UTC>).")
    judge_for_s: float = Field(120.0, ge=0, le=3600,
                               description="After the runbook ends, how long to wait for "
                                           "every tier's RTO to be judged.")


def lab_state(params: LabDrillParams) -> tuple[estate.LabState, str]:
    """The running lab and the DC to lose; ``InputError`` when either is not there."""
    try:
        state = estate.load_state(params.lab_dir)
    except estate.LabError as exc:
        raise InputError(str(exc)) from None
    if not state.up:
        raise InputError(f"the lab in {state.dir} is not up (run `revive lab up`)")
    if state.fired:
        raise InputError(f"the lab in {state.dir} already lost {', '.join(state.fired)}: "
                         "`revive lab down` and `revive lab up` for a fresh one")
    topology = load(state.topology)
    lost = known_dc(topology, "--lost-dc", params.lost_dc or topology.dc_names[0])
    if params.scenario == "partition" and state.isolation != "netns":
        raise InputError(f"--scenario partition needs network namespaces; this lab runs on "
                         f"loopback ({state.isolation_note or 'namespaces unavailable'})")
    return state, lost


@flow(name="lab-drill", log_prints=False)
async def lab_drill(params: LabDrillParams) -> State:
    """Break one DC of the lab, recover it with the failover runbook, report; the drill
    joins the history as the simulator's drills do."""
    began, wall0 = datetime.now(UTC), time.monotonic()
    state, lost = lab_state(params)
    drill_id = current_drill_id()
    origin = current_origin()
    out = Path(params.out) if params.out else default_out(began, drill_id)
    out.mkdir(parents=True, exist_ok=True)
    # The drill's own store, handed to its failover explicitly: never through the process
    # environment, where a real run started meanwhile in this process would pick it up.
    engine = db.get_engine(f"sqlite:///{(out / 'runs.db').resolve()}")
    try:
        # The lab is an estate revive built for drills: its gates follow the lab's (drill)
        # topology, not the estate this process is configured with (a production one would
        # hold the drill at its approval gate until someone approved it).
        with using_store(engine), rehearsal(), tags(*origin_tags(origin.trigger, origin.by)):
            report = await _drill(params, state, lost, out, began, wall0, engine)
    finally:
        engine.dispose()
    return await publish(report, out, drill_id=drill_id, began=began, trigger=origin.trigger,
                         triggered_by=origin.by)


async def _drill(params: LabDrillParams, state: estate.LabState, lost: str, out: Path,
                 began: datetime, wall0: float, engine: Engine) -> DrillReport:
    topology = load(state.topology)
    targets = [dc for dc in topology.dc_names if dc != lost]
    await asyncio.to_thread(estate.wait_served, state)
    tools = build_toolbox(topology, sim_url=None, run_dc=targets[0], timeout_s=5)
    recorder = LabRecorder(state, topology, tools, lost, targets)
    try:
        recorder.mark_baseline()
        await recorder.start()
        await tools.clock.wait(for_s=BASELINE_S)  # a few points of the steady state
        recorder.mark_fault()
        if params.scenario == "partition":
            estate.partition(state, lost)
        else:
            estate.fire(state, lost)
        result = await failover(FailoverParams(
            topology=state.topology, lost_dc=lost, run_from_dc=targets[0],
        ))
        limit = time.time() + params.judge_for_s
        while not recorder.judged and time.time() < limit:
            await tools.clock.wait(for_s=1.0)
        await recorder.sample()
    finally:
        await recorder.stop()
        await tools.aclose()
    report = _report(params, state, topology, recorder, result, engine, began,
                     time.monotonic() - wall0)
    return report


def _steps(engine: Engine, run_id: str, graph: list[dict], fault_at: float) -> list[StepResult]:
    """The run's steps with their times (seconds after the fire) from the recovery graph."""
    timing = {row["key"]: row for row in graph}
    rows = []
    for step in RunSession(engine, run_id, dry_run=False).steps():
        row = timing.get(step["key"], {})
        rows.append(StepResult(
            key=step["key"], action=step["action"], target=step["key"].split(":", 1)[-1],
            state=step["state"],
            started_s=None if row.get("start_s") is None else round(row["start_s"] - fault_at, 1),
            ended_s=None if row.get("end_s") is None else round(row["end_s"] - fault_at, 1),
            detail=str(step["detail"].get("error") or ""),
        ))
    return rows


def _report(params: LabDrillParams, state: estate.LabState, topology, recorder: LabRecorder,
            result: dict, engine: Engine, began: datetime, wall: float) -> DrillReport:
    fault = recorder.fault_at or time.time()
    rtos = [TierRto(tier=tier, rto_s=recorder.rto(tier),
                    target_s=topology.tier_policy[tier].rto_target_s) for tier in recorder.tiers]
    steps = _steps(engine, result["run_id"], result.get("graph", []), fault)
    failed_steps = sum(1 for s in steps if s.state == "failed")
    verdict = result["outcome"] if result["outcome"] == "aborted" else outcome(
        rtos, failed_steps=failed_steps, serving=recorder.serving)
    by_action: dict[str, list[str]] = {}
    for step in steps:
        if step.state == "done":
            by_action.setdefault(step.action, []).append(step.target)
    since = recorder.t0
    return DrillReport(
        scenario=params.scenario, seed=0, outcome=verdict,
        headline=headline(rtos, verdict, failed_steps=failed_steps, critical={}),
        topology=state.topology, topology_hash=content_hash(topology),
        environment=str(topology.environment), lost_dc=recorder.lost_dc,
        target_dcs=recorder.target_dcs, fault_at_s=round(fault - since, 1),
        finished_at_s=round(time.time() - since, 1), started_at=began.isoformat(),
        wall_seconds=round(wall, 2),
        tiers=[TierResult(tier=t.tier, rto_s=t.rto_s, target_s=t.target_s, met=t.met,
                          services=sum(1 for s in topology.services if s.tier == t.tier))
               for t in rtos],
        peak_db_util=round(recorder.peak_db_util, 4), breach_seconds=recorder.breach_seconds,
        deployed=by_action.get("deploy", []), provisioned=by_action.get("provision", []),
        restarted=by_action.get("restart", []), patched=by_action.get("patch", []),
        failed=[s.target for s in steps if s.state == "failed"], steps=steps,
        graph=[GraphStep(**{**row, "start_s": None if row["start_s"] is None
                            else round(row["start_s"] - fault, 1),
                            "end_s": None if row["end_s"] is None
                            else round(row["end_s"] - fault, 1)})
               for row in result.get("graph", [])],
        ramp=[RampPoint(t=p.t, share=p.share, db_util=min(p.db_util, 10.0),
                        hit_ratio=p.hit_ratio, error_rate=p.error_rate)
              for p in recorder.points],
        findings=[FindingRow(rule=f.rule, severity=str(f.severity), subject=f.subject,
                             message=f.message) for f in run_check(topology).findings],
        notes=[f"lab in {state.dir} ({state.isolation}); ramp: "
               f"{result['ramp'].get('result')} at {result['ramp'].get('share', 0):.0%}",
               "ramp holds by reason: " + ("; ".join(
                   f"{why or 'no reason given'}: {n}"
                   for why, n in result["ramp"].get("holds_by_reason", {}).items()) or "none")],
        final_weights={c: {dc: round(w, 4) for dc, w in per_dc.items()}
                       for c, per_dc in recorder.weights.items()},
        target="lab", ramp_holds=int(result["ramp"].get("holds", 0)),
    )
