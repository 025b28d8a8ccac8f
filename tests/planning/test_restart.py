"""The restart plan on small estates whose right answer can be worked out by hand."""

from __future__ import annotations

import pytest

from revive.errors import PlanningError
from revive.planning import plan_restart
from revive.planning.graph import Scheduler
from revive.planning.restart import effective_tiers, restart_steps
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


def test_a_dependency_of_a_tier_0_service_restarts_with_tier_0() -> None:
    # preview is tier 2, but the tier-0 app cannot boot without it: it goes before the
    # unrelated tier-1 pay, though its own tier is higher.
    topo = build(
        service("pay", tier=1, restart_seconds=10),
        service("preview", tier=2, restart_seconds=10),
        service("app", tier=0, depends_on=["preview"], restart_seconds=10),
    )
    plan = plan_restart(topo, "dc1", max_parallel=1)
    assert [s.service for s in plan.steps] == ["preview", "app", "pay"]
    assert {s.service: s.tier for s in plan.steps}["preview"] == 2  # its own tier, as before
    assert plan.effective_tier("preview") == 0 and plan.effective_tier("pay") == 1
    assert plan.tier_rto_s == {0: 20, 1: 30, 2: 30}


def test_the_effective_tier_counts_dependents_anywhere_in_the_topology() -> None:
    # ui (tier 0, only in dc2, another group) -> api (tier 1) -> store (tier 3): in a
    # restart of dc1's core group alone, store still restarts as tier-0 work.
    topo = build(
        service("store", tier=3, restart_seconds=10),
        service("api", tier=1, group="web", depends_on=["store"]),
        service("ui", tier=0, group="web", depends_on=["api"], instances={"dc2": 1}),
        service("batch", tier=2, depends_on=[{"name": "store", "soft": True}]),
        service("other", tier=2, restart_seconds=10),
    )
    assert effective_tiers(topo) == {"store": 0, "api": 0, "ui": 0, "batch": 2, "other": 2}
    plan = plan_restart(topo, "dc1", groups=["core"], max_parallel=1)
    assert [s.service for s in plan.steps] == ["store", "batch", "other"]  # store: tier 3


def test_each_tier_completes_in_turn_against_its_own_bound() -> None:
    # Cap 2. db (100) -> app (20) are tier 0; pay and pay2 (50 each) tier 1; reco (200)
    # tier 3. Tier first: db and pay at 0, pay2 at 50, app and reco at 100.
    topo = build(
        service("db", restart_seconds=100),
        service("app", depends_on=["db"], restart_seconds=20),
        service("pay", tier=1, restart_seconds=50),
        service("pay2", tier=1, restart_seconds=50),
        service("reco", tier=3, restart_seconds=200),
    )
    plan = plan_restart(topo, "dc1", max_parallel=2)
    assert starts(plan) == {"db": 0, "pay": 0, "pay2": 50, "app": 100, "reco": 100}
    # tier T is complete when every service of tier <= T is up
    assert plan.tier_rto_s == {0: 120, 1: 120, 3: 300}
    # closure of tier 0: db, app (chain 120); tier 1 adds pay, pay2 (work 220 / 2 = 110,
    # chain still 120); tier 3 is everything (chain 200, work 420 / 2 = 210)
    assert plan.tier_bound_s == {0: 120, 1: 120, 3: 210}
    # the whole plan's makespan is information, not the objective: reco started at 0 would
    # have ended it at 250, and tier 1 at 150
    assert plan.makespan_s == 300 and plan.lower_bound_s == 210


def test_a_tier_bound_counts_dependencies_of_a_higher_tier_inside_the_plan() -> None:
    topo = build(
        service("slow-dep", tier=3, restart_seconds=300),
        service("login", tier=0, depends_on=["slow-dep"], restart_seconds=10),
        service("misc", tier=3, restart_seconds=30),
    )
    plan = plan_restart(topo, "dc1", max_parallel=4)
    assert plan.tier_bound_s == {0: 310, 3: 310}
    assert plan.tier_rto_s == {0: 310, 3: 310}


def test_tiers_are_never_complete_before_their_bound_in_the_example() -> None:
    plan = plan_restart(load(EXAMPLE), "dc1")
    rto, bound = plan.tier_rto_s, plan.tier_bound_s
    assert sorted(rto) == sorted(bound) == [0, 1, 2, 3]
    assert all(rto[t] >= bound[t] for t in rto)
    assert list(rto.values()) == sorted(rto.values())
    assert bound[3] == plan.lower_bound_s
    # link-preview (tier 2) is needed by messaging-app (tier 0): it restarts as tier 0
    assert plan.effective_tier("link-preview") == 0
    step = {s.service: s for s in plan.steps}
    assert step["link-preview"].tier == 2
    # ... so it starts the moment what it needs is up, though tier-1 work is waiting
    deps = load(EXAMPLE).service("link-preview").hard_dependencies
    ready = max(step[d].end_s for d in deps if d in step)
    assert step["link-preview"].start_s == ready
    assert any(plan.effective_tier(s.service) == 1 and s.start_s > ready for s in plan.steps)


def test_the_plan_json_keeps_its_shape() -> None:
    plan = plan_restart(load(EXAMPLE), "dc1").model_dump(mode="json")
    assert set(plan) == {"dc", "max_parallel", "groups", "steps", "makespan_s",
                         "critical_path_s", "critical_path", "lower_bound_s", "assumed_healthy"}
    assert set(plan["steps"][0]) == {"service", "group", "tier", "start_s", "end_s"}


def test_restart_steps_are_the_plans_steps_for_the_scheduler() -> None:
    topo = build(
        service("db", restart_seconds=100),
        service("app", depends_on=["db", "gone"], restart_seconds=20),
        service("gone", instances={"dc2": 1}),
    )
    steps, pools = restart_steps(topo, "dc1", max_parallel=3)
    assert pools == {"restart": 3}
    by_key = {s.key: s for s in steps}
    assert set(by_key) == {"restart:db@dc1", "restart:app@dc1"}
    app = by_key["restart:app@dc1"]
    assert (app.action, app.target, app.after, app.pool) == (
        "restart", "app@dc1", ("restart:db@dc1",), "restart")
    assert app.estimate_s == 20 and app.priority == (0, -20, "app")
    assert by_key["restart:db@dc1"].priority == (0, -120, "db")
    scheduler = Scheduler(steps, pools)
    assert [s.key for s in scheduler.ready()] == ["restart:db@dc1"]
    # only some services: what they need outside the selection is assumed healthy
    only, _ = restart_steps(topo, "dc1", ["app"])
    assert [(s.key, s.after) for s in only] == [("restart:app@dc1", ())]
