"""Carrying finished runs from one store to another: what a break-glass run recorded on a
laptop's SQLite file goes into the team's central store afterwards.

The export is JSON lines, one finished run per line with everything that tells its story:
the run record, the topology version it used (by content hash, checked on the way in), its
steps, its gate decisions and its audit events. Lines stand alone, so an export can be
appended to, split, and read by people.

Import validates every line before it writes anything, then writes them all in one
transaction: a bad line is an ``InputError`` naming ``file:line`` and the store is as it
was. A run id already in the store is skipped (importing the same file twice is harmless);
an unfinished run (running, or crashed and still resumable where it ran) is refused: its
end would never arrive. Topology versions are matched by content hash, so a topology both
stores know stays one row. Each imported run gets an audit event saying who imported it
and from where.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from revive.errors import InputError
from revive.store import db
from revive.store.models import (
    AuditEvent,
    AuditSource,
    GateDecision,
    RunOutcome,
    RunRecord,
    StepRecord,
    StepState,
    TopologyVersion,
    TriggerSource,
    utcnow,
)

__all__ = ["FINISHED", "FORMAT", "ImportReport", "RunLine", "export_runs", "import_runs",
           "parse_since"]

#: The version of the line format; a line of another version is refused, not guessed at.
FORMAT = "revive.run/1"

#: Outcomes that are final: a crashed run may still be resumed where it ran.
FINISHED = frozenset({RunOutcome.SUCCEEDED, RunOutcome.FAILED, RunOutcome.ABORTED})


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopologyLine(_Line):
    content_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: str
    snapshot: dict[str, Any]
    created_at: AwareDatetime


class RunFields(_Line):
    id: str = Field(pattern=r"^[0-9A-Za-z_-]{1,32}$")
    runbook: str = Field(min_length=1)
    parameters: dict[str, Any]
    trigger: TriggerSource
    triggered_by: str
    target_dc: str | None
    dry_run: bool
    prefect_flow_run_id: str | None
    started_at: AwareDatetime
    ended_at: AwareDatetime | None
    outcome: RunOutcome
    summary: dict[str, Any] | None
    abort_requested_at: AwareDatetime | None
    abort_requested_by: str | None
    heartbeat_at: AwareDatetime | None


class StepLine(_Line):
    step_key: str = Field(min_length=1)
    action: str
    state: StepState
    started_at: AwareDatetime
    ended_at: AwareDatetime | None
    detail: dict[str, Any] | None


class GateLine(_Line):
    gate: str = Field(min_length=1)
    decision: str
    decided_by: str
    source: AuditSource
    decided_at: AwareDatetime
    reason: str


class AuditLine(_Line):
    at: AwareDatetime
    actor: str
    source: AuditSource
    action: str
    target: str
    outcome: str
    detail: dict[str, Any] | None


class RunLine(_Line):
    """One finished run and its history: one line of an export."""

    format: Literal["revive.run/1"]
    run: RunFields
    topology: TopologyLine | None
    steps: list[StepLine]
    gate_decisions: list[GateLine]
    audit_events: list[AuditLine]


_FIELDS_OF = {
    RunRecord: RunFields, StepRecord: StepLine, GateDecision: GateLine, AuditEvent: AuditLine,
    TopologyVersion: TopologyLine,
}


def _fields(row: Any) -> dict[str, Any]:
    return {name: getattr(row, name) for name in _FIELDS_OF[type(row)].model_fields}


# --- export --------------------------------------------------------------------------------


def export_runs(engine: Engine, *, since: datetime | None = None) -> tuple[list[str], list[str]]:
    """(one JSON line per finished run started at or after ``since``, oldest first; the ids
    of the unfinished runs left out)."""
    lines: list[str] = []
    unfinished: list[str] = []
    with db.session(engine) as s:
        statement = select(RunRecord).order_by(col(RunRecord.started_at), col(RunRecord.id))
        if since is not None:
            statement = statement.where(col(RunRecord.started_at) >= since)
        for run in s.exec(statement).all():
            if run.outcome not in FINISHED:
                unfinished.append(run.id)
                continue
            lines.append(_line(s, run).model_dump_json())
    return lines, unfinished


def _line(s: Session, run: RunRecord) -> RunLine:
    topology = s.get(TopologyVersion, run.topology_version_id) \
        if run.topology_version_id is not None else None
    steps = s.exec(select(StepRecord).where(StepRecord.run_id == run.id)
                   .order_by(col(StepRecord.id))).all()
    gates = s.exec(select(GateDecision).where(GateDecision.run_id == run.id)
                   .order_by(col(GateDecision.id))).all()
    events = s.exec(select(AuditEvent).where(AuditEvent.run_id == run.id)
                    .order_by(col(AuditEvent.id))).all()
    return RunLine(
        format=FORMAT, run=RunFields(**_fields(run)),
        topology=TopologyLine(**_fields(topology)) if topology is not None else None,
        steps=[StepLine(**_fields(x)) for x in steps],
        gate_decisions=[GateLine(**_fields(x)) for x in gates],
        audit_events=[AuditLine(**_fields(x)) for x in events])


_RELATIVE = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``--since``: an ISO date or time (UTC unless it says otherwise), or an age such as
    ``90m``, ``12h``, ``7d``."""
    value = text.strip()
    if match := _RELATIVE.match(value):
        amount, unit = match.groups()
        return (now or utcnow()) - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"--since: {text!r} is not an ISO date or time (2026-03-01, "
                         "2026-03-01T14:00) nor an age (90m, 12h, 7d)") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


# --- import --------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did: the runs it wrote and the ones the store already had."""

    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def parse_lines(lines: Iterable[str], where: str) -> list[RunLine]:
    """Every non-blank line as a ``RunLine``; the first bad one is an ``InputError`` naming
    ``where:line`` and what is wrong with it."""
    runs: list[RunLine] = []
    seen: dict[str, int] = {}
    for number, text in _numbered(lines):
        at = f"{where}:{number}"
        try:
            line = RunLine.model_validate_json(text)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise InputError(f"{at}: {loc + ': ' if loc else ''}{first['msg']}") from None
        run = line.run
        if run.outcome not in FINISHED:
            raise InputError(f"{at}: run {run.id} is {run.outcome}; only finished runs are "
                             "imported (finish or abort it where it ran, then export again)")
        if run.id in seen:
            raise InputError(f"{at}: run {run.id} is already on line {seen[run.id]}")
        if line.topology is not None and _hash(line.topology.snapshot) != \
                line.topology.content_hash:
            raise InputError(f"{at}: topology.snapshot does not match its content_hash")
        for what, keys in (("steps", [x.step_key for x in line.steps]),
                           ("gate_decisions", [x.gate for x in line.gate_decisions])):
            if len(set(keys)) != len(keys):
                twice = sorted({k for k in keys if keys.count(k) > 1})
                raise InputError(f"{at}: {what}: {', '.join(twice)} more than once")
        seen[run.id] = number
        runs.append(line)
    return runs


def _numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    for number, text in enumerate(lines, start=1):
        if text.strip():
            yield number, text


def _hash(snapshot: dict[str, Any]) -> str:
    """The topology's content hash, as ``revive.topology.content_hash`` makes it."""
    canonical = json.dumps(snapshot, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def import_runs(engine: Engine, lines: Iterable[str], *, where: str, by: str) -> ImportReport:
    """Write the runs of ``lines`` that the store does not have, all in one transaction;
    ``by`` (who imports) and ``where`` (the file) go into each imported run's audit event."""
    runs = parse_lines(lines, where)
    report = ImportReport()
    with db.session(engine) as s:
        known = _known_ids(s, [line.run.id for line in runs])
        topologies: dict[str, int] = {}
        for line in runs:
            if line.run.id in known:
                report.skipped.append(line.run.id)
                continue
            _add(s, line, topologies, where=where, by=by)
            report.imported.append(line.run.id)
        s.commit()
    return report


def _known_ids(s: Session, ids: list[str]) -> set[str]:
    known: set[str] = set()
    for start in range(0, len(ids), 500):  # bounded IN lists, on every backend
        chunk = ids[start:start + 500]
        known.update(s.exec(select(RunRecord.id).where(col(RunRecord.id).in_(chunk))).all())
    return known


def _add(s: Session, line: RunLine, topologies: dict[str, int], *, where: str,
         by: str) -> None:
    version_id = _topology_id(s, line.topology, topologies) if line.topology else None
    run = RunRecord(**line.run.model_dump(), topology_version_id=version_id)
    s.add(run)
    s.flush()  # the run's row before the rows that point at it
    for step in line.steps:
        s.add(StepRecord(run_id=run.id, **step.model_dump()))
    for gate in line.gate_decisions:
        s.add(GateDecision(run_id=run.id, **gate.model_dump()))
    for event in line.audit_events:
        s.add(AuditEvent(run_id=run.id, **event.model_dump()))
    s.add(AuditEvent(at=utcnow(), actor=by, source=AuditSource.CLI, action="import",
                     target=f"{run.runbook}:{run.id}", outcome="imported", run_id=run.id,
                     detail={"from": where}))
    s.flush()


def _topology_id(s: Session, topology: TopologyLine, seen: dict[str, int]) -> int:
    """The store's row for this topology: found by content hash, or added."""
    if topology.content_hash in seen:
        return seen[topology.content_hash]
    found = s.exec(select(TopologyVersion).where(
        TopologyVersion.content_hash == topology.content_hash)).first()
    if found is None:
        found = TopologyVersion(**topology.model_dump())
        s.add(found)
        s.flush()
    assert found.id is not None
    seen[topology.content_hash] = found.id
    return found.id
