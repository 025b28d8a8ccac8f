"""``revive run failover --dry-run``: the recovery graph rehearsed on the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from revive.cli import app
from tests.factories import REPO

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_a_failover_dry_run_prints_the_rehearsed_graph(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REVIVE_DATABASE_URL", f"sqlite:///{tmp_path / 'revive.db'}")
    """The graph it would run, each step with what it waits for and when, and the RTO per
    tier, from a rehearsal on the simulator: no tool is needed and none is touched."""
    three_dc = REPO / "runbooks" / "examples" / "three-dc.yaml"
    result = runner.invoke(app, ["run", "failover", f"topology={three_dc}", "lost_dc=north",
                                 "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    steps = {s["key"]: s for s in plan["steps"]}
    assert set(plan["predicted_rto_s"]) == {"tier0", "tier1", "tier2", "tier3"}
    assert all(v is not None for v in plan["predicted_rto_s"].values())
    assert plan["predicted_rto_s"]["tier0"] < plan["predicted_rto_s"]["tier1"]
    for step in steps.values():
        assert set(step) == {"key", "action", "target", "after", "start_s", "end_s"}
        for before in step["after"]:  # nothing starts before what it waits for has ended
            assert steps[before]["end_s"] <= step["start_s"] + 1e-6, (before, step["key"])
    ramps = [s for s in steps.values() if s["action"] == "ramp"]
    assert {s["target"] for s in ramps} >= {"accounts", "shop"}
    assert all("approval:traffic" in s["after"] for s in ramps)
    assert not any(k.endswith("@north") for k in steps)  # nothing acts on the lost DC
