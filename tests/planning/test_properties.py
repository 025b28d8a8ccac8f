"""Properties of the restart plan on random acyclic estates (hypothesis)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from revive.planning import plan_restart
from revive.topology import Topology, parse
from tests.factories import estate

EPS = 1e-9


@st.composite
def topologies(draw: st.DrawFn) -> Topology:
    n = draw(st.integers(min_value=1, max_value=25))
    groups = draw(st.lists(st.sampled_from("abcde"), min_size=1, max_size=3, unique=True))
    services = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), max_size=4, unique=True)) if i else []
        services.append(
            {
                "name": f"s{i}",
                "tier": draw(st.integers(0, 3)),
                "group": draw(st.sampled_from(groups)),
                "redundancy": "active-active",
                "depends_on": [
                    {"name": f"s{j}", "soft": draw(st.booleans())} for j in deps
                ],
                "instances": {"dc1": draw(st.integers(0, 3)), "dc2": 1},
                "capacity_per_instance": 100,
                "peak_load": 100,
                "restart_seconds": draw(st.integers(1, 300)),
            }
        )
    return parse(estate(*services))


def effective_tiers_by_hand(topo: Topology) -> dict[str, int]:
    """Per service, the lowest tier of itself and of every service that reaches it by a
    chain of hard dependencies, anywhere in the topology (a plain search per service)."""
    out = {}
    for target in topo.services:
        seen, todo = set(), [target.name]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += [s.name for s in topo.services if name in s.hard_dependencies]
        out[target.name] = min(topo.service(n).tier for n in seen)
    return out


@settings(max_examples=300, deadline=None)
@given(topo=topologies(), max_parallel=st.integers(1, 6), data=st.data())
def test_restart_plan_properties(topo: Topology, max_parallel: int, data: st.DataObject) -> None:
    present = sorted({s.group for s in topo.services if s.runs_in("dc1")})
    if not present:
        return
    groups = data.draw(st.lists(st.sampled_from(present), min_size=1, unique=True))
    plan = plan_restart(topo, "dc1", groups=groups, max_parallel=max_parallel)
    step = {s.service: s for s in plan.steps}

    expected = {s.name for s in topo.services if s.group in groups and s.runs_in("dc1")}
    assert set(step) == expected

    ready_at = {}
    for s in plan.steps:
        svc = topo.service(s.service)
        assert abs(s.end_s - s.start_s - svc.restart_seconds) < EPS
        inside = [d for d in svc.hard_dependencies if d in step]
        # every hard dependency inside the plan ends before its dependent starts
        for dep in inside:
            assert step[dep].end_s <= s.start_s + EPS
        ready_at[s.service] = max((step[d].end_s for d in inside), default=0.0)

    # never more than max_parallel restarts in flight
    for t in {s.start_s for s in plan.steps}:
        assert sum(1 for s in plan.steps if s.start_s <= t + EPS < s.end_s) <= max_parallel

    # makespan can never beat the lower bound
    assert plan.makespan_s >= plan.lower_bound_s - EPS
    assert plan.lower_bound_s >= plan.critical_path_s - EPS

    # among ready services, none of a lower effective tier waits while a higher one starts
    effective = effective_tiers_by_hand(topo)
    for s in plan.steps:
        for other in plan.steps:
            waiting = ready_at[other.service] <= s.start_s + EPS < other.start_s - EPS
            assert not (waiting and effective[other.service] < effective[s.service]), (
                other.service, s.service)

    # the critical path is a real chain of hard dependencies with the stated length
    chain = plan.critical_path
    for before, after in itertools.pairwise(chain):
        assert before in topo.service(after).hard_dependencies
    assert abs(sum(step[n].end_s - step[n].start_s for n in chain) - plan.critical_path_s) < EPS
    # ... and no chain is longer (longest path by dynamic programming over the plan)
    longest: dict[str, float] = {}
    for s in sorted(plan.steps, key=lambda s: s.start_s):
        svc = topo.service(s.service)
        before = [longest[d] for d in svc.hard_dependencies if d in step]
        longest[s.service] = svc.restart_seconds + max(before, default=0.0)
    assert abs(max(longest.values()) - plan.critical_path_s) < EPS
