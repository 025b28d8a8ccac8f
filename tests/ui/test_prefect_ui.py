"""The Prefect UI answers a production approval gate with the same typed input as Slack.

A real ``prefect server start`` serves the UI; ``revive run failover`` runs against it (its
own process, as an operator would start it) on a production estate, and pauses before
traffic moves. Debian's Chromium, driven by Playwright, opens the run's page (the link revive
puts in its progress, in the V2 UI), picks Open menu → Resume and fills in the form built from
``flows.approval.Approval``: an explicit decision, and to approve, the one-time code revive
sent the approver by Slack direct message (a fake Slack speaking the Web API here). The run
must then go on or stop exactly as the answer says, and revive's store must record who
decided, from the UI: the code's holder for an approval, the typed name for a rejection.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from revive.drill.server import SimServer
from revive.sim import Simulator
from revive.store import db, service
from tests.chat.fake_slack import FakeSlack
from tests.factories import REPO
from tests.flows.estates import small, write
from tests.prefect_server import prefect_server, tail
from tests.ui.browser import chromium, local_context, require_browser

PAUSE_TIMEOUT_S = 120.0
RUN_TIMEOUT_S = 180.0
APPROVER = "UCAROL"
CODE = re.compile(r"`([A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})`")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with prefect_server(tmp_path_factory.mktemp("prefect-ui"), ui=True) as env:
        yield env


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium(require_browser()) as browser:
        yield browser


def _paused_run(api: str, process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + PAUSE_TIMEOUT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the failover ended before pausing:\n{tail(log)}"
        runs = httpx.post(f"{api}/flow_runs/filter", timeout=10.0, json={
            "flow_runs": {"state": {"name": {"any_": ["Paused"]}}}}).json()
        if runs:
            return str(runs[0]["id"])
        time.sleep(0.5)
    raise AssertionError(f"the failover never paused at the approval gate:\n{tail(log)}")


def _code(fake: FakeSlack, user: str) -> str:
    """The one-time code revive sent ``user`` privately, once it has."""
    deadline = time.monotonic() + PAUSE_TIMEOUT_S
    while time.monotonic() < deadline:
        for method, params in list(fake.calls):
            if method == "chat.postMessage" and params.get("channel") == user:
                found = CODE.search(str(params.get("text")))
                if found:
                    return found.group(1)
        time.sleep(0.2)
    raise AssertionError(f"no approval code was sent to {user}")


def _answer_in_the_ui(browser: Any, ui: str, flow_run_id: str, *, approve: bool,
                      code: str, approver: str, reason: str) -> None:
    context = local_context(browser)  # nothing leaves this machine
    try:
        page = context.new_page()
        page.goto(f"{ui}/v2/runs/flow-run/{flow_run_id}")
        page.get_by_role("button", name="Open menu").click()
        page.get_by_role("menuitem", name="Resume").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Resume Flow Run").wait_for()
        # the form Prefect builds from Approval: decision (a select with no default: an
        # explicit choice), then the code, approver and reason text boxes
        dialog.get_by_role("button", name="Select Decision").click()
        page.get_by_role("option", name="approve" if approve else "reject",
                         exact=True).click()
        dialog.get_by_role("textbox", name="Code (Optional)").fill(code)
        dialog.get_by_role("textbox", name="Approver (Optional)").fill(approver)
        dialog.get_by_role("textbox", name="Reason (Optional)").fill(reason)
        dialog.get_by_role("button", name="Resume").click()
        dialog.wait_for(state="hidden")
    finally:
        context.close()


@pytest.mark.parametrize("approve", [True, False], ids=["approve", "reject"])
def test_the_ui_resume_dialog_decides_the_production_gate(
        server: dict[str, str], browser: Any, tmp_path: Path, approve: bool) -> None:
    topology, path = write(tmp_path, small(environment="production"))
    sim = Simulator(topology, seed=1)
    sim.advance(5)
    store = f"sqlite:///{tmp_path / 'revive.db'}"
    log = tmp_path / "failover.log"
    revive = str(Path(sys.executable).with_name("revive"))
    with SimServer(sim) as sim_server, FakeSlack() as slack:
        sim.estate.power_loss("dc1")
        env = {**server, "REVIVE_DATABASE_URL": store, "REVIVE_SLACK_BOT_TOKEN": "xoxb-test",
               "REVIVE_SLACK_CHANNEL": "#incident", "REVIVE_SLACK_API_URL": slack.url,
               "REVIVE_ROLES": json.dumps({"production": {APPROVER: "approver"}})}
        with log.open("w") as out:
            process = subprocess.Popen(
                [revive, "run", "failover", f"topology={path}", "target_dc=dc2",
                 f"sim_url={sim_server.url}", "approval_timeout_s=600"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        try:
            flow_run_id = _paused_run(server["PREFECT_API_URL"], process, log)
            assert sim.estate.class_weights["tier0"]["dc2"] == 0.5  # nothing moved while it waits
            code = _code(slack, APPROVER) if approve else ""
            _answer_in_the_ui(browser, server["PREFECT_UI_URL"], flow_run_id, approve=approve,
                              code=code, approver="carol",
                              reason="" if approve else "db not warm")
            returncode = process.wait(timeout=RUN_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    output = log.read_text(errors="replace")
    engine = db.get_engine(store)
    try:
        with db.session(engine) as s:
            (run,) = service.get_all_runs(s)
            decision = service.get_gate_decision(s, run_id=run.id, gate="traffic")
            (event,) = service.get_audit_events(s, run_id=run.id)
            assert run.prefect_flow_run_id == flow_run_id
            who = APPROVER if approve else "carol"  # an approval is the code's holder's
            assert (decision.decided_by, str(decision.source)) == (who, "ui")
            assert (event.actor, str(event.source)) == (who, "ui")
            outcome = str(run.outcome)
    finally:
        engine.dispose()
    if approve:
        assert returncode == 0, output[-3000:]
        assert decision.decision == "approved" and outcome == "succeeded"
        assert "recovered" in output
        assert sim.estate.weights["dc2"] == 1.0
    else:
        assert returncode != 0, output[-3000:]
        assert (decision.decision, decision.reason) == ("rejected", "db not warm")
        assert outcome == "failed"
        assert sim.estate.class_weights["tier0"]["dc2"] == 0.5  # traffic never moved
        assert "traffic rejected (db not warm)" in output
