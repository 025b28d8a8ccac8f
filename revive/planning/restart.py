"""The restart plan: which service restarts when, in one DC.

A service starts only after every hard dependency inside the plan has finished restarting
(dependencies outside the plan are assumed healthy and listed). Among ready services the
lower tier goes first, so a tier-0 service never waits behind a tier-3 one; ties go to the
service with the longest chain of work behind it, which shortens the makespan. At most
``max_parallel`` restarts run at once: the cap protects the boot-time ops tools (secret
store, discovery, config store) that every starting service hammers.

This is list scheduling on the dependency DAG. Its makespan can never beat
``max(critical path, total work / max_parallel)``; the plan reports that bound beside the
makespan so people can see how much the cap costs.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from pydantic import BaseModel

from revive.errors import PlanningError
from revive.planning.scope import check_dc, check_groups
from revive.topology import Topology

DEFAULT_MAX_PARALLEL = 8


class RestartStep(BaseModel):
    service: str
    group: str
    tier: int
    start_s: float
    end_s: float


class RestartPlan(BaseModel):
    dc: str
    max_parallel: int
    groups: list[str]
    steps: list[RestartStep]
    makespan_s: float
    critical_path_s: float
    critical_path: list[str]
    lower_bound_s: float
    assumed_healthy: list[str]
    """Hard dependencies outside the plan (other groups or DCs) taken to be up already."""


def plan_restart(
    topology: Topology,
    dc: str,
    *,
    groups: Iterable[str] | None = None,
    max_parallel: int = DEFAULT_MAX_PARALLEL,
) -> RestartPlan:
    """Plan the restart of ``groups`` (default: every group with instances) in ``dc``."""
    check_dc(topology, dc)
    if max_parallel < 1:
        raise PlanningError(f"max_parallel must be at least 1, got {max_parallel}")
    chosen = check_groups(topology, dc, groups)
    wanted = set(chosen)
    services = [s for s in topology.services if s.group in wanted and s.runs_in(dc)]
    n = len(services)
    index = {s.name: i for i, s in enumerate(services)}
    duration = [float(s.restart_seconds) for s in services]
    tier = [s.tier for s in services]

    dependents: list[list[int]] = [[] for _ in range(n)]
    waiting_on = [0] * n
    outside: set[str] = set()
    for i, svc in enumerate(services):
        for dep in dict.fromkeys(svc.hard_dependencies):
            j = index.get(dep)
            if j is None:
                outside.add(dep)
            else:
                dependents[j].append(i)
                waiting_on[i] += 1

    order = _topological_order(dependents, waiting_on)
    tail = [0.0] * n  # longest chain of restart time from a service's start to the end
    for i in reversed(order):
        tail[i] = duration[i] + max((tail[k] for k in dependents[i]), default=0.0)

    start, end = _schedule(dependents, waiting_on, duration, tier, tail, services, max_parallel)

    critical = _critical_path(tail, dependents, waiting_on)
    critical_s = tail[critical[0]] if critical else 0.0
    makespan = max(end, default=0.0)
    steps = [
        RestartStep(
            service=services[i].name,
            group=services[i].group,
            tier=tier[i],
            start_s=start[i],
            end_s=end[i],
        )
        for i in sorted(range(n), key=lambda i: (start[i], tier[i], services[i].name))
    ]
    return RestartPlan(
        dc=dc,
        max_parallel=max_parallel,
        groups=chosen,
        steps=steps,
        makespan_s=makespan,
        critical_path_s=critical_s,
        critical_path=[services[i].name for i in critical],
        lower_bound_s=max(critical_s, sum(duration) / max_parallel),
        assumed_healthy=sorted(outside),
    )


def _topological_order(dependents: list[list[int]], waiting_on: list[int]) -> list[int]:
    remaining = list(waiting_on)
    order = [i for i, w in enumerate(remaining) if w == 0]
    for i in order:  # the list grows while we walk it
        for k in dependents[i]:
            remaining[k] -= 1
            if remaining[k] == 0:
                order.append(k)
    if len(order) != len(remaining):
        # A validated topology has no hard cycle; this guards hand-built ones.
        raise PlanningError("hard dependencies form a cycle; run `revive check` for details")
    return order


def _schedule(
    dependents: list[list[int]],
    waiting_on: list[int],
    duration: list[float],
    tier: list[int],
    tail: list[float],
    services: list,
    max_parallel: int,
) -> tuple[list[float], list[float]]:
    """Event-driven list scheduling; returns each service's start and end time."""
    n = len(duration)
    remaining = list(waiting_on)
    start = [0.0] * n
    end = [0.0] * n

    def key(i: int) -> tuple[int, float, str]:
        return (tier[i], -tail[i], services[i].name)

    ready = [(key(i), i) for i in range(n) if remaining[i] == 0]
    heapq.heapify(ready)
    running: list[tuple[float, int]] = []
    now = 0.0
    while ready or running:
        while ready and len(running) < max_parallel:
            _, i = heapq.heappop(ready)
            start[i] = now
            end[i] = now + duration[i]
            heapq.heappush(running, (end[i], i))
        now = running[0][0]
        while running and running[0][0] == now:
            _, i = heapq.heappop(running)
            for k in dependents[i]:
                remaining[k] -= 1
                if remaining[k] == 0:
                    heapq.heappush(ready, (key(k), k))
    return start, end


def _critical_path(
    tail: list[float], dependents: list[list[int]], waiting_on: list[int]
) -> list[int]:
    """The longest chain of restarts: start at the heaviest root, follow the heaviest tail."""
    roots = [i for i, w in enumerate(waiting_on) if w == 0]
    if not roots:
        return []
    node = max(roots, key=lambda i: tail[i])
    path = [node]
    while dependents[node]:
        node = max(dependents[node], key=lambda k: tail[k])
        path.append(node)
    return path
