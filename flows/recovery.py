"""The failover's recovery graph, executed: one loop, one scheduler, one clock.

``revive.planning.recovery`` says which steps exist and what each waits for; the one
scheduler (``revive.planning.graph``) says which may start now. This loop starts them
through the ops-tool tasks, waits on the clock until an action ends or the next ramp
scrape is due, records every step before and after (a resumed run skips what is done),
and lets each class's ramp run from the moment its own pre-conditions hold. Nothing here
sleeps, decides an order or computes a plan.

Each step's clock times go into its ledger detail when it settles (``started_s``,
``ended_s``; a class's ramp is recorded when it completes): a resumed run takes a step an
earlier attempt finished as ending when it ended, not at the resume, so the RTO of every
tier is counted from the incident whichever process finished it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flows.approval import ApprovalRefused, approval_gate
from flows.context import RunContext
from flows.restart_service_groups import health_gate
from flows.warm_up_ramp import TrafficMover
from revive.errors import OpsError, QuotaError
from revive.ops.models import ActionRef, ActionState
from revive.planning.graph import Scheduler, Step, StepState
from revive.planning.quota import Quota, shortfall_note
from revive.planning.recovery import GATE, Survey, ramp_key
from revive.store.models import StepState as Ledger
from tasks.clock import action_status, wait
from tasks.compute import provision_instances
from tasks.registry import copy_artifact
from tasks.services import deploy_component, restart_service


@dataclass
class GraphRun:
    """One execution of a recovery graph and what it did, step by step."""

    ctx: RunContext
    scheduler: Scheduler
    survey: Survey
    mover: TrafficMover
    approval_question: str
    approval_timeout_s: float
    scrape_interval_s: float = 10.0
    max_ramp_s: float = 7200.0
    quota: dict[str, Quota] = field(default_factory=dict)
    in_flight: dict[str, ActionRef] = field(default_factory=dict)
    ramping: set[str] = field(default_factory=set)
    started_at: dict[str, float] = field(default_factory=dict)
    ended_at: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    earlier: dict[str, Settled] = field(default_factory=dict)
    """Steps an earlier attempt of this run finished, from the ledger: a resume counts
    them as ending when they did, including those its own survey no longer plans."""
    now: float = 0.0

    async def run(self) -> None:
        """Until every step ended (or was blocked) and every class has moved."""
        ctx, clock = self.ctx, self.ctx.tools.clock
        self.earlier = settled_steps(ctx.run.steps())
        self.now = t0 = await clock.now()
        next_scrape: float | None = None
        while True:
            ctx.check_abort()
            for step in self.scheduler.ready():
                await self._start(step)
            if self.ramping and next_scrape is None:
                next_scrape = self.now + self.scrape_interval_s
            if not self.in_flight and not self.ramping:
                if self.scheduler.ready():
                    continue
                break
            until = None if next_scrape is None else max(0.0, next_scrape - self.now)
            self.now = await wait(clock, for_s=until, actions=list(self.in_flight.values()),
                                  any_action=True)
            await self._collect()
            if next_scrape is not None and self.now >= next_scrape - 1e-9:
                next_scrape = self.now + self.scrape_interval_s
                await self._ramp_round()
                if self.mover.result == "stalled" or self.now - t0 > self.max_ramp_s:
                    break
            await ctx.tick()
        # Every class is in: features come back, one at a time, while there is room (also
        # when no class had users to move, as in a run resumed after its last move).
        if not self.mover.ramps:
            await self.mover.prepare()
        while ((self.mover.ramps or (self.mover.features and not self.mover.to_move))
               and not self.mover.done and self.mover.result != "stalled"
               and self.now - t0 <= self.max_ramp_s):
            ctx.check_abort()
            self.now = await wait(clock, for_s=self.scrape_interval_s)
            await self.mover.step(self.now)
            await ctx.tick()
        if self.mover.done:
            self.mover.result = "full"

    # --- starting steps ------------------------------------------------------------------

    async def _start(self, step: Step) -> None:
        ctx = self.ctx
        self.scheduler.start(step.key)
        self.started_at[step.key] = self.now
        if step.action != "ramp" and ctx.is_done(step.key):
            self._end(step.key, ok=True)  # done by an earlier attempt of this run
            return
        try:
            if step.action == "ramp":
                await self.mover.activate([step.target], self.now)
                self.ramping.add(step.target)
                if step.target not in self.mover.ramps:  # nobody left to move
                    await self._end_ramp(step.target)
                return
            if step.action == "features":
                await self.mover.features_off()
            elif step.action == "retry_policy":
                await self.mover.push_retry_policy()
            elif step.action == "approval":
                await self._approve()
            else:
                ref = await self._start_action(step)
                if ref is not None:
                    self.in_flight[step.key] = ref
                    return
                if self.scheduler.state[step.key] != StepState.running:
                    return  # refused and recorded
        except ApprovalRefused:
            raise
        except OpsError as exc:
            self._end(step.key, ok=False, why=str(exc))
            return
        self._end(step.key, ok=True)

    async def _approve(self) -> None:
        """The one gate before traffic moves. A rejection or no answer in time stops the
        whole run here (ApprovalRefused propagates): nothing else of the failover may go
        on deciding for the people who said no."""
        try:
            await approval_gate(self.ctx, "traffic", self.approval_question,
                                self.approval_timeout_s)
        except ApprovalRefused:
            self._end(GATE, ok=False, why="refused")
            raise

    async def _start_action(self, step: Step) -> ActionRef | None:
        """Start a deploy, copy, provision or restart; None if it needs nothing more."""
        ctx, tools, survey = self.ctx, self.ctx.tools, self.survey
        name, dc = step.target.split("@")
        if step.action == "copy":
            src = survey.copies[dc][name]
            return await ctx.start(step.key, "copy_artifact", lambda rid: copy_artifact(
                tools.registry, name, survey.version, src, dc, rid))
        if step.action == "deploy":
            count = survey.deploys[dc][name]
            return await ctx.start(step.key, "deploy", lambda rid: deploy_component(
                tools.services, name, dc, count, survey.version, rid))
        if step.action == "restart":
            return await ctx.start(step.key, "restart", lambda rid: restart_service(
                tools.services, name, dc, rid))
        return await self._start_provision(step, name, dc)

    async def _start_provision(self, step: Step, name: str, dc: str) -> ActionRef | None:
        """Within the DC's quota: a shortfall is escalated, never fatal to the rest."""
        ctx = self.ctx
        want = self.survey.provisions[dc][name]
        if dc not in self.quota:
            self.quota[dc] = Quota(await ctx.tools.compute.quota(dc))
        quota = self.quota[dc]
        count = quota.grant(want)
        if count <= 0:
            await ctx.settle(step.key, ok=False, detail={
                "error": "quota exhausted", **step_times(step, self.now, self.now)},
                             note=shortfall_note(name, dc, want, 0))
            self._end(step.key, ok=False, why="quota exhausted")
            return None
        try:
            ref = await ctx.start(step.key, "provision", lambda rid: provision_instances(
                ctx.tools.compute, name, dc, count, rid))
        except QuotaError as exc:
            self._end(step.key, ok=False, why=str(exc))
            return None
        quota.spend(count)
        if count < want:
            self.notes[step.key] = f"got {count} of {want}"
            await ctx.warn(step.key, shortfall_note(name, dc, want, count))
        return ref

    # --- ending steps --------------------------------------------------------------------

    async def _collect(self) -> None:
        """Record every action that ended; a restart counts once its health gate passes."""
        ctx = self.ctx
        for key, ref in list(self.in_flight.items()):
            status = await action_status(ctx.tools.clock, ref)
            if not status.finished:
                continue
            del self.in_flight[key]
            ok, why = status.state == ActionState.done, status.error
            if key.startswith("restart:"):
                name, dc = key.removeprefix("restart:").split("@")
                with ctx.acting_on(dc):
                    ok, why = await health_gate(ctx, name, status.state, status.error)
            await ctx.settle(key, ok=ok, detail={
                "action_id": ref.id, "error": why,
                **step_times(self.scheduler.steps[key], self.started_at.get(key, self.now),
                             self.now)},
                note=f"{key} done" if ok else None)
            self._end(key, ok=ok, why=why or "")

    async def _ramp_round(self) -> None:
        await self.mover.step(self.now)
        for name in list(self.ramping):
            ramp = self.mover.ramps.get(name)
            if ramp is None or ramp.complete:
                await self._end_ramp(name)

    async def _end_ramp(self, name: str) -> None:
        """A class is in. Recorded in the ledger with its clock times, unless an earlier
        attempt of this run recorded it and this one found nobody left to move: then it
        ended when that attempt said."""
        self.ramping.discard(name)
        key = ramp_key(name)
        if key not in self.earlier or name in self.mover.ramps:
            self.earlier.pop(key, None)
            await self.ctx.settle(key, ok=True, detail=step_times(
                self.scheduler.steps[key], self.started_at.get(key, self.now), self.now))
        self._end(key, ok=True)

    def _end(self, key: str, *, ok: bool, why: str = "") -> None:
        """The scheduler learns the step ended; it ended now, or when an earlier attempt of
        this run finished it (what it blocks, if it failed, is blocked now)."""
        earlier = self.earlier.get(key)
        if earlier is not None and earlier.started_s is not None:
            self.started_at[key] = earlier.started_s
        self.ended_at[key] = self.now if earlier is None else earlier.ended_s
        for blocked in self.scheduler.finish(key, ok=ok, why=why):
            self.ended_at[blocked] = self.now

    def ends(self, default: float) -> list[StepEnd]:
        """How every step of this run ended: the graph's (``default`` for one that never
        ended), and those an earlier attempt finished that this attempt's graph lacks (its
        survey found nothing left to do there)."""
        out = [StepEnd(key, step.action, step.target,
                       self.scheduler.state[key] == StepState.done,
                       self.ended_at.get(key, default))
               for key, step in self.scheduler.steps.items()]
        out += [StepEnd(key, e.action, e.target, True, e.ended_s)
                for key, e in self.earlier.items() if key not in self.scheduler.steps]
        return out

    def failed(self) -> dict[str, str]:
        """Steps that failed or never ran because what they needed failed, with why."""
        return {k: self.scheduler.why.get(k, "") for k in self.scheduler.order
                if self.scheduler.state[k] in (StepState.failed, StepState.blocked)}


@dataclass(frozen=True)
class Settled:
    """A step an earlier attempt of this run finished, as its ledger detail tells."""

    action: str
    target: str
    started_s: float | None
    ended_s: float


@dataclass(frozen=True)
class StepEnd:
    """How one step of the run ended, for judging each tier's RTO."""

    key: str
    action: str
    target: str
    ok: bool
    ended_s: float


MOVE_KEY = re.compile(r"^ramp:(?P<cls>.+)@(?P<at>\d+)$")
"""A ramp move in the ledger, keyed by its round's clock time (``TrafficMover.step``)."""


def step_times(step: Step, started: float, ended: float) -> dict[str, Any]:
    """What a step's ledger detail keeps for a resumed run: what it acted on, and its
    clock times."""
    return {"action": step.action, "target": step.target,
            "started_s": started, "ended_s": ended}


def _number(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (a ledger written by hand, or by
    another version)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def settled_steps(steps: list[dict[str, Any]]) -> dict[str, Settled]:
    """The done steps of a ledger (``RunSession.steps()``) whose detail holds their clock
    end; the others (settled elsewhere, or by an older revive) end when a resume finds
    them done."""
    out: dict[str, Settled] = {}
    moved: dict[str, float] = {}
    for step in steps:
        detail = step.get("detail") or {}
        move = MOVE_KEY.match(str(step.get("key", "")))
        if move is not None:
            at = float(move["at"])
            moved[move["cls"]] = max(at, moved.get(move["cls"], at))
            continue
        end = _number(detail.get("ended_s"))
        if step.get("state") != str(Ledger.DONE) or end is None:
            continue
        out[step["key"]] = Settled(str(detail.get("action", "")),
                                   str(detail.get("target", "")),
                                   _number(detail.get("started_s")), end)
    # A class whose last move an earlier attempt made (even if a crash kept it from
    # recording the move, or the ramp's end) ended its ramp then, if a resume finds nobody
    # left to move; one the resume ramps again is recorded anew (``_end_ramp``).
    for cls, at in moved.items():
        out.setdefault(ramp_key(cls), Settled("ramp", cls, None, at))
    return out
