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
    assert "x lower bound" in out and "x revive" in out
    assert "revive within 1.05x lower bound (" in out
    assert "revive faster than strict priority groups (" in out
    assert "Prefect overhead" not in out

    assert bench.main(["--sizes", "40", "--no-prefect", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [t["topology"] for t in report["topologies"]] == ["example", "generated 40"]
    assert report["prefect"] is None
    for row in report["topologies"]:
        assert set(row["makespan_s"]) == set(bench.STRATEGIES)
    assert len(report["goals"]) == 4
