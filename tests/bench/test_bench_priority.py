"""bench/priority.py runs end to end on one seed of two scenarios and keeps its promises:
the JSON shape, a bound nothing beats, tier 0 first under revive, every tier back.

One process (``--jobs 1``): no fork inside the test session. No timing assertions.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from types import ModuleType

import pytest

from revive.planning.recovery import GATE, recovery_graph
from tests.bench.scripts import bench_script

SCENARIOS = ("dc-fire", "login-heavy")
TIERS = ("tier0", "tier1", "tier2", "tier3")


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with bench_script("priority") as module:
        yield module


@pytest.fixture(scope="module")
def output(bench: ModuleType) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = bench.main(["--seeds", "1", "--scenario", *SCENARIOS, "--json", "--jobs", "1"])
    assert code == 0  # without --check, a failed goal is reported, not an exit status
    return out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def report(output: tuple[str, str]) -> dict:
    return json.loads(output[0])


def _tiers(bench: ModuleType, name: str) -> set[str]:
    scenario = next(s for s in bench.SCENARIOS if s.name == name)
    return {f"tier{s.tier}" for s in scenario.topology().services}


def test_stdout_is_only_the_json_report_and_the_goals_go_to_stderr(output, report) -> None:
    assert set(report) == {"scenarios"}
    assert [s["name"] for s in report["scenarios"]] == list(SCENARIOS)
    lines = output[1].splitlines()
    assert any(line.startswith("PASS") or line.startswith("FAIL") for line in lines)
    assert "PASS" not in output[0] and "FAIL" not in output[0]


def test_every_policy_reports_every_field(bench, report) -> None:
    for scenario in report["scenarios"]:
        assert set(scenario) == {"name", "policies"}
        assert set(scenario["policies"]) == {"phased", "revive", "bound"}
        has = _tiers(bench, scenario["name"])
        for p in scenario["policies"].values():
            assert set(p) == {"rto_s", "time_to_full_s", "peak_db_util", "breach_s"}
            assert set(p["rto_s"]) == set(TIERS)
            for tier in set(TIERS) - has:  # a tier the scenario does not have
                assert p["rto_s"][tier] is None
            assert p["time_to_full_s"] is not None and p["time_to_full_s"] > 0
            assert 0 < p["peak_db_util"] < 2 and p["breach_s"] >= 0


def test_the_bound_is_never_beaten(report) -> None:
    for scenario in report["scenarios"]:
        p = scenario["policies"]
        for tier in TIERS:
            bound = p["bound"]["rto_s"][tier]
            for policy in ("revive", "phased"):
                rto = p[policy]["rto_s"][tier]
                if rto is not None and bound is not None:
                    assert bound <= rto, (scenario["name"], policy, tier)
        assert p["bound"]["time_to_full_s"] <= p["revive"]["time_to_full_s"]


def test_revive_brings_tier_0_back_no_later_than_phases_on_the_example(report) -> None:
    p = report["scenarios"][0]["policies"]
    assert p["revive"]["rto_s"]["tier0"] <= p["phased"]["rto_s"]["tier0"]


def test_every_tier_is_back_under_revive(bench, report) -> None:
    for scenario in report["scenarios"]:
        for tier in _tiers(bench, scenario["name"]):
            assert scenario["policies"]["revive"]["rto_s"][tier] is not None, tier
            assert scenario["policies"]["bound"]["rto_s"][tier] is not None, tier


def test_phases_are_the_same_steps_with_barriers_and_one_ramp(bench) -> None:
    scenario = bench.SCENARIOS[0]
    run = bench.rs.Run.after_fault(scenario.topology(), scenario.lost, seed=1)
    found = bench.rs.survey(run.sim, run.lost, run.targets)
    steps, _ = recovery_graph(run.sim.topology, found, max_parallel=8)
    phased = {s.key: s for s in bench.phased(steps)}
    assert {k for k, s in phased.items() if s.action != "ramp"} \
        == {s.key for s in steps if s.action != "ramp"}
    assert [s.key for s in phased.values() if s.action == "ramp"] == ["ramp:all"]
    keys = {a: {k for k, s in phased.items() if s.action == a}
            for a in ("deploy", "provision", "restart")}
    assert keys["deploy"] and keys["provision"] and keys["restart"]
    for key in keys["provision"]:
        assert keys["deploy"] <= set(phased[key].after_end)
    for key in keys["restart"]:
        assert keys["provision"] <= set(phased[key].after_end)
    assert keys["restart"] <= set(phased[GATE].after_end)
    assert GATE in phased["ramp:all"].after
