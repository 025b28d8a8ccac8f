"""Runbook: fail a lost DC over into the surviving ones, the whole way.

The readiness findings are inputs, never blockers. Then, in order: switch features off;
in every target DC, emergency-deploy the components that lived only in the lost DC,
provision emergency capacity and restart what is down and the callers that cached the lost
DC's IPs; pass the approval gate; and move the lost DC's users into the targets, each in
proportion to what it already carried. Each part is its own runbook too.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from pydantic import Field

from flows.approval import approval_gate
from flows.context import RunbookParams, RunContext, known_dc, open_run, the_lost_dc
from flows.images import copy_images, find_images
from flows.provision import PlanLine, run_provision
from flows.restart_service_groups import run_restart
from flows.warm_up_ramp import run_ramp
from revive.errors import InputError, OpsError, PermanentOpsError
from revive.ops.models import ActionRef, ActionState, RetryPolicy
from revive.planning import plan_capacity, plan_failover_capacity
from revive.planning.restart import DEFAULT_MAX_PARALLEL
from revive.ramp import RampPolicy
from revive.readiness import Severity, run_check
from revive.render import render
from revive.store.models import StepState
from revive.topology import Topology
from tasks.config_store import feature_flags, set_feature_flag
from tasks.services import deploy_component, service_state
from tasks.traffic import traffic_class_weights


class FailoverParams(RunbookParams):
    lost_dc: str | None = Field(
        None, description="The DC that was lost (may be left out in a two-DC estate)."
    )
    target_dcs: list[str] | None = Field(
        None, description="DCs to recover into (default: every other DC; target_dc: that one)."
    )
    share: float | None = Field(None, gt=0, le=10, description="Capacity share to provision.")
    max_parallel: int = Field(DEFAULT_MAX_PARALLEL, ge=1, le=64, description="Restart cap.")
    artifact_version: str = Field("v1", description="Version to deploy where one is missing.")
    policy: RampPolicy = Field(default_factory=RampPolicy, description="Ramp limits.")
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy, description="Client retries.")
    approval_timeout_s: int = Field(1800, ge=5, le=86400, description="Production gate wait.")
    max_ramp_s: float = Field(7200.0, gt=0, le=86400, description="Longest ramp before holding.")

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
    ramp_args = {"lost_dc": lost, "target_dcs": targets, "policy": params.policy,
                 "retry_policy": params.retry_policy}
    plans = await _capacity_plans(ctx, lost, targets, params.share)
    if ctx.dry_run:
        for dc in targets:
            with ctx.acting_on(dc):
                await run_provision(ctx, plan=plans[dc])
                await run_restart(ctx, max_parallel=params.max_parallel)
        await run_ramp(ctx, **ramp_args)
        return {"planned": True, "findings": len(report.findings)}
    await _features_off(ctx)
    deployed: list[str] = []
    failed: list[str] = []
    deploy_failed: list[str] = []
    provisioned: dict[str, dict] = {}
    restarted: dict[str, dict] = {}
    for dc in targets:
        with ctx.acting_on(dc):
            need = {line.service: max(line.need, 1) for line in plans[dc]}
            done, not_deployed = await _emergency_deploy(ctx, lost, need, params)
            deployed += [f"{name}@{dc}" for name in done]
            deploy_failed += [f"{line} in {dc}" for line in not_deployed]
            provisioned[dc] = await run_provision(ctx, plan=plans[dc])
            to_restart = await _needs_restart(ctx)
            restarted[dc] = await run_restart(ctx, services=to_restart,
                                              max_parallel=params.max_parallel)
            failed += not_deployed + list(restarted[dc]["failed"]) + provisioned[dc]["failed"]
    await approval_gate(ctx, "traffic", f"move {lost}'s traffic into {into}?",
                        params.approval_timeout_s)
    ramp = await run_ramp(ctx, **ramp_args, max_duration_s=params.max_ramp_s)
    if ramp["result"] == "full" and not failed:
        ctx.outcome = "recovered"
    elif ramp["share"] >= 1.0:
        ctx.outcome = "degraded"
    else:
        ctx.outcome = "failed"
    summary = {
        "run_id": ctx.run.run_id, "outcome": ctx.outcome, "lost_dc": lost, "target_dcs": targets,
        "findings": [f.model_dump(mode="json") for f in report.findings],
        "deployed": deployed, "deploy_failed": deploy_failed,
        "provisioned": provisioned, "restarted": restarted,
        "ramp": {k: v for k, v in ramp.items() if k not in ("samples", "changes")},
        "final_weights": ramp.get("weights", {}),
    }
    await acreate_markdown_artifact(
        markdown=render("failover/summary.md.j2", **summary), key="failover-report",
        description=f"Failover of {lost} into {into}",
    )
    return summary


async def _capacity_plans(
    ctx: RunContext, lost: str, targets: list[str], share: float | None
) -> dict[str, list[PlanLine]]:
    """Each target's lines: sized for the share of the lost DC's traffic it takes (from the
    class weights the traffic tool reports, or the topology's when it cannot be asked).
    A failover into only some survivors sizes each target as the single-DC plan does."""
    if sorted(targets) != sorted(dc for dc in ctx.topology.dc_names if dc != lost):
        return {dc: plan_capacity(ctx.topology, dc, share=share).services for dc in targets}
    try:
        weights = await traffic_class_weights(ctx.tools.traffic)
    except OpsError as exc:
        await ctx.note_once("traffic-unreadable", f"traffic weights unreadable ({exc}): "
                            "sizing survivors for the topology's default split")
        weights = None
    plan = plan_failover_capacity(ctx.topology, lost, weights=weights, share=share)
    return {s.dc: list(s.services) for s in plan.survivors}


async def _features_off(ctx: RunContext) -> None:
    """Emergency mode: every feature off; the ramp brings them back in priority order."""
    flags = await feature_flags(ctx.tools.config)
    on = sorted(k for k, v in flags.items() if v)
    for svc, feature in on:
        await ctx.instant(f"feature-off:{svc}/{feature}", "config",
                          lambda s=svc, f=feature: set_feature_flag(ctx.tools.config, s, f, False))
    if on:
        ctx.highlight(f"switched {len(on)} features off until traffic is back")


async def _emergency_deploy(
    ctx: RunContext, lost: str, need: dict[str, int], params: FailoverParams
) -> tuple[list[str], list[str]]:
    """Deploy into the target DC what ran only in the lost DC (copying images if needed);
    ``need`` is the instances each service needs there."""
    dc = ctx.target_dc
    missing = []
    for svc in ctx.topology.services:
        if svc.runs_in(lost) and not svc.runs_in(dc):
            state = await service_state(ctx.tools.services, svc.name, dc)
            if not state.exists or ctx.run.step_state(f"deploy:{svc.name}@{dc}")[0]:
                missing.append(svc.name)
    ctx.plan_steps(len(missing))
    started: dict[str, ActionRef] = {}
    failed: list[str] = []
    version = params.artifact_version
    todo = [n for n in missing if not ctx.is_done(f"deploy:{n}@{dc}")]
    sources, nowhere = await find_images(ctx, todo, version, None)
    _, copy_failed = await copy_images(ctx, sources, version)
    unavailable = {**nowhere, **copy_failed}
    for name in missing:
        key = f"deploy:{name}@{dc}"
        try:
            if name in unavailable:
                raise PermanentOpsError(f"no image {name}:{version} for {dc}: "
                                        f"{unavailable[name]}", tool="registry", target=name)
            ref = await ctx.start(key, "deploy", lambda rid, n=name: deploy_component(
                ctx.tools.services, n, dc, need.get(n, 1), version, rid))
        except OpsError as exc:
            failed.append(f"{name}: {exc}")
            if ctx.run.step_state(key)[0] != StepState.FAILED:
                await ctx.settle(key, ok=False, detail={"error": str(exc)})
            continue
        if ref is not None:
            started[key] = ref
    deployed = []
    statuses = await ctx.settle_all(started, note=lambda key: f"emergency {key}")
    for key, status in statuses.items():
        name = key.removeprefix("deploy:").removesuffix(f"@{dc}")
        if status.state == ActionState.done:
            deployed.append(name)
        else:
            failed.append(f"{name}: {status.error}")
    if deployed:
        ctx.highlight(f"emergency-deployed {', '.join(deployed)} in {dc}")
    return deployed, failed


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
    async with open_run("failover", params, needs_database=True) as ctx:
        return await run_failover(ctx, params)
