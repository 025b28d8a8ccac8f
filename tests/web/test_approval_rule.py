"""One rule for every path to a gate: Slack buttons and the CLI (``revive approve``).

The CLI's identity is the operating-system user, ``os:alice`` in ``REVIVE_ROLES``; it
stores its decision and the waiting flow takes it (tests/flows/test_approval_codes.py runs
that end to end).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from revive.errors import InputError
from revive.runs.approvals import DecisionRefused, decide_from_cli, open_gate, refusal
from revive.store import db, service
from revive.web.settings import Role, WebSettings
from tests.web.slack import (
    APPROVER,
    NOW,
    SLACK_SECRET,
    TOPOLOGY,
    App,
    FixedClock,
    button_payload,
    create_run,
    text_of,
)

ROLES = WebSettings(roles={"production": {"os:alice": "approver", "os:olga": "operator",
                                          APPROVER: "approver"},
                           "*": {"*": "viewer"}})


@pytest.fixture
def engine(store: str) -> Iterator[Engine]:
    engine = db.get_engine(store)
    db.upgrade(engine)
    yield engine
    engine.dispose()


def _waiting(store: str, engine: Engine, *, triggered_by: str = "ana", dc: str = "dc2") -> str:
    """A running run paused at its ``traffic`` gate, as a production flow leaves it."""
    run_id = create_run(store, triggered_by=triggered_by, target_dc=dc)
    with db.session(engine) as s:
        service.start_step(s, run_id=run_id, step_key="approval:traffic", action="approval",
                           detail={"question": "move traffic?", "environment": "production"})
    return run_id


def _decision(engine: Engine, run_id: str) -> tuple[str, str, str] | None:
    with db.session(engine) as s:
        row = service.get_gate_decision(s, run_id=run_id, gate="traffic")
        return (row.decision, row.decided_by, str(row.source)) if row else None


def _audit(engine: Engine, run_id: str) -> list[tuple[str, str, str, str]]:
    with db.session(engine) as s:
        return [(e.actor, str(e.source), e.action, e.outcome)
                for e in reversed(service.get_audit_events(s, run_id=run_id))]


def test_the_cli_approves_as_the_os_user_with_the_role_and_refuses_without_it(
        store: str, engine: Engine) -> None:
    run_id = _waiting(store, engine)
    assert open_gate(engine, run_id) == ("traffic", "production")
    with pytest.raises(DecisionRefused, match=r"you need the approver role in production; you "
                                              r"have viewer \(you are os:mallory\)"):
        decide_from_cli(engine, run_id, approve=True, user="mallory", settings=ROLES)
    with pytest.raises(DecisionRefused, match="approver role in production; you have operator"):
        decide_from_cli(engine, run_id, approve=True, user="olga", settings=ROLES)
    assert _decision(engine, run_id) is None  # refused: nothing decided, the gate waits
    said = decide_from_cli(engine, run_id[:12], approve=True, user="alice", settings=ROLES)
    assert f"traffic of failover run {run_id} approved by os:alice" in said
    assert _decision(engine, run_id) == ("approved", "os:alice", "cli")
    again = decide_from_cli(engine, run_id, approve=False, user="olga", settings=ROLES)
    assert "already approved by os:alice" in again
    assert _decision(engine, run_id) == ("approved", "os:alice", "cli")
    assert _audit(engine, run_id) == [
        ("os:mallory", "cli", "approve", "refused"), ("os:olga", "cli", "approve", "refused"),
        ("os:alice", "cli", "approve", "approved"), ("os:olga", "cli", "reject", "duplicate")]


def test_the_cli_keeps_the_two_person_rule_and_lets_an_operator_reject(
        store: str, engine: Engine) -> None:
    run_id = _waiting(store, engine, triggered_by="alice")  # `revive run` records the user
    with pytest.raises(DecisionRefused, match="two-person rule"):
        decide_from_cli(engine, run_id, approve=True, user="alice", settings=ROLES)
    with pytest.raises(DecisionRefused, match="to reject you need the operator role"):
        decide_from_cli(engine, run_id, approve=False, user="mallory", settings=ROLES)
    said = decide_from_cli(engine, run_id, approve=False, user="olga", settings=ROLES)
    assert "rejected by os:olga; the run stops safely" in said
    assert _decision(engine, run_id) == ("rejected", "os:olga", "cli")


def test_the_cli_refuses_runs_that_do_not_wait_with_a_reason(store: str,
                                                             engine: Engine) -> None:
    with pytest.raises(InputError, match="no run 'nope'"):
        decide_from_cli(engine, "nope", approve=True, user="alice", settings=ROLES)
    running = create_run(store, target_dc="dc1")
    with pytest.raises(InputError, match="is not waiting at an approval gate"):
        decide_from_cli(engine, running, approve=True, user="alice", settings=ROLES)
    finished = _waiting(store, engine)
    with db.session(engine) as s:
        service.finish_run(s, finished, outcome="aborted")
    with pytest.raises(InputError, match="is aborted, not waiting for a decision"):
        decide_from_cli(engine, finished, approve=True, user="alice", settings=ROLES)
    assert _decision(engine, running) is None and _decision(engine, finished) is None


def test_slack_buttons_and_the_cli_refuse_with_the_same_rule(store: str,
                                                             engine: Engine) -> None:
    settings = WebSettings(slack_signing_secret=SecretStr(SLACK_SECRET), topology=TOPOLOGY,
                           roles=ROLES.roles)
    app = App(settings, FixedClock(NOW), store)
    run_id = _waiting(store, engine, triggered_by=f"uapprover ({APPROVER})")
    app.click(button_payload(APPROVER, run_id, "traffic"))
    rule = refusal(approve=True, role=Role.APPROVER, environment="production", started=True)
    assert rule and rule in text_of(app.wait_posts(1)[0])
    assert app.resumed == [] and _decision(engine, run_id) is None
    own = _waiting(store, engine, triggered_by="alice", dc="dc1")
    with pytest.raises(DecisionRefused) as refused:
        decide_from_cli(engine, own, approve=True, user="alice", settings=ROLES)
    assert rule in str(refused.value)
    app.click(button_payload("USTRANGER", run_id, "traffic", trigger="T2"))
    stranger = refusal(approve=True, role=Role.VIEWER, environment="production", started=False)
    assert stranger and stranger in text_of(app.wait_posts(2)[1])


def test_a_slack_approval_resumes_with_an_explicit_decision(app: App) -> None:
    run_id = app.create_run(triggered_by="ana")
    app.click(button_payload(APPROVER, run_id, "traffic"))
    app.wait_posts(1)
    assert app.resumed == [("flow-run-1", {"decision": "approve",
                                           "approver": f"uapprover ({APPROVER})",
                                           "reason": ""})]


def test_unreadable_roles_are_a_clear_input_error(store: str, engine: Engine,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = _waiting(store, engine)
    monkeypatch.setenv("REVIVE_ROLES", '{"production": {"os:alice": "boss"}}')
    with pytest.raises(InputError, match=r"REVIVE_ROLES: .*unknown role 'boss'"):
        decide_from_cli(engine, run_id, approve=True, user="alice")
    monkeypatch.setenv("REVIVE_ROLES", "{not json")
    with pytest.raises(InputError, match="REVIVE_ROLES: error parsing"):
        decide_from_cli(engine, run_id, approve=True, user="alice")
    assert _decision(engine, run_id) is None
