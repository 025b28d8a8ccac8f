"""``revive approve``: the CLI's way through an approval gate, by the same rule as Slack
(an approver who did not start the run approves; an operator rejects), as the
operating-system user (``os:<user>`` in REVIVE_ROLES). A refusal records nothing but the
audit row, says why in one line and exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from revive.cli import app
from revive.cli.common import whoami
from revive.store import db, service
from revive.store.models import TriggerSource

runner = CliRunner()
GATE = "production-failover"


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    url = f"sqlite:///{tmp_path / 'revive.db'}"
    monkeypatch.setenv("REVIVE_DATABASE_URL", url)
    engine = db.get_engine(url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


def waiting_run(engine, *, started_by: str) -> str:
    """A failover of dc2 waiting at its production gate."""
    with db.session(engine) as s:
        run = service.create_run(s, runbook="failover", parameters={},
                                 trigger=TriggerSource.CLI, triggered_by=started_by,
                                 target_dc="dc2")
        service.start_step(s, run_id=run.id, step_key=f"approval:{GATE}", action="approval",
                           detail={"question": "move traffic?", "environment": "production"})
        return run.id


def roles(monkeypatch: pytest.MonkeyPatch, role: str | None) -> None:
    table = {f"os:{whoami()}": role} if role else {}
    monkeypatch.setenv("REVIVE_ROLES", json.dumps({"production": table}))


def decision(engine, run_id: str):
    with db.session(engine) as s:
        return service.get_gate_decision(s, run_id=run_id, gate=GATE)


def test_an_approver_who_did_not_start_the_run_approves_it(engine, monkeypatch) -> None:
    roles(monkeypatch, "approver")
    run_id = waiting_run(engine, started_by="ana")
    result = runner.invoke(app, ["approve", run_id[:12], "--reason", "dc1 is gone"])
    assert result.exit_code == 0, result.output
    assert f"approved by os:{whoami()}" in result.stdout
    found = decision(engine, run_id)
    assert (found.decision, found.decided_by, str(found.source)) == (
        "approved", f"os:{whoami()}", "cli")


def test_the_starter_cannot_approve_their_own_run(engine, monkeypatch) -> None:
    roles(monkeypatch, "approver")
    run_id = waiting_run(engine, started_by=whoami())
    result = runner.invoke(app, ["approve", run_id])
    assert result.exit_code == 2
    assert "two-person rule" in result.stderr and "Traceback" not in result.output
    assert decision(engine, run_id) is None


@pytest.mark.parametrize("role", [None, "viewer", "operator"])
def test_approving_needs_the_approver_role(engine, monkeypatch, role) -> None:
    roles(monkeypatch, role)
    run_id = waiting_run(engine, started_by="ana")
    result = runner.invoke(app, ["approve", run_id])
    assert result.exit_code == 2, result.output
    assert "you need the approver role in production" in result.stderr
    assert decision(engine, run_id) is None


def test_an_operator_rejects_and_the_run_is_told(engine, monkeypatch) -> None:
    roles(monkeypatch, "operator")
    run_id = waiting_run(engine, started_by=whoami())  # stopping never waits for a second person
    result = runner.invoke(app, ["approve", run_id, "--reject", "--reason", "not now"])
    assert result.exit_code == 0, result.output
    assert "rejected" in result.stdout
    assert (decision(engine, run_id).decision, decision(engine, run_id).reason) == (
        "rejected", "not now")


def test_an_unknown_run_is_exit_2_with_one_line(engine, monkeypatch) -> None:
    roles(monkeypatch, "approver")
    result = runner.invoke(app, ["approve", "nosuchrun"])
    assert result.exit_code == 2
    assert "nosuchrun" in result.stderr and "Traceback" not in result.output


def test_gate_names_the_gate_the_run_waits_at(engine, monkeypatch) -> None:
    roles(monkeypatch, "approver")
    run_id = waiting_run(engine, started_by="ana")
    result = runner.invoke(app, ["approve", run_id, "--gate", GATE])
    assert result.exit_code == 0, result.output
    assert decision(engine, run_id).decision == "approved"


def test_another_gate_is_refused_and_nothing_is_decided(engine, monkeypatch) -> None:
    roles(monkeypatch, "approver")
    run_id = waiting_run(engine, started_by="ana")
    result = runner.invoke(app, ["approve", run_id, "--gate", "patch"])
    assert result.exit_code == 2, result.output
    assert f"run {run_id} waits at gate {GATE}, not patch" in result.stderr
    assert "Traceback" not in result.output
    assert decision(engine, run_id) is None
    with db.session(engine) as s:
        (event,) = service.get_audit_events(s, run_id=run_id)
    assert (event.outcome, event.detail["gate"]) == ("invalid", "patch")


def test_how_to_approve_names_every_way_the_run_has() -> None:
    from revive.runs.approvals import how_to_approve

    assert how_to_approve("abc", "traffic", slack_channel="#dr",
                          ui_link="http://ui/runs/flow-run/f1") == [
        "approve: revive approve abc --gate traffic",
        "or in Slack: the approval message in #dr",
        "or in the Prefect UI: http://ui/runs/flow-run/f1"]
    assert how_to_approve("abc", "traffic", store="sqlite:////tmp/my store/r.db") == [
        "approve: REVIVE_DATABASE_URL='sqlite:////tmp/my store/r.db' revive approve abc "
        "--gate traffic"]
