"""The store's verbs: every read and write of runs, steps, topology versions and audit events.

Callers (CLI, flows, UI, Slack) never build queries themselves; they call these, so the rules
("a done step stays done", "an active run is a running, real one") live in one place.
Conventions: the session comes first, everything else is keyword-only; each write commits, so a
crash between two steps never loses the first; a database failure raises ``StoreError``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import ColumnElement, delete, func, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col, select

from revive.errors import InputError
from revive.store.db import store_error
from revive.store.models import (
    AuditEvent,
    AuditSource,
    GateDecision,
    RunOutcome,
    RunRecord,
    SlackRequest,
    StepRecord,
    StepState,
    TopologyVersion,
    TriggerSource,
    utcnow,
)

P = ParamSpec("P")
R = TypeVar("R")

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _store_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Roll back and raise ``StoreError`` on database failure, whoever made the session.

    Rolling back leaves the session usable for the caller's next call.
    """

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except SQLAlchemyError as exc:
            db = args[0]
            url = None
            if isinstance(db, Session):
                db.rollback()
                bind = db.get_bind()
                url = getattr(bind, "url", None)
            raise store_error(exc, url, func.__name__.replace("_", " ")) from exc

    return wrapper


# --- topology versions ---------------------------------------------------------------------


@_store_errors
def get_or_create_topology_version(
    session: Session, *, source: str, content_hash: str, snapshot: dict[str, Any]
) -> TopologyVersion:
    """The version with this content hash, recorded now if new: the same topology is one row.

    Safe against two processes recording the same topology at once (the hash is unique).
    """
    content_hash = content_hash.lower()
    if not _SHA256_HEX.fullmatch(content_hash):
        raise ValueError(f"content_hash must be a sha256 hex digest, got {content_hash!r}")
    existing = _topology_by_hash(session, content_hash)
    if existing is not None:
        return existing
    version = TopologyVersion(content_hash=content_hash, source=source, snapshot=snapshot)
    session.add(version)
    try:
        session.commit()
    except IntegrityError:
        # Someone else recorded it between our read and our write: theirs is the same.
        session.rollback()
        existing = _topology_by_hash(session, content_hash)
        if existing is None:
            raise
        return existing
    return version


def _topology_by_hash(session: Session, content_hash: str) -> TopologyVersion | None:
    statement = select(TopologyVersion).where(TopologyVersion.content_hash == content_hash)
    return session.exec(statement).first()


# --- runs ----------------------------------------------------------------------------------


@_store_errors
def create_run(
    session: Session,
    *,
    runbook: str,
    parameters: dict[str, Any],
    trigger: TriggerSource | str,
    triggered_by: str,
    target_dc: str | None = None,
    dry_run: bool = False,
    topology_version_id: int | None = None,
    stale_after_s: float | None = None,
) -> RunRecord:
    """Record a run as started (outcome ``running``) before anything is done, and return it.

    A real run is refused with ``ActiveRunError`` (naming the active run) while another real
    run of the same (runbook, DC) is active. The partial unique index decides, so of two
    processes creating it at once exactly one wins. A run whose heartbeat stopped is not
    active: it is marked ``crashed`` in the same transaction, before the insert.
    """
    trigger = TriggerSource(trigger)
    for attempt in range(3):  # the active run may end between our insert and our look-up
        now = utcnow()
        if not dry_run:
            _mark_crashed(session, runbook=runbook, target_dc=target_dc, now=now,
                          stale_after_s=stale_after_s)
        run = RunRecord(
            runbook=runbook,
            parameters=dict(parameters),
            trigger=trigger,
            triggered_by=triggered_by,
            target_dc=target_dc,
            dry_run=dry_run,
            topology_version_id=topology_version_id,
            outcome=RunOutcome.RUNNING,
            started_at=now,
            heartbeat_at=now,
        )
        session.add(run)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            _raise_if_active(session, runbook=runbook, target_dc=target_dc,
                             stale_after_s=stale_after_s)
            if attempt == 2:  # not the rule (e.g. an unknown topology version): say so
                raise
            continue
        return run
    raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover


@_store_errors
def get_run(session: Session, run_id: str) -> RunRecord | None:
    """The run with this id, or ``None``."""
    return session.get(RunRecord, run_id)


def get_run_or_raise(session: Session, run_id: str) -> RunRecord:
    """The run with this id; a person asked for it, so an unknown id is ``InputError``."""
    run = get_run(session, run_id)
    if run is None:
        raise InputError(f"no run with id {run_id!r}")
    return run


@_store_errors
def find_run(session: Session, id_or_prefix: str) -> RunRecord:
    """A run by id or unique id prefix (people paste the 12 characters status shows);
    ``InputError`` saying whether none or several match."""
    run = get_run(session, id_or_prefix)
    if run is not None:
        return run
    statement = select(RunRecord).where(col(RunRecord.id).startswith(id_or_prefix)).limit(2)
    matches = list(session.exec(statement).all()) if id_or_prefix else []
    if len(matches) != 1:
        raise InputError(f"no run {id_or_prefix!r}" if not matches
                         else f"run id {id_or_prefix!r} is ambiguous")
    return matches[0]


@_store_errors
def get_active_run(session: Session, *, runbook: str, target_dc: str | None,
                   stale_after_s: float | None = None) -> RunRecord | None:
    """The real (not dry) run of this runbook against this DC that is still running, if any.

    Dry runs never block, nor does a crashed run (its heartbeat is older than
    ``stale_after_s``). Only ``create_run`` enforces the rule; this answers who holds it.
    """
    statement = (
        select(RunRecord)
        .where(
            RunRecord.runbook == runbook,
            RunRecord.outcome == RunOutcome.RUNNING,
            col(RunRecord.dry_run).is_(False),
            _last_sign_of_life() >= _stale_cutoff(utcnow(), stale_after_s),
        )
        .order_by(col(RunRecord.started_at).desc())
    )
    if target_dc is None:
        statement = statement.where(col(RunRecord.target_dc).is_(None))
    else:
        statement = statement.where(RunRecord.target_dc == target_dc)
    return session.exec(statement).first()


@_store_errors
def get_all_runs(session: Session, *, limit: int = 20) -> list[RunRecord]:
    """The ``limit`` most recent runs, newest first."""
    statement = select(RunRecord).order_by(col(RunRecord.started_at).desc()).limit(limit)
    return list(session.exec(statement).all())


@_store_errors
def finish_run(
    session: Session,
    run_id: str,
    *,
    outcome: RunOutcome | str,
    summary: dict[str, Any] | None = None,
) -> RunRecord:
    """Record how a run ended (not ``running``), when, and its summary if given."""
    final = RunOutcome(outcome)
    if final is RunOutcome.RUNNING:
        raise ValueError("finish_run needs a final outcome, not 'running'")
    run = get_run_or_raise(session, run_id)
    run.outcome = final
    run.ended_at = utcnow()
    if summary is not None:
        run.summary = dict(summary)
    session.add(run)
    session.commit()
    return run


@_store_errors
def resume_run(
    session: Session, run_id: str, *, stale_after_s: float | None = None
) -> RunRecord:
    """Mark a failed, aborted, crashed or interrupted run as running again, to continue its
    steps.

    Its ``done`` steps stay done, so the flow skips them. A succeeded run has nothing left.
    Another active run of the same (runbook, DC) refuses it with ``ActiveRunError``.
    """
    run = get_run_or_raise(session, run_id)
    session.refresh(run)  # as it is now, not as this session last saw it
    if run.outcome == RunOutcome.SUCCEEDED:
        raise InputError(f"run {run_id!r} succeeded; there is nothing to resume")
    now = utcnow()
    if not run.dry_run:
        _mark_crashed(session, runbook=run.runbook, target_dc=run.target_dc, now=now,
                      stale_after_s=stale_after_s, except_id=run.id)
    run.outcome = RunOutcome.RUNNING
    run.ended_at = None
    run.heartbeat_at = now
    session.add(run)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        _raise_if_active(session, runbook=run.runbook, target_dc=run.target_dc,
                         stale_after_s=stale_after_s)
        raise
    return run


@_store_errors
def set_prefect_flow_run_id(
    session: Session, run_id: str, *, prefect_flow_run_id: str
) -> RunRecord:
    """Link the run to its Prefect flow run, known only once Prefect has started it."""
    run = get_run_or_raise(session, run_id)
    run.prefect_flow_run_id = prefect_flow_run_id
    session.add(run)
    session.commit()
    return run


# --- steps ---------------------------------------------------------------------------------


@_store_errors
def get_step(session: Session, *, run_id: str, step_key: str) -> StepRecord | None:
    """One step of a run by its key (unique per run), or None if it never started."""
    statement = select(StepRecord).where(
        StepRecord.run_id == run_id, StepRecord.step_key == step_key
    )
    return session.exec(statement).first()


@_store_errors
def start_step(
    session: Session,
    *,
    run_id: str,
    step_key: str,
    action: str,
    detail: dict[str, Any] | None = None,
) -> StepRecord:
    """Record that a step is starting; on resume, a ``done`` step is returned untouched.

    A step left ``started`` (crash) or ``failed`` is started again: state, start time reset.
    Callers check ``state`` on the result (or ``is_step_done`` first) to know whether to skip.
    """
    step = get_step(session, run_id=run_id, step_key=step_key)
    if step is not None and step.state == StepState.DONE:
        return step
    if step is None:
        step = StepRecord(run_id=run_id, step_key=step_key, action=action)
    step.action = action
    step.state = StepState.STARTED
    step.started_at = utcnow()
    step.ended_at = None
    if detail is not None:
        step.detail = dict(detail)
    session.add(step)
    session.commit()
    return step


@_store_errors
def finish_step(
    session: Session,
    *,
    run_id: str,
    step_key: str,
    state: StepState | str,
    detail: dict[str, Any] | None = None,
) -> StepRecord:
    """Record how a started step ended (``done`` or ``failed``), when, and its detail if given."""
    final = StepState(state)
    if final is StepState.STARTED:
        raise ValueError("finish_step needs a final state, not 'started'")
    step = get_step(session, run_id=run_id, step_key=step_key)
    if step is None:
        raise InputError(f"run {run_id!r} has no step {step_key!r} to finish")
    step.state = final
    step.ended_at = utcnow()
    if detail is not None:
        step.detail = dict(detail)
    session.add(step)
    session.commit()
    return step


@_store_errors
def is_step_done(session: Session, *, run_id: str, step_key: str) -> bool:
    """Whether a resumed run may skip this step."""
    step = get_step(session, run_id=run_id, step_key=step_key)
    return step is not None and step.state == StepState.DONE


@_store_errors
def get_steps(session: Session, *, run_id: str) -> list[StepRecord]:
    """The run's steps in the order they (last) started."""
    statement = (
        select(StepRecord)
        .where(StepRecord.run_id == run_id)
        .order_by(col(StepRecord.started_at), col(StepRecord.id))
    )
    return list(session.exec(statement).all())


def get_step_timings(session: Session, *, run_id: str) -> list[dict[str, Any]]:
    """Per step: key, action, state and seconds taken (``None`` while unfinished), for reports."""
    return [
        {
            "step_key": step.step_key,
            "action": step.action,
            "state": step.state,
            "seconds": (
                (step.ended_at - step.started_at).total_seconds()
                if step.ended_at is not None
                else None
            ),
        }
        for step in get_steps(session, run_id=run_id)
    ]


# --- audit ---------------------------------------------------------------------------------


@_store_errors
def create_audit_event(
    session: Session,
    *,
    actor: str,
    source: AuditSource | str,
    action: str,
    target: str,
    outcome: str,
    run_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Record who did (or was refused) what, from where; committed at once so it survives."""
    event = AuditEvent(
        at=utcnow(),
        actor=actor,
        source=AuditSource(source),
        action=action,
        target=target,
        outcome=outcome,
        run_id=run_id,
        detail=dict(detail) if detail is not None else None,
    )
    session.add(event)
    session.commit()
    return event


@_store_errors
def get_audit_events(
    session: Session, *, run_id: str | None = None, limit: int = 100
) -> list[AuditEvent]:
    """The ``limit`` most recent audit events (of one run, if given), newest first."""
    statement = select(AuditEvent)
    if run_id is not None:
        statement = statement.where(AuditEvent.run_id == run_id)
    statement = statement.order_by(col(AuditEvent.at).desc(), col(AuditEvent.id).desc())
    return list(session.exec(statement.limit(limit)).all())


@_store_errors
def request_abort(session: Session, run_id: str, *, by: str) -> RunRecord:
    """Ask a running run to stop after its current step; a finished run cannot be aborted.

    A crashed run has nobody left to stop: it is abandoned at once (outcome ``aborted``)."""
    run = get_run_or_raise(session, run_id)
    session.refresh(run)  # as it is now, not as this session last saw it
    if is_crashed(run):
        return _abandon(session, run, by=by)
    if run.outcome != RunOutcome.RUNNING:
        raise InputError(f"run {run_id!r} is {run.outcome}; only a running run can be aborted")
    if run.abort_requested_at is None:
        run.abort_requested_at = utcnow()
        run.abort_requested_by = by
        session.add(run)
        session.commit()
    return run


@_store_errors
def is_abort_requested(session: Session, run_id: str) -> bool:
    run = get_run_or_raise(session, run_id)
    session.refresh(run)
    return run.abort_requested_at is not None


@_store_errors
def get_run_by_prefect_id(session: Session, prefect_flow_run_id: str) -> RunRecord | None:
    """The run a Prefect flow run started: a Prefect retry continues that run."""
    statement = select(RunRecord).where(RunRecord.prefect_flow_run_id == prefect_flow_run_id)
    return session.exec(statement).first()


# --- approval gates ------------------------------------------------------------------------


@_store_errors
def get_gate_decision(session: Session, *, run_id: str, gate: str) -> GateDecision | None:
    statement = select(GateDecision).where(GateDecision.run_id == run_id,
                                           GateDecision.gate == gate)
    return session.exec(statement).first()


@_store_errors
def decide_gate(
    session: Session,
    *,
    run_id: str,
    gate: str,
    decision: str,
    by: str,
    source: AuditSource | str,
    reason: str = "",
) -> tuple[GateDecision, bool]:
    """Record the decision at a gate unless one exists: (the decision in force, whether it is
    this one). The unique (run, gate) key makes the first writer win even across processes."""
    existing = get_gate_decision(session, run_id=run_id, gate=gate)
    if existing is not None:
        return existing, False
    decision_row = GateDecision(run_id=run_id, gate=gate, decision=decision, decided_by=by,
                                source=AuditSource(source), decided_at=utcnow(), reason=reason)
    session.add(decision_row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        winner = get_gate_decision(session, run_id=run_id, gate=gate)
        if winner is None:
            raise
        return winner, False
    return decision_row, True


@_store_errors
def withdraw_gate_decision(session: Session, decision: GateDecision) -> None:
    """Undo a decision that could not be delivered (the run had stopped waiting), so the
    record never claims a decision that changed nothing."""
    session.delete(decision)
    session.commit()


# --- run liveness: heartbeats, crashed runs, the one-active-run rule -----------------------
# (appended block: finding 3 and 8; ``create_run``, ``resume_run``, ``get_active_run`` and
# ``request_abort`` above call into it)

#: A running run whose last heartbeat is older than this is ``crashed``: the process running
#: it died (a restart of ``revive serve``, a lost worker). Runs beat every ~15 s.
STALE_AFTER_S = 120.0


class ActiveRunError(InputError):
    """A run for this (runbook, DC) is already active; it names that run."""

    def __init__(self, run_id: str, runbook: str, target_dc: str | None) -> None:
        where = f" for {target_dc}" if target_dc else ""
        super().__init__(f"{runbook}{where} is already running as run {run_id}")
        self.run_id = run_id


def _stale_cutoff(now: datetime, stale_after_s: float | None) -> datetime:
    return now - timedelta(seconds=STALE_AFTER_S if stale_after_s is None else stale_after_s)


def _last_sign_of_life() -> ColumnElement[datetime]:
    """The heartbeat, or the start of a run that has not beaten yet (rows from before 0005)."""
    return func.coalesce(RunRecord.heartbeat_at, RunRecord.started_at)


def last_sign_of_life(run: RunRecord) -> datetime:
    """When the process running ``run`` last said it was alive."""
    return run.heartbeat_at or run.started_at


def is_crashed(run: RunRecord, *, now: datetime | None = None,
               stale_after_s: float | None = None) -> bool:
    """Whether ``run`` crashed: marked so, or still ``running`` with a stale heartbeat."""
    if run.outcome == RunOutcome.CRASHED:
        return True
    cutoff = _stale_cutoff(now or utcnow(), stale_after_s)
    return run.outcome == RunOutcome.RUNNING and last_sign_of_life(run) < cutoff


def _mark_crashed(session: Session, *, runbook: str, target_dc: str | None, now: datetime,
                  stale_after_s: float | None, except_id: str | None = None) -> None:
    """Mark the stale running real runs of (runbook, DC) ``crashed``, uncommitted: the caller's
    insert or resume commits it, so the rule sees the crashed run as ended in that same
    transaction. An UPDATE first also takes SQLite's write lock before anything is read."""
    statement = (
        update(RunRecord)
        .where(
            col(RunRecord.runbook) == runbook,
            col(RunRecord.target_dc) == target_dc,
            col(RunRecord.outcome) == RunOutcome.RUNNING,
            col(RunRecord.dry_run).is_(False),
            _last_sign_of_life() < _stale_cutoff(now, stale_after_s),
        )
        .values(outcome=RunOutcome.CRASHED, ended_at=now)
        .execution_options(synchronize_session="fetch")
    )
    if except_id is not None:
        statement = statement.where(col(RunRecord.id) != except_id)
    session.exec(statement)


def _raise_if_active(session: Session, *, runbook: str, target_dc: str | None,
                     stale_after_s: float | None) -> None:
    """After the database refused a run: ``ActiveRunError`` naming the run that holds
    (runbook, DC). If none does any more (it just ended), the caller may try again."""
    active = get_active_run(session, runbook=runbook, target_dc=target_dc,
                            stale_after_s=stale_after_s)
    if active is not None:
        raise ActiveRunError(active.id, runbook, target_dc)


@_store_errors
def beat_run(session: Session, run_id: str) -> bool:
    """Record that the run's process is alive; ``False`` if the run is no longer running
    (someone marked it crashed or abandoned it): its process must then stop."""
    statement = (
        update(RunRecord)
        .where(col(RunRecord.id) == run_id, col(RunRecord.outcome) == RunOutcome.RUNNING)
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    updated = session.exec(statement).rowcount
    session.commit()
    return updated == 1


def _abandon(session: Session, run: RunRecord, *, by: str) -> RunRecord:
    """End a crashed run as ``aborted``: its process is gone, so nobody would act on an abort
    request; the record says who gave it up and when."""
    now = utcnow()
    since = last_sign_of_life(run)
    run.outcome = RunOutcome.ABORTED
    run.ended_at = now
    run.abort_requested_at = run.abort_requested_at or now
    run.abort_requested_by = run.abort_requested_by or by
    run.summary = {**(run.summary or {}), "abandoned_by": by,
                   "crashed": f"no heartbeat since {since.isoformat()}"}
    session.add(run)
    session.commit()
    return run


# --- remembered Slack requests (replays) ---------------------------------------------------


def _request_hash(key: str) -> str:
    """A fixed-width key for the store: a signature, a timestamp or a trigger id never ends
    up in the table as it came in."""
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def _request_by_keys(session: Session, hashes: Sequence[str]) -> SlackRequest | None:
    statement = (select(SlackRequest).where(col(SlackRequest.request_key).in_(hashes))
                 .order_by(col(SlackRequest.id)))
    return session.exec(statement).first()


@_store_errors
def remember_request(
    session: Session,
    *,
    keys: Sequence[str],
    actor: str,
    kind: str,
    summary: str,
    now: datetime,
    expires_at: datetime,
) -> SlackRequest | None:
    """Claim a Slack request by its keys, or give back the record of the copy seen first.

    ``None`` means this copy is the first: it is claimed now, and ``answer_request`` records
    its answer. Otherwise the earlier record is returned (its ``answer`` is ``None`` while
    that copy is still being handled). The keys are unique, so of two copies racing, from one
    process or two, exactly one claims the request. Records past their window are purged.
    """
    if not keys:
        raise ValueError("remember_request needs at least one key")
    # One transaction: the purge, the look and the claim (on SQLite the purge also takes the
    # write lock first, so copies arriving together are looked up one after the other).
    session.exec(delete(SlackRequest).where(col(SlackRequest.expires_at) < now))
    hashes = [_request_hash(key) for key in dict.fromkeys(keys)]
    earlier = _request_by_keys(session, hashes)
    if earlier is not None:
        session.commit()
        return earlier
    for key in hashes:
        session.add(SlackRequest(request_key=key, received_at=now, expires_at=expires_at,
                                 actor=actor, kind=kind, summary=summary))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()  # another copy claimed it between our read and our write
        earlier = _request_by_keys(session, hashes)
        if earlier is None:
            raise
        return earlier
    return None


@_store_errors
def answer_request(session: Session, *, keys: Sequence[str], answer: dict[str, Any]) -> None:
    """Record the answer a claimed request got, for the copies that come after it."""
    statement = (
        update(SlackRequest)
        .where(col(SlackRequest.request_key).in_([_request_hash(k) for k in keys]))
        .values(answer=dict(answer))
        .execution_options(synchronize_session=False)
    )
    session.exec(statement)
    session.commit()
