"""Checks shared by the planners on what a person asked for (a DC, some groups)."""

from __future__ import annotations

from collections.abc import Iterable

from revive.errors import PlanningError
from revive.topology import Topology


def check_dc(topology: Topology, dc: str) -> str:
    """Return ``dc`` if the topology declares it, else explain which DCs exist."""
    if dc not in topology.dc_names:
        known = ", ".join(topology.dc_names)
        raise PlanningError(f"unknown datacenter {dc!r} (topology has: {known})")
    return dc


def check_groups(topology: Topology, dc: str, groups: Iterable[str] | None) -> list[str]:
    """The groups to act on in ``dc``: all with services there, or the named ones, checked."""
    present = sorted({s.group for s in topology.services if s.runs_in(dc)})
    if groups is None:
        return present
    chosen = list(dict.fromkeys(g.strip() for g in groups if g.strip()))
    if not chosen:
        raise PlanningError("no group named: give at least one group or leave --groups out")
    all_groups = set(topology.groups)
    for group in chosen:
        if group not in all_groups:
            raise PlanningError(
                f"unknown group {group!r} (topology has: {', '.join(topology.groups)})"
            )
        if group not in present:
            raise PlanningError(f"group {group!r} has no instances in {dc}")
    return chosen
