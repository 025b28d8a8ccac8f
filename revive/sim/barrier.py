"""Shared virtual time for concurrent callers: the clock moves only when everyone waits.

Several runbook tasks drive one simulator at once, each over HTTP, each wanting to "wait
until the restart is done" or "sleep 30 s". If any of them could move the clock on its own,
the result would depend on which request the event loop happened to serve first, i.e. on
machine load. So the simulator owns the clock and a barrier decides when it moves:

* a participant ``join``s, then alternates between work (HTTP calls, which see a frozen
  clock) and ``wait`` (until a virtual time, until actions finish, until a predicate holds);
* the clock advances only when *every* joined participant is blocked in ``wait``; it then
  jumps to the earliest instant some waiter's condition holds, releases every waiter whose
  condition holds then (in join order) and leaves the others waiting.

Because a released participant is no longer waiting, time stays frozen until it waits again
or leaves: concurrency and wall-clock speed never change what happens at which virtual time.
Everything runs on one asyncio event loop; nothing here sleeps on the wall clock.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from revive.sim.clock import VirtualClock
from revive.sim.estate import BadRequest, Conflict, UnknownTarget

__all__ = ["DEFAULT_MAX_WAIT_S", "ClockBarrier"]

DEFAULT_MAX_WAIT_S = 86400.0


@dataclass
class _Wait:
    """One blocked ``wait`` call: a deadline, a goal and the future that releases it."""

    deadline: float
    goal: Callable[[], bool] | None
    future: asyncio.Future[float]

    def holds(self, now: float) -> bool:
        return now >= self.deadline or (self.goal is not None and self.goal())


@dataclass
class _Participant:
    pid: str
    waiting: _Wait | None = field(default=None)


class ClockBarrier:
    """Advances ``clock`` only when every joined participant waits (one event loop).

    ``finished(action_id)`` says whether an estate action is over (done or failed); it should
    raise ``UnknownTarget`` for an unknown id. Without it, waits on actions are refused.
    """

    def __init__(
        self,
        clock: VirtualClock,
        *,
        finished: Callable[[str], bool] | None = None,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        self.clock = clock
        self._finished = finished
        self.max_wait_s = max_wait_s
        self._participants: dict[str, _Participant] = {}  # insertion order = join order
        self._joined = 0

    @property
    def participants(self) -> list[str]:
        """Joined participant ids, in join order."""
        return list(self._participants)

    def join(self) -> str:
        """Register a participant; from now on the clock waits for it too."""
        self._joined += 1
        pid = f"p{self._joined}"
        self._participants[pid] = _Participant(pid)
        return pid

    def leave(self, pid: str) -> None:
        """Stop holding the clock; a wait in flight for ``pid`` ends at the current time."""
        participant = self._get(pid)
        del self._participants[pid]
        if participant.waiting is not None and not participant.waiting.future.done():
            participant.waiting.future.set_result(self.clock.now)
        self._maybe_advance()

    async def wait(
        self,
        pid: str | None,
        *,
        until: float | None = None,
        actions: list[str] | None = None,
        done: Callable[[], bool] | None = None,
        any_action: bool = False,
    ) -> float:
        """Block until virtual time reaches ``until`` or the goal holds; return the time then.

        The goal is that every listed action has finished (with ``any_action``: at least one,
        so a runbook can wait for "the next of my restarts to end") and ``done()`` (if given)
        is true.
        Any wait ends after at most ``max_wait_s`` virtual seconds (so a wait on an action
        that can never finish cannot hang, nor can a huge ``until`` spin the clock). A
        condition that already holds returns at once without moving the clock. ``pid=None``
        joins for the duration of this call.
        """
        goal = self._goal(actions, done, any_action=any_action)
        if until is None and goal is None:
            raise BadRequest("wait needs until, actions or done")
        if until is not None and math.isnan(until):
            raise BadRequest("until must be a number, got NaN")
        cap = self.clock.now + self.max_wait_s
        deadline = cap if until is None else min(until, cap)
        if pid is None:
            pid = self.join()
            try:
                return await self._wait(pid, deadline, goal)
            finally:
                if pid in self._participants:
                    self.leave(pid)
        return await self._wait(pid, deadline, goal)

    # --- internals --------------------------------------------------------------------------

    def _get(self, pid: str) -> _Participant:
        if pid not in self._participants:
            raise UnknownTarget(f"unknown clock participant {pid!r} (join first)")
        return self._participants[pid]

    def _goal(
        self,
        actions: list[str] | None,
        done: Callable[[], bool] | None,
        *,
        any_action: bool = False,
    ) -> Callable[[], bool] | None:
        """The goal predicate; checks every action id now, so a typo fails before waiting."""
        ids = list(actions or [])
        finished = self._finished
        if ids:
            if finished is None:
                raise BadRequest("this clock barrier cannot wait on actions")
            for action_id in ids:
                finished(action_id)  # raises UnknownTarget for an unknown id
        if not ids and done is None:
            return None

        combine = any if any_action and ids else all

        def goal() -> bool:
            ok = finished is None or combine(finished(a) for a in ids)
            return ok and (done is None or done())

        return goal

    async def _wait(self, pid: str, deadline: float, goal: Callable[[], bool] | None) -> float:
        participant = self._get(pid)
        if participant.waiting is not None:
            raise Conflict(f"participant {pid!r} is already waiting")
        wait = _Wait(deadline, goal, asyncio.get_running_loop().create_future())
        if wait.holds(self.clock.now):
            return self.clock.now
        participant.waiting = wait
        try:
            self._maybe_advance()
            return await wait.future
        finally:
            if participant.waiting is wait:  # cancelled, or advancing failed
                participant.waiting = None

    def _maybe_advance(self) -> None:
        """If every participant waits, move to the first release and release (join order)."""
        waits = [p.waiting for p in self._participants.values()]
        if not waits or any(w is None for w in waits):
            return
        blocked = [w for w in waits if w is not None]
        clock = self.clock
        limit = max(clock.now, min(w.deadline for w in blocked))
        goals = [w.goal for w in blocked if w.goal is not None]
        try:
            clock.advance_until(lambda: any(g() for g in goals), limit=limit)
        except Exception as exc:  # a clock callback failed: every waiter hears of it
            for participant in self._participants.values():
                if participant.waiting is not None and not participant.waiting.future.done():
                    participant.waiting.future.set_exception(exc)
                participant.waiting = None
            return
        now = clock.now
        for participant in self._participants.values():
            wait = participant.waiting
            if wait is not None and wait.holds(now):
                participant.waiting = None
                if not wait.future.done():
                    wait.future.set_result(now)
