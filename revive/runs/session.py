"""One execution of a runbook as revive's store sees it.

``RunSession.start`` writes the run record (trigger, who, parameters, topology version) and
opens the step ledger; the store refuses a second active real run per (runbook, target DC)
with ``ActiveRunError``. Steps are keyed by what they do (``restart:login@dc2``), so the same
key on a resumed run means the same action; its request id (``<run>:<key>``) makes the tool
start it only once. While the run's process lives, ``Heartbeat`` says so in the store: a run
whose heartbeat stops is ``crashed``, and no longer holds its (runbook, DC).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from revive.errors import InputError
from revive.store import db, service
from revive.store.models import RunOutcome, StepState, TriggerSource
from revive.store.service import ActiveRunError
from revive.topology import Topology, canonical_json, content_hash

__all__ = ["ActiveRunError", "Heartbeat", "Progress", "RunSession"]

log = logging.getLogger(__name__)

#: How often a running run tells the store it is alive; well inside
#: ``service.STALE_AFTER_S`` (two minutes), after which it would count as crashed.
HEARTBEAT_EVERY_S = 15.0


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

    def __init__(self, engine: Engine, run_id: str, *, dry_run: bool,
                 owns_engine: bool = False) -> None:
        self.engine = engine
        self.owns_engine = owns_engine
        """``start`` made the engine (none was given): ``finish`` disposes it, or each run
        would leave a pooled connection open on PostgreSQL until its engine is collected."""
        self.run_id = run_id
        self.dry_run = dry_run
        self.progress = Progress(listeners=list(PROGRESS_LISTENERS))
        self._abort_checked = 0.0
        self._abort = False
        self._heartbeat: Heartbeat | None = None
        self.lost = False
        """The store no longer has this run running (marked crashed, or abandoned): stop."""

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
        """Open a new run, or reopen ``resume`` (an id or the unique prefix status shows); the
        store refuses a second active real run for the same DC (``ActiveRunError``).

        A Prefect retry of the flow run that started a run continues that run, as
        ``--resume`` would: the record is found by the Prefect flow run id. ``engine`` is the
        store to use (a drill's own, which stays the caller's to dispose); by default an
        engine of the session's own on the store ``REVIVE_DATABASE_URL`` names, disposed by
        ``finish`` (or here, if the run cannot be opened).
        """
        owns = engine is None
        engine = engine if engine is not None else db.get_engine()
        try:
            db.upgrade(engine)
            with db.session(engine) as s:
                if not resume and prefect_flow_run_id:
                    earlier = service.get_run_by_prefect_id(s, prefect_flow_run_id)
                    resume = earlier.id if earlier is not None else None
                if resume:
                    run = service.find_run(s, resume)
                    if run.runbook != runbook:
                        raise InputError(f"run {resume} is a {run.runbook} run, not {runbook}")
                    service.resume_run(s, run.id)
                    return cls(engine, run.id, dry_run=run.dry_run, owns_engine=owns)
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
                return cls(engine, run.id, dry_run=dry_run, owns_engine=owns)
        except BaseException:
            if owns:
                engine.dispose()
            raise

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
        """Whether someone asked this run to stop (read from the store at most every_s), or
        the store gave the run up (crashed, abandoned) while this process still ran it."""
        if self.lost:
            return True
        now = time.monotonic()
        if not self._abort and now - self._abort_checked >= every_s:
            self._abort_checked = now
            with db.session(self.engine) as s:
                self._abort = service.is_abort_requested(s, self.run_id)
        return self._abort

    def finish(self, outcome: RunOutcome, summary: dict[str, Any] | None = None) -> None:
        """Record the outcome, stop beating, and release the engine if it is this session's
        own, even when the store refuses the write (``StoreError`` still reaches the
        caller): a run that ends on a store outage must not keep a connection open."""
        self.stop_heartbeat()
        try:
            with db.session(self.engine) as s:
                service.finish_run(s, self.run_id, outcome=outcome, summary=summary)
        finally:
            self.close()

    def close(self) -> None:
        """Dispose the engine if ``start`` made it; a caller's engine is never touched."""
        if self.owns_engine:
            self.engine.dispose()

    # --- liveness ----------------------------------------------------------------------------

    def start_heartbeat(self, every_s: float | None = None) -> Heartbeat:
        """Tell the store every ``every_s`` that this process still runs the run, until
        ``stop_heartbeat`` (or ``finish``); a run that stops beating counts as crashed."""
        if self._heartbeat is None:
            self._heartbeat = Heartbeat(self, HEARTBEAT_EVERY_S if every_s is None else every_s)
            self._heartbeat.start()
        return self._heartbeat

    def stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None


class Heartbeat:
    """Beats for one run on a daemon thread: a thread, not an asyncio task, so a flow that
    blocks its event loop (or waits at an approval gate) still beats, and a dead process
    (SIGTERM, SIGKILL, a lost worker) stops beating with it."""

    def __init__(self, session: RunSession, every_s: float) -> None:
        self.session = session
        self.every_s = every_s
        self.beats = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"revive-heartbeat-{session.run_id[:12]}")

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopped.wait(self.every_s):
            self.beat()

    def beat(self) -> None:
        """One heartbeat; a store that cannot be reached is logged, and tried again next
        time (the run is shown crashed only if that lasts ``STALE_AFTER_S``)."""
        run_id = self.session.run_id
        try:
            with db.session(self.session.engine) as s:
                alive = service.beat_run(s, run_id)
        except Exception as exc:  # the beat must go on; the next one may get through
            log.warning("run %s: heartbeat not recorded: %s", run_id, exc)
            return
        self.beats += 1
        if not alive and not self._stopped.is_set():
            log.warning("run %s is no longer running in the store (crashed or abandoned); "
                        "it stops at its next step", run_id)
            self.session.lost = True

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
