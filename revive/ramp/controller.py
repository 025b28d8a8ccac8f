"""Decide the next warm-up move from what a real controller can see: scraped metrics.

After a switchover the surviving DC's caches are cold for the users it takes over, their
reconnects cost a surge, and its database is the bottleneck (the seed's lesson). The
controller raises the DC's traffic share in steps sized by measured headroom:

- It never moves on stale evidence: after every change it waits ``settle_s`` so that the
  reconnect surge and at least one scrape reflect the new share.
- It prices new traffic as if it all missed the cache: the marginal database utilisation of
  one unit of share is estimated as ``util / (share * (1 - hit ratio))``. That is never
  below the true cost of cold traffic, so a step sized by it does not overshoot.
- A breach (database utilisation, error rate or p99 above the policy's limits) never
  advances: it backs the share off in proportion to the overload.
- The last few users of a class (``finish_within``) go with the step before them when
  they still fit under the limit: a move of their own would cost a whole settle, and the
  class is not back until every user is in.
- At full traffic, features go back on one at a time in priority order, each only when the
  headroom covers its cost plus a margin.
- No progress for ``stall_after_s`` means the model of the world is wrong: stop, ask a human.

The function is pure: the same samples and state give the same decision, so a ramp can be
replayed exactly from its recorded metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class RampPolicy(BaseModel):
    """Limits and pacing of a warm-up ramp."""

    model_config = ConfigDict(frozen=True)

    db_util_limit: float = Field(0.9, gt=0, description="Breach above this DB utilisation.")
    error_rate_limit: float = Field(
        0.01, ge=0, le=1, description="Breach when errors exceed the pre-ramp rate by this."
    )
    p99_limit_ms: float = Field(1500.0, gt=0, description="Breach above this p99 latency.")
    target_util: float = Field(0.88, gt=0, description="Utilisation a step aims for.")
    min_step: float = Field(0.005, gt=0, le=1, description="Smaller steps are not worth a move.")
    finish_within: float = Field(
        0.01, ge=0, le=1,
        description="A remnant this small beyond a step goes with it, when it fits under the "
        "limit: it would cost a settle of its own, and nobody is back until all are in.")
    max_step: float = Field(0.25, gt=0, le=1, description="Largest single move.")
    settle_s: float = Field(
        10.0, ge=0, description="Wait after a change before judging it: one scrape interval, "
        "so the scrape judged was taken after the change, its reconnect surge included.")
    surge_allowance: float = Field(
        0.4, ge=0, description="Extra load while moved users reconnect, relative to theirs."
    )
    cooldown_s: float = Field(
        180.0, ge=0, description="No advance this long after a back-off (moved users churn)."
    )
    feature_margin: float = Field(0.05, ge=0, description="Headroom kept beyond a feature.")
    stall_after_s: float = Field(
        1800.0, gt=0, description="Below full, this long without advancing: ask a human."
    )
    window: int = Field(2, ge=1, description="Recent samples judged together (noise).")
    evidence_share: float = Field(
        0.05, ge=0, le=1,
        description="Moves smaller than this in all say nothing above the noise: until then "
        "new traffic is priced cold.")


class DecisionKind(StrEnum):
    advance = "advance"
    hold = "hold"
    back_off = "back_off"
    stall = "stall"
    enable_feature = "enable_feature"


class Sample(BaseModel):
    """One scrape of the recovering DC's metrics, as /metrics reported it."""

    model_config = ConfigDict(frozen=True)

    t: float
    share: float
    db_util: float
    p99_ms: float
    error_rate: float
    retry_ratio: float = 0.0
    cache_hit_ratio: float = 0.0


class FeatureCandidate(BaseModel):
    """A feature still off; ``cost`` is its share of the DC's load when on. Features come
    back in (tier, priority) order: a tier-0 service's features before a tier-1's."""

    model_config = ConfigDict(frozen=True)

    service: str
    name: str
    priority: int
    cost: float
    tier: int = 0


class Change(BaseModel):
    """A traffic move the controller made earlier: when, and from which share to which."""

    model_config = ConfigDict(frozen=True)

    t: float
    share_from: float
    share_to: float


class ClassLoad(BaseModel):
    """How one traffic class's share maps onto its DC's shared database.

    A class's first move is priced as cold traffic: the database's utilisation per unit of
    the DC's load (``dc_load``, in units of the estate's load) times the load one unit of
    the class's share adds (``per_share``); later moves by what its own moves cost. The
    DC's moves (``dc_changes``, any class) say when the database last had to cool down."""

    model_config = ConfigDict(frozen=True)

    per_share: float = Field(gt=0)
    dc_load: float = Field(ge=0)
    dc_changes: tuple[Change, ...] = ()


class Decision(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: DecisionKind
    share: float
    reason: str
    feature: FeatureCandidate | None = None
    util_per_share: float = 0.0
    """For an advance: the database utilisation one unit of share is expected to cost."""


def is_breach(sample: Sample, policy: RampPolicy, baseline_error_rate: float = 0.0) -> bool:
    """Over a limit; errors count above the rate seen before the ramp began, because
    components lost with the DC fail at a rate no ramp can change."""
    return (
        sample.db_util > policy.db_util_limit
        or sample.error_rate > baseline_error_rate + policy.error_rate_limit
        or sample.p99_ms > policy.p99_limit_ms
    )


def decide(
    samples: Sequence[Sample],
    *,
    share: float,
    policy: RampPolicy,
    now: float,
    last_change_t: float | None = None,
    last_advance_t: float | None = None,
    features_off: Sequence[FeatureCandidate] = (),
    changes: Sequence[Change] = (),
    baseline_error_rate: float = 0.0,
    reserved_util: float = 0.0,
    load: ClassLoad | None = None,
) -> Decision:
    """The next move for a DC at ``share``, given every scrape so far (oldest first).

    ``reserved_util`` is headroom already promised this round to moves of more important
    traffic sharing the same database: it is not offered again. ``load`` says how ``share``
    maps onto the database when it is one class's among several; None when ``share`` is the
    DC's whole traffic."""
    if not samples:
        return Decision(kind=DecisionKind.hold, share=share, reason="no metrics scraped yet")
    latest = samples[-1]
    if is_breach(latest, policy, baseline_error_rate):
        return _back_off(latest, share, policy)
    settled_since = (last_change_t or float("-inf")) + policy.settle_s
    moves = load.dc_changes if load is not None else changes
    last_back_off = max((c.t for c in moves if c.share_to < c.share_from), default=None)
    if last_back_off is not None and now < last_back_off + policy.cooldown_s:
        return Decision(
            kind=DecisionKind.hold, share=share, reason="cooling down after a back-off"
        )
    if now < settled_since or latest.t < settled_since:
        return Decision(kind=DecisionKind.hold, share=share, reason="settling after a change")
    recent = [s for s in samples[-policy.window :] if s.t >= settled_since]
    util = max(s.db_util for s in recent)
    if share >= 1.0 - 1e-9:
        return _next_feature(util, share, policy, features_off)
    since = last_advance_t if last_advance_t is not None else samples[0].t
    if now - since >= policy.stall_after_s:
        return Decision(
            kind=DecisionKind.stall,
            share=share,
            reason=(
                f"no advance for {now - since:.0f} s at {share:.0%} "
                f"(db util {util:.2f}): check the bottleneck before going on"
            ),
        )
    if load is None:
        cost = _marginal_cost(samples, changes, policy) or _cold_cost(
            util, share, latest, policy)
    else:
        # A class's first moves are priced cold, later ones by what its own moves cost; and
        # never below what the DC's moves of any class cost per unit of load: a background
        # change (an earlier class's surge ending) can hide part of a class's own cost.
        own = _marginal_cost(samples, changes, policy) or _cold_cost(
            util, load.dc_load, latest, policy) * load.per_share
        per_load = _marginal_cost(samples, load.dc_changes, policy) or 0.0
        cost = max(own, per_load * load.per_share)
    headroom = policy.target_util - util - max(0.0, reserved_util)
    step = headroom / cost if cost > 0 else (policy.max_step if headroom > 0 else 0.0)
    step = min(step, policy.max_step, 1.0 - share)
    room = policy.db_util_limit - util - max(0.0, reserved_util)
    cold = 0.0
    if load is not None:
        # What moves cost is learned from moves, and a background change (another class's
        # surge ending, caches warming) can make them look cheaper than they are: whatever
        # was learned, a move never goes further than cold traffic could without passing
        # the limit itself.
        cold = _cold_cost(util, load.dc_load, latest, policy) * load.per_share
        step = min(step, max(0.0, room) / cold) if cold > 0 else step
    rest = 1.0 - share
    if 0.0 < step < rest <= step + policy.finish_within and rest * max(cost, cold) <= room:
        # The class's last few users would cost a settle of their own, and its tier is not
        # back until they have moved too: they go with a step the target has room for when,
        # priced as above (learned and, for a class, cold), they still fit under the limit.
        step = rest
    if step < min(policy.min_step, 1.0 - share):
        return Decision(
            kind=DecisionKind.hold,
            share=share,
            reason=(
                f"db util {util:.2f}, waiting for the cache to warm "
                f"(hit {latest.cache_hit_ratio:.0%})"
            ),
        )
    target = 1.0 if step >= rest else min(1.0, share + step)
    return Decision(
        kind=DecisionKind.advance,
        share=round(target, 4),
        reason=f"db util {util:.2f} leaves room for {step:.1%} more traffic",
        util_per_share=cost,
    )


def _cold_cost(util: float, share: float, latest: Sample, policy: RampPolicy) -> float:
    """Utilisation per unit of share if new traffic all missed the cache, plus its surge.

    ``util / (share * miss ratio)`` over-prices cold traffic (writes do not shrink as the
    cache warms), so it is the safe guess before any move has been observed.
    """
    miss = max(1.0 - latest.cache_hit_ratio, 0.05)
    return util / (max(share, 0.01) * miss) * (1.0 + policy.surge_allowance)


def _marginal_cost(
    samples: Sequence[Sample], changes: Sequence[Change], policy: RampPolicy
) -> float | None:
    """Utilisation per unit of share that past advances actually cost, surge included.

    An advance is judged by the highest utilisation scraped after it (within the settle
    time plus one scrape, and before the next change) against the last scrape before it.
    Averaging weighted by the size of the move lets the large early moves, whose jumps
    stand far above the noise, dominate the small late ones.
    """
    moved = jump_sum = 0.0
    for i, change in enumerate(changes):
        size = change.share_to - change.share_from
        if size <= 0:
            continue
        until = change.t + policy.settle_s + 10.0
        if i + 1 < len(changes):
            until = min(until, changes[i + 1].t)
        before = [s.db_util for s in samples if s.t <= change.t]
        after = [s.db_util for s in samples if change.t < s.t <= until]
        if not before or not after:
            continue
        moved += size
        # Utilisation falling meanwhile (an earlier surge ending) is not a move's gift: a
        # move is charged at least nothing, so the estimate never undercuts the real cost.
        jump_sum += max(0.0, max(after) - before[-1])
    if moved < max(policy.evidence_share, 1e-12) or jump_sum <= 0:
        return None
    return jump_sum / moved


def _back_off(latest: Sample, share: float, policy: RampPolicy) -> Decision:
    overload = max(latest.db_util / policy.target_util, 1.0)
    factor = min(0.9, 1.0 / overload)
    target = math.floor(max(0.0, share * factor) * 10_000) / 10_000  # never rounds up
    return Decision(
        kind=DecisionKind.back_off,
        share=target,
        reason=(
            f"breach: db util {latest.db_util:.2f}, errors {latest.error_rate:.2%}, "
            f"p99 {latest.p99_ms:.0f} ms"
        ),
    )


def _next_feature(
    util: float, share: float, policy: RampPolicy, features_off: Sequence[FeatureCandidate]
) -> Decision:
    if not features_off:
        return Decision(kind=DecisionKind.hold, share=share, reason="full traffic, all features on")
    feature = min(features_off, key=lambda f: (f.tier, f.priority, f.service, f.name))
    if util * (1.0 + feature.cost) + policy.feature_margin <= policy.target_util:
        return Decision(
            kind=DecisionKind.enable_feature,
            share=share,
            feature=feature,
            reason=f"headroom covers {feature.service}/{feature.name} (+{feature.cost:.0%})",
        )
    return Decision(
        kind=DecisionKind.hold,
        share=share,
        reason=f"db util {util:.2f}: not enough headroom for {feature.service}/{feature.name}",
    )
