"""Tasks on the clock: wait for actions or time, read an action's status."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task

from revive.ops.interfaces import Clock
from revive.ops.models import ActionRef, ActionStatus
from tasks.options import OPS


@task(name="wait", **OPS)
async def wait(
    clock: Clock,
    for_s: float | None = None,
    actions: Sequence[ActionRef] = (),
    any_action: bool = False,
) -> float:
    """Wait on the run's clock (virtual against the simulator); returns the time after."""
    return await clock.wait(for_s=for_s, actions=list(actions), any_action=any_action)


@task(name="action_status", task_run_name="status {ref.kind} {ref.target}", **OPS)
async def action_status(clock: Clock, ref: ActionRef) -> ActionStatus:
    return await clock.status(ref)
