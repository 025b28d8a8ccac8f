"""The one scheduler: steps that wait for other steps, started in priority order under caps.

Every plan and runbook that orders work uses it: the restart plan, the restart runbook, the
failover's recovery graph and the benchmarks. A step may start once every step it waits
for (``after``) is done; among the steps that may start, the smallest ``priority`` goes
first; steps that share a ``pool`` run at most ``pools[pool]`` at once (the cap that
protects the boot-time ops tools). A step whose pre-condition failed or was blocked is
blocked in turn, with the reason, and independent branches go on.

``Scheduler`` is driven by whoever executes the steps (it only answers "what may start
now" and is told what started and how it ended); ``rehearse`` drives it in virtual time
with each step's estimate, which is the plan. Pure: no I/O, no Prefect, no clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from revive.errors import PlanningError


class Step(BaseModel):
    """One unit of work in a graph; ``key`` is unique and says what it does."""

    model_config = ConfigDict(frozen=True)

    key: str
    action: str
    target: str = ""
    after: tuple[str, ...] = ()
    after_end: tuple[str, ...] = ()
    """Steps this one waits for to end, however they end (their failure does not block it)."""
    priority: tuple[float | int | str, ...] = ()
    estimate_s: float = 0.0
    pool: str | None = None


class StepState(StrEnum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"
    blocked = "blocked"


FINISHED = (StepState.done, StepState.failed, StepState.blocked)


class Scheduler:
    """The state of a graph's steps and the rule for what may start next."""

    def __init__(self, steps: Iterable[Step], pools: Mapping[str, int] | None = None) -> None:
        self.steps: dict[str, Step] = {}
        for step in steps:
            if step.key in self.steps:
                raise PlanningError(f"step {step.key!r} appears twice")
            self.steps[step.key] = step
        self.pools = dict(pools or {})
        for step in self.steps.values():
            missing = [k for k in (*step.after, *step.after_end) if k not in self.steps]
            if missing:
                raise PlanningError(f"step {step.key!r} waits for unknown {', '.join(missing)}")
            if step.pool is not None and self.pools.get(step.pool, 1) < 1:
                raise PlanningError(f"pool {step.pool!r} must allow at least one step")
        self.dependents: dict[str, list[str]] = {k: [] for k in self.steps}
        for step in self.steps.values():
            for dep in _waits_for(step):
                self.dependents[dep].append(step.key)
        self.order = topological_order(self.steps)
        self.state: dict[str, StepState] = dict.fromkeys(self.steps, StepState.pending)
        self.why: dict[str, str] = {}
        self._waiting = {k: len(_waits_for(s)) for k, s in self.steps.items()}
        # One heap of startable steps per pool; entries of steps that started or were
        # blocked are dropped lazily when they come to the top.
        self._ready: dict[str | None, list[tuple[tuple, str]]] = {}
        for key in self.steps:
            if not self._waiting[key]:
                self._push(key)
        self._busy: dict[str, int] = {}

    # --- what may start ----------------------------------------------------------------

    def ready(self) -> list[Step]:
        """Every step that may start now, in the order to start them (caps respected as if
        all of them started)."""
        out: list[tuple[tuple, str]] = []
        for pool, heap in self._ready.items():
            room = len(heap) if pool is None else self.pools.get(pool, 1) - self._busy.get(pool, 0)
            taken: list[tuple[tuple, str]] = []
            while heap and len(taken) < room:
                entry = heapq.heappop(heap)
                if self.state[entry[1]] == StepState.pending:
                    taken.append(entry)
            for entry in taken:
                heapq.heappush(heap, entry)
            out.extend(taken)
        return [self.steps[key] for _, key in sorted(out)]

    def start(self, key: str) -> None:
        self._need(key, StepState.pending)
        if self._waiting[key]:
            raise PlanningError(f"step {key!r} cannot start: it waits for "
                                + ", ".join(k for k in _waits_for(self.steps[key])
                                            if self.state[k] not in FINISHED))
        pool = self.steps[key].pool
        if pool is not None and self._busy.get(pool, 0) >= self.pools.get(pool, 1):
            raise PlanningError(f"step {key!r} cannot start: pool {pool!r} is full")
        if pool is not None:
            self._busy[pool] = self._busy.get(pool, 0) + 1
        self.state[key] = StepState.running

    def finish(self, key: str, *, ok: bool, why: str = "") -> list[str]:
        """Record how a running step ended; returns the steps this blocked."""
        self._need(key, StepState.running)
        pool = self.steps[key].pool
        if pool is not None:
            self._busy[pool] -= 1
        if not ok:
            self.state[key] = StepState.failed
            self.why[key] = why or "failed"
            return self._block_after(key)
        self.state[key] = StepState.done
        self._release(self.dependents[key])
        return []

    def skip(self, key: str) -> None:
        """A step found already done (a resumed run): done without running.

        It takes no slot of its pool: nothing runs, so a full pool must not refuse it (a
        resumed run skips its done steps while other restarts are in flight)."""
        self._need(key, StepState.pending)
        if self._waiting[key]:
            raise PlanningError(f"step {key!r} cannot be skipped: it waits for "
                                + ", ".join(k for k in _waits_for(self.steps[key])
                                            if self.state[k] not in FINISHED))
        self.state[key] = StepState.done  # not via finish(): it never held a slot to free
        self._release(self.dependents[key])

    @property
    def finished(self) -> bool:
        return all(s in FINISHED for s in self.state.values())

    def of(self, state: StepState) -> list[str]:
        return [k for k in self.order if self.state[k] == state]

    # --- machinery ---------------------------------------------------------------------

    def _need(self, key: str, state: StepState) -> None:
        if key not in self.steps:
            raise PlanningError(f"unknown step {key!r}")
        if self.state[key] != state:
            raise PlanningError(f"step {key!r} is {self.state[key]}, not {state}")

    def _release(self, keys: Iterable[str]) -> None:
        for k in keys:
            self._waiting[k] -= 1
            if self._waiting[k] == 0 and self.state[k] == StepState.pending:
                self._push(k)

    def _push(self, key: str) -> None:
        step = self.steps[key]
        heapq.heappush(self._ready.setdefault(step.pool, []), (step.priority, key))

    def _block_after(self, key: str) -> list[str]:
        blocked: list[str] = []
        todo = [(key, k) for k in self.dependents[key]]
        while todo:
            cause, k = todo.pop()
            if self.state[k] != StepState.pending:
                continue
            if cause not in self.steps[k].after:  # it only waits for the cause to end
                self._release([k])
                continue
            self.state[k] = StepState.blocked
            self.why[k] = f"waits on {cause}"
            blocked.append(k)
            todo.extend((k, d) for d in self.dependents[k])
        return blocked


def _dependents(steps: Mapping[str, Step]) -> dict[str, list[str]]:
    """Per key, the steps that wait for it; a wait on an unknown key is a PlanningError
    (not a KeyError) so that hand-built graphs get the same message as the Scheduler's."""
    dependents: dict[str, list[str]] = {k: [] for k in steps}
    for s in steps.values():
        for dep in _waits_for(s):
            if dep not in dependents:
                raise PlanningError(f"step {s.key!r} waits for unknown {dep}")
            dependents[dep].append(s.key)
    return dependents


def _waits_for(step: Step) -> list[str]:
    """Every step this one waits for, each once."""
    return list(dict.fromkeys((*step.after, *step.after_end)))


def topological_order(steps: Mapping[str, Step]) -> list[str]:
    """Keys with every step after the ones it waits for; a cycle is a PlanningError."""
    dependents = _dependents(steps)
    waiting = {k: len(_waits_for(s)) for k, s in steps.items()}
    order = [k for k, n in waiting.items() if n == 0]
    for key in order:  # the list grows while we walk it
        for k in dependents[key]:
            waiting[k] -= 1
            if waiting[k] == 0:
                order.append(k)
    if len(order) != len(steps):
        stuck = sorted(k for k, n in waiting.items() if n > 0)
        raise PlanningError("steps wait for each other in a cycle: " + ", ".join(stuck[:8]))
    return order


def longest_tail(steps: Mapping[str, Step]) -> dict[str, float]:
    """Per step, the longest chain of estimated work from its start to the end of the graph
    (itself included): how much waits behind it."""
    dependents = _dependents(steps)
    tail: dict[str, float] = {}
    for key in reversed(topological_order(steps)):
        tail[key] = steps[key].estimate_s + max((tail[k] for k in dependents[key]), default=0.0)
    return tail


def upstream(steps: Mapping[str, Step], keys: Iterable[str]) -> set[str]:
    """``keys`` and every step they (transitively) wait for: what must be done before all
    of ``keys`` can be, which is the work a bound on their completion counts."""
    seen: set[str] = set()
    todo = list(keys)
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        if key not in steps:
            raise PlanningError(f"unknown step {key!r}")
        seen.add(key)
        todo.extend(_waits_for(steps[key]))
    return seen


class Timing(BaseModel):
    """When a step starts and ends in a rehearsal, in seconds from the graph's start."""

    model_config = ConfigDict(frozen=True)

    start_s: float
    end_s: float


def rehearse(
    steps: Iterable[Step],
    pools: Mapping[str, int] | None = None,
    durations: Mapping[str, float] | None = None,
) -> dict[str, Timing]:
    """Run the scheduler in virtual time: each step lasts its ``durations`` entry (default
    its estimate); at every moment, start what may start, then jump to the next end."""
    scheduler = Scheduler(steps, pools)
    lasts = {k: (durations or {}).get(k, s.estimate_s) for k, s in scheduler.steps.items()}
    timings: dict[str, Timing] = {}
    running: list[tuple[float, str]] = []
    now = 0.0
    while True:
        for step in scheduler.ready():
            scheduler.start(step.key)
            heapq.heappush(running, (now + lasts[step.key], step.key))
            timings[step.key] = Timing(start_s=now, end_s=now + lasts[step.key])
        if not running:
            if not scheduler.finished:  # cannot happen on a checked DAG; never loop forever
                raise PlanningError("rehearsal stuck: " + ", ".join(
                    scheduler.of(StepState.pending)[:8]))
            break
        now = running[0][0]
        while running and running[0][0] == now:
            _, key = heapq.heappop(running)
            scheduler.finish(key, ok=True)
    return timings
