"""The capacity plans: how many instances a DC needs to carry a share of global peak.

The seed's rule is that the DC you fail into must carry 100% of the traffic or more; by
default tiers 0-1 get a 20% margin (cold caches and login surges make the first minutes
the most expensive), the rest exactly 100%.

``plan_capacity`` sizes one DC for a share of peak; ``plan_failover_capacity`` sizes every
survivor of a DC loss for the traffic that loss sends it, which on N DCs is less than 100%.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel

from revive.errors import PlanningError
from revive.planning.scope import check_dc
from revive.planning.shares import SurvivorShares, failover_shares
from revive.topology import Service, Topology

CRITICAL_SHARE = 1.2
DEFAULT_SHARE = 1.0
MAX_SHARE = 10.0
SHARE_DIGITS = 12
"""A survivor's load share is rounded so that float noise never shows as 0.9999999999999999."""


class CapacityLine(BaseModel):
    service: str
    tier: int
    share: float
    have: int
    need: int
    add: int


class CapacityPlan(BaseModel):
    dc: str
    share: float | None
    """The share asked for, or None for the per-tier defaults shown on each line."""
    services: list[CapacityLine]
    total_add: int


def default_share(tier: int) -> float:
    return CRITICAL_SHARE if tier <= 1 else DEFAULT_SHARE


def instances_needed(peak_load: float, capacity_per_instance: float, share: float) -> int:
    """Instances to carry ``share`` of ``peak_load``; the epsilon keeps 1.2*1000/100 at 12."""
    return max(0, math.ceil(share * peak_load / capacity_per_instance - 1e-9))


def plan_capacity(topology: Topology, dc: str, *, share: float | None = None) -> CapacityPlan:
    """Instances to add in ``dc``, service by service in tier order."""
    check_dc(topology, dc)
    _check_share(share)
    lines = []
    for svc in _in_tier_order(topology):
        svc_share = default_share(svc.tier) if share is None else share
        have = svc.instances_in(dc)
        need = instances_needed(svc.peak_load, svc.capacity_per_instance, svc_share)
        lines.append(
            CapacityLine(
                service=svc.name,
                tier=svc.tier,
                share=svc_share,
                have=have,
                need=need,
                add=max(0, need - have),
            )
        )
    return CapacityPlan(
        dc=dc, share=share, services=lines, total_add=sum(line.add for line in lines)
    )


class FailoverLine(BaseModel):
    service: str
    tier: int
    have: int
    need: int
    add: int


class SurvivorPlan(BaseModel):
    dc: str
    share: float
    """The survivor's share of all user load once the lost DC's traffic has moved."""
    services: list[FailoverLine]
    total_add: int


class FailoverPlan(BaseModel):
    lost_dc: str
    survivors: list[SurvivorPlan]


def plan_failover_capacity(
    topology: Topology,
    lost_dc: str,
    *,
    weights: Mapping[str, Mapping[str, float]] | None = None,
    share: float | None = None,
) -> FailoverPlan:
    """Instances to add in every survivor of ``lost_dc`` to carry what the loss sends it.

    ``weights`` are the pre-fault class weights (default: each class split evenly where it
    runs). ``share`` replaces the per-tier margin, as in ``plan_capacity``; the margin is
    applied to the survivor's new share, so on two DCs this plan equals ``plan_capacity``.
    """
    _check_share(share)
    return FailoverPlan(
        lost_dc=lost_dc,
        survivors=[_plan_survivor(topology, shares, share)
                   for shares in failover_shares(topology, lost_dc, weights)],
    )


def _plan_survivor(topology: Topology, shares: SurvivorShares,
                   share: float | None) -> SurvivorPlan:
    """One survivor's lines, leaving out services it neither runs nor needs."""
    lines = [
        line for svc in _in_tier_order(topology)
        if (line := _failover_line(svc, shares, share)).need or line.have
    ]
    return SurvivorPlan(
        dc=shares.dc,
        share=round(shares.load_share, SHARE_DIGITS),
        services=lines,
        total_add=sum(line.add for line in lines),
    )


def _failover_line(svc: Service, shares: SurvivorShares, share: float | None) -> FailoverLine:
    margin = default_share(svc.tier) if share is None else share
    have = svc.instances_in(shares.dc)
    need = instances_needed(svc.peak_load, svc.capacity_per_instance, margin * shares.of(svc))
    return FailoverLine(service=svc.name, tier=svc.tier, have=have, need=need,
                        add=max(0, need - have))


def _check_share(share: float | None) -> None:
    if share is not None and not (0 < share <= MAX_SHARE):
        raise PlanningError(f"share must be above 0 and at most {MAX_SHARE:g}, got {share:g}")


def _in_tier_order(topology: Topology) -> list[Service]:
    return sorted(topology.services, key=lambda s: (s.tier, s.name))
