"""Runbook: fail a lost DC over into a surviving one, the whole way.

The readiness findings are inputs, never blockers. Then, in order: switch features off,
emergency-deploy the components that lived only in the lost DC, provision emergency
capacity, restart what is down and the callers that cached the lost DC's IPs, pass the
approval gate, and ramp traffic in. Each part is its own runbook too.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from pydantic import Field

from flows.approval import approval_gate
from flows.context import RunbookParams, RunContext, open_run
from flows.images import copy_images, find_images
from flows.provision import run_provision
from flows.restart_service_groups import run_restart
from flows.warm_up_ramp import run_ramp
from revive.errors import OpsError, PermanentOpsError
from revive.ops.models import ActionRef, ActionState, RetryPolicy
from revive.planning import plan_capacity
from revive.planning.restart import DEFAULT_MAX_PARALLEL
from revive.ramp import RampPolicy
from revive.readiness import Severity, run_check
from revive.render import render
from revive.store.models import StepState
from tasks.config_store import feature_flags, set_feature_flag
from tasks.services import deploy_component, service_state


class FailoverParams(RunbookParams):
    lost_dc: str | None = Field(None, description="The DC that was lost (default: the other).")
    share: float | None = Field(None, gt=0, le=10, description="Capacity share to provision.")
    max_parallel: int = Field(DEFAULT_MAX_PARALLEL, ge=1, le=64, description="Restart cap.")
    artifact_version: str = Field("v1", description="Version to deploy where one is missing.")
    policy: RampPolicy = Field(default_factory=RampPolicy, description="Ramp limits.")
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy, description="Client retries.")
    approval_timeout_s: int = Field(1800, ge=5, le=86400, description="Production gate wait.")
    max_ramp_s: float = Field(7200.0, gt=0, le=86400, description="Longest ramp before holding.")


async def run_failover(ctx: RunContext, params: FailoverParams) -> dict:
    dc = ctx.target_dc
    lost = params.lost_dc or next(d for d in ctx.topology.dc_names if d != dc)
    report = run_check(ctx.topology)
    errors = report.count(Severity.error)
    ctx.highlight(f"readiness: {errors} error(s), {report.count(Severity.warning)} warning(s)")
    if ctx.dry_run:
        await run_provision(ctx, params.share)
        await run_restart(ctx, max_parallel=params.max_parallel)
        await run_ramp(ctx, policy=params.policy, retry_policy=params.retry_policy)
        return {"planned": True, "findings": len(report.findings)}
    await _features_off(ctx)
    deployed, deploy_failed = await _emergency_deploy(ctx, lost, params)
    provisioned = await run_provision(ctx, params.share)
    to_restart = await _needs_restart(ctx)
    restarted = await run_restart(ctx, services=to_restart, max_parallel=params.max_parallel)
    await approval_gate(ctx, "traffic", f"move traffic into {dc} (ramp to 100% of {lost}'s "
                        "load)?", params.approval_timeout_s)
    ramp = await run_ramp(ctx, policy=params.policy, retry_policy=params.retry_policy,
                          max_duration_s=params.max_ramp_s)
    failed = deploy_failed + list(restarted["failed"]) + provisioned["failed"]
    if ramp["result"] == "full" and not failed:
        ctx.outcome = "recovered"
    elif ramp["share"] >= 1.0:
        ctx.outcome = "degraded"
    else:
        ctx.outcome = "failed"
    summary = {
        "run_id": ctx.run.run_id, "outcome": ctx.outcome, "lost_dc": lost, "target_dc": dc,
        "findings": [f.model_dump(mode="json") for f in report.findings],
        "deployed": deployed, "deploy_failed": deploy_failed,
        "provisioned": provisioned, "restarted": restarted,
        "ramp": {k: v for k, v in ramp.items() if k not in ("samples", "changes")},
    }
    await acreate_markdown_artifact(
        markdown=render("failover/summary.md.j2", **summary), key="failover-report",
        description=f"Failover into {dc}",
    )
    return summary


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
    ctx: RunContext, lost: str, params: FailoverParams
) -> tuple[list[str], list[str]]:
    """Deploy into the target DC what ran only in the lost DC (copying images if needed)."""
    dc = ctx.target_dc
    need = {line.service: max(line.need, 1) for line in plan_capacity(ctx.topology, dc).services}
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
                ctx.tools.services, n, dc, need[n], version, rid))
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
    """Recover a lost DC's load into ``target_dc``: deploy, provision, restart, approve, ramp."""
    async with open_run("failover", params) as ctx:
        return await run_failover(ctx, params)
