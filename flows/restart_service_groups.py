"""Runbook: restart service groups in priority order, health-gated, under a cap.

The steps are the restart plan's (``restart_steps``: hard dependencies first, then
effective tier) and the one scheduler, ``revive.planning.graph.Scheduler``, decides what
starts: at most ``max_parallel`` restarts are in flight; each is gated on health before its
dependents may start; a failed service blocks only its dependents (recorded as failed
steps, ``blocked: waits on ...``) while independent branches go on. A resumed run skips the
steps it finished before. This loop only starts, waits and reports; it decides no order.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from pydantic import Field

from flows.context import RunbookParams, RunContext, open_run
from revive.errors import PermanentOpsError
from revive.ops.models import ActionRef, ActionState
from revive.planning import plan_restart
from revive.planning.graph import Scheduler, StepState
from revive.planning.restart import DEFAULT_MAX_PARALLEL, restart_steps, service_of
from revive.render import render
from tasks.clock import action_status, wait
from tasks.services import health_view, restart_service, service_state


class RestartParams(RunbookParams):
    groups: list[str] | None = Field(None, description="Groups to restart (default: all).")
    services: list[str] | None = Field(
        None, description="Only these services (their plan order and gates still apply)."
    )
    max_parallel: int = Field(
        DEFAULT_MAX_PARALLEL, ge=1, le=64,
        description="Restarts in flight at once; protects the boot-time ops tools.",
    )


async def run_restart(
    ctx: RunContext,
    *,
    groups: list[str] | None = None,
    services: list[str] | None = None,
    max_parallel: int = DEFAULT_MAX_PARALLEL,
) -> dict:
    """Restart in plan order; returns what came up, what failed and what was blocked."""
    dc = ctx.target_dc
    if ctx.dry_run:
        plan = plan_restart(ctx.topology, dc, groups=groups, max_parallel=max_parallel)
        order = [s.service for s in plan.steps if services is None or s.service in services]
        text = render("restart/plan.md.j2", plan=plan, order=order)
        await acreate_markdown_artifact(markdown=text, key="restart-plan",
                                        description=f"Restart plan for {dc} (dry run)")
        ctx.log("dry run: would restart %d services in %s", len(order), dc)
        return {"planned": order}
    steps, pools = restart_steps(ctx.topology, dc, services, groups=groups,
                                 max_parallel=max_parallel)
    scheduler = Scheduler(steps, pools)
    ctx.plan_steps(len(steps))
    up: list[str] = []
    failed: dict[str, str] = {}
    blocked: dict[str, str] = {}
    in_flight: dict[str, ActionRef] = {}

    async def ended(key: str, *, ok: bool, why: str = "") -> None:
        """Tell the scheduler; record the dependents a failure blocked, as failed steps."""
        if ok:
            up.append(service_of(scheduler.steps[key]))
        else:
            failed[service_of(scheduler.steps[key])] = why
        for k in scheduler.finish(key, ok=ok, why=why):
            step = scheduler.steps[k]
            bad = [service_of(scheduler.steps[d]) for d in step.after
                   if scheduler.state[d] in (StepState.failed, StepState.blocked)]
            name = service_of(step)
            blocked[name] = f"waits on {', '.join(bad)}"
            await ctx.settle(k, ok=False, detail={"error": f"blocked: {blocked[name]}"})

    while not scheduler.finished:
        handled = 0
        for step in scheduler.ready():
            handled += 1
            name = service_of(step)
            if ctx.is_done(step.key):  # a resumed run finished it on an earlier attempt
                scheduler.skip(step.key)
                up.append(name)
                continue
            scheduler.start(step.key)
            try:
                ref = await ctx.start(step.key, "restart", lambda rid, n=name: restart_service(
                    ctx.tools.services, n, dc, rid))
            except PermanentOpsError as exc:  # ctx.start recorded the failed step
                await ended(step.key, ok=False, why=str(exc))
                continue
            if ref is None:
                await ended(step.key, ok=True)
            else:
                in_flight[step.key] = ref
        if not in_flight:
            if handled:
                continue  # skipped, or failed at once: what they released may start now
            # Cannot happen on the plan's DAG; never spin if it somehow does.
            for key in scheduler.of(StepState.pending):
                blocked[service_of(scheduler.steps[key])] = "dependencies did not come up"
            break
        await wait(ctx.tools.clock, actions=list(in_flight.values()), any_action=True)
        for key, ref in list(in_flight.items()):
            status = await action_status(ctx.tools.clock, ref)
            if not status.finished:
                continue
            del in_flight[key]
            healthy, why = await health_gate(ctx, service_of(scheduler.steps[key]),
                                             status.state, status.error)
            await ctx.settle(key, ok=healthy, detail={"action_id": ref.id, "error": why})
            await ended(key, ok=healthy, why=why or "unhealthy")
        await ctx.tick()
    summary = {"up": up, "failed": failed, "blocked": blocked}
    ctx.highlight(f"restarted {len(up)} in {dc}; {len(failed)} failed; {len(blocked)} blocked")
    await acreate_markdown_artifact(
        markdown=render("restart/summary.md.j2", dc=dc, **summary), key="restart-summary",
        description=f"Restart of {dc}",
    )
    return summary


HEALTH_CHECKS = 3
HEALTH_GRACE_S = 10.0


async def health_gate(
    ctx: RunContext, name: str, state: ActionState, error: str | None
) -> tuple[bool, str | None]:
    """Healthy per the health checker, asked again after a grace period while it still
    reports nothing (its probes lag); if no checker answers, per the service tool itself."""
    if state != ActionState.done:
        return False, error or "restart failed"
    dc = ctx.target_dc
    for attempt in range(HEALTH_CHECKS):
        view = await health_view(ctx.tools.health, dc)
        if view is None:
            await ctx.note_once("health-checker-unreachable", "no health checker answers: "
                                "gating restarts on the service tool's own view")
            healthy = (await service_state(ctx.tools.services, name, dc)).healthy
        else:
            healthy = view.get(name, 0)
        if healthy > 0:
            return True, None
        if attempt + 1 < HEALTH_CHECKS:
            await wait(ctx.tools.clock, for_s=HEALTH_GRACE_S)
    return False, f"no healthy instance {HEALTH_CHECKS * HEALTH_GRACE_S:.0f} s after restart"


@flow(name="restart_service_groups", log_prints=False)
async def restart_service_groups(params: RestartParams) -> dict:
    """Restart groups in the target DC in dependency and tier order, health-gated."""
    async with open_run("restart_service_groups", params) as ctx:
        return await run_restart(ctx, groups=params.groups, services=params.services,
                                 max_parallel=params.max_parallel)
