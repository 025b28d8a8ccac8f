"""Who may decide an approval gate: one rule for Slack buttons, the CLI and one-time codes.

An approval needs an authenticated approver who holds the approver role in the gate's
environment and is not the person who started the run (two-person rule); rejecting needs
the operator role, like an abort, because stopping safely never waits for a second person.
Each path authenticates its people its own way and then asks ``refusal``:

* Slack signs its requests, so a button press names a Slack user (``U...``);
* the CLI runs as an operating-system user: ``os:alice`` in ``REVIVE_ROLES``
  (``decide_from_cli``, behind ``revive approve``);
* the Prefect UI and API have no login: a decision there may always reject, but approves
  only with a one-time code revive sent privately to one approver (``revive.approval_codes``),
  and it is that approver who is then checked and recorded.

Slack and the CLI record their decision in the store (first decision per gate wins); the
waiting flow takes it from there, so the CLI needs no way into the run's Prefect server.
"""

from __future__ import annotations

import os
import shlex
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine

from revive.errors import InputError
from revive.store import db, service
from revive.store.models import AuditSource, RunOutcome, StepState
from revive.web.settings import Role, WebSettings, role_of

__all__ = ["OS_PREFIX", "DecisionRefused", "decide_from_cli", "how_to_approve", "open_gate",
           "os_identity", "os_user_started", "refusal", "roles_settings"]

#: How an operating-system user is named in ``REVIVE_ROLES`` and in the record.
OS_PREFIX = "os:"

#: Where roles are looked up when a gate did not record its environment: the strictest.
STRICTEST_ENVIRONMENT = "production"


class DecisionRefused(InputError):
    """The rule refused the decision: nothing was recorded, the gate keeps waiting."""


#: Set (to 1) by ``revive run --local`` for the runs of its process: a break-glass run.
LOCAL_RUN_ENV = "REVIVE_LOCAL_RUN"


def local_run() -> bool:
    """A break-glass run: its gates are decided from the terminal, in its own store."""
    return os.environ.get(LOCAL_RUN_ENV) == "1"


def refusal(*, approve: bool, role: Role, environment: str, started: bool) -> str | None:
    """Why this person may not take this decision, or None when they may: the one rule."""
    verb = "approve" if approve else "reject"
    needed = Role.APPROVER if approve else Role.OPERATOR
    if role < needed:
        held = "no role" if role is Role.NONE else str(role)
        return f"to {verb} you need the {needed} role in {environment}; you have {held}"
    if approve and started:
        return ("you started this run, and a run needs a second person to approve it "
                "(two-person rule); ask another approver")
    return None


def roles_settings() -> WebSettings:
    """``REVIVE_ROLES`` (and the rest of ``WebSettings``) from the environment; InputError
    naming the variable and the problem when it cannot be read."""
    try:
        return WebSettings()
    except ValidationError as exc:
        raise InputError(f"REVIVE_ROLES: {exc.errors()[0]['msg']}") from None
    except ValueError as exc:  # pydantic-settings' SettingsError: not JSON at all
        raise InputError(f"REVIVE_ROLES: {str(exc).splitlines()[0]}") from None


def os_identity(user: str) -> str:
    """``os:alice``: the CLI's identity, as ``REVIVE_ROLES`` and the record name it."""
    return f"{OS_PREFIX}{user}"


def os_user_started(user: str, triggered_by: str) -> bool:
    """Whether a run's ``triggered_by`` names this operating-system user (the CLI records
    the bare user name; ``os:alice`` or ``... (os:alice)`` count too)."""
    who = triggered_by.strip()
    return who in (user, os_identity(user)) or who.endswith(f"({os_identity(user)})")


def open_gate(engine: Engine, run_id: str) -> tuple[str, str] | None:
    """(gate, environment) of the gate the run waits at, or None: the one ``approval``
    step that started and has not ended."""
    with db.session(engine) as s:
        for step in service.get_steps(s, run_id=run_id):
            if step.action == "approval" and step.state == StepState.STARTED:
                environment = (step.detail or {}).get("environment") or STRICTEST_ENVIRONMENT
                return step.step_key.removeprefix("approval:"), str(environment)
    return None


def how_to_approve(run_id: str, gate: str, *, store: str | None = None,
                   slack_channel: str | None = None, ui_link: str | None = None) -> list[str]:
    """What a person waiting beside a run at ``gate`` is told, one way per line: the CLI
    always; the Slack message and the Prefect UI when the run has them. ``store`` is said
    when the approver must name it (a local run's own file, which another terminal does
    not open by default)."""
    env = f"{db.DATABASE_URL_ENV}={shlex.quote(db.mask_url(store))} " if store else ""
    lines = [f"approve: {env}revive approve {run_id} --gate {gate}"]
    if slack_channel:
        lines.append(f"or in Slack: the approval message in {slack_channel}")
    if ui_link:
        lines.append(f"or in the Prefect UI: {ui_link}")
    return lines


def decide_from_cli(engine: Engine, run_ref: str, *, approve: bool, user: str,
                    reason: str = "", gate: str | None = None,
                    settings: WebSettings | None = None) -> str:
    """Record the operating-system user's decision at the gate ``run_ref`` waits at; the
    flow picks it up within seconds. ``gate``, when given, must be that gate: a decision
    meant for one gate never lands on the next. Returns what to tell them; raises
    ``InputError`` (``DecisionRefused`` when the rule says no) with nothing recorded but the
    audit row."""
    identity = os_identity(user)
    verb = "approve" if approve else "reject"
    with db.session(engine) as s:
        try:
            run = service.find_run(s, run_ref)
        except InputError as exc:
            _audit(engine, identity, verb, f"run:{run_ref[:64]}", "invalid", None,
                   {"reason": str(exc)})
            raise
        s.expunge(run)
    target = f"{run.runbook}:{run.id}"
    if run.outcome != RunOutcome.RUNNING:
        why = f"run {run.id} is {run.outcome}, not waiting for a decision"
        _audit(engine, identity, verb, target, "invalid", run.id, {"reason": why})
        raise InputError(why)
    gate_env = open_gate(engine, run.id)
    if gate_env is None:
        why = f"run {run.id} is not waiting at an approval gate"
        _audit(engine, identity, verb, target, "invalid", run.id, {"reason": why})
        raise InputError(why)
    waiting, environment = gate_env
    if gate is not None and gate != waiting:
        why = f"run {run.id} waits at gate {waiting}, not {gate}"
        _audit(engine, identity, verb, target, "invalid", run.id,
               {"gate": gate, "reason": why})
        raise InputError(why)
    gate = waiting
    settings = settings if settings is not None else roles_settings()
    role = role_of(identity, (), environment, settings=settings)
    why = refusal(approve=approve, role=role, environment=environment,
                  started=os_user_started(user, run.triggered_by))
    if why:
        _audit(engine, identity, verb, target, "refused", run.id,
               {"gate": gate, "reason": why, "role": str(role)})
        raise DecisionRefused(f"refused: {why} (you are {identity})")
    decision_text = "approved" if approve else "rejected"
    note = reason or ("" if approve else f"rejected from the CLI by {identity}")
    with db.session(engine) as s:
        decision, new = service.decide_gate(s, run_id=run.id, gate=gate, decision=decision_text,
                                            by=identity, source=AuditSource.CLI, reason=note)
        s.expunge(decision)
    if not new:
        _audit(engine, identity, verb, target, "duplicate", run.id,
               {"gate": gate, "decided_by": decision.decided_by,
                "decision": decision.decision})
        return (f"{gate} of {run.runbook} run {run.id} was already {decision.decision} by "
                f"{decision.decided_by}; nothing more to do")
    _audit(engine, identity, verb, target, decision_text, run.id,
           {"gate": gate, **({"reason": note} if note else {})})
    what = "continues" if approve else "stops safely before that step"
    return (f"{gate} of {run.runbook} run {run.id} {decision_text} by {identity}; the run "
            f"{what} within a few seconds")


def _audit(engine: Engine, actor: str, action: str, target: str, outcome: str,
           run_id: str | None, detail: dict[str, Any]) -> None:
    with db.session(engine) as s:
        service.create_audit_event(s, actor=actor, source=AuditSource.CLI, action=action,
                                   target=target, outcome=outcome, run_id=run_id, detail=detail)
