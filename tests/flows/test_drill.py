"""The DC-fire drill, revive's main job, end to end through Prefect."""

from __future__ import annotations

import asyncio
import json

import pytest

from flows.drill import DrillParams, drill
from revive.drill.report import DrillReport

pytestmark = pytest.mark.usefixtures("prefect_harness")


def run(tmp_path, name: str, **params) -> DrillReport:
    result = asyncio.run(drill(DrillParams(out=str(tmp_path / name), **params)))
    assert result["out"] == str(tmp_path / name)
    data = json.loads((tmp_path / name / "report.json").read_text())
    return DrillReport.model_validate(data)


def test_dc_fire_recovers_and_the_same_seed_gives_the_same_report(tmp_path) -> None:
    first = run(tmp_path, "a", seed=7)
    assert first.outcome == "recovered"
    assert first.lost_dc == "dc1" and first.target_dc == "dc2"
    assert all(t.rto_s is not None for t in first.tiers)
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
