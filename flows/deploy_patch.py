"""Runbook: ship an emergency software patch to services in the target DC, canary first.

During a recovery a patch is the one change that can break every instance of a service at
once, in the only DC still standing. So it goes to a canary alone, then in small batches,
and after each batch the runbook watches the DC for ``gate_s`` virtual seconds: every
patched service must report the new version with a healthy instance, and the DC's error
rate must not have risen by more than ``max_error_rate_increase`` over the rate measured
before the patch. A batch that fails its gate is rolled back by the runbook itself and no
later batch starts; batches that passed earlier stay patched (the summary says so).

The image must be in the target DC's registry replica (the seed: it was only in the burned
DC's), so missing images are copied from another replica first; if one cannot be had
anywhere the run fails before any service is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from pydantic import Field

from flows.approval import ApprovalRefused, approval_gate
from flows.context import RunAborted, RunbookParams, RunContext, open_run
from flows.images import copy_images, find_images
from flows.restart_service_groups import HEALTH_CHECKS, HEALTH_GRACE_S
from revive.errors import DependencyError, InputError, OpsError, PermanentOpsError
from revive.ops.models import ActionRef, ActionState
from revive.render import render
from tasks.clock import action_status, wait
from tasks.metrics import scrape_metrics
from tasks.services import health_view, service_state, set_service_version


class PatchParams(RunbookParams):
    services: list[str] = Field(
        min_length=1, description="Services to patch in target_dc, in the order to patch them."
    )
    version: str = Field(min_length=1, description="The version to ship.")
    source_dc: str | None = Field(
        None, description="Copy a missing image from this DC's registry (default: any other)."
    )
    canary: int = Field(1, ge=0, le=64, description="Services patched first, alone.")
    batch_size: int = Field(
        2, ge=1, le=64, description="Services patched at once after the canary."
    )
    max_error_rate_increase: float = Field(
        0.01, ge=0, le=1,
        description="Gate: how much the DC's error rate may rise over its pre-patch rate.",
    )
    gate_s: float = Field(
        30.0, ge=0, le=3600, description="Seconds to observe the DC after each batch."
    )
    approval_timeout_s: int = Field(
        1800, ge=5, le=86400, description="Production: how long to wait for an approver."
    )


@dataclass
class _Tally:
    """What happened so far; the summary even when the run stops half-way."""

    version: str
    batches: list[list[str]]
    copied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    patched: list[str] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    not_started: list[str] = field(default_factory=list)
    baseline: float | None = None
    outcome: str = "patched"
    reason: str | None = None

    def summary(self, ctx: RunContext) -> dict[str, Any]:
        return {
            "run_id": ctx.run.run_id, "target_dc": ctx.target_dc, "version": self.version,
            "outcome": self.outcome, "reason": self.reason, "batches": self.batches,
            "copied": self.copied, "already": self.already, "patched": self.patched,
            "rolled_back": self.rolled_back, "failed": self.failed,
            "not_started": self.not_started, "baseline_error_rate": self.baseline,
        }


def plan_batches(services: Sequence[str], canary: int, batch_size: int) -> list[list[str]]:
    """The canary batch (the first ``canary`` services) alone, then ``batch_size`` at a time."""
    head = list(services[:canary])
    rest = list(services[canary:])
    tail = [rest[i:i + batch_size] for i in range(0, len(rest), batch_size)]
    return [head, *tail] if head else tail


def _labels(batches: Sequence[Sequence[str]], canary: int) -> list[str]:
    first = 0 if canary > 0 else 1
    return ["canary" if i == 0 else f"batch {i}" for i in range(first, first + len(batches))]


async def run_patch(
    ctx: RunContext,
    *,
    services: Sequence[str],
    version: str,
    source_dc: str | None = None,
    canary: int = 1,
    batch_size: int = 2,
    gate_s: float = 30.0,
    max_error_rate_increase: float = 0.01,
    approval_timeout_s: float = 1800,
) -> dict[str, Any]:
    """Patch ``services`` in the target DC to ``version`` in gated batches; the summary.

    In production an approver must agree once the images are in place, before the first
    service is touched."""
    dc = ctx.target_dc
    names = _validate(ctx, services, source_dc)
    batches = plan_batches(names, canary, batch_size)
    sources, missing = await find_images(ctx, names, version, source_dc)
    if ctx.dry_run:
        labelled = list(zip(_labels(batches, canary), batches, strict=True))
        text = render("deploy_patch/plan.md.j2", dc=dc, version=version, batches=labelled,
                      sources=sources, missing=missing, gate_s=gate_s,
                      max_error_rate_increase=max_error_rate_increase)
        await acreate_markdown_artifact(markdown=text, key="deploy-patch-plan",
                                        description=f"Patch plan for {dc} (dry run)")
        ctx.log("dry run: would patch %d services in %s to %s in %d batches",
                len(names), dc, version, len(batches))
        return {"planned": batches, "version": version, "copy": sources, "missing": missing}
    if missing:
        lines = "; ".join(f"{name}:{version} ({why})" for name, why in missing.items())
        ctx.highlight(f"patch {version} not started: image missing everywhere")
        raise DependencyError(
            f"cannot patch {dc} to {version}: no registry replica holds {lines}; "
            f"push the image to a registry first. Nothing was changed.",
            tool="registry", target=", ".join(missing),
        )
    tally = _Tally(version=version, batches=batches)
    ctx.plan_steps(len(sources) + len(names))
    try:
        tally.copied = await _copy_images(ctx, sources, version)
        await approval_gate(ctx, "patch", f"patch {len(names)} service(s) in {dc} to {version} "
                            f"in {len(batches)} batch(es): {', '.join(names)}?",
                            approval_timeout_s)
        tally.baseline = await _error_rate(ctx)
        for label, batch in zip(_labels(batches, canary), batches, strict=True):
            ctx.check_abort()
            ok = await _run_batch(ctx, tally, batch, label, gate_s, max_error_rate_increase)
            if not ok:
                break
    except RunAborted:
        tally.outcome, tally.reason = "aborted", "abort requested"
        await _report(ctx, tally, names)
        raise
    except ApprovalRefused as exc:
        tally.outcome, tally.reason = "not approved", str(exc)
        await _report(ctx, tally, names)
        raise
    await _report(ctx, tally, names)
    return tally.summary(ctx)


def _validate(ctx: RunContext, services: Sequence[str], source_dc: str | None) -> list[str]:
    """Every name must be a service running in the target DC: refused before any change."""
    dc = ctx.target_dc
    names = list(dict.fromkeys(services))  # a name given twice is patched once
    for name in names:
        if not ctx.topology.has_service(name):
            known = ", ".join(s.name for s in ctx.topology.services)
            raise InputError(f"services: unknown service {name!r} (topology has: {known})")
        if not ctx.topology.service(name).runs_in(dc):
            raise InputError(f"services: {name!r} does not run in {dc}; nothing to patch there")
    if source_dc is not None and (source_dc == dc or source_dc not in ctx.topology.dc_names):
        others = ", ".join(d for d in ctx.topology.dc_names if d != dc)
        raise InputError(f"source_dc: {source_dc!r} is not another datacenter ({others})")
    return names


# --- the image ---------------------------------------------------------------------------


async def _copy_images(ctx: RunContext, sources: dict[str, str], version: str) -> list[str]:
    """Copy every missing image into the target DC's replica; any failure stops the run
    before a service is touched (a patch without its image would fail half-way)."""
    dc = ctx.target_dc
    copied, errors = await copy_images(ctx, sources, version)
    if errors:
        ctx.highlight(f"patch {version} not started: image copy failed")
        lines = "; ".join(f"{name}: {why}" for name, why in errors.items())
        raise DependencyError(
            f"cannot patch {dc} to {version}: copying the image failed for "
            f"{lines}. No service was patched.", tool="registry", target=dc,
        )
    await ctx.tick()
    return copied


# --- batches -----------------------------------------------------------------------------


async def _run_batch(
    ctx: RunContext, tally: _Tally, batch: list[str], label: str, gate_s: float,
    max_increase: float,
) -> bool:
    """Patch one batch, gate it, roll it back if the gate fails; True if it stays patched.

    An abort mid-batch rolls back what this batch patched: half a batch that never saw its
    gate is an unverified change, while earlier batches passed theirs and stay.
    """
    dc = ctx.target_dc
    patched: list[str] = []
    problems: dict[str, str] = {}
    started: dict[str, ActionRef] = {}
    try:
        for name in batch:
            key = f"patch:{name}@{dc}"
            try:
                if ctx.run.step_state(key)[0] is None and (await service_state(
                        ctx.tools.services, name, dc)).version == tally.version:
                    # Re-patching would make the new version the rollback target too.
                    tally.already.append(name)
                    await ctx.settle(key, ok=True, detail={"skipped": "already on version"})
                    continue
                ref = await ctx.start(key, "patch", lambda rid, n=name: set_service_version(
                    ctx.tools.services, n, dc, tally.version, rid))
            except OpsError as exc:
                if not isinstance(exc, PermanentOpsError):  # ctx.start settles only those
                    await ctx.settle(key, ok=False, detail={"error": str(exc)})
                problems[name] = f"patch not started: {exc}"
                break  # the batch has failed: start nothing more of it
            if ref is None:
                patched.append(name)  # done on an earlier attempt of this run
            else:
                started[name] = ref
        await _finish(ctx, started, patched, problems)
        ctx.check_abort()
        if problems or patched:
            reasons = problems or await _gate(ctx, patched, tally, gate_s, max_increase)
        else:
            reasons = {}  # the whole batch was on the version already: nothing to watch
    except RunAborted:
        await _finish(ctx, started, patched, problems)
        await _undo(ctx, tally, patched, f"{label} rolled back: run aborted mid-batch")
        for name, why in problems.items():
            tally.failed[name] = why
        raise
    if not reasons:
        tally.patched.extend(patched)
        if patched:
            ctx.highlight(f"{label} patched to {tally.version}: {', '.join(patched)}")
        return True
    why = "; ".join(f"{n}: {r}" if n != dc else r for n, r in reasons.items())
    tally.outcome, tally.reason = "failed", f"{label} failed its gate: {why}"
    ctx.highlight(tally.reason)
    await _undo(ctx, tally, patched, f"{label} rolled back")
    for name in batch:
        if name in reasons:
            tally.failed[name] = reasons[name]
        elif name in patched:
            tally.failed[name] = f"rolled back with its batch: {why}"
    return False


async def _finish(
    ctx: RunContext, started: dict[str, ActionRef], patched: list[str], problems: dict[str, str]
) -> None:
    """Wait for the batch's patches and settle them (moving each out of ``started``)."""
    if not started:
        return
    await wait(ctx.tools.clock, actions=list(started.values()))
    for name, ref in list(started.items()):
        status = await action_status(ctx.tools.clock, ref)
        ok = status.state == ActionState.done
        await ctx.settle(f"patch:{name}@{ctx.target_dc}", ok=ok,
                         detail={"action_id": ref.id, "error": status.error})
        del started[name]
        if ok:
            patched.append(name)
        else:
            problems[name] = f"patch failed: {status.error or status.state}"
    await ctx.tick()


async def _gate(
    ctx: RunContext, patched: list[str], tally: _Tally, gate_s: float, max_increase: float
) -> dict[str, str]:
    """Why the batch fails after ``gate_s`` of watching (service -> reason; the DC's name
    for the error rate), or nothing if it passes."""
    dc = ctx.target_dc
    await wait(ctx.tools.clock, for_s=gate_s)
    reasons: dict[str, str] = {}
    for name in patched:
        try:
            state = await service_state(ctx.tools.services, name, dc)
        except OpsError as exc:
            reasons[name] = f"cannot read its version: {exc}"
            continue
        if state.version != tally.version:
            reasons[name] = f"reports version {state.version}, not {tally.version}"
    reasons.update(await _unhealthy(ctx, [n for n in patched if n not in reasons]))
    rate = await _error_rate(ctx)
    if tally.baseline is not None and rate is not None and rate - tally.baseline > max_increase:
        reasons[dc] = (
            f"error rate in {dc} rose from {tally.baseline:.2%} to {rate:.2%} "
            f"(limit +{max_increase:.2%})"
        )
    await ctx.tick()
    return reasons


async def _unhealthy(ctx: RunContext, names: list[str]) -> dict[str, str]:
    """Services with no healthy instance per the health checker, asked again after a grace
    period while it still sees none (its probes lag); if no checker answers, per the
    service tool itself (the seed: the health checker burned with its DC)."""
    dc = ctx.target_dc
    pending = list(names)
    for attempt in range(HEALTH_CHECKS):
        if not pending:
            break
        view = await health_view(ctx.tools.health, dc)
        if view is None:
            await ctx.note_once("health-checker-unreachable", "no health checker answers: "
                             "gating the patch on the service tool's own view")
        still = []
        for name in pending:
            if view is not None:
                healthy = view.get(name, 0)
            else:
                try:
                    healthy = (await service_state(ctx.tools.services, name, dc)).healthy
                except OpsError:
                    healthy = 0  # nobody can vouch for it: not healthy as far as we know
            if healthy <= 0:
                still.append(name)
        pending = still
        if pending and attempt + 1 < HEALTH_CHECKS:
            await wait(ctx.tools.clock, for_s=HEALTH_GRACE_S)
    return {name: f"no healthy instance on the new version in {dc}" for name in pending}


async def _error_rate(ctx: RunContext) -> float | None:
    """The target DC's error rate now; None if no metrics replica answers. The gate then
    rests on health alone, said loudly: an unreadable gauge must not block an emergency fix
    that the canary's health still guards."""
    try:
        return (await scrape_metrics(ctx.tools.metrics, ctx.target_dc)).error_rate
    except OpsError:
        await ctx.note_once("metrics-unreachable", "no metrics replica answers: the patch "
                         "gate checks health only, not the error rate")
        return None


async def _undo(ctx: RunContext, tally: _Tally, names: list[str], why: str) -> None:
    """Roll ``names`` back to their previous version; a failed rollback is escalated."""
    if not names:
        return
    dc = ctx.target_dc
    ctx.plan_steps(len(names))
    started: dict[str, ActionRef] = {}
    for name in names:
        key = f"rollback:{name}@{dc}"
        try:
            ref = await ctx.start(
                key, "rollback",
                lambda rid, n=name: set_service_version(ctx.tools.services, n, dc, None, rid),
                abortable=False,  # an undo must go out even when (because) the run stops
            )
        except OpsError as exc:
            tally.failed[name] = f"rollback refused: {exc}"
            ctx.highlight(f"ESCALATE: {name} in {dc} stays on {tally.version}: {exc}")
            continue
        if ref is None:
            tally.rolled_back.append(name)
        else:
            started[name] = ref
    if started:
        await wait(ctx.tools.clock, actions=list(started.values()))
    for name, ref in started.items():
        status = await action_status(ctx.tools.clock, ref)
        ok = status.state == ActionState.done
        await ctx.settle(f"rollback:{name}@{dc}", ok=ok,
                         detail={"action_id": ref.id, "error": status.error},
                         note=f"{name} in {dc} rolled back from {tally.version} ({why})")
        if ok:
            tally.rolled_back.append(name)
        else:
            tally.failed[name] = f"rollback failed: {status.error}"
            ctx.highlight(f"ESCALATE: rollback of {name} in {dc} failed: {status.error}")
    if tally.rolled_back:
        ctx.highlight(f"{why}: {', '.join(n for n in names if n in tally.rolled_back)}")
    await ctx.tick()


async def _report(ctx: RunContext, tally: _Tally, names: Sequence[str]) -> None:
    """Highlights, the outcome and the summary artifact, also for a failed or aborted run."""
    dc = ctx.target_dc
    touched = {*tally.patched, *tally.rolled_back, *tally.failed, *tally.already}
    tally.not_started = [n for n in names if n not in touched]
    ctx.outcome = tally.outcome
    if tally.outcome == "patched":
        ctx.highlight(f"patched {len(tally.patched)} service(s) in {dc} to {tally.version}")
    elif tally.patched:
        ctx.highlight(f"kept on {tally.version} (passed their gates): {', '.join(tally.patched)}")
    if tally.not_started:
        ctx.highlight(f"never started: {', '.join(tally.not_started)}")
    await acreate_markdown_artifact(
        markdown=render("deploy_patch/summary.md.j2", dc=dc, **tally.summary(ctx)),
        key="deploy-patch-summary", description=f"Patch of {dc} to {tally.version}",
    )


@flow(name="deploy_patch", log_prints=False)
async def deploy_patch(params: PatchParams) -> dict[str, Any]:
    """Ship ``version`` to ``services`` in ``target_dc``: canary, gated batches, rollback."""
    async with open_run("deploy_patch", params) as ctx:
        return await run_patch(
            ctx, services=params.services, version=params.version, source_dc=params.source_dc,
            canary=params.canary, batch_size=params.batch_size, gate_s=params.gate_s,
            max_error_rate_increase=params.max_error_rate_increase,
            approval_timeout_s=params.approval_timeout_s,
        )
