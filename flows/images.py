"""Images in the registry's per-DC replicas: find where one is, copy it where it is needed.

Shared by the runbooks that put software into a DC: ``deploy_patch`` and the failover's
emergency deployments.
"""

from __future__ import annotations

from collections.abc import Sequence

from flows.context import RunContext
from revive.errors import OpsError
from revive.ops.models import ActionRef, ActionState
from tasks.clock import action_status, wait
from tasks.registry import artifact_present, copy_artifact


async def find_images(
    ctx: RunContext, names: Sequence[str], version: str, source_dc: str | None
) -> tuple[dict[str, str], dict[str, str]]:
    """Where to copy each missing image from, and why the others cannot be had at all.

    Only reads registries, so a dry run can show it. A replica that does not answer is
    skipped like one without the image: its DC may be the one that burned.
    """
    dc = ctx.target_dc
    candidates = [source_dc] if source_dc else [d for d in ctx.topology.dc_names if d != dc]
    sources: dict[str, str] = {}
    missing: dict[str, str] = {}
    for name in names:
        if ctx.is_done(copy_key(name, version, dc)):
            continue
        try:
            if await artifact_present(ctx.tools.registry, name, version, dc):
                continue
        except OpsError as exc:
            missing[name] = f"{dc}'s registry does not answer: {exc}"
            continue
        looked = []
        for src in candidates:
            try:
                if await artifact_present(ctx.tools.registry, name, version, src):
                    sources[name] = src
                    break
                looked.append(f"not in {src}")
            except OpsError:
                looked.append(f"{src} unreachable")
        else:
            missing[name] = f"not in {dc}; " + ", ".join(looked or ["no other registry"])
    return sources, missing


def copy_key(name: str, version: str, dc: str) -> str:
    return f"copy:{name}:{version}@{dc}"


async def copy_images(
    ctx: RunContext, sources: dict[str, str], version: str
) -> tuple[list[str], dict[str, str]]:
    """Copy each image from its source replica into the target DC's; (copied, why failed).

    Each copy is a step of the run (resumable, at most once); callers decide whether one
    failed copy stops everything (a patch) or only the component it was for (a failover).
    """
    dc = ctx.target_dc
    started: dict[str, ActionRef] = {}
    errors: dict[str, str] = {}
    for name, src in sources.items():
        try:
            ref = await ctx.start(copy_key(name, version, dc), "copy_artifact",
                                  lambda rid, n=name, s=src: copy_artifact(
                                      ctx.tools.registry, n, version, s, dc, rid))
        except OpsError as exc:
            errors[name] = str(exc)
            continue
        if ref is not None:
            started[name] = ref
    if started:
        await wait(ctx.tools.clock, actions=list(started.values()))
    copied = []
    for name, ref in started.items():
        status = await action_status(ctx.tools.clock, ref)
        ok = status.state == ActionState.done
        await ctx.settle(copy_key(name, version, dc), ok=ok,
                         detail={"action_id": ref.id, "from": sources[name], "error": status.error},
                         note=f"copied {name}:{version} from {sources[name]} to {dc}")
        if ok:
            copied.append(name)
        else:
            errors[name] = str(status.error or status.state)
    if copied:
        ctx.highlight(f"copied {', '.join(copied)}:{version} into {dc}'s registry")
    return copied, errors
