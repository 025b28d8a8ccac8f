"""Approval gates: in production a person says yes before traffic moves or a patch ships.

The flow pauses with Prefect's ``pause_flow_run`` and a typed ``Approval`` input, so the same
pause can be answered from the Prefect UI (its Resume dialog is built from the model) or from
the Approve / Reject buttons on the run's Slack message (``revive.web.approvals`` resumes it
with the same input). Whoever answers first decides: the decision is stored once per
(run, gate), and a later answer is told who decided. No answer within the timeout stops the
run safely, before the gated step, and says so. Outside production the gate approves itself,
on the record, so drills and staging never wait for a person.
"""

from __future__ import annotations

from datetime import UTC

from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from flows.context import RunContext
from revive.chat.models import ApprovalPrompt, RunStatus
from revive.errors import PermanentOpsError
from revive.store import db, service
from revive.store.models import AuditSource, GateDecision
from revive.topology import Environment

__all__ = ["Approval", "ApprovalRefused", "approval_gate"]

#: How often a paused run asks Prefect whether it was resumed.
POLL_INTERVAL_S = 2


class Approval(RunInput):
    """What an approver answers at a gate."""

    approve: bool
    approver: str
    reason: str = ""


class ApprovalRefused(PermanentOpsError):
    """The gate was rejected or timed out: the gated step did not run."""


async def approval_gate(ctx: RunContext, gate: str, question: str, timeout_s: float) -> None:
    """Return when ``gate`` is approved; raise ``ApprovalRefused`` (after recording and saying
    so) when it is rejected or nobody answers in ``timeout_s``."""
    key = f"approval:{gate}"
    if ctx.is_done(key):
        return
    ctx.run.begin(key, "approval", {"question": question})
    if ctx.environment != Environment.production:
        decision = _decide(ctx, gate, "approved", "revive", AuditSource.SYSTEM,
                           f"auto-approved ({ctx.environment})")
    else:
        decision = await _wait_for_person(ctx, gate, question, timeout_s)
    ok = decision.decision == "approved"
    when = decision.decided_at.astimezone(UTC).strftime("%H:%M:%S UTC")
    reason = f" ({decision.reason})" if decision.reason else ""
    line = f"{gate}: {decision.decision} by {decision.decided_by} at {when}{reason}"
    ctx.highlight(line)
    await ctx.settle(key, ok=ok, note=line, detail={
        "by": decision.decided_by, "decision": decision.decision, "reason": decision.reason,
        "source": str(decision.source)})
    await ctx.push(force=True)
    if not ok:
        raise ApprovalRefused(f"{gate} {decision.decision}{reason}; nothing was changed by "
                              "the gated step", tool="approval", target=ctx.target_dc)


async def _wait_for_person(ctx: RunContext, gate: str, question: str,
                           timeout_s: float) -> GateDecision:
    with db.session(ctx.run.engine) as s:  # decided before a crash: do not ask again
        earlier = service.get_gate_decision(s, run_id=ctx.run.run_id, gate=gate)
        if earlier is not None:
            s.expunge(earlier)
            return earlier
    prompt = ApprovalPrompt(gate=gate, question=question, timeout_s=timeout_s)
    await ctx.chat.update(ctx.card(RunStatus.WAITING_APPROVAL).model_copy(
        update={"approval": prompt}))
    ctx.log("waiting up to %.0f s for an approver: %s", timeout_s, question)
    try:
        answer = await pause_flow_run(wait_for_input=Approval, timeout=int(timeout_s),
                                      poll_interval=POLL_INTERVAL_S, key=f"approval-{gate}")
    except FlowPauseTimeout:
        why = f"no answer within {timeout_s:.0f} s"
        row = _decide(ctx, gate, "timed out", "revive", AuditSource.SYSTEM, why)
        if row.decision == "approved":  # a click that raced the timeout never resumed us
            return GateDecision(run_id=row.run_id, gate=gate, decision="timed out",
                                decided_by="revive", source=AuditSource.SYSTEM, reason=why)
        return row
    # Slack records its decision before it resumes the run; an answer from the Prefect UI
    # is recorded here. Either way the first decision stored is the one in force.
    return _decide(ctx, gate, "approved" if answer.approve else "rejected", answer.approver,
                   AuditSource.UI, answer.reason)


def _decide(ctx: RunContext, gate: str, decision: str, by: str, source: AuditSource,
            reason: str) -> GateDecision:
    with db.session(ctx.run.engine) as s:
        row, new = service.decide_gate(s, run_id=ctx.run.run_id, gate=gate, decision=decision,
                                       by=by, source=source, reason=reason)
        if new:  # Slack audits its own clicks; this is the UI's, the timeout's or revive's
            service.create_audit_event(
                s, actor=by, source=source, action=f"gate {gate}",
                target=f"{ctx.runbook}:{ctx.target_dc}", outcome=decision,
                run_id=ctx.run.run_id, detail={"reason": reason} if reason else None)
        s.expunge(row)
    return row
