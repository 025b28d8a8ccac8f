"""Approval gates: in production a person says yes before traffic moves or a patch ships.

The flow pauses with Prefect's ``pause_flow_run`` and a typed ``Approval`` input, answered
from the Approve / Reject buttons on the run's Slack message, from the CLI
(``revive approve``), or from the Prefect UI's Resume dialog (built from the model). Every
path obeys one rule (``revive.runs.approvals.refusal``): an approval needs an authenticated
approver who holds the approver role and did not start the run.

* Slack and the CLI authenticate their people, check the rule and store their decision
  first; the flow takes the stored decision, and resumes its own pause when it finds one
  (the CLI cannot reach a run's Prefect server, which may be a process's own).
* The Prefect UI and API have no login: any answer there may reject, but it approves only
  with the one-time code revive sent one approver by Slack direct message when the gate
  opened (``revive.approval_codes``); the rule is checked for that approver, who is
  recorded. A refused answer is said in the run's log and chat, audited, and the flow
  pauses again until its time is up.

Whoever answers first decides: the decision is stored once per (run, gate), and a later
answer is told who decided. No answer within the timeout stops the run safely, before the
gated step, and says so. Outside production the gate approves itself, on the record, so
drills and staging never wait for a person.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import time
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC
from pathlib import Path
from typing import Any, Literal

from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import aresume_flow_run, pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from flows.context import RunContext
from revive.approval_codes import CodeBook, Holder, approvers_from_env, code_message
from revive.chat.direct import direct_from_env
from revive.chat.models import ApprovalPrompt, RunStatus
from revive.errors import PermanentOpsError, ReviveError
from revive.runs.approvals import local_run, refusal
from revive.store import db, service
from revive.store.models import AuditSource, GateDecision
from revive.topology import DEFAULT_PATH, Environment, load
from revive.web.replies import Caller

__all__ = ["Approval", "ApprovalRefused", "approval_gate", "gate_environment", "rehearsal"]

#: How often a paused run asks Prefect whether it was resumed, and the store for a decision.
POLL_INTERVAL_S = 2

#: Who a rejection from the Prefect UI or API is recorded as when no name was typed.
UI_ACTOR = "prefect-ui"
MAX_TYPED_NAME = 200


class Approval(RunInput):
    """Approve or reject this gate. Approving here needs your one-time code from revive's
    Slack direct message; anyone may reject."""

    # No default: the Prefect UI must ask for an explicit choice (Submit with the defaults
    # used to reject the failover).
    decision: Literal["approve", "reject"] = Field(
        description="approve or reject: choose one.")
    code: str = Field(
        "", description="To approve: your one-time code from revive's Slack direct message "
        "(not needed to reject).")
    approver: str = Field(
        "", description="Your name, recorded with a rejection (an approval is recorded as "
        "the holder of the code).")
    reason: str = Field("", description="Why; recorded, and shown in chat.")


class ApprovalRefused(PermanentOpsError):
    """The gate was rejected or timed out: the gated step did not run."""


#: The topology this server or worker is configured with: it says whether gates apply.
TOPOLOGY_ENV = "REVIVE_TOPOLOGY"

_REHEARSAL: ContextVar[bool] = ContextVar("revive_rehearsal", default=False)


@contextlib.contextmanager
def rehearsal() -> Iterator[None]:
    """Runs opened inside are drills revive's own code set up on an estate it built (the
    lab): their gates follow their own (drill) topology. A context variable, so that no run
    parameter, Slack command or Prefect form can claim it."""
    token = _REHEARSAL.set(True)
    try:
        yield
    finally:
        _REHEARSAL.reset(token)


def gate_environment(ctx: RunContext) -> Environment:
    """The environment whose rules the run's gates follow: production when the run's own
    topology says so, or the topology this process is configured with (``REVIVE_TOPOLOGY``;
    else ``runbooks/topology.yaml`` in the working directory, which for a worker is the
    deployment's), or when that one cannot be read. A run's ``topology`` parameter can make
    a gate stricter, never lift it: an operator pointing a run at a staging copy of the
    estate still needs an approver. Only a run that can move nothing real follows its own
    topology: one whose every tool is the simulator, or a ``rehearsal``."""
    if ctx.environment == Environment.production:
        return Environment.production
    if getattr(ctx.tools, "simulated", False) or _REHEARSAL.get():
        return ctx.environment
    configured = os.environ.get(TOPOLOGY_ENV, "").strip()
    path = Path(configured or DEFAULT_PATH)
    if not configured and not path.is_file():
        return ctx.environment  # this process serves no estate: the run's is the only one
    try:
        return load(path).environment
    except (ReviveError, OSError):
        return Environment.production  # a broken configuration never lifts a gate


async def approval_gate(ctx: RunContext, gate: str, question: str, timeout_s: float) -> None:
    """Return when ``gate`` is approved; raise ``ApprovalRefused`` (after recording and saying
    so) when it is rejected or nobody answers in ``timeout_s``."""
    key = f"approval:{gate}"
    if ctx.is_done(key):
        return
    gates = gate_environment(ctx)  # never a run parameter's choice (see there)
    environment = str(gates)  # roles are looked up here, by every path
    ctx.run.begin(key, "approval", {"question": question, "environment": environment})
    if gates != Environment.production:
        decision = _decide(ctx, gate, "approved", "revive", AuditSource.SYSTEM,
                           f"auto-approved ({gates})")
    else:
        decision = await _wait_for_person(ctx, gate, question, timeout_s, environment)
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


async def _wait_for_person(ctx: RunContext, gate: str, question: str, timeout_s: float,
                           environment: str) -> GateDecision:
    earlier = _stored(ctx, gate)  # decided before a crash: do not ask again
    if earlier is not None:
        return earlier
    prompt = ApprovalPrompt(gate=gate, question=question, timeout_s=timeout_s,
                            buttons=not local_run())
    await ctx.chat.update(ctx.card(RunStatus.WAITING_APPROVAL).model_copy(
        update={"approval": prompt}))
    codes, how = await _send_codes(ctx, gate, question, environment)
    form = Approval.with_initial_data(description=how)
    ctx.log("waiting up to %.0f s for an approver: %s", timeout_s, question)
    ctx.log("%s", how)
    deadline = time.monotonic() + timeout_s
    opening = secrets.token_hex(4)  # a retried flow run never reads an older pause's input
    attempt = 0
    while (remaining := deadline - time.monotonic()) >= 1:
        attempt += 1
        relay = asyncio.create_task(_relay_stored(ctx, gate))
        try:
            answer = await pause_flow_run(wait_for_input=form, timeout=math.ceil(remaining),
                                          poll_interval=POLL_INTERVAL_S,
                                          key=f"approval-{gate}-{opening}-{attempt}")
        except FlowPauseTimeout:
            break
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
        decision = await _judge(ctx, gate, answer, codes, environment)
        if decision is not None:
            return decision
    return _timed_out(ctx, gate, timeout_s)


async def _judge(ctx: RunContext, gate: str, answer: Approval, codes: CodeBook,
                 environment: str) -> GateDecision | None:
    """The decision an answer makes, or None (said, logged and audited) when it is refused."""
    stored = _stored(ctx, gate)  # Slack or the CLI checked and stored it before resuming us
    if stored is not None:
        return stored
    typed = answer.approver.strip()[:MAX_TYPED_NAME]  # unauthenticated: only ever a label
    if answer.decision == "reject":  # stopping safely is open to anyone who can reach Prefect
        return _decide(ctx, gate, "rejected", typed or UI_ACTOR, AuditSource.UI, answer.reason)
    holder = codes.redeem(answer.code)
    if holder is None:
        why = ("approving through the Prefect UI or API needs the one-time code revive sent "
               "the approver by Slack direct message; " +
               ("none was given" if not answer.code else
                "that code is wrong, used, or not for this gate"))
    else:
        why = refusal(approve=True, role=holder.role, environment=environment,
                      started=Caller(holder.user_id).started(ctx.origin.by))
        if why is None:
            return _decide(ctx, gate, "approved", holder.user_id, AuditSource.UI,
                           answer.reason, {"via": "one-time code", "typed_approver": typed})
    await _refuse(ctx, gate, why, typed, holder)
    return None


async def _refuse(ctx: RunContext, gate: str, why: str, typed: str,
                  holder: Holder | None) -> None:
    """Say in the run's log and chat why an answer changed nothing, and audit it."""
    ctx.log("an approval of %s from the Prefect UI or API was refused: %s; still waiting",
            gate, why)
    await ctx.warn(f"approval:{gate}", f"An approval of {gate} through the Prefect UI or "
                   f"API was refused: {why}. The gate is still waiting.")
    with db.session(ctx.run.engine) as s:
        service.create_audit_event(
            s, actor=typed or UI_ACTOR, source=AuditSource.UI, action=f"gate {gate}",
            target=f"{ctx.runbook}:{ctx.target_dc}", outcome="refused", run_id=ctx.run.run_id,
            detail={"reason": why, "decision": "approve",
                    **({"code_holder": holder.user_id} if holder else {})})


async def _send_codes(ctx: RunContext, gate: str, question: str,
                      environment: str) -> tuple[CodeBook, str]:
    """Each approver's one-time code, sent by Slack direct message; and how to answer."""
    codes = CodeBook()
    run_id = ctx.run.run_id
    cli = f"`revive approve {run_id} --gate {gate}` (as an OS user with the approver role: " \
          "os:<user> in REVIVE_ROLES)"
    if local_run():
        return codes, (f"A break-glass (--local) run: approve from the terminal with {cli}, "
                       f"with REVIVE_DATABASE_URL naming the run's store. This form can only "
                       f"reject.")
    direct = direct_from_env()
    if direct is None:
        return codes, (f"Slack is not configured, so no approval codes were sent: approve "
                       f"from the CLI with {cli}. This form can only reject.")
    messages = {
        user: code_message(run_id=run_id, runbook=ctx.runbook, target_dc=ctx.target_dc,
                           gate=gate, question=question, code=codes.issue(Holder(user, role)),
                           started=Caller(user).started(ctx.origin.by))
        for user, role in (await asyncio.to_thread(approvers_from_env, environment)).items()}
    sent = sum(await asyncio.gather(*(asyncio.to_thread(direct.send, user, text)
                                      for user, text in messages.items())))
    if not sent:
        return codes, (f"No approver could be sent an approval code: approve with the Approve "
                       f"button in Slack or {cli}. This form can only reject.")
    return codes, (f"To approve here, choose approve and enter the one-time code revive sent "
                   f"you by Slack direct message ({sent} approver(s)). Anyone may reject. The "
                   f"Approve button in Slack and {cli} work too.")


async def _relay_stored(ctx: RunContext, gate: str) -> None:
    """Resume this run's own pause once Slack or the CLI stored a decision: the CLI cannot
    reach the run's Prefect server, and a click may land while the flow pauses again."""
    run_ctx = FlowRunContext.get()
    if run_ctx is None or run_ctx.flow_run is None:
        return
    while True:
        await asyncio.sleep(POLL_INTERVAL_S)
        row = _stored(ctx, gate)
        if row is None:
            continue
        answer: dict[str, Any] = {
            "decision": "approve" if row.decision == "approved" else "reject",
            "approver": row.decided_by}
        try:
            await aresume_flow_run(run_ctx.flow_run.id, run_input=answer)
            return
        except Exception as exc:  # not paused yet (or resumed meanwhile): look again
            ctx.log("a stored decision at %s waits for the pause (%s)", gate, exc)


def _stored(ctx: RunContext, gate: str) -> GateDecision | None:
    with db.session(ctx.run.engine) as s:
        row = service.get_gate_decision(s, run_id=ctx.run.run_id, gate=gate)
        if row is not None:
            s.expunge(row)
    return row


def _timed_out(ctx: RunContext, gate: str, timeout_s: float) -> GateDecision:
    why = f"no answer within {timeout_s:.0f} s"
    row = _decide(ctx, gate, "timed out", "revive", AuditSource.SYSTEM, why)
    if row.decision == "approved":  # a click that raced the timeout never resumed us
        return GateDecision(run_id=row.run_id, gate=gate, decision="timed out",
                            decided_by="revive", source=AuditSource.SYSTEM, reason=why)
    return row


def _decide(ctx: RunContext, gate: str, decision: str, by: str, source: AuditSource,
            reason: str, detail: dict[str, Any] | None = None) -> GateDecision:
    with db.session(ctx.run.engine) as s:
        row, new = service.decide_gate(s, run_id=ctx.run.run_id, gate=gate, decision=decision,
                                       by=by, source=source, reason=reason)
        if new:  # Slack and the CLI audit their own; this is the UI's, the timeout's or revive's
            extra = {**({"reason": reason} if reason else {}), **(detail or {})}
            service.create_audit_event(
                s, actor=by, source=source, action=f"gate {gate}",
                target=f"{ctx.runbook}:{ctx.target_dc}", outcome=decision,
                run_id=ctx.run.run_id, detail=extra or None)
        s.expunge(row)
    return row
