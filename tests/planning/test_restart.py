"""The restart plan on small estates whose right answer can be worked out by hand."""

from __future__ import annotations

import pytest

from revive.errors import PlanningError
from revive.planning import plan_restart
from revive.topology import load
from tests.factories import EXAMPLE, build, service


def starts(plan) -> dict[str, float]:
    return {s.service: s.start_s for s in plan.steps}


def test_dependencies_finish_before_dependents_start() -> None:
    topo = build(
        service("db", restart_seconds=100),
        service("cache", depends_on=["db"], restart_seconds=20),
        service("app", depends_on=["cache", "db"], restart_seconds=30),
    )
    plan = plan_restart(topo, "dc1")
    assert starts(plan) == {"db": 0, "cache": 100, "app": 120}
    assert plan.makespan_s == 150 == plan.critical_path_s == plan.lower_bound_s
    assert plan.critical_path == ["db", "cache", "app"]


def test_lower_tier_numbers_go_first_when_the_cap_binds() -> None:
    topo = build(
        service("reco", tier=3, restart_seconds=10),
        service("login", tier=0, restart_seconds=10),
        service("pay", tier=1, restart_seconds=10),
    )
    plan = plan_restart(topo, "dc1", max_parallel=1)
    assert [s.service for s in plan.steps] == ["login", "pay", "reco"]
    assert plan.makespan_s == 30 == plan.lower_bound_s


def test_the_cap_is_never_exceeded_and_sets_the_lower_bound() -> None:
    topo = build(*[service(f"s{i}", restart_seconds=60) for i in range(10)])
    plan = plan_restart(topo, "dc1", max_parallel=4)
    assert plan.lower_bound_s == 150  # 600 s of work over 4 slots
    assert plan.makespan_s == 180  # three waves of 60 s
    for t in {s.start_s for s in plan.steps}:
        assert sum(1 for s in plan.steps if s.start_s <= t < s.end_s) <= 4


def test_within_a_tier_the_longest_chain_starts_first() -> None:
    topo = build(
        service("short", restart_seconds=50),
        service("head", restart_seconds=10),
        service("tail", depends_on=["head"], restart_seconds=100),
    )
    plan = plan_restart(topo, "dc1", max_parallel=1)
    assert [s.service for s in plan.steps] == ["head", "tail", "short"]


def test_a_soft_dependency_never_delays_a_start() -> None:
    topo = build(
        service("slow", restart_seconds=300),
        service("app", depends_on=[{"name": "slow", "soft": True}]),
    )
    assert starts(plan_restart(topo, "dc1"))["app"] == 0


def test_only_services_of_the_dc_and_the_chosen_groups_are_planned() -> None:
    topo = build(
        service("db", group="storage", restart_seconds=100),
        service("app", group="web", depends_on=["db"]),
        service("only-dc1", group="web", instances={"dc1": 1}),
    )
    plan = plan_restart(topo, "dc2", groups=["web"])
    assert starts(plan) == {"app": 0}
    assert plan.assumed_healthy == ["db"]
    assert plan.groups == ["web"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dc": "dc9"}, "unknown datacenter 'dc9' (topology has: dc1, dc2)"),
        ({"dc": "dc1", "groups": ["nope"]}, "unknown group 'nope'"),
        ({"dc": "dc2", "groups": ["edge"]}, "group 'edge' has no instances in dc2"),
        ({"dc": "dc1", "max_parallel": 0}, "max_parallel must be at least 1"),
        ({"dc": "dc1", "groups": [" "]}, "no group named"),
    ],
)
def test_bad_requests_say_what_is_wrong(kwargs: dict, message: str) -> None:
    topo = build(service("a"), service("e", group="edge", instances={"dc1": 1}))
    dc = kwargs.pop("dc")
    with pytest.raises(PlanningError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_restart(topo, dc, **kwargs)


def test_the_example_plan_is_consistent() -> None:
    plan = plan_restart(load(EXAMPLE), "dc1")
    assert plan.makespan_s >= plan.lower_bound_s >= plan.critical_path_s > 0
    assert len(plan.steps) == sum(1 for s in load(EXAMPLE).services if s.runs_in("dc1"))
