"""The store's tables: which topology a run used, what each run and step did, who did what.

The tables live in their own ``MetaData`` (``metadata`` below) rather than the global
``SQLModel.metadata``, so Alembic's autogenerate and the schema test only ever see revive's
store, and constraint names follow one naming convention on SQLite and PostgreSQL alike.

States are ``enum.StrEnum`` stored as plain VARCHAR (not database enum types) so that adding
a value never needs a type migration. Timestamps are timezone-aware UTC on the way in and on
the way out, whatever the backend keeps (SQLite keeps no zone at all).
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Index,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

#: Constraint and index names, fixed so that migrations can refer to them by name.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Everything the store creates; what the migrations must produce, exactly.
metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: Width of every enum column: room for values not yet invented.
ENUM_LENGTH = 32


def utcnow() -> datetime:
    """Now, timezone-aware in UTC: the only kind of timestamp the store accepts."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is aware UTC in Python on every backend.

    PostgreSQL keeps ``timestamptz`` but returns it in the session's zone; SQLite keeps no zone
    at all. Naive datetimes are refused on the way in, because their meaning is a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store only keeps aware UTC times")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite stores text; keep it in UTC without an offset so it sorts as a string.
            value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class TriggerSource(enum.StrEnum):
    """What started a run."""

    CLI = "cli"
    UI = "ui"
    SLACK = "slack"
    SCHEDULE = "schedule"
    AUTOMATION = "automation"


class RunOutcome(enum.StrEnum):
    """Where a run is: still going, or how it ended."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"
    CRASHED = "crashed"
    """Its heartbeat stopped (the process running it died): resume it, or abort it."""


class StepState(enum.StrEnum):
    """Where one step of a run is; ``done`` steps are skipped when a run is resumed."""

    STARTED = "started"
    DONE = "done"
    FAILED = "failed"


class AuditSource(enum.StrEnum):
    """Where an audited action came from; ``system`` is revive acting on its own."""

    CLI = "cli"
    UI = "ui"
    SLACK = "slack"
    SCHEDULE = "schedule"
    SYSTEM = "system"


class StrEnumType(TypeDecorator[enum.StrEnum]):
    """A ``StrEnum`` kept as a plain VARCHAR: values are checked in Python, not by the database.

    New enum values therefore need no migration. Reading gives back enum members.
    """

    impl = String(ENUM_LENGTH)
    cache_ok = True

    def __init__(self, enum_class: type[enum.StrEnum]) -> None:
        super().__init__()
        self.enum_class = enum_class

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return self.enum_class(value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> enum.StrEnum | None:
        if value is None:
            return None
        return self.enum_class(value)


class StoreModel(SQLModel, registry=registry(metadata=metadata)):
    """Base of the store's tables, bound to the store's own ``metadata``."""


class TopologyVersion(StoreModel, table=True):
    """One distinct topology, by content hash, so every run can say which topology it used."""

    __tablename__ = "topology_version"

    id: int | None = Field(default=None, primary_key=True)
    content_hash: str = Field(sa_type=String(64), unique=True, index=True)
    source: str
    snapshot: dict[str, Any] = Field(sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


#: The partial unique index behind "one active run per (runbook, DC)"; which runs it covers.
ONE_ACTIVE_RUN_INDEX = "ux_run_record_one_active"
ACTIVE_RUN_WHERE = "outcome = 'running' AND NOT dry_run"


class RunRecord(StoreModel, table=True):
    """One execution (or dry run) of a runbook, from trigger to outcome."""

    __tablename__ = "run_record"

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, primary_key=True, sa_type=String(32))
    runbook: str = Field(index=True)
    parameters: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    trigger: TriggerSource = Field(sa_type=StrEnumType(TriggerSource))
    triggered_by: str
    target_dc: str | None = Field(default=None)
    dry_run: bool = Field(default=False)
    topology_version_id: int | None = Field(
        default=None, foreign_key="topology_version.id", index=True
    )
    prefect_flow_run_id: str | None = Field(default=None)
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    outcome: RunOutcome = Field(
        default=RunOutcome.RUNNING, sa_type=StrEnumType(RunOutcome), index=True
    )
    summary: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    abort_requested_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    abort_requested_by: str | None = Field(default=None)
    # --- run liveness (finding 3/8) ---
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    """Last sign of life of the process running it; ``None`` means since ``started_at``."""

    __table_args__ = (
        # One active run per (runbook, DC), as one atomic rule: a second insert fails.
        Index(ONE_ACTIVE_RUN_INDEX, "runbook", "target_dc", unique=True,
              sqlite_where=text(ACTIVE_RUN_WHERE), postgresql_where=text(ACTIVE_RUN_WHERE)),
    )


class StepRecord(StoreModel, table=True):
    """One step of a run; unique per (run, step key) so a resumed run can ask if it is done."""

    __tablename__ = "step_record"
    __table_args__ = (UniqueConstraint("run_id", "step_key"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run_record.id", index=True, sa_type=String(32))
    step_key: str
    action: str
    state: StepState = Field(default=StepState.STARTED, sa_type=StrEnumType(StepState))
    started_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    detail: dict[str, Any] | None = Field(default=None, sa_type=JSON)


class AuditEvent(StoreModel, table=True):
    """Who did what to what, from where, and how it went: the answer to "who pressed it"."""

    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, index=True)
    actor: str
    source: AuditSource = Field(sa_type=StrEnumType(AuditSource))
    action: str
    target: str
    outcome: str
    run_id: str | None = Field(
        default=None, foreign_key="run_record.id", index=True, sa_type=String(32)
    )
    detail: dict[str, Any] | None = Field(default=None, sa_type=JSON)


class GateDecision(StoreModel, table=True):
    """The one decision taken at an approval gate of a run: unique per (run, gate), so two
    people clicking at once (or Slack and the Prefect UI) cannot both decide; the first wins
    and everyone after is told who decided and when."""

    __tablename__ = "gate_decision"
    __table_args__ = (UniqueConstraint("run_id", "gate"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run_record.id", index=True, sa_type=String(32))
    gate: str
    decision: str
    """``approved``, ``rejected`` or ``timed out``."""
    decided_by: str
    source: AuditSource = Field(sa_type=StrEnumType(AuditSource))
    decided_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    reason: str = ""


class SlackRequest(StoreModel, table=True):
    """A signed Slack request seen within the signature window, and the answer it got.

    Kept in the store (not in process memory) so a captured request replayed after a restart,
    or to another server, is answered from this record instead of being acted on again. The
    key is a hash of the request's signature and timestamp: unique per signed request, so two
    copies arriving at once cannot both claim it (Slack's ``trigger_id``, when there is one,
    is a second key, for Slack's own redeliveries). Rows past the window are purged; by then
    the signature check refuses the request anyway.
    """

    __tablename__ = "slack_request"

    id: int | None = Field(default=None, primary_key=True)
    request_key: str = Field(sa_type=String(64), unique=True, index=True)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    """When the signature check starts refusing the request (its timestamp + 5 minutes):
    the row is kept until then, and purged after."""
    actor: str
    kind: str = Field(sa_type=String(32))
    """``command`` or ``interaction``."""
    summary: str
    """What was asked (e.g. ``/revive run failover target_dc=dc2``), for the audit trail."""
    answer: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    """The answer given; ``None`` while the first copy is still being handled."""


class DrillRecord(StoreModel, table=True):
    """One drill, however it was started (CLI, Slack, a schedule): the history that
    ``revive drills`` and the status board read. The full report stays in ``report_dir``;
    ``step_seconds`` is kept here so the next drill can tell a step slower than its past."""

    __tablename__ = "drill_record"

    id: str = Field(primary_key=True, sa_type=String(36))
    """The drill's Prefect flow run id (a fresh uuid when it ran outside Prefect)."""
    started_at: datetime = Field(sa_type=UTCDateTime, index=True)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    scenario: str
    lost_dc: str
    target: str = Field(default="simulator", sa_type=String(32))
    """What the drill ran on: ``simulator`` or ``lab``; its step times are on that clock."""
    trigger: TriggerSource = Field(sa_type=StrEnumType(TriggerSource))
    triggered_by: str
    outcome: str = Field(sa_type=String(ENUM_LENGTH))
    headline: str = ""
    rto_s: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    """Per tier (``tier0``...): seconds from the fault until it was back; ``null``: never."""
    target_s: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    step_seconds: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    """Per step key: how long the step took (finished steps only)."""
    slow_steps: list[Any] = Field(default_factory=list, sa_type=JSON)
    report_dir: str
