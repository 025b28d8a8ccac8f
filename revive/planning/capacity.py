"""The capacity plan: how many instances a DC needs to carry a share of global peak.

The seed's rule is that the DC you fail into must carry 100% of the traffic or more; by
default tiers 0-1 get a 20% margin (cold caches and login surges make the first minutes
the most expensive), the rest exactly 100%.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

from revive.errors import PlanningError
from revive.planning.scope import check_dc
from revive.topology import Topology

CRITICAL_SHARE = 1.2
DEFAULT_SHARE = 1.0
MAX_SHARE = 10.0


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
    if share is not None and not (0 < share <= MAX_SHARE):
        raise PlanningError(f"share must be above 0 and at most {MAX_SHARE:g}, got {share:g}")
    lines = []
    for svc in sorted(topology.services, key=lambda s: (s.tier, s.name)):
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
