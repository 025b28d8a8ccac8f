"""Approve / Reject buttons: roles, the two-person rule, first decision wins, redeliveries.

Prefect is replaced by a recording ``resume`` here; tests/flows/test_approval.py clicks the
same buttons on a really paused flow.
"""

from __future__ import annotations

from typing import Any

import pytest

from revive.chat.blocks import APPROVE_ACTION, REJECT_ACTION
from revive.store import db, service
from tests.web.slack import (
    APPROVER,
    APPROVER2,
    NOW,
    OPERATOR,
    VIEWER,
    App,
    FixedClock,
    button_payload,
    text_of,
)


def _decision(app: App, run_id: str, gate: str = "traffic") -> Any:
    engine = db.get_engine(app.store)
    try:
        with db.session(engine) as s:
            row = service.get_gate_decision(s, run_id=run_id, gate=gate)
            if row is not None:
                s.expunge(row)
            return row
    finally:
        engine.dispose()


def test_an_approver_approves_and_the_run_is_resumed_with_their_identity(app: App) -> None:
    run_id = app.create_run(triggered_by=f"ana ({OPERATOR})")
    response = app.click(button_payload(APPROVER, run_id, "traffic"))
    assert response.status_code == 200
    app.wait_posts(1)  # the decision is taken after the acknowledgement
    assert app.resumed == [("flow-run-1", {"decision": "approve", "approver":
                                           f"uapprover ({APPROVER})", "reason": ""})]
    (posted,) = app.wait_posts(1)
    assert posted["response_type"] == "in_channel" and posted["replace_original"] is False
    assert f"approved by uapprover ({APPROVER}) at" in text_of(posted)
    decision = _decision(app, run_id)
    assert (decision.decision, decision.decided_by, str(decision.source)) == (
        "approved", f"uapprover ({APPROVER})", "slack")
    (event,) = app.audit()
    assert (event.actor, event.action, event.outcome, event.run_id) == (
        APPROVER, "approve", "approved", run_id)


def test_double_clicks_and_later_clicks_are_told_who_decided(app: App) -> None:
    run_id = app.create_run()
    app.click(button_payload(APPROVER, run_id, "traffic", trigger="T1"))
    app.click(button_payload(APPROVER, run_id, "traffic", trigger="T2"))  # double click
    texts = [text_of(p) for p in app.wait_posts(2)]  # decided side by side: one wins
    assert len(app.resumed) == 1
    assert sum("already *approved* by you at" in t for t in texts) == 1
    app.click(button_payload(APPROVER2, run_id, "traffic", action=REJECT_ACTION, trigger="T3"))
    later = text_of(app.wait_posts(3)[2])
    assert f"already *approved* by uapprover ({APPROVER}) at" in later
    assert len(app.resumed) == 1  # nothing but the first decision reached the run
    assert _decision(app, run_id).decision == "approved"
    assert sorted(e.outcome for e in app.audit()) == ["approved", "duplicate", "duplicate"]


def test_slack_redelivering_the_same_click_decides_once(app: App) -> None:
    run_id = app.create_run()
    payload = button_payload(APPROVER, run_id, "traffic", trigger="T9")
    app.click(payload)
    assert len(app.wait_posts(1)) == 1
    again = app.click(payload, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "timeout"})
    assert again.status_code == 200
    assert len(app.resumed) == 1
    # the redelivery was recognised at once (answered from the record, audited as such),
    # so no second decision was ever scheduled
    assert [e.outcome for e in app.audit()] == ["approved", "replayed"]


def test_the_person_who_started_the_run_may_reject_but_not_approve(app: App) -> None:
    run_id = app.create_run(triggered_by=f"uapprover ({APPROVER})")
    app.click(button_payload(APPROVER, run_id, "traffic", trigger="T1"))
    assert "two-person rule" in text_of(app.wait_posts(1)[0])
    assert app.resumed == []
    assert _decision(app, run_id) is None
    app.click(button_payload(APPROVER, run_id, "traffic", action=REJECT_ACTION, trigger="T2"))
    app.wait_posts(2)
    assert app.resumed == [("flow-run-1", {"decision": "reject", "approver":
                                           f"uapprover ({APPROVER})",
                                           "reason": f"rejected in Slack by uapprover "
                                                     f"({APPROVER})"})]
    assert "rejected by" in text_of(app.wait_posts(2)[1])
    assert [e.outcome for e in app.audit()] == ["refused", "rejected"]


@pytest.mark.parametrize(("user", "action", "needed"), [
    (OPERATOR, APPROVE_ACTION, "approver"),
    (VIEWER, REJECT_ACTION, "operator"),
    ("USTRANGER", APPROVE_ACTION, "approver"),
])
def test_roles_decide_who_may_press_which_button(app: App, user: str, action: str,
                                                 needed: str) -> None:
    run_id = app.create_run()
    app.click(button_payload(user, run_id, "traffic", action=action))
    assert f"you need the {needed} role in production" in text_of(app.wait_posts(1)[0])
    assert app.resumed == []
    (event,) = app.audit()
    assert (event.actor, event.outcome) == (user, "refused")
    assert _decision(app, run_id) is None


def test_a_run_that_stopped_waiting_gets_no_decision(settings: Any, store: str) -> None:
    def not_paused(run: str, answer: dict[str, Any]) -> None:
        raise RuntimeError("Cannot resume a run that isn't paused!")

    app = App(settings, FixedClock(NOW), store, resume=not_paused)
    run_id = app.create_run()
    app.click(button_payload(APPROVER, run_id, "traffic"))
    assert "no longer waiting" in text_of(app.wait_posts(1)[0])
    assert _decision(app, run_id) is None  # withdrawn: the record claims nothing
    assert app.audit()[-1].outcome == "failed"


def test_finished_unknown_and_malformed_clicks_are_answered_not_raised(app: App) -> None:
    run_id = app.create_run()
    engine = db.get_engine(app.store)
    with db.session(engine) as s:
        service.finish_run(s, run_id, outcome="aborted")
    engine.dispose()
    app.click(button_payload(APPROVER, run_id, "traffic", trigger="T1"))
    app.click(button_payload(APPROVER, "nope", "traffic", trigger="T2"))
    bad = button_payload(APPROVER, run_id, "traffic", trigger="T3")
    bad["actions"][0]["value"] = "{not json"
    app.click(bad)
    foreign = button_payload(APPROVER, run_id, "traffic", trigger="T4")
    foreign["actions"][0]["action_id"] = "someone_elses_button"
    app.click(foreign)
    texts = [text_of(p) for p in app.wait_posts(4)]
    assert any("the run is aborted, not waiting" in t for t in texts)
    assert any("There is no run `nope`" in t for t in texts)
    assert any("does not name a run and a gate" in t for t in texts)
    assert any("not one of revive's" in t for t in texts)
    assert app.resumed == []
    assert sorted(e.outcome for e in app.audit()) == ["failed", "invalid", "invalid", "invalid"]


def test_unsigned_or_undecodable_interactions_do_nothing(app: App) -> None:
    run_id = app.create_run()
    response = app.click(button_payload(APPROVER, run_id, "traffic"),
                         **{"X-Slack-Signature": "v0=" + "0" * 64})
    assert response.status_code == 401
    stale = app.click(button_payload(APPROVER, run_id, "traffic"),
                      **{"X-Slack-Request-Timestamp": str(NOW - 301)})
    assert stale.status_code == 401
    from tests.web.slack import signed_headers

    garbage = app.client.post("/slack/interactions", content="payload=%7Bnope",
                              headers=signed_headers("payload=%7Bnope", str(NOW)))
    assert garbage.status_code == 400
    assert app.resumed == [] and app.audit() == []


def test_a_redelivered_command_starts_nothing_twice(app: App) -> None:
    first = app.command("run failover target_dc=dc2", user=OPERATOR, trigger="TRIG1")
    again = app.command("run failover target_dc=dc2", user=OPERATOR, trigger="TRIG1",
                        **{"X-Slack-Retry-Num": "1"})
    assert text_of(first) == text_of(again)
    assert "Accepted" in text_of(again)
    assert len(app.started) == 1
    assert [e.outcome for e in app.audit()] == ["accepted", "replayed"]
