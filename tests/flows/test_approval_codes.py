"""A production gate answered through the Prefect API, which has no login, and from the CLI.

Anyone who reaches Prefect may reject; approving there takes the one-time code revive sent an
approver by Slack direct message, and the approval is that approver's. A refused answer
leaves the gate waiting and is said in chat and audited. The CLI approves as the
operating-system user (``os:alice`` in ``REVIVE_ROLES``).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import pytest
from prefect import tags
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run
from pydantic import SecretStr

from flows.failover import FailoverParams, failover
from revive.errors import StoreError
from revive.runs.approvals import DecisionRefused, decide_from_cli, refusal
from revive.runs.origin import origin_tags
from revive.store import db, service
from revive.store.models import AuditEvent
from revive.web.approvals import prefect_resume
from revive.web.settings import Role, WebSettings
from tests.chat.fake_slack import FakeSlack
from tests.flows.estates import small, write
from tests.web.slack import (
    APPROVER,
    APPROVER2,
    NOW,
    OPERATOR,
    SLACK_SECRET,
    TOPOLOGY,
    App,
    FixedClock,
    button_payload,
    text_of,
)

pytestmark = pytest.mark.usefixtures("prefect_harness", "store_url")

CODE = re.compile(r"`([A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})`")
WAIT_S = 90.0


def _eventually(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll ``condition`` until it is truthy (its value), on an event, not a clock reading."""
    done = threading.Event()
    value: list[Any] = []

    def poll() -> None:
        while not done.is_set():
            got = condition()
            if got:
                value.append(got)
                done.set()
                return
            done.wait(0.3)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    done.wait(timeout)
    done.set()
    poller.join()
    assert value, f"never happened: {what}"
    return value[0]


def _paused_run() -> str | None:
    """This test's flow run, when it is paused (an earlier test's may still be)."""
    try:
        with db.session(db.get_engine()) as s:
            runs = service.get_all_runs(s)
    except StoreError:  # the flow has not created the store yet
        return None
    if len(runs) != 1 or not runs[0].prefect_flow_run_id:
        return None
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(UUID(runs[0].prefect_flow_run_id)).state
    return runs[0].prefect_flow_run_id if state and state.is_paused() else None


def _audit(outcome: str) -> list[AuditEvent]:
    with db.session(db.get_engine()) as s:
        return [e for e in reversed(service.get_audit_events(s)) if e.outcome == outcome]


@pytest.fixture(autouse=True)
def _stop_waiting_runs(store_url: str) -> Iterator[None]:
    """A failed test leaves no flow paused at its gate: it is rejected."""
    yield
    if (paused := _paused_run()) is not None:
        resume_flow_run(UUID(paused), run_input={"decision": "reject", "reason": "cleanup"})


def _start(path: str, url: str, triggered_by: str, outcome: dict) -> threading.Thread:
    def run() -> None:
        try:
            with tags(*origin_tags("slack", triggered_by)):
                outcome["result"] = asyncio.run(failover(FailoverParams(
                    topology=path, target_dc="dc2", sim_url=url, approval_timeout_s=150)))
        except Exception as exc:  # a rejected run fails; the test inspects why
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    return worker


def _only_run() -> Any:
    with db.session(db.get_engine()) as s:
        (run,) = service.get_all_runs(s)
        decision = service.get_gate_decision(s, run_id=run.id, gate="traffic")
        s.expunge_all()
    return run, decision


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    """A fake Slack for the living message and the approvers' direct messages."""
    with FakeSlack() as fake:
        monkeypatch.setenv("REVIVE_SLACK_BOT_TOKEN", "xoxb-test")
        monkeypatch.setenv("REVIVE_SLACK_CHANNEL", "#incident")
        monkeypatch.setenv("REVIVE_SLACK_API_URL", fake.url)
        monkeypatch.setenv("REVIVE_ROLES", json.dumps({"production": {
            APPROVER: "approver", APPROVER2: "approver", OPERATOR: "operator"}}))
        yield fake


def _codes(fake: FakeSlack) -> dict[str, str]:
    """Approver -> the code revive sent them privately."""
    return {params["channel"]: CODE.search(params["text"]).group(1)  # type: ignore[union-attr]
            for method, params in list(fake.calls)
            if method == "chat.postMessage" and str(params.get("channel")).startswith("U")}


def _refused_again(count: int) -> str:
    """Wait until ``count`` answers were refused and the gate waits again."""
    _eventually(lambda: len(_audit("refused")) >= count, f"{count} refused answer(s)")
    return _eventually(_paused_run, "the gate paused again")


def test_the_prefect_api_approves_only_with_an_approvers_one_time_code(
        tmp_path, serve, slack: FakeSlack) -> None:
    topology, path = write(tmp_path, small(environment="production"))
    sim, url = serve(topology)
    sim.estate.power_loss("dc1")
    outcome: dict = {}
    worker = _start(path, url, f"uapprover ({APPROVER})", outcome)  # an approver started it
    paused = _eventually(_paused_run, "the failover paused at its gate")
    codes = _eventually(lambda: len(_codes(slack)) == 2 and _codes(slack), "two codes sent")
    assert set(codes) == {APPROVER, APPROVER2}  # approvers only, each privately
    public = json.dumps([params for _, params in list(slack.calls)
                         if not str(params.get("channel")).startswith("U")])
    assert not any(code in public for code in codes.values())  # never in the channel

    with pytest.raises(RuntimeError, match="Cannot resume"):  # the old form: refused by Prefect
        resume_flow_run(UUID(paused), run_input={"approve": True, "approver": "uappr (UAPPR)"})
    resume_flow_run(UUID(paused), run_input={"decision": "approve",
                                             "approver": "uappr (UAPPR)"})
    paused = _refused_again(1)
    resume_flow_run(UUID(paused), run_input={"decision": "approve", "code": "AAAA-BBBB-CCCC",
                                             "approver": f"uapprover2 ({APPROVER2})"})
    paused = _refused_again(2)
    resume_flow_run(UUID(paused), run_input={"decision": "approve", "code": codes[APPROVER]})
    paused = _refused_again(3)  # the starter's own code: the two-person rule holds
    assert sim.estate.class_weights["tier0"]["dc2"] == 0.5  # nothing moved meanwhile
    reasons = [e.detail["reason"] for e in _audit("refused")]
    assert "none was given" in reasons[0] and "wrong, used" in reasons[1]
    assert "two-person rule" in reasons[2]
    assert _audit("refused")[2].detail["code_holder"] == APPROVER
    said = [m["text"] for m in list(slack.messages.values())
            if "thread_ts" in m and "was refused" in m["text"]]
    assert len(said) == 3 and all("still waiting" in text for text in said)

    resume_flow_run(UUID(paused), run_input={"decision": "approve", "code": codes[APPROVER2],
                                             "approver": "anything typed"})
    worker.join(timeout=180)
    assert not worker.is_alive()
    assert outcome.get("result", {}).get("outcome") == "recovered", outcome
    _, decision = _only_run()
    assert (decision.decision, decision.decided_by, str(decision.source)) == (
        "approved", APPROVER2, "ui")  # recorded as the code's holder, not the typed name
    (approved,) = _audit("approved")
    assert (approved.actor, approved.detail["via"]) == (APPROVER2, "one-time code")
    assert sim.estate.weights["dc2"] == 1.0


def test_the_prefect_api_rejects_without_a_code_and_says_the_cli_approves(
        tmp_path, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REVIVE_SLACK_BOT_TOKEN", raising=False)  # no Slack: no codes
    topology, path = write(tmp_path, small(environment="production"))
    sim, url = serve(topology)
    sim.estate.power_loss("dc1")
    outcome: dict = {}
    worker = _start(path, url, "ana", outcome)
    paused = _eventually(_paused_run, "the failover paused at its gate")
    with get_client(sync_client=True) as client:
        inputs = client.filter_flow_run_input(UUID(paused), key_prefix="paused-approval-traffic",
                                              limit=10, exclude_keys=set())
    (description,) = [json.loads(i.value) for i in inputs if i.key.endswith("-description")]
    assert "Slack is not configured" in description and "revive approve" in description
    resume_flow_run(UUID(paused), run_input={"decision": "reject", "approver": "bob",
                                             "reason": "not now"})
    worker.join(timeout=180)
    assert not worker.is_alive()
    assert "traffic rejected (not now)" in str(outcome.get("error"))
    run, decision = _only_run()
    assert (decision.decision, decision.decided_by, str(decision.source)) == (
        "rejected", "bob", "ui")
    assert str(run.outcome) == "failed"
    assert sim.estate.class_weights["tier0"]["dc2"] == 0.5  # traffic never moved


def test_the_cli_approves_a_waiting_failover_as_the_os_user(
        tmp_path, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REVIVE_SLACK_BOT_TOKEN", raising=False)
    monkeypatch.setenv("REVIVE_ROLES", json.dumps({"production": {"os:alice": "approver"}}))
    topology, path = write(tmp_path, small(environment="production"))
    sim, url = serve(topology)
    sim.estate.power_loss("dc1")
    outcome: dict = {}
    worker = _start(path, url, "ana", outcome)
    _eventually(_paused_run, "the failover paused at its gate")
    run, _ = _only_run()
    engine = db.get_engine()
    with pytest.raises(DecisionRefused, match="approver role in production; you have no role"):
        decide_from_cli(engine, run.id, approve=True, user="mallory")
    said = decide_from_cli(engine, run.id[:12], approve=True, user="alice")
    assert "approved by os:alice" in said
    worker.join(timeout=180)  # the flow takes the stored decision: no Prefect server needed
    assert not worker.is_alive()
    assert outcome.get("result", {}).get("outcome") == "recovered", outcome
    run, decision = _only_run()
    assert (decision.decision, decision.decided_by, str(decision.source)) == (
        "approved", "os:alice", "cli")
    assert [(e.actor, e.outcome) for e in _audit("refused")] == [("os:mallory", "refused")]
    assert sim.estate.weights["dc2"] == 1.0


def test_a_slack_click_after_a_refused_answer_approves_by_the_same_rule(
        tmp_path, serve, slack: FakeSlack, store_url: str) -> None:
    topology, path = write(tmp_path, small(environment="production"))
    sim, url = serve(topology)
    sim.estate.power_loss("dc1")
    outcome: dict = {}
    worker = _start(path, url, f"ana ({OPERATOR})", outcome)
    paused = _eventually(_paused_run, "the failover paused at its gate")
    resume_flow_run(UUID(paused), run_input={"decision": "approve", "approver": "ana"})
    _refused_again(1)
    roles = {"production": {APPROVER: "approver", APPROVER2: "approver", OPERATOR: "operator"}}
    web = App(WebSettings(slack_signing_secret=SecretStr(SLACK_SECRET), topology=TOPOLOGY,
                          roles=roles), FixedClock(NOW), store_url, resume=prefect_resume)
    run, _ = _only_run()
    web.click(button_payload(OPERATOR, run.id, "traffic", trigger="T0"))  # the starter
    assert refusal(approve=True, role=Role.OPERATOR, environment="production",
                   started=True) in text_of(web.wait_posts(1)[0])
    web.click(button_payload(APPROVER2, run.id, "traffic", trigger="T1"))
    worker.join(timeout=180)
    assert not worker.is_alive()
    assert outcome.get("result", {}).get("outcome") == "recovered", outcome
    _, decision = _only_run()
    assert (decision.decision, decision.decided_by, str(decision.source)) == (
        "approved", f"uapprover2 ({APPROVER2})", "slack")
    assert sim.estate.weights["dc2"] == 1.0
