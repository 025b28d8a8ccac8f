"""What every runbook flow shares: parameters, the run, the tools, progress and chat.

``open_run`` opens (or resumes) the run record, beats its heartbeat while it runs, builds the
toolbox, posts the living chat message and a Prefect progress artifact, and closes everything
whatever happens. The record goes to the process's store, or to the one ``using_store`` set
for this context (a drill's own), never through the process environment. Inside,
``RunContext.start`` runs an action at most once per run: a step already done is skipped,
and a step in flight on a crashed run is re-sent with the same request id, which the tool
answers with the action it already started.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prefect import get_run_logger
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.context import FlowRunContext
from pydantic import Field
from sqlalchemy import Engine

from revive.chat.models import RunCard, RunStatus, StepNote, Trigger
from revive.chat.sink import ChatSink, chat_from_env
from revive.errors import InputError, OpsError, ReviveError, StoreError
from revive.ops.models import ActionRef, ActionState, ActionStatus
from revive.ops.toolbox import SIM_URL_ENV, Toolbox, build_toolbox
from revive.runs import RunSession
from revive.runs.form import FormModel
from revive.runs.origin import Origin, current_origin
from revive.store.models import RunOutcome, StepState, TriggerSource
from revive.topology import DEFAULT_PATH, Environment, Topology, load, require_databases
from tasks.clock import action_status, wait

log = logging.getLogger(__name__)


class RunAborted(ReviveError):
    """Someone asked the run to stop; it stopped between steps."""


_STORE: ContextVar[Engine | None] = ContextVar("revive_run_store", default=None)


@contextmanager
def using_store(engine: Engine) -> Iterator[None]:
    """Runs opened inside (by this task and the flows it calls) are recorded in ``engine``'s
    store. A context variable, not ``REVIVE_DATABASE_URL``: ``revive serve`` runs other runs
    in other threads meanwhile, and theirs must stay in the default store."""
    token = _STORE.set(engine)
    try:
        yield
    finally:
        _STORE.reset(token)


class RunbookParams(FormModel):
    """Parameters every runbook takes (the Prefect UI renders them as a form)."""

    topology: str = Field(str(DEFAULT_PATH), min_length=1, description="Topology file.")
    target_dc: str | None = Field(None, min_length=1, title="Target DC",
                                     description="The DC this runbook acts on.")
    sim_url: str | None = Field(
        None, description=f"Simulator to act on (drills); default ${SIM_URL_ENV}."
    )
    run_from_dc: str | None = Field(
        None, title="Run from DC",
        description="The DC this run executes from; its tool replicas are tried first."
    )
    dry_run: bool = Field(False, description="Show the plan and change nothing.")
    resume: str | None = Field(None, description="Continue this run id, skipping done steps.")

    needs_database: ClassVar[bool] = False
    """The runbook moves traffic gated on the database: an estate without one is invalid."""

    def run_dc(self, topology: Topology) -> str:
        """The DC this run is for (one active run per runbook and DC), checked against the
        topology; a runbook acting on other DCs than ``target_dc`` overrides this."""
        return known_dc(topology, "target_dc", self.target_dc)


def checked(params: RunbookParams, runbook: str) -> tuple[Topology, str]:
    """The topology and the DC the run is for, after every rule a run's parameters must
    pass before anything starts; the CLI, Slack and the flow itself all apply this one."""
    topology = load(params.topology)
    if params.needs_database:
        require_databases(topology, f"the {runbook} runbook", params.topology)
    return topology, params.run_dc(topology)


def tools_for(params: RunbookParams, topology: Topology) -> Toolbox:
    """The run's adapters, as its parameters and the environment choose them.

    Building opens no connection, so the CLI calls this to refuse a run whose tools cannot
    be had (exit 2) before anything starts; the flow builds its own the same way."""
    sim_url = params.sim_url or os.environ.get(SIM_URL_ENV)
    return build_toolbox(topology, sim_url=sim_url, run_dc=params.run_from_dc)


def known_dc(topology: Topology, key: str, dc: str | None) -> str:
    """``dc`` if the topology declares it; invalid input naming ``key`` otherwise."""
    names = ", ".join(topology.dc_names)
    if dc is None:
        raise InputError(f"{key}: required (topology has: {names})")
    if dc not in topology.dc_names:
        raise InputError(f"{key}: unknown datacenter {dc!r} (topology has: {names})")
    return dc


def the_lost_dc(topology: Topology, lost: str | None, targets: list[str]) -> str:
    """The lost DC: as given, or the other DC of a two-DC estate; never one of ``targets``."""
    if lost is None and len(topology.dc_names) == 2 and len(targets) == 1:
        lost = next(dc for dc in topology.dc_names if dc != targets[0])
    lost = known_dc(topology, "lost_dc", lost)
    if lost in targets:
        raise InputError(f"lost_dc: {lost!r} cannot also be a target DC")
    return lost


@dataclass
class RunContext:
    runbook: str
    params: RunbookParams
    topology: Topology
    tools: Toolbox
    run: RunSession
    chat: ChatSink
    environment: Environment
    origin: Origin = field(default_factory=lambda: Origin(trigger=TriggerSource.UI, by="unknown"))
    """Who or what started the run (its tags, or Prefect's record): never a parameter."""
    highlights: list[str] = field(default_factory=list)
    outcome: str | None = None
    _artifact: Any = None
    _pushed: float = 0.0
    _dc: str | None = None

    @property
    def target_dc(self) -> str:
        """The DC the current steps act on (``acting_on`` switches it for multi-DC runs)."""
        return self._dc or self.params.target_dc or ""

    @contextmanager
    def acting_on(self, dc: str) -> Iterator[None]:
        """Run the per-DC steps inside on ``dc`` (a failover recovers into several DCs)."""
        saved, self._dc = self._dc, dc
        try:
            yield
        finally:
            self._dc = saved

    @property
    def dry_run(self) -> bool:
        return self.params.dry_run

    def log(self, message: str, *args: Any) -> None:
        get_run_logger().info(message, *args)

    # --- steps -------------------------------------------------------------------------------

    def is_done(self, key: str) -> bool:
        return self.run.step_state(key)[0] == StepState.DONE

    async def start(
        self,
        key: str,
        action: str,
        starter: Callable[[str], Awaitable[ActionRef]],
        *,
        abortable: bool = True,
    ) -> ActionRef | None:
        """Start an action once per run; None if a resumed run had finished it already.

        ``abortable=False`` is for undo steps (rollbacks) that must run after an abort."""
        if abortable:
            self.check_abort()
        if self.is_done(key):
            return None
        self.run.begin(key, action, {"request_id": self.run.request_id(key)})
        try:
            return await starter(self.run.request_id(key))
        except OpsError as exc:  # transient ones only after the task's retries ran out
            await self.settle(key, ok=False, detail={"error": str(exc)})
            raise

    async def settle(self, key: str, *, ok: bool, detail: dict[str, Any] | None = None,
                     note: str | None = None) -> None:
        action = key.split(":", 1)[0]
        self.run.end(key, StepState.DONE if ok else StepState.FAILED, detail, action=action)
        if note or not ok:
            text = note or f"{key} failed: {(detail or {}).get('error', '')}"
            await self.chat.note(StepNote(run_id=self.run.run_id, step_key=key, text=text, ok=ok))
        await self.push()

    async def settle_all(
        self, started: Mapping[str, ActionRef], *, note: Callable[[str], str] | None = None
    ) -> dict[str, ActionStatus]:
        """Wait for every action started under a step key, then record each as done or
        failed (``note(key)`` goes to the run's thread for the ones that succeeded)."""
        if started:
            await wait(self.tools.clock, actions=list(started.values()))
        statuses = {}
        for key, ref in started.items():
            status = await action_status(self.tools.clock, ref)
            ok = status.state == ActionState.done
            await self.settle(key, ok=ok, detail={"action_id": ref.id, "error": status.error},
                              note=note(key) if note and ok else None)
            statuses[key] = status
        return statuses

    async def instant(
        self, key: str, action: str, apply: Callable[[], Awaitable[Any]], note: str | None = None,
        *, detail: dict[str, Any] | None = None,
    ) -> bool:
        """An instant change (weights, flags): applied once per run, recorded like an action.

        ``detail`` is recorded when the step begins: what the change is meant to do, so a
        resumed run can tell whether a change left ``started`` by a store outage happened."""
        self.check_abort()
        if self.is_done(key):
            return False
        self.run.begin(key, action, detail)
        await apply()
        await self.settle(key, ok=True, note=note)
        return True

    def check_abort(self) -> None:
        if self.run.abort_requested():
            raise RunAborted(f"run {self.run.run_id} was asked to abort")

    def highlight(self, line: str) -> None:
        self.highlights.append(line)

    async def note_once(self, tag: str, text: str) -> None:
        """A warning in the run's thread the first time ``tag`` comes up (e.g. a tool that
        does not answer), not on every step that notices it."""
        if tag in self.highlights:
            return
        self.highlight(tag)
        await self.warn(tag.split("-")[0], text)

    async def warn(self, step_key: str, text: str) -> None:
        """A failure note in the run's thread: what people on call must see."""
        await self.chat.note(StepNote(run_id=self.run.run_id, step_key=step_key, text=text,
                                      ok=False))

    # --- progress ----------------------------------------------------------------------------

    def plan_steps(self, count: int) -> None:
        self.run.progress.set(total=self.run.progress.total + count)

    def card(self, status: RunStatus = RunStatus.RUNNING) -> RunCard:
        progress = self.run.progress
        run_ctx = FlowRunContext.get()
        link = None
        if run_ctx and run_ctx.flow_run:
            ui = os.environ.get("PREFECT_UI_URL")
            link = f"{ui}/runs/flow-run/{run_ctx.flow_run.id}" if ui else None
        return RunCard(
            run_id=self.run.run_id,
            runbook=self.runbook,
            target_dc=self.target_dc,
            environment=str(self.environment),
            status=status,
            steps_done=progress.done,
            steps_total=max(progress.total, progress.done),
            current_step=progress.current or None,
            started_by=self.origin.by,
            trigger=Trigger(str(self.origin.trigger)),
            elapsed_real_s=round(progress.elapsed_real_s, 1),
            elapsed_sim_s=progress.sim_time,
            outcome=self.outcome,
            highlights=self.highlights[-20:],
            link=link,
        )

    async def push(self, *, force: bool = False) -> None:
        """Progress to the Prefect artifact and the chat card, at most every second."""
        now = time.monotonic()
        if not force and now - self._pushed < 1.0:
            return
        self._pushed = now
        progress = self.run.progress
        share = 100.0 * progress.done / max(progress.total, progress.done, 1)
        if self._artifact is None:
            self._artifact = await acreate_progress_artifact(
                progress=share, key=f"{self.runbook.replace('_', '-')}-progress",
                description=f"{self.runbook} steps done",
            )
        else:
            await aupdate_progress_artifact(self._artifact, progress=share)
        await self.chat.update(self.card())

    async def tick(self) -> None:
        """Refresh simulated time from the clock (on the simulator), then push progress."""
        if getattr(self.tools, "simulated", True):
            self.run.progress.sim_time = await self.tools.clock.now()
        await self.push()


@asynccontextmanager
async def open_run(
    runbook: str,
    params: RunbookParams,
    *,
    tools: Toolbox | None = None,
    chat: ChatSink | None = None,
) -> AsyncIterator[RunContext]:
    """Open the run, yield its context, and record how it ended whatever happens."""
    topology, run_dc = checked(params, runbook)
    own_tools = tools is None
    if tools is None:  # built before the run is recorded: a wrong tool starts nothing
        tools = tools_for(params, topology)
    flow_run = FlowRunContext.get()
    origin = current_origin()
    run = RunSession.start(
        prefect_flow_run_id=str(flow_run.flow_run.id) if flow_run and flow_run.flow_run else None,
        runbook=runbook,
        parameters=params.model_dump(mode="json"),
        trigger=origin.trigger,
        triggered_by=origin.by,
        target_dc=run_dc,
        topology=topology,
        topology_source=params.topology,
        dry_run=params.dry_run,
        resume=params.resume,
        engine=_STORE.get(),
    )
    run.start_heartbeat()
    own_chat = chat is None
    status, outcome = RunStatus.SUCCEEDED, RunOutcome.SUCCEEDED
    try:
        chat = chat or chat_from_env()
        ctx = RunContext(runbook, params, topology, tools, run, chat, topology.environment,
                         origin=origin)
        await chat.start(ctx.card())
    except BaseException:  # nothing ran: the record must not stay running, nor beating
        try:
            _finish_record(run, RunOutcome.FAILED, {"outcome": "failed", "steps": 0},
                           failing=True)
        finally:
            if own_tools:
                await tools.aclose()
        raise
    failing = False
    try:
        yield ctx
        if ctx.outcome == "failed":  # the runbook finished, but did not achieve its aim
            status, outcome = RunStatus.FAILED, RunOutcome.FAILED
    except RunAborted:
        status, outcome = RunStatus.ABORTED, RunOutcome.ABORTED
        ctx.outcome = ctx.outcome or "aborted"
    except BaseException:
        status, outcome = RunStatus.FAILED, RunOutcome.FAILED
        failing = True
        raise
    finally:
        # Each step of the cleanup runs whatever the one before it raised: a store that is
        # down when the run ends must not leave the chat card running or the tools' clients
        # open, nor replace the error that ended the run with its own.
        try:
            _finish_record(run, outcome, {"outcome": ctx.outcome,
                                          "highlights": ctx.highlights[-50:],
                                          "steps": run.progress.done}, failing=failing)
        finally:
            try:
                await ctx.push(force=True)
            finally:
                try:
                    await chat.finish(ctx.card(status))
                finally:
                    try:
                        if own_chat:
                            await chat.aclose()
                    finally:
                        if own_tools:
                            await tools.aclose()


def _finish_record(run: RunSession, outcome: RunOutcome, summary: dict[str, Any], *,
                   failing: bool) -> None:
    """Write how the run ended. When the store refuses, the run stays ``running`` in the
    store until its heartbeat goes stale (then ``crashed``, and resumable); the refusal is
    logged, and raised only if nothing else is: the error that ended the run says more."""
    try:
        run.finish(outcome, summary)
    except StoreError as exc:
        log.warning("run %s: its end (%s) was not recorded: %s", run.run_id, outcome, exc)
        if not failing:
            raise
