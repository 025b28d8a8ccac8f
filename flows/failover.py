"""Runbook: fail a lost DC over into the surviving ones, the whole way, as one graph.

The readiness findings are inputs, never blockers. The runbook surveys what each target
DC needs (emergency deployments of what lived only in the lost DC, with their images;
emergency capacity; restarts of what is down and of callers that cached the lost DC's IPs)
and runs it all as one recovery graph (``revive.planning.recovery``): every step starts as
soon as its own pre-conditions hold, and each traffic class's users move out of the lost
DC, into every target in proportion to what it already carried, as soon as that class's
services are ready and the one approval before traffic moves is given. The verdict comes
from the RTO of each tier. Each part is its own runbook too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from pydantic import Field

from flows.context import RunbookParams, RunContext, known_dc, open_run, the_lost_dc
from flows.images import find_images
from flows.recovery import GraphRun
from flows.warm_up_ramp import TrafficMover
from revive.errors import InputError, OpsError
from revive.ops.models import RetryPolicy
from revive.planning import CapacityLine, FailoverLine, plan_capacity, plan_failover_capacity
from revive.planning.graph import Scheduler, Step, StepState, Timing, rehearse
from revive.planning.recovery import Survey, recovery_graph
from revive.planning.restart import DEFAULT_MAX_PARALLEL
from revive.planning.shares import ClassWeights, default_weights
from revive.ramp import RampPolicy
from revive.ramp.pacing import pacing
from revive.readiness import Severity, run_check
from revive.render import render
from revive.store.models import StepState as Ledger
from revive.topology import Topology
from revive.verdict import TierRto, headline, outcome
from tasks.services import service_state
from tasks.traffic import traffic_class_weights

PlanLine = CapacityLine | FailoverLine


class FailoverParams(RunbookParams):
    lost_dc: str | None = Field(
        None, title="Lost DC",
        description="The DC that was lost (may be left out in a two-DC estate)."
    )
    target_dcs: list[str] | None = Field(
        None, title="Target DCs",
        description="DCs to recover into (default: every other DC; target_dc: that one)."
    )
    share: float | None = Field(None, gt=0, le=10, description="Capacity share to provision.")
    max_parallel: int = Field(DEFAULT_MAX_PARALLEL, ge=1, le=64, description="Restart cap.")
    artifact_version: str = Field("v1", description="Version to deploy where one is missing.")
    policy: RampPolicy = Field(default_factory=RampPolicy, description="Ramp limits.")
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy, description="Client retries.")
    approval_timeout_s: int = Field(1800, ge=5, le=86400, description="Production gate wait.")
    max_ramp_s: float = Field(7200.0, gt=0, le=86400, description="Longest ramp before holding.")
    needs_database: ClassVar[bool] = True
    incident_started_at: datetime | None = Field(
        None, description="When the incident began, for judging RTOs (default: the run's "
        "start; a resumed run's is its first attempt's).")

    def targets(self, topology: Topology) -> list[str]:
        """The DCs to recover into: as given, ``target_dc`` alone, or every survivor."""
        if self.target_dcs is not None:
            if not self.target_dcs:
                raise InputError("target_dcs: give at least one DC, or leave it out")
            return [known_dc(topology, "target_dcs", dc) for dc in dict.fromkeys(self.target_dcs)]
        if self.target_dc is not None:
            return [known_dc(topology, "target_dc", self.target_dc)]
        lost = known_dc(topology, "lost_dc", self.lost_dc)
        return [dc for dc in topology.dc_names if dc != lost]

    def run_dc(self, topology: Topology) -> str:
        """One active failover per lost DC."""
        return the_lost_dc(topology, self.lost_dc, self.targets(topology))


async def run_failover(ctx: RunContext, params: FailoverParams) -> dict:
    targets = params.targets(ctx.topology)
    lost = params.run_dc(ctx.topology)
    into = ", ".join(targets)
    report = run_check(ctx.topology)
    errors = report.count(Severity.error)
    ctx.highlight(f"readiness: {errors} error(s), {report.count(Severity.warning)} warning(s)")
    survey = await _survey(ctx, lost, targets, params)
    steps, pools = recovery_graph(ctx.topology, survey, max_parallel=params.max_parallel)
    if ctx.dry_run:
        timings = rehearse(steps, pools)
        await acreate_markdown_artifact(
            markdown=render("failover/graph.md.j2", steps=steps, timings=timings, lost=lost,
                            targets=targets),
            key="failover-graph", description=f"Recovery graph of {lost} into {into} (dry run)")
        return {"planned": True, "findings": len(report.findings),
                "steps": [_step_row(s, timings) for s in steps]}
    ctx.plan_steps(len(steps))
    estate_pacing = pacing(ctx.topology.ramp)  # the estate's own pacing; a given policy wins
    policy = params.policy if "policy" in params.model_fields_set else estate_pacing.policy()
    mover = TrafficMover(ctx, lost_dc=lost, target_dcs=targets, policy=policy,
                         retry_policy=params.retry_policy)
    graph = GraphRun(ctx, Scheduler(steps, pools), survey, mover,
                     approval_question=f"move {lost}'s traffic into {into}?",
                     approval_timeout_s=params.approval_timeout_s,
                     max_ramp_s=params.max_ramp_s,
                     scrape_interval_s=estate_pacing.scrape_interval_s or 10.0)
    started, began = await _clock_start(ctx)
    await graph.run()
    for key, why in graph.failed().items():
        if ctx.run.step_state(key)[0] is None:  # never started: blocked by a failure
            await ctx.settle(key, ok=False, detail={"error": f"blocked: {why}"})
    ramp = await mover.summary(graph.now)
    offset = incident_offset(began, params.incident_started_at)
    tiers = _tier_rtos(ctx, graph, started, offset)
    failed = [f"{k}: {why}" for k, why in graph.failed().items()]
    ctx.outcome = outcome(tiers, failed_steps=len(failed),
                          serving=ramp["share"] > 0 or not mover.to_move)
    done = graph.scheduler.of(StepState.done)
    summary = {
        "run_id": ctx.run.run_id, "outcome": ctx.outcome, "lost_dc": lost, "target_dcs": targets,
        "headline": headline(tiers, ctx.outcome, failed_steps=len(failed)),
        "findings": [f.model_dump(mode="json") for f in report.findings],
        "deployed": [k.removeprefix("deploy:") for k in done if k.startswith("deploy:")],
        "provisioned": [k.removeprefix("provision:") + (f" ({graph.notes[k]})"
                        if k in graph.notes else "") for k in done if k.startswith("provision:")],
        "restarted": [k.removeprefix("restart:") for k in done if k.startswith("restart:")],
        "failed": failed,
        "rto_s": {f"tier{t.tier}": t.rto_s for t in tiers},
        "ramp": {k: v for k, v in ramp.items() if k not in ("samples", "changes")},
        "final_weights": ramp.get("weights", {}),
        "graph": [_step_row(s, {k: Timing(start_s=graph.started_at[k],
                                          end_s=graph.ended_at.get(k, graph.now))
                                for k in graph.started_at})
                  for s in graph.scheduler.steps.values()],
    }
    ctx.highlight(summary["headline"])
    await acreate_markdown_artifact(
        markdown=render("failover/summary.md.j2", **summary), key="failover-report",
        description=f"Failover of {lost} into {into}",
    )
    return summary


CLOCK_START = "clock:start"
"""The ledger step holding the clock time (and wall time) at which the run's recovery
began: taken once, on the run's first start, and read back by every resume."""


async def _clock_start(ctx: RunContext) -> tuple[float, datetime]:
    """(clock time, wall time) at which this run's recovery graph first started. A resumed
    run reads them from the ledger: counted from its own start, every tier's RTO would come
    out short by however long the earlier attempts ran."""
    recorded = recorded_start(*ctx.run.step_state(CLOCK_START))
    if recorded is not None:
        return recorded
    now, wall = await ctx.tools.clock.now(), datetime.now(UTC)
    ctx.run.end(CLOCK_START, Ledger.DONE, {"clock_s": now, "wall": wall.isoformat()},
                action="clock")
    return now, wall


def recorded_start(state: Ledger | None,
                   detail: dict[str, Any] | None) -> tuple[float, datetime] | None:
    """The (clock, wall) start a ``clock:start`` ledger step holds; None if it was never
    recorded (or not whole: a crash between its two writes), so this attempt records it."""
    if state != Ledger.DONE or not detail:
        return None
    clock, wall = detail.get("clock_s"), detail.get("wall")
    if not isinstance(clock, int | float) or isinstance(clock, bool) or not isinstance(wall, str):
        return None
    try:
        began = datetime.fromisoformat(wall)
    except ValueError:
        return None
    return float(clock), began if began.tzinfo else began.replace(tzinfo=UTC)


def incident_offset(began: datetime, incident: datetime | None) -> float:
    """Seconds from the incident to the run's first start (``began``, wall time): what each
    tier's RTO adds to the recovery's own time. No incident given: the run's first start is
    the incident, and the RTO is the recovery's own clock time (virtual in a drill, so a
    seed still gives one report)."""
    if incident is None:
        return 0.0
    incident = incident if incident.tzinfo else incident.replace(tzinfo=UTC)
    return max(0.0, (began - incident).total_seconds())


async def _survey(ctx: RunContext, lost: str, targets: list[str],
                  params: FailoverParams) -> Survey:
    """What each target needs, read from the tools (reads only: a dry run does this too)."""
    weights = await _class_weights(ctx)
    plans = _capacity_plans(ctx, lost, targets, params.share, weights)
    survey = Survey(lost=lost, targets=targets, version=params.artifact_version)
    for dc in targets:
        with ctx.acting_on(dc):
            need = {line.service: max(line.need, 1) for line in plans[dc]}
            missing = await _missing(ctx, lost)
            survey.deploys[dc] = {name: need.get(name, 1) for name in missing}
            todo = [n for n in missing if not ctx.is_done(f"deploy:{n}@{dc}")]
            sources, _ = await find_images(ctx, todo, params.artifact_version, None)
            survey.copies[dc] = sources
            survey.provisions[dc] = {
                line.service: line.add for line in plans[dc]
                if line.add > 0 and ctx.topology.service(line.service).runs_in(dc)}
            survey.restarts[dc] = await _needs_restart(ctx)
    survey.classes = [c for c in ctx.topology.traffic_classes
                      if weights.get(c, {}).get(lost, 0.0) > 0]
    return survey


def _step_row(step: Step, timings: dict[str, Timing]) -> dict:
    t = timings.get(step.key)
    return {"key": step.key, "action": step.action, "target": step.target,
            "after": [*step.after, *step.after_end],
            "start_s": t.start_s if t else None, "end_s": t.end_s if t else None}


def _tier_rtos(ctx: RunContext, graph: GraphRun, started: float,
               offset: float) -> list[TierRto]:
    """Each tier back when the last step on its services and its classes' ramps ended
    (not back if one of them failed), counted from the incident's start (``offset``
    seconds before the run's recovery first started, at ``started`` on its clock). The
    steps include those an earlier attempt of a resumed run finished, at their own ends."""
    topology = ctx.topology
    ends = graph.ends(default=started)
    out = []
    for tier in sorted({s.tier for s in topology.services}):
        names = {s.name for s in topology.services if s.tier == tier}
        classes = {s.traffic_class_name for s in topology.services
                   if s.tier == tier and s.traffic_class_name}
        mine = [e for e in ends if e.target.split("@")[0] in names
                or (e.action == "ramp" and e.target in classes)]
        bad = any(not e.ok for e in mine)
        ramps_left = any(c in graph.mover.to_move and not (
            c in graph.mover.ramps and graph.mover.ramps[c].complete) for c in classes)
        end = max((e.ended_s for e in mine), default=started)
        rto = None if bad or ramps_left else end - started + offset
        out.append(TierRto(tier=tier, rto_s=rto,
                           target_s=topology.tier_policy[tier].rto_target_s))
    return out


def _capacity_plans(
    ctx: RunContext, lost: str, targets: list[str], share: float | None,
    weights: ClassWeights,
) -> dict[str, list[PlanLine]]:
    """Each target's lines: sized for the share of the lost DC's traffic it takes.
    A failover into only some survivors sizes each target as the single-DC plan does."""
    if sorted(targets) != sorted(dc for dc in ctx.topology.dc_names if dc != lost):
        return {dc: plan_capacity(ctx.topology, dc, share=share).services for dc in targets}
    plan = plan_failover_capacity(ctx.topology, lost, weights=weights, share=share)
    return {s.dc: list(s.services) for s in plan.survivors}


async def _missing(ctx: RunContext, lost: str) -> list[str]:
    """Services that ran in the lost DC but do not exist in the target (or whose emergency
    deployment this run started already)."""
    dc = ctx.target_dc
    missing = []
    for svc in ctx.topology.services:
        if svc.runs_in(lost) and not svc.runs_in(dc):
            state = await service_state(ctx.tools.services, svc.name, dc)
            if not state.exists or ctx.run.step_state(f"deploy:{svc.name}@{dc}")[0]:
                missing.append(svc.name)
    return missing


async def _class_weights(ctx: RunContext) -> ClassWeights:
    """Where users are now, as the traffic tool says (read once per survey); the
    topology's default split when it cannot be asked."""
    try:
        return await traffic_class_weights(ctx.tools.traffic)
    except OpsError as exc:
        await ctx.note_once("traffic-unreadable", f"traffic weights unreadable ({exc}): "
                            "assuming the topology's default split")
        return default_weights(ctx.topology)


async def _needs_restart(ctx: RunContext) -> list[str]:
    """Services down in the target DC, and callers holding IPs cached for the lost DC."""
    dc = ctx.target_dc
    names = []
    for svc in ctx.topology.services:
        if not svc.runs_in(dc):
            continue
        if svc.caches_dependency_ips:
            names.append(svc.name)
            continue
        state = await service_state(ctx.tools.services, svc.name, dc)
        if state.healthy < state.instances and not state.busy:
            names.append(svc.name)
    return names


@flow(name="failover", log_prints=False)
async def failover(params: FailoverParams) -> dict:
    """Recover a lost DC's load into the target DCs: deploy, provision, restart, approve, ramp."""
    async with open_run("failover", params) as ctx:
        return await run_failover(ctx, params)
