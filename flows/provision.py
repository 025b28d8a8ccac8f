"""Runbook: emergency capacity in the target DC, from the capacity plan, in tier order.

Quota shortfalls are reported and escalated, never fatal: the rest of the plan goes on.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import acreate_table_artifact
from pydantic import Field

from flows.context import RunbookParams, RunContext, open_run
from revive.errors import PermanentOpsError, QuotaError
from revive.ops.models import ActionRef, ActionState
from revive.planning import plan_capacity
from revive.planning.quota import Quota, shortfall_note
from tasks.compute import provision_instances


class ProvisionParams(RunbookParams):
    share: float | None = Field(
        None, gt=0, le=10,
        description="Share of global peak to carry (default 1.2 for tiers 0-1, 1.0 others).",
    )


async def run_provision(ctx: RunContext, share: float | None = None) -> dict:
    """Provision what the capacity plan adds, for services the topology runs in the DC."""
    dc = ctx.target_dc
    plan = plan_capacity(ctx.topology, dc, share=share)
    lines = [
        line for line in plan.services
        if line.add > 0 and ctx.topology.service(line.service).runs_in(dc)
    ]
    if ctx.dry_run:
        await acreate_table_artifact(
            table=[line.model_dump() for line in lines], key="provision-plan",
            description=f"Instances provision would add in {dc} (dry run)",
        )
        ctx.log("dry run: would add %d instances to %d services in %s",
                sum(line.add for line in lines), len(lines), dc)
        return {"planned": [line.model_dump() for line in lines]}
    ctx.plan_steps(len(lines))
    quota = Quota(await ctx.tools.compute.quota(dc))
    started: dict[str, tuple[str, ActionRef]] = {}
    provisioned, shortfalls, failed = [], [], []
    for line in lines:
        key = f"provision:{line.service}@{dc}"
        count = line.add if ctx.is_done(key) else quota.grant(line.add)
        if count <= 0:
            shortfalls.append(f"{line.service}: needs {line.add}, quota exhausted")
            await ctx.settle(key, ok=False, detail={"error": "quota exhausted"},
                             note=shortfall_note(line.service, dc, line.add, 0))
            continue
        try:
            ref = await ctx.start(
                key, "provision",
                lambda rid, s=line.service, n=count: provision_instances(
                    ctx.tools.compute, s, dc, n, rid),
            )
        except QuotaError as exc:
            shortfalls.append(f"{line.service}: {exc}")
            continue
        except PermanentOpsError as exc:
            failed.append(f"{line.service}: {exc}")
            continue
        if count < line.add:
            shortfalls.append(f"{line.service}: got {count} of {line.add}")
            await ctx.warn(key, shortfall_note(line.service, dc, line.add, count))
        quota.spend(count)
        if ref is not None:
            started[key] = (f"{count} {line.service}", ref)
    statuses = await ctx.settle_all({key: ref for key, (_, ref) in started.items()})
    for key, status in statuses.items():
        label = started[key][0]
        if status.state == ActionState.done:
            provisioned.append(label)
        else:
            failed.append(f"{label}: {status.error}")
    for line in provisioned:
        ctx.highlight(f"provisioned {line} in {dc}")
    for line in shortfalls:
        ctx.highlight(f"quota shortfall: {line}")
    await ctx.tick()
    return {"provisioned": provisioned, "shortfalls": shortfalls, "failed": failed}


@flow(name="provision", log_prints=False)
async def provision(params: ProvisionParams) -> dict:
    """Emergency capacity in ``target_dc`` from the capacity plan (dry run: the plan only)."""
    async with open_run("provision", params) as ctx:
        return await run_provision(ctx, params.share)
