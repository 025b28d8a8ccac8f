"""The DC-fire drill, revive's main job, end to end through Prefect."""

from __future__ import annotations

import asyncio
import json

import pytest

from flows.drill import DrillParams, drill
from revive.drill.models import DrillReport
from revive.planning.shares import default_weights
from revive.topology import load
from tests.factories import REPO

pytestmark = pytest.mark.usefixtures("prefect_harness", "store_url")


def run(tmp_path, name: str, **params) -> DrillReport:
    result = asyncio.run(drill(DrillParams(out=str(tmp_path / name), **params)))
    assert result["out"] == str(tmp_path / name)
    data = json.loads((tmp_path / name / "report.json").read_text())
    return DrillReport.model_validate(data)


THREE_DC = REPO / "runbooks" / "examples" / "three-dc.yaml"


def test_dc_fire_recovers_and_the_same_seed_gives_the_same_report(tmp_path) -> None:
    first = run(tmp_path, "a", seed=7)
    assert first.outcome == "recovered"
    assert first.lost_dc == "dc1" and first.target_dcs == ["dc2"]
    assert all(t.rto_s is not None for t in first.tiers)
    rto = {t.tier: t.rto_s for t in first.tiers}
    assert rto[0] <= 600 and rto[1] <= 1800  # each tier back within its own target
    assert rto[0] < rto[1] <= rto[2] <= rto[3]  # tier by tier, not all at once
    assert all(w == {"dc1": 0.0, "dc2": 1.0} for w in first.final_weights.values())
    assert "RECOVERED" in first.headline
    # the seed's never-replicated components were deployed into the surviving DC
    assert {"config-server@dc2", "status-server@dc2"} <= set(first.deployed)
    assert "notification-sender@dc2" in first.restarted  # it cached dc1's IPs
    assert first.ramp and first.ramp[-1].share == 1.0
    html = (tmp_path / "a" / "report.html").read_text()
    assert html.count("<svg") >= 3 and "recovered" in html
    second = run(tmp_path, "b", seed=7)
    assert first.comparable_dict() == second.comparable_dict()


def test_a_drill_without_health_checkers_still_recovers(tmp_path) -> None:
    report = run(tmp_path, "hc", scenario="health-checker-down", seed=2)
    assert report.outcome == "recovered"


def test_a_drill_run_from_a_dc_whose_tool_replicas_died_fails_over_to_the_others(
    tmp_path, caplog
) -> None:
    caplog.set_level("WARNING", logger="revive.ops")
    report = run(tmp_path, "otr", scenario="ops-tool-replica-down", seed=4)
    assert report.outcome == "recovered"
    assert any("registry: failing over from dc1 to dc2" in r.getMessage()
               for r in caplog.records)


def test_a_three_dc_estate_recovers_into_both_survivors_tier_by_tier(tmp_path) -> None:
    """An N+1 estate with its own DC names: the lost DC's users of every class go to both
    survivors, which keep their relative shares; no survivor is drained."""
    report = run(tmp_path, "three", seed=3, topology=str(THREE_DC), lost_dc="west")
    assert report.lost_dc == "west" and report.target_dcs == ["east", "north"]
    assert report.outcome in ("recovered", "late")  # every tier back
    rto = {t.tier: t.rto_s for t in report.tiers}
    assert rto[0] is not None and rto[0] < rto[3]
    before = default_weights(load(THREE_DC))
    for cls, weights in report.final_weights.items():
        assert weights["west"] == 0.0, cls
        for dc in ("east", "north"):  # nobody drained, and relative shares kept
            assert (weights[dc] > 0) == (before[cls][dc] > 0), (cls, dc)
        if before[cls]["east"] > 0 and before[cls]["north"] > 0:
            assert weights["east"] / weights["north"] == pytest.approx(
                before[cls]["east"] / before[cls]["north"], rel=1e-3)
        assert abs(sum(weights.values()) - 1.0) < 1e-3, cls
