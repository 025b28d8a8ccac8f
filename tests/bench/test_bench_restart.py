"""The restart benchmark's schedules are valid and its strategies do what they claim.

Only the scheduler comparison runs here (on the simulator, small topologies); the Prefect
overhead part is left to ``make bench``. No timing assertions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from revive.planning import plan_restart
from revive.topology import Topology, load
from tests.bench.scripts import bench_script

REPO = Path(__file__).resolve().parents[2]
CAP = 8
EXECUTED = ("revive", "strict priority", "serial")


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with bench_script("restart") as module:
        yield module


@pytest.fixture(scope="module")
def small(bench: ModuleType) -> Topology:
    return bench.generated(60, 3, seed=2)


@pytest.fixture(scope="module")
def result(bench: ModuleType, small: Topology) -> dict[str, Any]:
    return bench.compare(small, "dc1", CAP, seed=5)


def _check_schedule(result: dict[str, Any], strategy: str, cap: int) -> None:
    schedule = result["strategies"][strategy]["schedule"]
    durations, deps = result["durations"], result["deps"]
    assert set(schedule) == set(result["order"])
    for name, (start, end) in schedule.items():
        assert start >= 0
        assert end - start == pytest.approx(durations[name])
        for d in deps[name]:
            assert start >= schedule[d][1], f"{strategy}: {name} started before {d} was done"
    # Sweep the starts and ends: at equal times, ends free their slot first.
    events = sorted(
        [(end, -1) for _, end in schedule.values()] + [(start, 1) for start, _ in schedule.values()]
    )
    in_flight = peak = 0
    for _, change in events:
        in_flight += change
        peak = max(peak, in_flight)
    assert peak <= cap, f"{strategy}: {peak} restarts in flight, cap {cap}"


@pytest.mark.parametrize("strategy", EXECUTED)
def test_schedules_respect_dependencies_and_the_cap(result: dict, strategy: str) -> None:
    _check_schedule(result, strategy, 1 if strategy == "serial" else CAP)


def test_no_strategy_beats_the_lower_bound(result: dict) -> None:
    bound = result["lower_bound_s"]
    assert bound == result["strategies"]["lower bound"]["makespan_s"]
    assert bound == pytest.approx(max(result["critical_path_s"], result["total_work_s"] / CAP))
    assert result["total_work_s"] == pytest.approx(sum(result["durations"].values()))
    for strategy in EXECUTED:
        assert result["strategies"][strategy]["makespan_s"] >= bound - 1e-6, strategy


def _bound_by_hand(result: dict[str, Any], tier: int) -> float:
    """Tier ``tier``'s own bound from the instance alone: the services of tier <= T and
    all they hard-depend on; the longest chain among them, or their work over the cap."""
    closure: set[str] = set()
    todo = [n for n, t in result["tier"].items() if t <= tier]
    while todo:
        name = todo.pop()
        if name not in closure:
            closure.add(name)
            todo += result["deps"][name]
    chain: dict[str, float] = {}
    for name in result["order"]:  # plan order starts every service after its dependencies
        if name in closure:
            before = [chain[d] for d in result["deps"][name]]
            chain[name] = result["durations"][name] + max(before, default=0.0)
    work = sum(result["durations"][n] for n in closure)
    return max(max(chain.values()), work / CAP)


def test_each_tier_has_its_own_bound_and_no_strategy_beats_it(result: dict) -> None:
    tiers = sorted(set(result["tier"].values()))
    assert sorted(result["tier_bound_s"]) == tiers and len(tiers) > 1
    for t in tiers:
        assert result["tier_bound_s"][t] == pytest.approx(_bound_by_hand(result, t))
    assert result["tier_bound_s"][tiers[-1]] == pytest.approx(result["lower_bound_s"])
    for strategy in EXECUTED:
        rto = result["strategies"][strategy]["tier_rto_s"]
        schedule = result["strategies"][strategy]["schedule"]
        for t in tiers:
            # tier T is complete when the last service of tier <= T has ended
            last = max(end for n, (_, end) in schedule.items() if result["tier"][n] <= t)
            assert rto[t] == pytest.approx(last)
            assert rto[t] >= result["tier_bound_s"][t] - 1e-6, (strategy, t)
        assert [rto[t] for t in tiers] == sorted(rto[t] for t in tiers)


def test_tier_0_completes_no_later_than_under_strict_priority_groups(
    bench: ModuleType, result: dict
) -> None:
    example = bench.compare(load(REPO / "runbooks" / "topology.yaml"), "dc1", CAP)
    for r in (result, example):
        revive = r["strategies"]["revive"]["tier_rto_s"]
        strict = r["strategies"]["strict priority"]["tier_rto_s"]
        assert revive[0] <= strict[0]
    # In the example, messaging-app (tier 0) needs link-preview (tier 2): SRM's groups hold
    # tier 0 back until group 2 is done; the effective tier restarts them with tier 0.
    revive = example["strategies"]["revive"]["tier_rto_s"]
    strict = example["strategies"]["strict priority"]["tier_rto_s"]
    assert revive[0] < strict[0]


def test_revive_runs_the_plans_steps_in_effective_tier_order(bench: ModuleType) -> None:
    # With the cap at 1, the scheduler starts one restart at a time in priority order: the
    # tier-2 link-preview comes with tier 0, before every service of effective tier 1.
    topology = load(REPO / "runbooks" / "topology.yaml")
    result = bench.compare(topology, "dc1", 1, jitter=0.0)
    schedule = result["strategies"]["revive"]["schedule"]
    effective = plan_restart(topology, "dc1").effective_tier
    ones = [n for n in schedule if effective(n) == 1]
    assert effective("link-preview") == 0
    assert schedule["link-preview"][1] <= min(schedule[n][0] for n in ones)


def test_serial_takes_the_sum_of_the_durations(result: dict) -> None:
    serial = result["strategies"]["serial"]
    assert serial["makespan_s"] == pytest.approx(sum(result["durations"].values()))
    starts = sorted(serial["schedule"].values())
    for (_, end), (start, _) in pairwise(starts):
        assert start == pytest.approx(end)  # back to back, never idle


def test_strict_priority_finishes_each_group_before_the_next(result: dict, small: Topology):
    strict = result["strategies"]["strict priority"]
    schedule, group = strict["schedule"], strict["group"]
    for name in result["order"]:
        assert group[name] >= small.service(name).tier
        assert all(group[name] >= group[d] for d in result["deps"][name])
    promoted = sum(group[n] != small.service(n).tier for n in result["order"])
    assert promoted == result["promoted"]
    levels = sorted(set(group.values()))
    assert len(levels) > 1
    for earlier, later in pairwise(levels):
        done = max(end for n, (_, end) in schedule.items() if group[n] <= earlier)
        first = min(start for n, (start, _) in schedule.items() if group[n] == later)
        assert first >= done, f"group {later} started at {first}, group {earlier} done {done}"


def test_durations_are_shared_and_drawn_once(bench: ModuleType, small: Topology, result: dict):
    for name, d in result["durations"].items():
        nominal = small.service(name).restart_seconds
        assert 0.8 * nominal <= d <= 1.2 * nominal
    assert len(set(result["durations"].values())) > 1
    again = bench.compare(small, "dc1", CAP, seed=5)
    assert again["durations"] == result["durations"]
    for strategy in EXECUTED:
        assert (
            again["strategies"][strategy]["schedule"] == result["strategies"][strategy]["schedule"]
        )


def test_without_jitter_revive_runs_exactly_the_plan(bench: ModuleType, small: Topology):
    # The list scheduler on the simulator, fed plan step order and the planner's own
    # durations, reproduces the planner's schedule: same starts, same ends.
    exact = bench.compare(small, "dc1", CAP, seed=5, jitter=0.0)
    plan = plan_restart(small, "dc1", max_parallel=CAP)
    schedule = exact["strategies"]["revive"]["schedule"]
    for step in plan.steps:
        assert schedule[step.service] == pytest.approx((step.start_s, step.end_s))
    assert exact["strategies"]["revive"]["makespan_s"] == pytest.approx(plan.makespan_s)
    assert exact["lower_bound_s"] == pytest.approx(plan.lower_bound_s)


def test_the_example_moves_services_behind_their_dependencies(bench: ModuleType) -> None:
    # messaging-app (tier 0) hard-depends on link-preview (tier 2): a tier-only grouping
    # would deadlock, so it goes into group 2.
    result = bench.compare(load(REPO / "runbooks" / "topology.yaml"), "dc1", CAP)
    group = result["strategies"]["strict priority"]["group"]
    assert group["messaging-app"] == 2
    _check_schedule(result, "strict priority", CAP)


def test_main_prints_the_table_and_json(bench: ModuleType, capsys: pytest.CaptureFixture):
    assert bench.main(["--sizes", "40", "--no-prefect"]) == 0
    out = capsys.readouterr().out
    for text in ("example", "generated 40", "strict priority", "serial", "lower bound"):
        assert text in out
    assert "x bound" in out and "bound s" in out and "revive s" in out
    assert "x lower bound" in out and "x revive" in out  # the makespan, for information
    assert "example: tier 0 within 1.3x its own bound (" in out
    assert "generated 40: tier 0 within 1.3x its own bound (" in out
    assert "faster than strict priority" not in out and "1.05x" not in out
    assert "Prefect overhead" not in out

    assert bench.main(["--sizes", "40", "--no-prefect", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [t["topology"] for t in report["topologies"]] == ["example", "generated 40"]
    assert report["prefect"] is None
    goals = []
    for row in report["topologies"]:
        assert set(row["makespan_s"]) == set(bench.STRATEGIES)
        assert set(row["tier_rto_by_strategy_s"]) == set(EXECUTED)
        assert set(row["tier_rto_s"]) == set(row["tier_bound_s"]) == set(row["tier_services"])
        assert row["tier_rto_s"] == row["tier_rto_by_strategy_s"]["revive"]
        for tier, bound in row["tier_bound_s"].items():
            rto = row["tier_rto_s"][tier]
            assert rto >= bound - 1e-6
            if int(tier) > 1:  # the goals are on the critical tiers; the rest is reported
                continue
            goals.append({
                "goal": f"{row['topology']}: tier {tier} within 1.3x its own bound",
                "ok": rto <= 1.3 * bound,
                "value": f"{rto / bound:.3f}x",
            })
    assert report["goals"] == goals
