"""In production the failover pauses before traffic moves until an approver answers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import pytest
from prefect import tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName
from prefect.flow_runs import resume_flow_run
from pydantic import SecretStr

from flows.failover import FailoverParams, failover
from revive.chat.blocks import APPROVE_ACTION
from revive.runs.origin import origin_tags
from revive.store import db, service
from revive.web.approvals import prefect_resume
from revive.web.settings import WebSettings
from tests.chat.fake_slack import FakeSlack
from tests.flows.estates import small, write
from tests.web.slack import (
    APPROVER,
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


async def _paused_run_id() -> str | None:
    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"]))))
    return str(runs[0].id) if runs else None


def test_production_failover_waits_and_a_rejection_from_the_prefect_ui_stops_it(
        tmp_path, serve) -> None:
    """Anyone may reject from the UI (approving there needs a one-time code: see
    test_approval_codes.py)."""
    topology, path = write(tmp_path, small(environment="production"))
    sim, url = serve(topology)
    sim.estate.power_loss("dc1")
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = asyncio.run(failover(FailoverParams(
                topology=path, target_dc="dc2", sim_url=url, approval_timeout_s=120)))
        except Exception as exc:  # the rejected run fails; the test inspects why
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 60
    paused = None
    while paused is None and time.monotonic() < deadline:
        time.sleep(0.5)
        paused = asyncio.run(_paused_run_id())
    assert paused, "the failover never paused at the approval gate"
    assert sim.estate.class_weights["tier0"]["dc2"] == 0.5  # no traffic moved while waiting
    resume_flow_run(paused, run_input={  # what the UI's Resume dialog sends
        "decision": "reject", "approver": "bob", "reason": "not now"})
    worker.join(timeout=120)
    assert not worker.is_alive()
    with db.session(db.get_engine()) as s:
        (run,) = service.get_all_runs(s)
        (event,) = service.get_audit_events(s, run_id=run.id)
    assert event.actor == "bob"
    assert "traffic rejected (not now)" in str(outcome["error"])
    assert event.outcome == "rejected"
    assert event.detail == {"reason": "not now"}
    assert sim.estate.class_weights["tier0"]["dc2"] == 0.5  # traffic never moved
    assert str(run.outcome) == "failed"


# --- the same gate answered from Slack -------------------------------------------------------


def _buttons(fake: FakeSlack) -> dict | None:
    """The actions block on the living message, once it has one."""
    for message in list(fake.messages.values()):
        for block in message.get("blocks", []):
            if block.get("type") == "actions":
                return block
    return None


def _living_message(fake: FakeSlack) -> dict:
    return next(m for m in fake.messages.values() if "thread_ts" not in m)


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    """A fake Slack the flows post their living message to (through the environment)."""
    with FakeSlack() as fake:
        monkeypatch.setenv("REVIVE_SLACK_BOT_TOKEN", "xoxb-test")
        monkeypatch.setenv("REVIVE_SLACK_CHANNEL", "#incident")
        monkeypatch.setenv("REVIVE_SLACK_API_URL", fake.url)
        yield fake


def _slack_app(store_url: str) -> App:
    """The Slack app on the flows' store, resuming through Prefect for real."""
    roles = {"production": {APPROVER: "approver", OPERATOR: "operator"}}
    return App(WebSettings(slack_signing_secret=SecretStr(SLACK_SECRET), topology=TOPOLOGY,
                           roles=roles), FixedClock(NOW), store_url, resume=prefect_resume)


def _start(path: str, url: str, timeout_s: int, outcome: dict) -> threading.Thread:
    def run() -> None:
        try:
            with tags(*origin_tags("slack", f"ana ({OPERATOR})")):
                outcome["result"] = asyncio.run(failover(FailoverParams(
                    topology=path, target_dc="dc2", sim_url=url,
                    approval_timeout_s=timeout_s)))
        except Exception as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    return worker


def test_an_approval_button_in_slack_resumes_the_paused_failover(
        tmp_path, serve, slack: FakeSlack, store_url: str) -> None:
    topology, path = write(tmp_path, small(environment="production"))
    sim, url = serve(topology)
    sim.estate.power_loss("dc1")
    outcome: dict = {}
    worker = _start(path, url, 120, outcome)
    assert slack.wait_for(lambda: _buttons(slack) is not None, timeout=60), \
        "the living message never showed the approval buttons"
    assert sim.estate.class_weights["tier0"]["dc2"] == 0.5
    approve = next(e for e in _buttons(slack)["elements"] if e["action_id"] == APPROVE_ACTION)
    assert "Approval needed:* move dc1's traffic into dc2" in json.dumps(_living_message(slack))

    web = _slack_app(store_url)
    click = button_payload(APPROVER, json.loads(approve["value"])["run"], "traffic")
    own = button_payload(OPERATOR, json.loads(approve["value"])["run"], "traffic",
                         trigger="T0")
    web.click(own)  # the starter, and only an operator: refused, the run keeps waiting
    assert "approver role" in text_of(web.wait_posts(1)[0])
    assert web.click(click).status_code == 200
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert outcome.get("result", {}).get("outcome") == "recovered", outcome
    assert sim.estate.weights["dc2"] == 1.0
    final = _living_message(slack)
    assert all(b["type"] != "actions" for b in final["blocks"])  # buttons gone
    assert f"traffic: approved by uapprover ({APPROVER}) at" in json.dumps(final)
    assert "approved by" in text_of(web.wait_posts(2)[1])


def test_no_answer_in_time_stops_the_failover_before_traffic_moves(
        tmp_path, serve, slack: FakeSlack, store_url: str) -> None:
    topology, path = write(tmp_path, small(environment="production"))
    sim, url = serve(topology)
    sim.estate.power_loss("dc1")
    outcome: dict = {}
    worker = _start(path, url, 5, outcome)
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert "traffic timed out (no answer within 5 s)" in str(outcome.get("error"))
    assert sim.estate.class_weights["tier0"]["dc2"] == 0.5  # traffic never moved
    with db.session(db.get_engine()) as s:
        (run,) = service.get_all_runs(s)
        decision = service.get_gate_decision(s, run_id=run.id, gate="traffic")
        assert (decision.decision, decision.decided_by) == ("timed out", "revive")
        assert str(run.outcome) == "failed"
    assert "traffic: timed out by revive" in json.dumps(_living_message(slack))
    web = _slack_app(store_url)
    web.click(button_payload(APPROVER, run.id, "traffic"))  # too late
    assert "already *timed out* by revive" in text_of(web.wait_posts(1)[0])
