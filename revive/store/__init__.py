"""revive's own database: which topology each run used, what every run and step did, and who
triggered what (the audit trail).

SQLite at ``.revive/revive.db`` by default, PostgreSQL via ``REVIVE_DATABASE_URL``; the schema
is managed by Alembic migrations shipped in ``revive/store/migrations``. Typical use::

    from revive.store import get_engine, session, upgrade, service

    engine = get_engine()
    upgrade(engine)
    with session(engine) as db:
        run = service.create_run(db, runbook="failover", parameters={}, trigger="cli",
                                 triggered_by="alice")
"""

from revive.store import service
from revive.store.db import (
    DATABASE_URL_ENV,
    current_revision,
    database_url,
    get_engine,
    head_revision,
    mask_url,
    session,
    upgrade,
)
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
    metadata,
)

__all__ = [
    "DATABASE_URL_ENV",
    "AuditEvent",
    "AuditSource",
    "GateDecision",
    "RunOutcome",
    "RunRecord",
    "StepRecord",
    "StepState",
    "TopologyVersion",
    "TriggerSource",
    "current_revision",
    "database_url",
    "get_engine",
    "head_revision",
    "mask_url",
    "metadata",
    "service",
    "session",
    "upgrade",
]
