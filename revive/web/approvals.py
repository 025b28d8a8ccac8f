"""The Approve / Reject buttons on a run's living message.

A click resumes the paused Prefect flow run with the same typed input the Prefect UI's Resume
dialog sends (``flows.approval.Approval``), after these checks, each refused with a reason
and audited:

* the one rule every path to a gate obeys (``revive.runs.approvals.refusal``): approving
  needs the approver role and must come from someone other than the person who started
  the run (two-person rule); rejecting needs only the operator role, like an abort,
  because stopping safely should never wait for a second person. Slack signs its
  requests, so the clicking user is authenticated;
* the first decision at a (run, gate) wins: it is stored with a unique key before the run is
  resumed, so double clicks, two approvers at once, or Slack racing the Prefect UI or the
  CLI all end with one decision, and everyone after is told who decided and when. The flow
  takes the stored decision, whatever input reaches it;
* a decision that cannot be delivered (the run stopped waiting: it timed out, was cancelled
  or crashed) is withdrawn, so the record never claims a decision that changed nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC
from typing import Any
from uuid import UUID

from revive.chat.blocks import APPROVE_ACTION, REJECT_ACTION, gate_of
from revive.chat.text import slack_escape
from revive.runs.approvals import refusal
from revive.store import db, service
from revive.store.models import AuditSource, GateDecision, RunOutcome
from revive.web.access import Access
from revive.web.replies import Caller, Reply

__all__ = ["ApprovalHandler", "Resume", "prefect_resume"]

log = logging.getLogger(__name__)

#: Resumes a paused Prefect flow run with a run input; raises if it is not paused.
Resume = Callable[[str, dict[str, Any]], None]


#: How often, and how many times, a resume is tried again while the flow pauses anew.
RESUME_RETRY_S, RESUME_RETRIES = 0.5, 10


def prefect_resume(flow_run_id: str, run_input: dict[str, Any]) -> None:
    """Resume through the Prefect API (``PREFECT_API_URL``, or this process's server).

    A flow that is running rather than paused is between two pauses of the gate (it just
    refused an answer from the Prefect UI) or is taking a stored decision itself: it is
    asked again briefly, and if it still runs, it finds the decision in the store, which
    the caller wrote first. Raises when the flow run is not alive any more."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run

    for _ in range(RESUME_RETRIES):
        try:
            resume_flow_run(UUID(flow_run_id), run_input=run_input)
            return
        except NotPausedError:
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(UUID(flow_run_id)).state
            if state is None or not state.is_running():
                raise
        time.sleep(RESUME_RETRY_S)


def _when(decision: GateDecision) -> str:
    return decision.decided_at.astimezone(UTC).strftime("%H:%M:%S UTC")


class ApprovalHandler:
    """Decides gates from button presses for one app."""

    def __init__(self, access: Access, resume: Resume = prefect_resume) -> None:
        self.access = access
        self.resume = resume

    def handle(self, caller: Caller, action_id: str, value: str) -> Reply:
        """Check, record and deliver one click; never raises for anything Slack sent."""
        if action_id not in (APPROVE_ACTION, REJECT_ACTION):
            self.access.audit(caller, "button", action_id[:64] or "?", "invalid")
            return Reply(":warning: That button is not one of revive's.")
        approve = action_id == APPROVE_ACTION
        verb = "approve" if approve else "reject"
        try:
            run_id, gate = gate_of(value)
        except ValueError as exc:
            self.access.audit(caller, verb, "?", "invalid", detail={"reason": str(exc)})
            return Reply(":warning: The button does not name a run and a gate.")
        try:
            return self._decide(caller, approve, run_id, gate)
        except Exception as exc:
            log.exception("%s of %s at gate %s failed", verb, run_id, gate)
            self.access.audit(caller, verb, f"run:{run_id}", "error",
                              detail={"gate": gate, "reason": f"{type(exc).__name__}: {exc}"})
            return Reply(f":x: Could not {verb}: an internal error (logged).")

    def _decide(self, caller: Caller, approve: bool, run_id: str, gate: str) -> Reply:
        verb = "approve" if approve else "reject"
        with db.session(self.access.engine) as s:
            run = service.get_run(s, run_id)
            if run is not None:
                s.expunge(run)
        target = f"{run.runbook}:{run_id}" if run else f"run:{run_id}"
        detail: dict[str, Any] = {"gate": gate, "user_name": caller.user_name,
                                  "channel": caller.channel_id}
        if run is None:
            self.access.audit(caller, verb, target, "invalid", detail=detail)
            return Reply(f":warning: There is no run `{slack_escape(run_id)}`.")
        environment = self.access.environment()
        role = self.access.role(caller, environment)
        reason = refusal(approve=approve, role=role, environment=environment,
                         started=caller.started(run.triggered_by))
        if reason:
            self.access.audit(caller, verb, target, "refused", run_id=run_id,
                              detail={**detail, "reason": reason, "role": str(role)})
            return Reply(f":no_entry: Refused: {slack_escape(reason)}.")
        decision_text = "approved" if approve else "rejected"
        why = "" if approve else f"rejected in Slack by {caller.identity}"
        with db.session(self.access.engine) as s:
            decision, new = service.decide_gate(
                s, run_id=run_id, gate=gate, decision=decision_text, by=caller.identity,
                source=AuditSource.SLACK, reason=why)
            s.expunge(decision)
        if not new:
            self.access.audit(caller, verb, target, "duplicate", run_id=run_id,
                              detail={**detail, "decided_by": decision.decided_by,
                                      "decision": decision.decision})
            by = "you" if decision.decided_by == caller.identity else decision.decided_by
            return Reply(f":information_source: `{slack_escape(gate)}` was already "
                         f"*{slack_escape(decision.decision)}* by {slack_escape(by)} at "
                         f"{_when(decision)}; nothing more to do.")
        problem = self._deliver(run.prefect_flow_run_id, run.outcome, approve, caller, why)
        if problem:
            with db.session(self.access.engine) as s:
                service.withdraw_gate_decision(s, s.merge(decision))
            self.access.audit(caller, verb, target, "failed", run_id=run_id,
                              detail={**detail, "reason": problem})
            return Reply(f":x: Could not {verb} `{slack_escape(gate)}`: "
                         f"{slack_escape(problem)}.")
        self.access.audit(caller, verb, target, decision_text, run_id=run_id, detail=detail)
        what = "continues" if approve else "stops safely before that step"
        return Reply(f":white_check_mark: `{slack_escape(gate)}` of *{slack_escape(run.runbook)}*"
                     f" run `{run_id}` {decision_text} by {slack_escape(caller.identity)} at "
                     f"{_when(decision)}; the run {what}.", ephemeral=False)

    def _deliver(self, flow_run_id: str | None, outcome: RunOutcome, approve: bool,
                 caller: Caller, reason: str) -> str | None:
        """Resume the run with the decision; why it could not be, or None."""
        if outcome != RunOutcome.RUNNING:
            return f"the run is {outcome}, not waiting for a decision"
        if not flow_run_id:
            return "the run has no Prefect flow run to resume"
        try:
            self.resume(flow_run_id, {"decision": "approve" if approve else "reject",
                                      "approver": caller.identity, "reason": reason})
        except Exception as exc:
            log.warning("could not resume flow run %s: %s", flow_run_id, exc)
            return f"the run is no longer waiting for a decision ({type(exc).__name__}: {exc})"
        return None
