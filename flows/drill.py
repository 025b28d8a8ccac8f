"""The DR drill, revive's main job: break the simulated estate, recover it, report.

The topology runs on the built-in simulator with each traffic class split evenly over the
DCs that run it; then the scenario's fault hits the lost DC (``dc-fire``: it loses power,
its ops-tool replicas and health checker with it) and the failover runbook recovers into
every other DC over the simulator's HTTP API, as it would against real tools. The drill
measures the RTO of every tier on the simulator's true state and writes ``report.html``
and ``report.json``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml
from prefect import flow
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from flows.context import known_dc, using_store
from flows.failover import FailoverParams, failover
from revive.drill.recorder import Recorder
from revive.drill.report import (
    DrillReport,
    FindingRow,
    GraphStep,
    RampPoint,
    StepResult,
    TierResult,
    write_report,
)
from revive.drill.scenarios import SCENARIOS
from revive.drill.server import SimServer
from revive.readiness import run_check
from revive.runs import RunSession
from revive.sim import Simulator
from revive.store import db
from revive.store.models import TriggerSource
from revive.topology import (
    DEFAULT_PATH,
    Environment,
    Topology,
    content_hash,
    load,
    require_databases,
)
from revive.verdict import TierRto, headline, outcome

SETTLE_S = 60.0


class DrillParams(BaseModel):
    scenario: str = Field("dc-fire", description=f"One of: {', '.join(SCENARIOS)}.")
    seed: int = Field(1, ge=0, description="Same seed, same drill.")
    topology: str = Field(str(DEFAULT_PATH), description="Topology file.")
    lost_dc: str | None = Field(
        None, description="The DC the fault takes out (default: the topology's first DC)."
    )
    out: str | None = Field(None, description="Report directory (default .revive/drills/<UTC>).")
    judge_for_s: float = Field(
        3600.0, ge=0, le=86400,
        description="After the runbook ends, how long (simulated) to wait for every tier's "
        "RTO to be judged.")
    triggered_by: str = Field("drill", description="Who started the drill.")
    trigger: TriggerSource = Field(TriggerSource.SCHEDULE, description="What started it.")


@flow(name="drill", log_prints=False)
async def drill(params: DrillParams) -> dict:
    """Run one drill scenario end to end and write its report; returns the report's JSON."""
    began, wall0 = datetime.now(UTC), time.monotonic()
    if params.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {params.scenario!r} (known: {', '.join(SCENARIOS)})")
    out = Path(params.out or Path(".revive") / "drills" / began.strftime("%Y%m%dT%H%M%SZ"))
    out.mkdir(parents=True, exist_ok=True)
    # A drill keeps its runs in its own store: it never blocks, nor is blocked by, a real
    # failover of the same DC. Handed to its failover explicitly (never through the process
    # environment: a real run started meanwhile in this process belongs in the real store).
    engine = db.get_engine(f"sqlite:///{(out / 'runs.db').resolve()}")
    try:
        with using_store(engine):
            return await _drill(params, out, began, wall0, engine)
    finally:
        engine.dispose()


async def _drill(params: DrillParams, out: Path, began: datetime, wall0: float,
                 engine: Engine) -> dict:
    topology = load(params.topology).model_copy(update={"environment": Environment.drill})
    require_databases(topology, "a drill", params.topology)
    lost = known_dc(topology, "lost_dc", params.lost_dc or topology.dc_names[0])
    targets = [dc for dc in topology.dc_names if dc != lost]
    # The failover reads this copy: a drill never waits at the production approval gate,
    # and its run record says which (drill) topology it used.
    drill_topology = out / "topology.yaml"
    drill_topology.write_text(yaml.safe_dump(topology.model_dump(mode="json"), sort_keys=False))
    # Unless the topology says otherwise, the IP-caching callers hold the lost DC's IPs:
    # the seed's case, and the one the failover must handle.
    knobs = topology.simulation
    if knobs.cached_ips_point_to is None:
        knobs = knobs.model_copy(update={"cached_ips_point_to": lost})
    sim = Simulator(topology, seed=params.seed, config=knobs)
    recorder = Recorder(sim, lost, targets)
    sim.advance(SETTLE_S)
    with SimServer(sim) as server:
        scenario = SCENARIOS[params.scenario]
        recorder.mark_fault()
        scenario.inject(sim, lost)
        async with httpx.AsyncClient(base_url=server.url) as client:
            await client.post("/clock/wait", json={"for_s": 1})  # the fault lands
        result = await failover(FailoverParams(
            topology=str(drill_topology), lost_dc=lost, sim_url=server.url,
            run_from_dc=lost if scenario.run_from_lost_dc else targets[0],
            triggered_by=params.triggered_by,
            trigger=params.trigger,
        ))
        steps = _steps(sim, engine, result["run_id"])
    # The runbook may end before the recorder sees a tier back (the last move settles):
    # the drill ends once every tier is judged, or at its limit.
    limit = sim.clock.now + params.judge_for_s
    while not recorder.judged and sim.clock.now < limit:
        sim.advance(min(10.0, limit - sim.clock.now))
    finished = sim.clock.now
    report = _report(params, topology, recorder, result, steps, began, finished,
                     time.monotonic() - wall0, sim.estate.class_weights)
    write_report(report, out)
    return {"out": str(out), **report.to_json_dict()}


def _steps(sim: Simulator, engine: Engine, run_id: str) -> list[StepResult]:
    """The run's steps with simulated start and end times of the actions behind them."""
    session = RunSession(engine, run_id, dry_run=False)
    rows = []
    for step in session.steps():
        detail = step["detail"]
        started = ended = None
        action_id = detail.get("action_id")
        if action_id:
            view = sim.estate.action(action_id)
            started, ended = view.started_at, view.ends_at
        key = step["key"]
        rows.append(StepResult(
            key=key, action=step["action"], target=key.split(":", 1)[-1], state=step["state"],
            started_s=started, ended_s=ended, detail=str(detail.get("error") or ""),
        ))
    return rows


def _since(t: float | None, recorder: Recorder) -> float | None:
    return None if t is None else round(t - (recorder.fault_at or 0.0), 3)


def _critical_steps(topology: Topology, recorder: Recorder,
                    steps: list[StepResult]) -> dict[int, str]:
    """Per tier, what it waited for last: the latest step on one of its services, or its
    traffic class's ramp when the tier came back (or not) well after every such step."""
    out: dict[int, str] = {}
    fault = recorder.fault_at or 0.0
    for tier in recorder.tiers:
        names = {s.name for s in topology.services if s.tier == tier}
        ends = [(s.ended_s, s.key) for s in steps
                if s.ended_s is not None and s.target.split("@")[0] in names]
        last_end, last_key = max(ends, default=(fault, ""))
        back = recorder.recovered_at.get(tier)
        if back is None or back > last_end + recorder.every_s * 6:
            out[tier] = "the traffic ramp of its class"
        elif last_key:
            out[tier] = f"{last_key} (ended at {last_end - fault:.0f} s)"
    return out


def _report(
    params: DrillParams,
    topology: Topology,
    recorder: Recorder,
    result: dict,
    steps: list[StepResult],
    began: datetime,
    finished: float,
    wall: float,
    final_weights: dict[str, dict[str, float]],
) -> DrillReport:
    """Everything the drill measured, in the report's shape."""
    tiers = []
    rtos = [TierRto(tier=tier, rto_s=recorder.rto(tier),
                    target_s=topology.tier_policy[tier].rto_target_s) for tier in recorder.tiers]
    for t in rtos:
        tiers.append(TierResult(
            tier=t.tier, rto_s=t.rto_s, target_s=t.target_s, met=t.met,
            services=sum(1 for s in topology.services if s.tier == t.tier),
        ))
    failed_steps = sum(1 for s in steps if s.state == "failed")
    verdict = result["outcome"] if result["outcome"] == "aborted" else outcome(
        rtos, failed_steps=failed_steps, serving=recorder.serving)
    by_action: dict[str, list[str]] = {}
    for step in steps:
        if step.state == "done":
            by_action.setdefault(step.action, []).append(step.target)
    return DrillReport(
        scenario=params.scenario, seed=params.seed, outcome=verdict,
        headline=headline(rtos, verdict, failed_steps=failed_steps,
                          critical=_critical_steps(topology, recorder, steps)),
        topology=params.topology, topology_hash=content_hash(topology),
        environment=str(topology.environment), lost_dc=recorder.lost_dc,
        target_dcs=recorder.target_dcs, fault_at_s=recorder.fault_at or 0.0,
        finished_at_s=finished, started_at=began.isoformat(), wall_seconds=round(wall, 2),
        tiers=tiers, peak_db_util=round(recorder.peak_db_util, 4),
        breach_seconds=recorder.breach_seconds,
        deployed=by_action.get("deploy", []), provisioned=by_action.get("provision", []),
        restarted=by_action.get("restart", []), patched=by_action.get("patch", []),
        failed=[s.target for s in steps if s.state == "failed"],
        steps=steps,
        graph=[GraphStep(**{**row, "start_s": _since(row["start_s"], recorder),
                            "end_s": _since(row["end_s"], recorder)})
               for row in result.get("graph", [])],
        ramp=[RampPoint(t=p.t, share=p.share, db_util=min(p.db_util, 10.0),
                        hit_ratio=p.hit_ratio, error_rate=p.error_rate)
              for p in recorder.points],
        findings=[FindingRow(rule=f.rule, severity=str(f.severity), subject=f.subject,
                             message=f.message) for f in run_check(topology).findings],
        notes=[f"ramp: {result['ramp'].get('result')} at {result['ramp'].get('share', 0):.0%}"],
        simulation=recorder.sim.config.model_dump(mode="json"),
        final_weights={c: {dc: round(w, 4) for dc, w in per_dc.items()}
                       for c, per_dc in final_weights.items()},
    )
