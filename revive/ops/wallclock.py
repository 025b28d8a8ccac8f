"""Real time for runs against real tools: waits poll each action's own tool, with backoff.

The simulator's clock is virtual; against real tools the runbook still never sleeps on its
own: it waits on actions (a rollout done, a process RUNNING, a copy finished), and this clock
asks the adapter that started each action how it is doing, backing off between polls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from revive.errors import NotFoundError
from revive.ops.models import ActionRef, ActionStatus


@runtime_checkable
class ActionSource(Protocol):
    """An adapter that starts long-running actions and can say how each is doing."""

    async def action_status(self, ref: ActionRef) -> ActionStatus: ...


class WallClock:
    """The ``Clock`` of a run against real tools: seconds since the epoch, polled actions."""

    def __init__(
        self,
        sources: Mapping[str, object],
        *,
        fallback: object | None = None,
        first_poll_s: float = 0.2,
        max_poll_s: float = 2.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._sources = {n: s for n, s in sources.items() if isinstance(s, ActionSource)}
        self._fallback = fallback
        self._first, self._max = first_poll_s, max_poll_s
        self._sleep, self._now = sleep, now

    async def now(self) -> float:
        return self._now()

    async def status(self, ref: ActionRef) -> ActionStatus:
        source = self._sources.get(ref.tool)
        if source is not None:
            return await source.action_status(ref)
        if self._fallback is not None and not ref.tool:
            return await self._fallback.status(ref)  # type: ignore[attr-defined]
        raise NotFoundError(f"no adapter can tell how action {ref.id} ({ref.kind} "
                            f"{ref.target}) is doing: tool {ref.tool or '?'} is not in this run",
                            tool=ref.tool, target=ref.target)

    async def wait(
        self,
        *,
        for_s: float | None = None,
        actions: Sequence[ActionRef] = (),
        any_action: bool = False,
    ) -> float:
        start = self._now()
        deadline = None if for_s is None else start + max(0.0, for_s)
        pending = list(actions)
        poll = self._first
        if not pending and deadline is None:
            return start
        while True:
            if pending:
                statuses = [await self.status(ref) for ref in pending]
                finished = [s.ref for s in statuses if s.finished]
                if finished and (any_action or len(finished) == len(pending)):
                    return self._now()
                pending = [ref for ref in pending if ref not in finished]
            now = self._now()
            if deadline is not None and now >= deadline:
                return now
            step = poll if pending else float("inf")
            if deadline is not None:
                step = min(step, deadline - now)
            await self._sleep(step)
            poll = min(self._max, poll * 1.5)

    async def aclose(self) -> None:
        """Nothing to close: each adapter closes its own connections."""
