"""Traffic shares per class and DC: where users are before a fault and where they go after.

A lost DC's users of each traffic class go to the surviving DCs in proportion to what each
survivor already carried of that class, so survivors keep their relative shares and none
is ever drained (a survivor serving a class keeps serving it). Only a class that no
survivor served (it lived in the lost DC alone) is spread evenly over the survivors, where
the failover deploys it.

``ClassWeights`` maps class -> DC -> weight; each class's weights sum to 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from revive.errors import PlanningError
from revive.planning.scope import check_dc
from revive.topology import Service, Topology

ClassWeights = dict[str, dict[str, float]]


def default_weights(topology: Topology) -> ClassWeights:
    """Pre-fault weights when none are measured (plans, the simulator's start): each class
    split evenly over the DCs where any of its services runs (over every DC if none)."""
    weights: ClassWeights = {}
    dcs = topology.dc_names
    for name, cls in topology.traffic_classes.items():
        members = [topology.service(s) for s in cls.services]
        serving = [dc for dc in dcs if any(s.runs_in(dc) for s in members)] or dcs
        weights[name] = {dc: (1.0 / len(serving) if dc in serving else 0.0) for dc in dcs}
    return weights


def failover_weights(weights: Mapping[str, Mapping[str, float]], lost: str) -> ClassWeights:
    """Each class's weight in ``lost`` moved to the survivors in proportion to theirs.

    A DC that a class's mapping leaves out carries none of that class, but it still
    survives: the DCs are every DC any class names, so a class measured only in the lost
    DC is spread over the others instead of having nowhere to go."""
    dcs = list(dict.fromkeys(dc for per_dc in weights.values() for dc in per_dc))
    return {name: _moved(per_dc, dcs, lost) for name, per_dc in weights.items()}


def _moved(per_dc: Mapping[str, float], dcs: list[str], lost: str) -> dict[str, float]:
    """One class's weights after ``lost`` goes: every survivor a target of the move."""
    survivors = [dc for dc in dcs if dc != lost]
    if not survivors:
        raise PlanningError(f"no DC survives the loss of {lost!r}")
    before = {dc: per_dc.get(dc, 0.0) for dc in dcs}
    return {lost: 0.0, **moved_weights(before, lost, survivors, 1.0)}


def moved_weights(
    before: Mapping[str, float], lost: str, targets: Sequence[str], fraction: float
) -> dict[str, float]:
    """Weights per DC once ``fraction`` of ``lost``'s pre-fault weight has moved."""
    if not targets:
        raise ValueError("no target DC to move traffic to")
    if lost in targets:
        raise ValueError(f"{lost!r} is lost and cannot be a target")
    f = min(1.0, max(0.0, fraction))
    weights = {dc: max(0.0, w) for dc, w in before.items()}
    total = math.fsum(weights.values())
    if total <= 0:  # nobody anywhere yet: the targets share the class evenly
        return {dc: (1.0 / len(targets) if dc in targets else 0.0) for dc in weights}
    weights = {dc: w / total for dc, w in weights.items()}
    moving = weights.get(lost, 0.0) * f
    base = {dc: weights.get(dc, 0.0) for dc in targets}
    base_total = sum(base.values())
    for dc in targets:
        part = base[dc] / base_total if base_total > 0 else 1.0 / len(targets)
        weights[dc] = base[dc] + moving * part
    if lost in weights:
        weights[lost] -= moving
    return weights


def fraction_for_share(
    before: Mapping[str, float], lost: str, targets: Sequence[str], dc: str, share: float
) -> float:
    """The fraction of the lost DC's weight that gives target ``dc`` the weight ``share``.

    The inverse of ``moved_weights`` for one target: how far a ramp driven by that DC's
    own metrics may go."""
    start = moved_weights(before, lost, targets, 0.0)[dc]
    end = moved_weights(before, lost, targets, 1.0)[dc]
    if end - start <= 1e-12:
        return 1.0
    return min(1.0, max(0.0, (share - start) / (end - start)))


def dc_load_share(topology: Topology, weights: Mapping[str, Mapping[str, float]],
                  dc: str) -> float:
    """The DC's share of all user load: its class weights weighted by each class's load.

    Shared back ends (databases, caches) carry the load of every class a DC serves."""
    check_dc(topology, dc)
    return math.fsum(cls.load_share * weights.get(name, {}).get(dc, 0.0)
                     for name, cls in topology.traffic_classes.items())


@dataclass(frozen=True)
class SurvivorShares:
    """What one surviving DC carries after a loss: a share of each class, and of all load.

    Plans and readiness rules both size a survivor from this, so they never disagree on
    what a survivor must carry."""

    dc: str
    load_share: float
    """The DC's share of all user load after the loss: what its databases and caches carry."""
    classes: dict[str, float]
    """Class -> the DC's weight of that class after the loss."""

    def of(self, svc: Service) -> float:
        """The share of ``svc``'s global peak this DC carries after the loss."""
        name = svc.traffic_class_name
        return self.load_share if name is None else self.classes.get(name, 0.0)


def survivors_of(topology: Topology, lost: str) -> list[str]:
    """The DCs left when ``lost`` goes, in topology order; refuses an unknown DC or a loss
    that leaves nothing to fail over to."""
    check_dc(topology, lost)
    left = [dc for dc in topology.dc_names if dc != lost]
    if not left:
        raise PlanningError(f"no DC survives the loss of {lost!r}: it is the only one")
    return left


def failover_shares(
    topology: Topology, lost: str, weights: Mapping[str, Mapping[str, float]] | None = None
) -> list[SurvivorShares]:
    """Each survivor's shares once ``lost`` is gone, from the pre-fault ``weights``
    (default: ``default_weights``)."""
    left = survivors_of(topology, lost)
    before = _complete(topology, weights)
    after = failover_weights(before, lost)
    return [
        SurvivorShares(
            dc=dc,
            load_share=_backend_share(topology, after, dc, left),
            classes={name: per_dc.get(dc, 0.0) for name, per_dc in after.items()},
        )
        for dc in left
    ]


def _complete(topology: Topology,
              weights: Mapping[str, Mapping[str, float]] | None) -> ClassWeights:
    """Weights for every class and DC of the topology: a class the caller left out keeps
    its default split, a DC left out of a class carries none of it."""
    base = default_weights(topology)
    if weights is None:
        return base
    return {
        name: ({dc: float(weights[name].get(dc, 0.0)) for dc in topology.dc_names}
               if name in weights else split)
        for name, split in base.items()
    }


def _backend_share(topology: Topology, after: ClassWeights, dc: str,
                   survivors: list[str]) -> float:
    """A survivor's share of the shared back ends. With no user-facing service there is no
    class to weigh by, so the survivors split the back ends evenly."""
    if not topology.traffic_classes:
        return 1.0 / len(survivors)
    return dc_load_share(topology, after, dc)
