"""Move a lost DC's users class by class: the database's headroom goes in priority order.

Every traffic class moves on its own (a GSLB domain or load-balancer backend), so tier 0's
users need not wait behind everyone else's. Each class is watched in every target DC on
its own metrics (its error rate, latency and hit ratio; the DC's shared database) by the
same controller as a single share would be (``decide``). One round, one scrape per lane:

- Classes move in priority order: a class waits until every more important class has
  fully moved (classes of the same priority move together). Within a round, a class's
  advance spends the database headroom it was offered and what it spends is reserved, so
  the moves of one round never add up past the limit together.
- A class moves as far as its most constrained target DC allows: one weight change moves
  its users into every target at once.
- A database over its limit in a DC is shared trouble: the least important class that has
  moved users there backs off; the others hold. A class whose own errors or latency breach
  backs off itself.
- Once every class is fully moved, features come back one at a time in (tier, priority)
  order, each when every target's database has room for it.
- "No progress" means no class advanced anywhere for ``stall_after_s``: a class held back
  so that tier 0 could go first is waiting, not stalled.

Pure: the same lanes and samples give the same round, so a ramp can be replayed exactly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from revive.planning.shares import fraction_for_share, moved_weights
from revive.ramp.controller import (
    Change,
    ClassLoad,
    Decision,
    DecisionKind,
    FeatureCandidate,
    RampPolicy,
    Sample,
    decide,
)

MOVES = (DecisionKind.advance, DecisionKind.back_off)


@dataclass
class Lane:
    """One class in one target DC: what the controller saw and did there.

    Shares are normalised so that 1.0 is the class's weight in the DC once all of its moving
    users are in, which keeps the controller's rules true in any estate."""

    dc: str
    end: float
    baseline_error: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


@dataclass
class ClassRamp:
    """One class's move from the lost DC into the targets; ``moved`` is the fraction done."""

    name: str
    priority: int
    lost: str
    targets: list[str]
    before: dict[str, float]
    lanes: list[Lane]
    load_share: float = 1.0
    """The class's part of the estate's load (its part of every DC's database load)."""
    moved: float = 0.0

    @classmethod
    def start(cls, name: str, priority: int, lost: str, targets: Sequence[str],
              before: Mapping[str, float], load_share: float = 1.0) -> ClassRamp:
        end = moved_weights(before, lost, targets, 1.0)
        lanes = [Lane(dc=dc, end=end[dc] or 1.0) for dc in targets]
        return cls(name, priority, lost, list(targets), dict(before), lanes, load_share)

    @property
    def complete(self) -> bool:
        return self.moved >= 1.0

    def weights(self, moved: float | None = None) -> dict[str, float]:
        """The class's weights per DC with ``moved`` (default: the current fraction) moved."""
        return moved_weights(self.before, self.lost, self.targets,
                             self.moved if moved is None else moved)

    def share(self, lane: Lane, moved: float | None = None) -> float:
        return self.weights(moved)[lane.dc] / lane.end


@dataclass
class RampMemory:
    """What the controller remembers across rounds: when each target DC's weights last
    changed, how its load moved, and when any class last advanced. Whoever applies the
    moves (the runbook through its tools, a benchmark on the simulator) records them here,
    so every driver keeps the same books."""

    targets: list[str]
    last_change: dict[str, float | None] = field(default_factory=dict)
    dc_changes: dict[str, list[Change]] = field(default_factory=dict)
    last_progress: float | None = None

    def __post_init__(self) -> None:
        for dc in self.targets:
            self.last_change.setdefault(dc, None)
            self.dc_changes.setdefault(dc, [])

    def started(self, now: float) -> None:
        """A ramp began: "no progress" is counted from the first one."""
        if self.last_progress is None:
            self.last_progress = now

    def record(self, ramps: Mapping[str, ClassRamp], moves: Mapping[str, float], now: float,
               dc_load: Callable[[], Mapping[str, float]]) -> None:
        """The round's moves were applied: each lane's change, each DC's load change."""
        if not moves:
            return
        before = dict(dc_load())
        for name, moved in moves.items():
            ramp = ramps[name]
            for lane in ramp.lanes:
                lane.changes.append(Change(t=now, share_from=ramp.share(lane),
                                           share_to=ramp.share(lane, moved)))
                self.last_change[lane.dc] = now
            if moved > ramp.moved:
                self.last_progress = now
            ramp.moved = moved
        after = dc_load()
        for dc in self.targets:
            self.dc_changes[dc].append(Change(t=now, share_from=before[dc], share_to=after[dc]))

    def feature_switched_on(self, now: float) -> None:
        """A feature adds load everywhere: every target settles before the next move."""
        self.last_change = dict.fromkeys(self.targets, now)


@dataclass(frozen=True)
class Round:
    """What one round decided: new fractions per class, a feature to switch on, or a stall."""

    moves: dict[str, float]
    feature: FeatureCandidate | None = None
    stalled: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)


def next_round(
    ramps: Sequence[ClassRamp],
    *,
    policy: RampPolicy,
    now: float,
    last_change: Mapping[str, float | None],
    last_progress: float | None,
    dc_load: Mapping[str, float],
    dc_changes: Mapping[str, Sequence[Change]],
    features_off: Sequence[FeatureCandidate] = (),
    not_started: Sequence[int] = (),
) -> Round:
    """Decide every class's next move from the scrapes already appended to its lanes.

    ``last_change`` is when the weights last changed in each DC (any class: every move
    loads the shared database, so every class waits for it to settle); ``last_progress``
    when any class last advanced; ``dc_load`` each DC's share of the estate's load now
    (every class's weight there, weighted by its load share) and ``dc_changes`` how that
    load moved, round by round. ``not_started`` are the priorities of classes still to move
    whose ramps have not started (their services are not ready yet): the headroom is kept
    for them too."""
    order = sorted(ramps, key=lambda r: (r.priority, r.name))
    victims = _victims(order, policy)
    reserved: dict[str, float] = defaultdict(float)
    moves: dict[str, float] = {}
    reasons: dict[str, str] = {}
    for ramp in order:
        if ramp.complete and ramp.name not in victims.values():
            continue
        ahead = [*not_started, *(r.priority for r in order if not r.complete)]
        if any(p < ramp.priority for p in ahead) and ramp.name not in victims.values():
            reasons[ramp.name] = "waiting for more important traffic to finish moving"
            continue
        decisions = [
            _judge(ramp, lane, victims, policy=policy, now=now, last_change=last_change,
                   last_progress=last_progress, reserved=reserved[lane.dc],
                   load=ClassLoad(per_share=max(ramp.load_share * lane.end, 1e-9),
                                  dc_load=dc_load.get(lane.dc, 0.0),
                                  dc_changes=tuple(dc_changes.get(lane.dc, ()))))
            for lane in ramp.lanes if lane.samples
        ]
        if len(decisions) < len(ramp.lanes):
            reasons[ramp.name] = "waiting for metrics from every target"
            continue
        stalled = next((d for _, d in decisions if d.kind == DecisionKind.stall), None)
        if stalled is not None:
            return Round(moves={}, stalled=f"{ramp.name}: {stalled.reason}", reasons=reasons)
        wanted = [
            fraction_for_share(ramp.before, ramp.lost, ramp.targets, lane.dc,
                               d.share * lane.end) if d.kind in MOVES else ramp.moved
            for lane, d in decisions
        ]
        new = round(min(wanted), 4)
        reasons[ramp.name] = min(decisions, key=lambda x: x[1].share)[1].reason
        if new == ramp.moved:
            continue
        moves[ramp.name] = new
        if new > ramp.moved:
            for lane, d in decisions:
                reserved[lane.dc] += (ramp.share(lane, new) - ramp.share(lane)) * d.util_per_share
    feature = None
    if not moves and features_off and all(r.complete for r in ramps) and ramps:
        feature = _next_feature(order, policy=policy, now=now, last_change=last_change,
                                features_off=features_off)
    return Round(moves=moves, feature=feature, reasons=reasons)


def _victims(order: Sequence[ClassRamp], policy: RampPolicy) -> dict[str, str]:
    """Per DC whose database is over its limit: the class that yields (least important
    with users moved there, a still moving one before a finished one)."""
    out: dict[str, str] = {}
    dcs = {lane.dc for ramp in order for lane in ramp.lanes}
    for dc in dcs:
        latest = [lane.samples[-1] for ramp in order for lane in ramp.lanes
                  if lane.dc == dc and lane.samples]
        if not any(s.db_util > policy.db_util_limit for s in latest):
            continue
        moved = [r for r in order if r.moved > 0 and any(lane.dc == dc for lane in r.lanes)]
        moving = [r for r in moved if not r.complete]
        pick = (moving or moved)[-1:] if moved else []
        if pick:
            out[dc] = pick[0].name
    return out


def _judge(
    ramp: ClassRamp,
    lane: Lane,
    victims: Mapping[str, str],
    *,
    policy: RampPolicy,
    now: float,
    last_change: Mapping[str, float | None],
    last_progress: float | None,
    reserved: float,
    load: ClassLoad,
) -> tuple[Lane, Decision]:
    latest = lane.samples[-1]
    share = ramp.share(lane)
    decision = decide(
        lane.samples, share=share, policy=policy, now=now, last_change_t=last_change.get(lane.dc),
        last_advance_t=last_progress, changes=lane.changes,
        baseline_error_rate=lane.baseline_error, reserved_util=reserved, load=load,
    )
    own_breach = (latest.error_rate > lane.baseline_error + policy.error_rate_limit
                  or latest.p99_ms > policy.p99_limit_ms)
    if decision.kind == DecisionKind.back_off and not own_breach \
            and victims.get(lane.dc) != ramp.name:
        decision = Decision(kind=DecisionKind.hold, share=share,
                            reason=f"database over its limit in {lane.dc}: "
                                   f"{victims.get(lane.dc)} yields first")
    if ramp.complete and decision.kind != DecisionKind.back_off:
        decision = Decision(kind=DecisionKind.hold, share=share, reason="fully moved")
    return lane, decision


def _next_feature(
    order: Sequence[ClassRamp],
    *,
    policy: RampPolicy,
    now: float,
    last_change: Mapping[str, float | None],
    features_off: Sequence[FeatureCandidate],
) -> FeatureCandidate | None:
    """The next feature, if every target DC's database has room for it (judged on the
    lane of the most important class there: all lanes of a DC share its database)."""
    chosen: FeatureCandidate | None = None
    seen: set[str] = set()
    for ramp in order:
        for lane in ramp.lanes:
            if lane.dc in seen or not lane.samples:
                continue
            seen.add(lane.dc)
            d = decide(lane.samples, share=1.0, policy=policy, now=now,
                       last_change_t=last_change.get(lane.dc), features_off=features_off,
                       changes=lane.changes, baseline_error_rate=lane.baseline_error)
            if d.kind != DecisionKind.enable_feature or d.feature is None:
                return None
            chosen = d.feature
    return chosen
