"""One execution of a runbook as revive's store sees it.

``RunSession.start`` enforces one active run per (runbook, target DC) for real runs, writes
the run record (trigger, who, parameters, topology version) and opens the step ledger.
Steps are keyed by what they do (``restart:login@dc2``), so the same key on a resumed run
means the same action; its request id (``<run>:<key>``) makes the tool start it only once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from revive.errors import InputError
from revive.store import db, service
from revive.store.models import RunOutcome, StepState, TriggerSource
from revive.topology import Topology, canonical_json, content_hash


class ActiveRunError(InputError):
    """A run for this (runbook, DC) is already active; it names that run."""

    def __init__(self, run_id: str, runbook: str, target_dc: str | None) -> None:
        where = f" for {target_dc}" if target_dc else ""
        super().__init__(f"{runbook}{where} is already running as run {run_id}")
        self.run_id = run_id


@dataclass
class Progress:
    """What people watch: steps done of total, the current step, real and simulated time."""

    total: int = 0
    done: int = 0
    current: str = ""
    started_wall: float = field(default_factory=time.monotonic)
    sim_time: float | None = None
    listeners: list[Callable[[Progress], None]] = field(default_factory=list)

    @property
    def elapsed_real_s(self) -> float:
        return time.monotonic() - self.started_wall

    def set(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self, key, value)
        for listener in self.listeners:
            listener(self)


PROGRESS_LISTENERS: list[Callable[[Progress], None]] = []
"""Called on every progress change of every run in this process (the CLI's live view)."""


class RunSession:
    """A run record plus its step ledger in revive's store."""

    def __init__(self, engine: Engine, run_id: str, *, dry_run: bool) -> None:
        self.engine = engine
        self.run_id = run_id
        self.dry_run = dry_run
        self.progress = Progress(listeners=list(PROGRESS_LISTENERS))
        self._abort_checked = 0.0
        self._abort = False

    @classmethod
    def start(
        cls,
        *,
        runbook: str,
        parameters: dict[str, Any],
        trigger: TriggerSource,
        triggered_by: str,
        target_dc: str | None,
        topology: Topology,
        topology_source: str,
        dry_run: bool = False,
        resume: str | None = None,
        prefect_flow_run_id: str | None = None,
        engine: Engine | None = None,
    ) -> RunSession:
        """Open a new run, or reopen ``resume``; refuse a second active run for the same DC.

        A Prefect retry of the flow run that started a run continues that run, as
        ``--resume`` would: the record is found by the Prefect flow run id.
        """
        engine = engine or db.get_engine()
        db.upgrade(engine)
        with db.session(engine) as s:
            if not resume and prefect_flow_run_id:
                earlier = service.get_run_by_prefect_id(s, prefect_flow_run_id)
                resume = earlier.id if earlier is not None else None
            if resume:
                run = service.get_run_or_raise(s, resume)
                if run.runbook != runbook:
                    raise InputError(f"run {resume} is a {run.runbook} run, not {runbook}")
                service.resume_run(s, resume)
                return cls(engine, resume, dry_run=run.dry_run)
            if not dry_run:
                active = service.get_active_run(s, runbook=runbook, target_dc=target_dc)
                if active is not None:
                    raise ActiveRunError(active.id, runbook, target_dc)
            version = service.get_or_create_topology_version(
                s,
                source=topology_source,
                content_hash=content_hash(topology),
                snapshot=json.loads(canonical_json(topology)),
            )
            run = service.create_run(
                s,
                runbook=runbook,
                parameters=parameters,
                trigger=trigger,
                triggered_by=triggered_by,
                target_dc=target_dc,
                dry_run=dry_run,
                topology_version_id=version.id,
            )
            if prefect_flow_run_id:
                service.set_prefect_flow_run_id(
                    s, run.id, prefect_flow_run_id=prefect_flow_run_id
                )
            return cls(engine, run.id, dry_run=dry_run)

    # --- steps -------------------------------------------------------------------------------

    def request_id(self, key: str) -> str:
        return f"{self.run_id}:{key}"

    def step_state(self, key: str) -> tuple[StepState | None, dict[str, Any] | None]:
        """(state, detail) of a step, or (None, None) if it never started."""
        with db.session(self.engine) as s:
            step = service.get_step(s, run_id=self.run_id, step_key=key)
            return (step.state, step.detail) if step is not None else (None, None)

    def begin(self, key: str, action: str, detail: dict[str, Any] | None = None) -> None:
        if self.dry_run:
            return
        with db.session(self.engine) as s:
            service.start_step(s, run_id=self.run_id, step_key=key, action=action, detail=detail)
        self.progress.set(current=key)

    def end(
        self, key: str, state: StepState, detail: dict[str, Any] | None = None,
        *, action: str = "step",
    ) -> None:
        """Record how a step ended; a step refused before it began is recorded as well."""
        if not self.dry_run:
            with db.session(self.engine) as s:
                if self.step_state(key)[0] is None:
                    service.start_step(s, run_id=self.run_id, step_key=key, action=action)
                service.finish_step(
                    s, run_id=self.run_id, step_key=key, state=state, detail=detail
                )
        self.progress.set(done=self.progress.done + 1)

    def steps(self) -> list[dict[str, Any]]:
        with db.session(self.engine) as s:
            return [
                {
                    "key": st.step_key,
                    "action": st.action,
                    "state": str(st.state),
                    "detail": st.detail or {},
                }
                for st in service.get_steps(s, run_id=self.run_id)
            ]

    # --- abort and finish --------------------------------------------------------------------

    def abort_requested(self, *, every_s: float = 1.0) -> bool:
        """Whether someone asked this run to stop (read from the store at most every_s)."""
        now = time.monotonic()
        if not self._abort and now - self._abort_checked >= every_s:
            self._abort_checked = now
            with db.session(self.engine) as s:
                self._abort = service.is_abort_requested(s, self.run_id)
        return self._abort

    def finish(self, outcome: RunOutcome, summary: dict[str, Any] | None = None) -> None:
        with db.session(self.engine) as s:
            service.finish_run(s, self.run_id, outcome=outcome, summary=summary)
