"""Tiny runbooks that end the ways real ones can, for the real ``revive`` CLI.

``gate`` has its approval refused (as a rejected or timed-out gate does), ``aborted`` is asked
to stop, ``broken`` raises something unexpected. A real failover takes minutes to reach its
gate; these reach the same endings at once, through Prefect and revive's store.
``tests.cli.fake_cli`` runs the CLI with them.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run

from flows.approval import Approval, ApprovalRefused
from flows.context import RunAborted, RunbookParams, open_run


class FakeParams(RunbookParams):
    """Every runbook parameter; the estate comes from ``topology=``."""


@flow(name="gate")
async def gate(params: FakeParams) -> dict[str, Any]:
    """Waits at a gate nobody answers, as ``flows.approval`` does. On the timeout Prefect
    marks the run Failed itself ("never resumed"); the flow's own error says why."""
    async with open_run("gate", params) as ctx:
        return await _unanswered(ctx)


async def _unanswered(ctx: Any) -> dict[str, Any]:
    try:
        await pause_flow_run(wait_for_input=Approval, timeout=1, poll_interval=1)
    except FlowPauseTimeout:
        raise ApprovalRefused("traffic timed out (no answer within 1 s); nothing was changed "
                              "by the gated step", tool="approval", target=ctx.target_dc) from None
    return {"outcome": "approved?"}


@flow(name="aborted")
async def aborted(params: FakeParams) -> dict[str, Any]:
    """Shaped like the real runbooks: ``open_run`` ends the run as aborted and swallows the
    abort, so the flow returns nothing at all."""
    async with open_run("aborted", params) as ctx:
        return await _stopped(ctx)


async def _stopped(ctx: Any) -> dict[str, Any]:
    raise RunAborted(f"run {ctx.run.run_id} was asked to abort")


@flow(name="broken")
async def broken(params: FakeParams) -> dict[str, Any]:
    raise RuntimeError("the tool answered something nobody expected")
