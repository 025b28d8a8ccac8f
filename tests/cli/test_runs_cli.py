"""``revive run``, ``status`` and ``abort`` refuse bad input before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from revive.cli import app
from revive.store import db, service
from revive.store.models import TriggerSource

runner = CliRunner()


@pytest.fixture(autouse=True)
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'revive.db'}"
    monkeypatch.setenv("REVIVE_DATABASE_URL", url)
    return url


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nope"], "unknown runbook 'nope'"),
        (["run", "provision", "bogus=1"], "unknown parameter 'bogus'"),
        (["run", "restart", "max_parallel=0"], "max_parallel: Input should be greater than"),
        (["run", "provision", "share"], "'share': parameters are key=value"),
        (["abort", "0123456789ab"], "no run '0123456789ab'"),
        (["drill", "--scenario", "meteor"], "unknown scenario 'meteor'"),
        (["run", "failover", "lost_dc=dc9", "--dry-run"],
         "lost_dc: unknown datacenter 'dc9' (topology has: dc1, dc2)"),
        (["run", "failover", "target_dcs=dc2,dc9"], "target_dcs: unknown datacenter 'dc9'"),
    ],
)
def test_bad_input_exits_2_and_says_what(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_status_lists_runs_and_abort_marks_a_running_one(store: str, monkeypatch) -> None:
    monkeypatch.delenv("REVIVE_SIM_URL", raising=False)
    empty = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert (empty["runs"], empty["dcs"]) == ([], [])
    assert empty["dc_problem"].startswith("no ops tools configured (ops_tools.")
    assert "$REVIVE_SIM_URL" in empty["dc_problem"]
    engine = db.get_engine(store)
    db.upgrade(engine)
    with db.session(engine) as s:
        run = service.create_run(s, runbook="failover", parameters={},
                                 trigger=TriggerSource.SLACK, triggered_by="ana", target_dc="dc2")
    result = runner.invoke(app, ["abort", run.id[:12]])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(runner.invoke(app, ["status", "--json"]).stdout)["runs"]
    assert row["id"] == run.id and row["abort_requested"] and row["outcome"] == "running"
    with db.session(engine) as s:
        (event,) = service.get_audit_events(s, run_id=run.id)
        assert (event.action, event.outcome) == ("abort", "requested")
    engine.dispose()
    again = runner.invoke(app, ["status"])
    assert "abort requested" in again.stdout
