"""The failover's recovery graph, executed: one loop, one scheduler, one clock.

``revive.planning.recovery`` says which steps exist and what each waits for; the one
scheduler (``revive.planning.graph``) says which may start now. This loop starts them
through the ops-tool tasks, waits on the clock until an action ends or the next ramp
scrape is due, records every step before and after (a resumed run skips what is done),
and lets each class's ramp run from the moment its own pre-conditions hold. Nothing here
sleeps, decides an order or computes a plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flows.approval import ApprovalRefused, approval_gate
from flows.context import RunContext
from flows.restart_service_groups import health_gate
from flows.warm_up_ramp import TrafficMover
from revive.errors import OpsError, QuotaError
from revive.ops.models import ActionRef, ActionState
from revive.planning.graph import Scheduler, Step, StepState
from revive.planning.recovery import GATE, Survey, ramp_key
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
    quota: dict[str, int | None] = field(default_factory=dict)
    in_flight: dict[str, ActionRef] = field(default_factory=dict)
    ramping: set[str] = field(default_factory=set)
    started_at: dict[str, float] = field(default_factory=dict)
    ended_at: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    now: float = 0.0

    async def run(self) -> None:
        """Until every step ended (or was blocked) and every class has moved."""
        ctx, clock = self.ctx, self.ctx.tools.clock
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
        # Every class is in: features come back, one at a time, while there is room.
        while (self.mover.ramps and not self.mover.done and self.mover.result != "stalled"
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
                    self._end_ramp(step.target)
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
            self.quota[dc] = await ctx.tools.compute.quota(dc)
        left = self.quota[dc]
        count = want if left is None else min(want, left)
        if count <= 0:
            await ctx.settle(step.key, ok=False, detail={"error": "quota exhausted"},
                             note=f"ESCALATE quota: {name} needs {want} in {dc}")
            self._end(step.key, ok=False, why="quota exhausted")
            return None
        try:
            ref = await ctx.start(step.key, "provision", lambda rid: provision_instances(
                ctx.tools.compute, name, dc, count, rid))
        except QuotaError as exc:
            self._end(step.key, ok=False, why=str(exc))
            return None
        if left is not None:
            self.quota[dc] = left - count
        if count < want:
            self.notes[step.key] = f"got {count} of {want}"
            await ctx.warn(step.key, f"ESCALATE quota: {name} got {count} of {want} in {dc}")
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
            await ctx.settle(key, ok=ok, detail={"action_id": ref.id, "error": why},
                             note=f"{key} done" if ok else None)
            self._end(key, ok=ok, why=why or "")

    async def _ramp_round(self) -> None:
        await self.mover.step(self.now)
        for name in list(self.ramping):
            ramp = self.mover.ramps.get(name)
            if ramp is None or ramp.complete:
                self._end_ramp(name)

    def _end_ramp(self, name: str) -> None:
        self.ramping.discard(name)
        self._end(ramp_key(name), ok=True)

    def _end(self, key: str, *, ok: bool, why: str = "") -> None:
        self.ended_at[key] = self.now
        for blocked in self.scheduler.finish(key, ok=ok, why=why):
            self.ended_at[blocked] = self.now

    def failed(self) -> dict[str, str]:
        """Steps that failed or never ran because what they needed failed, with why."""
        return {k: self.scheduler.why.get(k, "") for k in self.scheduler.order
                if self.scheduler.state[k] in (StepState.failed, StepState.blocked)}
