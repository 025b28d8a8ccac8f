"""Who may do what, and the record of every attempt: shared by commands and button presses.

Roles are looked up in the environment of the topology the app serves (the strictest one when
it cannot be read, so a broken file never widens anyone's rights). Every command, button
press and refusal is written to the audit table with source ``slack``; a store failure is
logged and never turns an answer into a stack trace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import Engine

from revive.errors import ReviveError
from revive.store import db, service
from revive.store.models import AuditSource
from revive.topology import Topology
from revive.web.replies import Caller
from revive.web.settings import Role, WebSettings

__all__ = ["FALLBACK_ENVIRONMENT", "Access"]

log = logging.getLogger(__name__)

#: Where roles are looked up when the topology cannot be read: the strictest environment.
FALLBACK_ENVIRONMENT = "production"


class Access:
    """Roles and audit for one app: its settings, its store, and how user groups resolve."""

    def __init__(
        self,
        settings: WebSettings,
        engine: Engine,
        groups_of: Callable[[str], Iterable[str]] = lambda _user: (),
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.groups_of = groups_of
        self._topology: tuple[tuple[int, int], Topology] | None = None
        self._lock = threading.Lock()
        # SQLite lets one writer in at a time and makes the others sleep and retry (up to
        # 100 ms a nap), so a burst of commands, each writing its audit row, would answer
        # far later than the writes take. Queued on a lock here, the rows go in back to back.
        # PostgreSQL takes concurrent inserts as they come.
        self._audit_lock: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext())

    def topology(self) -> Topology:
        """The served topology, parsed again only when its file changes: every request
        needs it (roles, status, check, plan), and a burst of commands at the start of an
        incident must not queue behind YAML parsing. Raises as ``load`` does."""
        from revive.topology import load

        path = self.settings.topology
        stat = os.stat(path)
        version = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if self._topology is not None and self._topology[0] == version:
                return self._topology[1]
        topology = load(path)  # frozen models: safe to share between requests
        with self._lock:
            self._topology = (version, topology)
        return topology

    def environment(self) -> str:
        """The topology's environment; the strictest one when it cannot be read."""
        try:
            return str(self.topology().environment)
        except (ReviveError, OSError) as exc:
            log.warning("topology %s unreadable (%s); assuming %s for roles",
                        self.settings.topology, exc, FALLBACK_ENVIRONMENT)
            return FALLBACK_ENVIRONMENT

    def role(self, caller: Caller, environment: str) -> Role:
        """The caller's highest role in ``environment``; user-group lookups may fail safely."""
        try:
            groups = list(self.groups_of(caller.user_id))
        except Exception:
            log.exception("could not look up the user groups of %s", caller.user_id)
            groups = []
        return self.settings.role_of(caller.user_id, groups, environment)

    def audit(self, caller: Caller, action: str, target: str, outcome: str, *,
              run_id: str | None = None, detail: dict[str, Any] | None = None) -> None:
        """Write one audit row (source ``slack``); a store failure is logged, not raised."""
        try:
            with self._audit_lock, db.session(self.engine) as s:
                service.create_audit_event(
                    s, actor=caller.user_id, source=AuditSource.SLACK, action=action,
                    target=target, outcome=outcome, run_id=run_id, detail=detail,
                )
        except Exception:
            log.exception("could not audit %s %s by %s (%s)", action, target, caller.user_id,
                          outcome)
