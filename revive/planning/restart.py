"""The restart plan: which service restarts when, in one DC.

A service starts only after every hard dependency inside the plan has finished restarting
(dependencies outside the plan are assumed healthy and listed). Among ready services the
lower *effective* tier goes first: a service's effective tier is the lowest tier among
itself and every service that (transitively) hard-depends on it, across the whole topology.
A tier-2 link preview that a tier-0 messenger cannot boot without is, for the restart,
tier-0 work; ordering by the service's own tier would leave the messenger down while
unrelated tier-1 services take the slots. Ties go to the service with the longest chain of
work behind it, then the name. At most ``max_parallel`` restarts run at once: the cap
protects the boot-time ops tools (secret store, discovery, config store) that every
starting service hammers.

The plan is not scheduled here: each service becomes a ``Step`` of the one scheduler,
``revive.planning.graph``, and the timings are its ``rehearse``. The restart runbook, the
failover's recovery graph and the benchmarks run the very same steps (``restart_steps``).

The objective is each tier's completion in turn, not the makespan of the whole plan. Tier
T is complete when every planned service of tier <= T has restarted; no schedule can
complete it before ``max(critical path, work / max_parallel)`` of its closure (those
services and everything they hard-depend on inside the plan). The plan reports both per
tier (``RestartPlan.tier_rto_s`` / ``tier_bound_s``), and keeps reporting the whole plan's
makespan beside ``max(critical path, total work / max_parallel)`` for information.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel, PrivateAttr

from revive.errors import PlanningError
from revive.planning.graph import Step, Timing, longest_tail, rehearse, upstream
from revive.planning.scope import check_dc, check_groups
from revive.topology import Topology
from revive.topology.models import Service

DEFAULT_MAX_PARALLEL = 8
POOL = "restart"
"""The pool every restart step is in: its cap is ``max_parallel``."""


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

    # Kept out of the JSON (whose shape is a contract): the hard dependencies inside the
    # plan and the effective tiers, which the per-tier figures need.
    _waits_on: dict[str, tuple[str, ...]] = PrivateAttr(default_factory=dict)
    _effective: dict[str, int] = PrivateAttr(default_factory=dict)

    def effective_tier(self, service: str) -> int:
        """The tier ``service`` was ordered by (its own when the plan was not computed)."""
        own = {s.service: s.tier for s in self.steps}
        if service not in own:
            raise PlanningError(f"{service!r} is not in the plan")
        return self._effective.get(service, own[service])

    @property
    def tier_rto_s(self) -> dict[int, float]:
        """Per tier T in the plan, when every planned service of tier <= T is up."""
        return tier_completion({s.service: (s.start_s, s.end_s) for s in self.steps},
                               {s.service: s.tier for s in self.steps})

    @property
    def tier_bound_s(self) -> dict[int, float]:
        """Per tier, the completion no schedule can beat (see ``tier_bounds``)."""
        return tier_bounds(
            {s.service: s.end_s - s.start_s for s in self.steps},
            {s.service: s.tier for s in self.steps},
            self._waits_on,
            self.max_parallel,
        )


# --- effective tiers -------------------------------------------------------------------


def effective_tiers(topology: Topology) -> dict[str, int]:
    """Per service, the lowest tier among itself and every service that (transitively)
    hard-depends on it, across the whole topology (all groups, all DCs)."""
    names = {s.name for s in topology.services}
    deps = {
        s.name: [d for d in dict.fromkeys(s.hard_dependencies) if d in names]
        for s in topology.services
    }
    users: dict[str, int] = dict.fromkeys(names, 0)  # how many services depend on each
    for ds in deps.values():
        for d in ds:
            users[d] += 1
    effective = {s.name: s.tier for s in topology.services}
    # Walk from the services nothing depends on down to their dependencies, so a service's
    # tier is final before it is handed on.
    order = [s.name for s in topology.services if users[s.name] == 0]
    for name in order:  # the list grows while we walk it
        for d in deps[name]:
            effective[d] = min(effective[d], effective[name])
            users[d] -= 1
            if users[d] == 0:
                order.append(d)
    if len(order) != len(names):
        # A validated topology has no hard cycle; this guards hand-built ones.
        raise PlanningError("hard dependencies form a cycle; run `revive check` for details")
    return effective


# --- the steps -------------------------------------------------------------------------


def step_key(service: str, dc: str) -> str:
    """The run-step key of a service's restart; resumed runs find done steps by it."""
    return f"restart:{service}@{dc}"


def service_of(step: Step) -> str:
    """The service a restart step restarts (its target is ``<service>@<dc>``)."""
    return step.target.rsplit("@", 1)[0]


def _scope(
    topology: Topology,
    dc: str,
    groups: Iterable[str] | None,
    services: Iterable[str] | None,
    max_parallel: int,
) -> tuple[list[str], list[Service]]:
    """The chosen groups and the services to restart, in topology order, checked."""
    check_dc(topology, dc)
    if max_parallel < 1:
        raise PlanningError(f"max_parallel must be at least 1, got {max_parallel}")
    chosen = check_groups(topology, dc, groups)
    wanted = set(chosen)
    only = None if services is None else set(services)
    return chosen, [
        s for s in topology.services
        if s.group in wanted and s.runs_in(dc) and (only is None or s.name in only)
    ]


def _steps(
    topology: Topology, dc: str, services: list[Service]
) -> tuple[list[Step], set[str], dict[str, int]]:
    """The restart steps of ``services``, the hard dependencies left outside, and the
    effective tier of each service."""
    inside = {s.name for s in services}
    outside: set[str] = set()
    bare: dict[str, Step] = {}
    for svc in services:
        deps = list(dict.fromkeys(svc.hard_dependencies))
        outside.update(d for d in deps if d not in inside)
        bare[svc.name] = Step(
            key=step_key(svc.name, dc),
            action="restart",
            target=f"{svc.name}@{dc}",
            after=tuple(step_key(d, dc) for d in deps if d in inside),
            estimate_s=float(svc.restart_seconds),
            pool=POOL,
        )
    tail = longest_tail({s.key: s for s in bare.values()})
    everywhere = effective_tiers(topology)
    effective = {name: everywhere[name] for name in bare}
    steps = [
        step.model_copy(update={"priority": (effective[name], -tail[step.key], name)})
        for name, step in bare.items()
    ]
    return steps, outside, effective


def restart_steps(
    topology: Topology,
    dc: str,
    services: Iterable[str] | None = None,
    *,
    groups: Iterable[str] | None = None,
    max_parallel: int = DEFAULT_MAX_PARALLEL,
) -> tuple[list[Step], dict[str, int]]:
    """The restart plan as graph steps and their pool caps, for whoever runs them (the
    runbook, the failover's recovery graph, the benchmarks): one step per service of
    ``groups`` (default: every group with instances in ``dc``) running in ``dc``, or only
    of ``services`` when given (their dependencies outside are assumed healthy)."""
    _, chosen = _scope(topology, dc, groups, services, max_parallel)
    steps, _, _ = _steps(topology, dc, chosen)
    return steps, {POOL: max_parallel}


def plan_restart(
    topology: Topology,
    dc: str,
    *,
    groups: Iterable[str] | None = None,
    max_parallel: int = DEFAULT_MAX_PARALLEL,
) -> RestartPlan:
    """Plan the restart of ``groups`` (default: every group with instances) in ``dc``."""
    chosen, services = _scope(topology, dc, groups, None, max_parallel)
    steps, outside, effective = _steps(topology, dc, services)
    by_key = {s.key: s for s in steps}
    timings = rehearse(steps, {POOL: max_parallel})
    tail = longest_tail(by_key)
    critical = _critical_path(by_key, tail)
    critical_s = tail[critical[0]] if critical else 0.0
    tier = {s.name: s.tier for s in services}
    ordered = sorted(steps, key=lambda s: (timings[s.key].start_s, s.priority))
    plan = RestartPlan(
        dc=dc,
        max_parallel=max_parallel,
        groups=chosen,
        steps=[
            RestartStep(
                service=service_of(s),
                group=topology.service(service_of(s)).group,
                tier=tier[service_of(s)],
                start_s=timings[s.key].start_s,
                end_s=timings[s.key].end_s,
            )
            for s in ordered
        ],
        makespan_s=max((t.end_s for t in timings.values()), default=0.0),
        critical_path_s=critical_s,
        critical_path=[service_of(by_key[k]) for k in critical],
        lower_bound_s=_bound([s.estimate_s for s in steps], critical_s, max_parallel),
        assumed_healthy=sorted(outside),
    )
    plan._waits_on = {
        service_of(s): tuple(service_of(by_key[k]) for k in s.after) for s in steps
    }
    plan._effective = effective
    return plan


# --- per-tier completion and bounds ----------------------------------------------------


def tier_completion(
    spans: Mapping[str, Timing | tuple[float, float]], tier: Mapping[str, int]
) -> dict[int, float]:
    """Per tier T among ``tier``'s values, when every service of tier <= T has ended
    (``spans``: service -> its (start, end) or ``Timing``), in ascending tier order."""
    ends = {n: s.end_s if isinstance(s, Timing) else s[1] for n, s in spans.items()}
    out: dict[int, float] = {}
    done = 0.0
    for t in sorted(set(tier.values())):
        done = max([done, *(ends[n] for n, nt in tier.items() if nt == t)])
        out[t] = done
    return out


def tier_bounds(
    durations: Mapping[str, float],
    tier: Mapping[str, int],
    waits_on: Mapping[str, Iterable[str]],
    max_parallel: int,
) -> dict[int, float]:
    """Per tier T, ``max(critical path, work / max_parallel)`` of T's closure: the services
    of tier <= T and everything they (transitively) hard-depend on inside the plan.

    ``durations``/``tier``/``waits_on`` are per service (``waits_on``: its hard dependencies
    inside the plan). Every service of the closure must have ended before tier T is complete,
    so no schedule under the cap completes T sooner."""
    steps = {
        name: Step(key=name, action="restart", after=tuple(waits_on.get(name, ())),
                   estimate_s=d)
        for name, d in durations.items()
    }
    out: dict[int, float] = {}
    for t in sorted(set(tier.values())):
        closure = upstream(steps, [n for n, nt in tier.items() if nt <= t])
        part = {k: steps[k] for k in closure}
        critical = max(longest_tail(part).values(), default=0.0)
        out[t] = _bound([part[k].estimate_s for k in closure], critical, max_parallel)
    return out


def _bound(work: list[float], critical_s: float, max_parallel: int) -> float:
    return max(critical_s, sum(work) / max_parallel)


def _critical_path(steps: Mapping[str, Step], tail: Mapping[str, float]) -> list[str]:
    """The longest chain of restarts: start at the heaviest root, follow the heaviest tail
    (the first one in plan order on a tie)."""
    dependents: dict[str, list[str]] = {k: [] for k in steps}
    for step in steps.values():
        for dep in step.after:
            dependents[dep].append(step.key)
    roots = [k for k, s in steps.items() if not s.after]
    if not roots:
        return []
    node = max(roots, key=lambda k: tail[k])
    path = [node]
    while dependents[node]:
        node = max(dependents[node], key=lambda k: tail[k])
        path.append(node)
    return path
