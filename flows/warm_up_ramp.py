"""Runbook: move a lost DC's users into the recovering DCs without melting their caches.

First the client retry policy goes to the config store (so clients cannot DDoS the DCs),
then the ramp moves each traffic class's users out of the lost DC into the target DCs,
each in proportion to what it already carried (so none is drained), fed only scraped
metrics and in priority order: tier 0's class gets the database's headroom first
(``revive.ramp.classes``). With every class moved, features come back in (tier, priority)
order. It stops when everything is on, when the controller stalls and asks for a human,
on abort (the weights stay where they are), or at ``max_duration_s``.

``TrafficMover`` is the ramp as a runbook drives it; the failover starts each class's
ramp as soon as that class's services are ready, from its own step loop. The pause
between scrapes is a plain wait on the clock, not a task: it changes nothing, and a ramp
takes hundreds of them, which as task runs would only load the Prefect server.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any, ClassVar

from prefect import flow
from prefect.artifacts import acreate_table_artifact
from pydantic import Field

from flows.context import RunbookParams, RunContext, open_run, the_lost_dc
from revive.ops.models import RetryPolicy
from revive.planning.shares import dc_load_share
from revive.ramp import FeatureCandidate, RampPolicy
from revive.ramp.classes import ClassRamp, RampMemory, Round, next_round
from tasks.config_store import feature_flags, push_retry_policy, set_feature_flag
from tasks.metrics import scrape_class_metrics
from tasks.traffic import set_class_weights, traffic_class_weights


class RampParams(RunbookParams):
    lost_dc: str | None = Field(
        None, description="The DC whose users move into target_dc (default: the other DC of "
        "a two-DC estate)."
    )
    policy: RampPolicy = Field(default_factory=RampPolicy, description="Limits and pacing.")
    retry_policy: RetryPolicy = Field(
        default_factory=RetryPolicy, description="Client retry rules pushed before any move."
    )
    scrape_interval_s: float = Field(10.0, gt=0, le=300, description="Seconds between scrapes.")
    max_duration_s: float = Field(
        7200.0, gt=0, le=86400, description="Give up (hold the weights) after this long."
    )
    needs_database: ClassVar[bool] = True


class TrafficMover:
    """The lost DC's users, class by class, moving into the targets under the controller.

    ``push_retry_policy`` and ``features_off`` come first; ``activate`` starts a class's
    ramp (the first one reads where every class's users are and which features are off; a
    class's baseline error rate is measured when it starts); each ``step`` is one scrape
    round and its moves. A class with no users in the lost DC needs no ramp.
    """

    def __init__(self, ctx: RunContext, *, lost_dc: str, target_dcs: list[str],
                 policy: RampPolicy, retry_policy: RetryPolicy) -> None:
        self.ctx, self.lost, self.targets = ctx, lost_dc, target_dcs
        self.policy, self.retry_policy = policy, retry_policy
        self.before: dict[str, dict[str, float]] = {}
        self.ramps: dict[str, ClassRamp] = {}
        self.features: list[FeatureCandidate] = []
        self.memory = RampMemory(target_dcs)
        self.started_at: float | None = None
        self.result = "timeout"
        self.holds: dict[str, int] = {}
        """Rounds a class could have moved and held, by the controller's reason."""
        self._prepared = False
        self._settled: list[ClassRamp] | None = None

    async def push_retry_policy(self) -> None:
        """Clients retry within a budget before any user moves (no self-inflicted DDoS)."""
        tools = self.ctx.tools
        await self.ctx.instant("ramp:retry-policy", "config", lambda: push_retry_policy(
            tools.config, self.retry_policy),
            note=f"client retry policy: {self.retry_policy.model_dump()}")

    async def features_off(self) -> None:
        """Emergency mode: every feature off; they come back once every class is in."""
        ctx = self.ctx
        flags = await feature_flags(ctx.tools.config)
        on = sorted(k for k, v in flags.items() if v)
        for svc, feature in on:
            await ctx.instant(f"feature-off:{svc}/{feature}", "config",
                              lambda s=svc, f=feature: set_feature_flag(
                                  ctx.tools.config, s, f, False))
        if on:
            ctx.highlight(f"switched {len(on)} features off until traffic is back")

    async def prepare(self) -> None:
        """Where every class's users are now, and which features are off to come back."""
        if self._prepared:
            return
        tools = self.ctx.tools
        self.before = await traffic_class_weights(tools.traffic)
        flags = await feature_flags(tools.config)
        await self.settle_stranded(self.before, flags)
        self.features = _features_off(self.ctx, flags)
        self._prepared = True

    async def settle_stranded(self, weights: Mapping[str, Mapping[str, float]] | None = None,
                              flags: Mapping[tuple[str, str], bool] | None = None) -> None:
        """End the ramp changes an earlier attempt of this run began and never recorded the
        end of (the store died, or the process, between making a change and settling it):
        done if the tools show it made, failed (it did not happen) otherwise.

        A resumed ramp keys its moves by its own rounds' times and re-reads which features
        are off, so nothing else would ever end them. ``prepare`` calls this with what it
        read, so a failed change the ramp still needs is made again; ``summary`` calls it
        for a resumed failover that had no class left to ramp (it never prepared), and then
        reads the tools only if such a change is there."""
        ctx = self.ctx
        classes = ctx.topology.traffic_classes
        stranded = [st for st in ctx.run.steps()
                    if stranded_change(st, classes, {}, {}) is not None]
        if not stranded:
            return
        if weights is None:
            weights = await traffic_class_weights(ctx.tools.traffic)
        if flags is None:
            flags = await feature_flags(ctx.tools.config)
        for step in stranded:
            made = bool(stranded_change(step, classes, weights, flags))
            detail = dict(step["detail"] or {})
            if made:
                detail["settled"] = "on resume: the tools show the change made"
            else:
                detail["error"] = "not made: the tools show otherwise on resume"
            await ctx.settle(step["key"], ok=made, detail=detail)

    @property
    def to_move(self) -> list[str]:
        """Classes that had users in the lost DC, in priority order."""
        return [c for c in self.ctx.topology.traffic_classes
                if self.before.get(c, {}).get(self.lost, 0.0) > 0]

    async def activate(self, classes: list[str], now: float) -> None:
        """Start the ramps of ``classes``; their baselines come from one scrape now."""
        await self.prepare()
        new = [c for c in classes if c in self.to_move and c not in self.ramps]
        if not new:
            return
        known = self.ctx.topology.traffic_classes
        lanes = [(c, dc) for c in new for dc in [*self.targets, self.lost]]
        samples = await scrape_class_metrics(self.ctx.tools.metrics, lanes,
                                             self._idle(lanes))
        for c in new:
            ramp = ClassRamp.start(c, known[c].priority, self.lost, self.targets,
                                   self.before[c], known[c].load_share)
            # A lost DC with no metrics at all (burnt, cut off) fails all of its users.
            lost = samples.get((c, self.lost))
            moving_error = 1.0 if lost is None else lost.error_rate
            for lane in ramp.lanes:
                # Where the class had no users, there is nobody to protect: the ramp must
                # not make the moving users worse off than they were in the lost DC.
                had_users = self.before[c].get(lane.dc, 0.0) > 0
                own = samples.get((c, lane.dc))
                lane.baseline_error = max(0.0 if own is None else own.error_rate,
                                          0.0 if had_users else moving_error)
            self.ramps[c] = ramp
        self.started_at = self.started_at if self.started_at is not None else now
        self.memory.started(now)
        self.ctx.highlight(f"ramp started for {', '.join(new)} at {now:.0f} s")

    @property
    def done(self) -> bool:
        return (all(c in self.ramps and self.ramps[c].complete for c in self.to_move)
                and not self.features)

    async def step(self, now: float) -> None:
        """One scrape round: samples for every active lane, then the round's moves."""
        ctx, tools = self.ctx, self.ctx.tools
        judged = list(self.ramps.values()) or self.settled_classes()
        lanes = [(r.name, lane.dc) for r in judged for lane in r.lanes]
        samples = (await scrape_class_metrics(tools.metrics, lanes, self._idle(lanes))
                   if lanes else {})
        # No data for a lane: its class holds this round (and what is less important waits
        # behind it); its old samples must not stand in for new ones.
        blind = [r for r in judged if any((r.name, lane.dc) not in samples for lane in r.lanes)]
        active = [r for r in judged if r not in blind]
        for ramp in active:
            for lane in ramp.lanes:
                if not lane.samples and ramp.name not in self.ramps:
                    lane.baseline_error = samples[ramp.name, lane.dc].error_rate
                lane.samples.append(samples[ramp.name, lane.dc])
        all_started = all(c in self.ramps for c in self.to_move)
        known = ctx.topology.traffic_classes
        memory = self.memory
        decided = next_round(active, policy=self.policy, now=now,
                             last_change=memory.last_change, last_progress=memory.last_progress,
                             dc_load=self.dc_load(), dc_changes=memory.dc_changes,
                             features_off=self.features if all_started and not blind else (),
                             not_started=[known[c].priority for c in self.to_move
                                          if c not in self.ramps]
                             + [r.priority for r in blind if not r.complete])
        self._count_holds(blind, active, decided)
        if decided.stalled is not None:
            await ctx.warn("ramp", f"STALLED: {decided.stalled}")
            self.result = "stalled"
            return
        for name, moved in decided.moves.items():
            weights = self.ramps[name].weights(moved)
            key = f"ramp:{name}@{now:.0f}"  # a resumed ramp re-reads the weights: new keys
            await ctx.instant(key, "traffic", lambda c=name, w=weights: set_class_weights(
                tools.traffic, c, w), detail={"weights": weights})
        memory.record(self.ramps, decided.moves, now, self.dc_load)
        if decided.feature is not None:
            f = decided.feature
            await ctx.instant(f"ramp:feature:{f.service}/{f.name}", "config",
                              lambda f=f: set_feature_flag(tools.config, f.service, f.name, True),
                              note=f"feature on: {f.service}/{f.name}")
            self.features = [x for x in self.features if x != f]
            memory.feature_switched_on(now)
        if self.done:
            self.result = "full"
        ctx.run.progress.set(current="ramp " + ", ".join(
            f"{r.name} {r.moved:.0%}" for r in self.ramps.values()))

    def settled_classes(self) -> list[ClassRamp]:
        """With features off and no class to move (every user was already out of the lost
        DC, or a resumed run finds its last move made), the classes the targets serve,
        as finished ramps: their lanes are where the database's room for each feature is
        judged, so features come back as after a ramp. Their baseline error is the first
        sample's: the state the features come back into."""
        if not self.features or self.to_move:
            return []
        if self._settled is None:
            known = self.ctx.topology.traffic_classes
            self._settled = []
            for name, weights in self.before.items():
                if name in known and any(weights.get(dc, 0.0) > 0 for dc in self.targets):
                    ramp = ClassRamp.start(name, known[name].priority, self.lost, self.targets,
                                           weights, known[name].load_share)
                    ramp.moved = 1.0
                    self._settled.append(ramp)
        return self._settled

    def _idle(self, lanes: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Lanes the class sends no users to now: nothing of the class to measure there."""
        weights = self.weights()
        return {(c, dc) for c, dc in lanes if weights.get(c, {}).get(dc, 0.0) <= 0.0}

    def _count_holds(self, blind: list[ClassRamp], active: list[ClassRamp],
                     decided: Round) -> None:
        """A hold: a class free to move (not waiting its turn) that did not, by reason."""
        for ramp in blind:
            if not ramp.complete:
                self.holds["no data"] = self.holds.get("no data", 0) + 1
        for ramp in active:
            reason = decided.reasons.get(ramp.name, "")
            if ramp.complete or ramp.name in decided.moves or reason.startswith("waiting"):
                continue
            self.holds[reason] = self.holds.get(reason, 0) + 1

    def weights(self) -> dict[str, dict[str, float]]:
        """Every class's weights per DC as the ramp has set them so far."""
        return {c: (self.ramps[c].weights() if c in self.ramps else dict(w))
                for c, w in self.before.items()}

    def dc_load(self) -> dict[str, float]:
        """Each target's share of the estate's load now (what its database carries)."""
        weights = self.weights()
        return {dc: dc_load_share(self.ctx.topology, weights, dc) for dc in self.targets}

    @property
    def moved(self) -> float:
        """The least moved class's fraction (1.0: every class's users are out)."""
        return min((self.ramps[c].moved if c in self.ramps else 0.0 for c in self.to_move),
                   default=1.0)

    async def summary(self, now: float) -> dict:
        await self.settle_stranded()
        where = ", ".join(self.targets)
        took = now - (self.started_at if self.started_at is not None else now)
        self.ctx.highlight(f"ramp {self.lost} -> {where}: {self.moved:.0%} moved "
                           f"({self.result}) after {took:.0f} s")
        await acreate_table_artifact(
            table=[{"class": r.name, "dc": lane.dc, **s.model_dump()}
                   for r in self.ramps.values() for lane in r.lanes for s in lane.samples[-200:]],
            key="ramp-samples", description=f"Metrics the ramp controller saw in {where}",
        )
        weights = self.weights()
        return {
            "result": self.result, "share": self.moved, "seconds": took, "weights": weights,
            "holds": sum(self.holds.values()), "holds_by_reason": dict(self.holds),
            "classes": {c: r.moved for c, r in self.ramps.items()},
            "samples": {c: {lane.dc: [s.model_dump() for s in lane.samples] for lane in r.lanes}
                        for c, r in self.ramps.items()},
            "changes": {c: {lane.dc: [x.model_dump() for x in lane.changes] for lane in r.lanes}
                        for c, r in self.ramps.items()},
        }


async def run_ramp(
    ctx: RunContext,
    *,
    lost_dc: str,
    target_dcs: list[str],
    policy: RampPolicy,
    retry_policy: RetryPolicy,
    scrape_interval_s: float = 10.0,
    max_duration_s: float = 7200.0,
) -> dict:
    """Every class's ramp at once, judged in priority order; returns the summary."""
    if ctx.dry_run:
        ctx.log("dry run: would push %s, then move %s's traffic into %s under %s",
                retry_policy.model_dump(), lost_dc, ", ".join(target_dcs), policy.model_dump())
        return {"planned": True}
    mover = TrafficMover(ctx, lost_dc=lost_dc, target_dcs=target_dcs, policy=policy,
                         retry_policy=retry_policy)
    await mover.push_retry_policy()
    await mover.prepare()
    start = now = await ctx.tools.clock.wait(for_s=scrape_interval_s)
    await mover.activate(mover.to_move, now)
    while not mover.done and mover.result != "stalled":
        ctx.check_abort()
        now = await ctx.tools.clock.wait(for_s=scrape_interval_s)
        if now - start > max_duration_s:
            break
        await mover.step(now)
        await ctx.tick()
    if mover.done:
        mover.result = "full"
    return await mover.summary(now)


#: How far a share read back may be from the share a move set and still be that move:
#: HAProxy stores a class's weights as integers up to 256, so a share comes back to within
#: 1/256 of what was written; a ramp's moves are far larger.
WEIGHT_TOLERANCE = 1 / 256

_MOVE_KEY = re.compile(r"^ramp:(?P<cls>.+)@\d+$")


def stranded_change(step: Mapping[str, Any], classes: Collection[str],
                    weights: Mapping[str, Mapping[str, float]],
                    flags: Mapping[tuple[str, str], bool]) -> bool | None:
    """Whether a ramp change left ``started`` was made, judged from the tools' state now
    (``weights`` per class and DC, feature ``flags``); None for a step that is not one,
    whatever the tools' state (so empty mappings tell whether a step is one).

    A move (``ramp:<class>@<time>``, with the weights it meant to set in its detail) was
    made if the class has those weights; a feature switched back on (``ramp:feature:s/f``)
    if the flag is on; one switched off for the emergency (``feature-off:s/f``) if it is off.
    """
    if step.get("state") != "started":
        return None
    key = str(step.get("key", ""))
    detail = step.get("detail") or {}
    move = _MOVE_KEY.match(key)
    if move is not None and move["cls"] in classes:
        intended = detail.get("weights")
        if not isinstance(intended, Mapping):
            return None  # recorded before moves carried their weights: nothing to judge by
        return move_applied(intended, weights.get(move["cls"], {}))
    for prefix, on in (("ramp:feature:", True), ("feature-off:", False)):
        if key.startswith(prefix) and "/" in key:
            service, feature = key.removeprefix(prefix).split("/", 1)
            return flags.get((service, feature)) is on
    return None


def move_applied(intended: Mapping[str, float], actual: Mapping[str, float],
                 tolerance: float = WEIGHT_TOLERANCE) -> bool:
    """Whether ``actual`` (a class's weights read back from the traffic tool) are the
    weights a move meant to set. Both are compared as shares: a DC missing from one side
    counts as 0, and each side is normalised to sum 1, as the traffic tool does."""
    dcs = set(intended) | set(actual)

    def shares(weights: Mapping[str, float]) -> dict[str, float] | None:
        total = sum(max(0.0, float(weights.get(dc, 0.0))) for dc in dcs)
        if total <= 0:
            return None
        return {dc: max(0.0, float(weights.get(dc, 0.0))) / total for dc in dcs}

    want, have = shares(intended), shares(actual)
    if want is None or have is None:
        return False
    return all(abs(want[dc] - have[dc]) <= tolerance for dc in dcs)


def _features_off(ctx: RunContext, flags: dict[tuple[str, str], bool]) -> list[FeatureCandidate]:
    """Features switched off, priced as their share of the whole estate's load."""
    total = sum(s.peak_load for s in ctx.topology.services) or 1.0
    off = []
    for svc in ctx.topology.services:
        for f in svc.features:
            if not flags.get((svc.name, f.name), True):
                off.append(FeatureCandidate(service=svc.name, name=f.name, priority=f.priority,
                                            cost=f.cost * svc.peak_load / total, tier=svc.tier))
    return off


@flow(name="warm_up_ramp", log_prints=False)
async def warm_up_ramp(params: RampParams) -> dict:
    """Push the retry policy, then move the lost DC's users into the target DC."""
    async with open_run("warm_up_ramp", params) as ctx:
        lost = the_lost_dc(ctx.topology, params.lost_dc, [ctx.target_dc])
        return await run_ramp(ctx, lost_dc=lost, target_dcs=[ctx.target_dc],
                              policy=params.policy, retry_policy=params.retry_policy,
                              scrape_interval_s=params.scrape_interval_s,
                              max_duration_s=params.max_duration_s)
