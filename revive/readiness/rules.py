"""The seed's checklist as rules: each one a function from a topology to findings.

Every rule names the lesson it encodes. Rules never raise on a valid topology and never
look outside it, so ``revive check`` is safe to run at any time, daily or mid-incident.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from revive.planning import plan_failover_capacity
from revive.planning.shares import SurvivorShares, failover_shares
from revive.readiness.models import Finding, Severity
from revive.topology import Redundancy, Service, ToolKind, Topology

Rule = Callable[[Topology], Iterator[Finding]]
CRITICAL_TIERS = (0, 1)
SHARE_TOLERANCE = 1e-12
"""Relative slack on a survivor's required load, so float noise in shares is no finding."""


def tier_redundancy(topology: Topology) -> Iterator[Finding]:
    """Redundancy follows importance: a tier may only use the levels its policy allows."""
    for svc in topology.services:
        allowed = topology.tier_policy[svc.tier].redundancy
        if svc.redundancy not in allowed:
            yield Finding(
                rule="tier-redundancy",
                severity=Severity.error if svc.tier in CRITICAL_TIERS else Severity.warning,
                subject=svc.name,
                message=(
                    f"tier {svc.tier} service is {svc.redundancy}; tier {svc.tier} allows "
                    + ", ".join(str(r) for r in allowed)
                ),
                hint=f"replicate {svc.name} across DCs as {allowed[0]}, or lower its tier",
            )
        dcs_with_instances = [dc for dc in topology.dc_names if svc.runs_in(dc)]
        multi = svc.redundancy in (Redundancy.active_active, Redundancy.active_standby)
        if multi and len(dcs_with_instances) < 2 and len(topology.dc_names) >= 2:
            where = dcs_with_instances[0] if dcs_with_instances else "no DC"
            yield Finding(
                rule="redundancy-unmet",
                severity=Severity.error if svc.tier in CRITICAL_TIERS else Severity.warning,
                subject=svc.name,
                message=f"declared {svc.redundancy} but has instances only in {where}",
                hint=f"deploy {svc.name} in a second DC or correct its redundancy level",
            )


def dc_capacity(topology: Topology) -> Iterator[Finding]:
    """Whichever DC is lost, each survivor must carry the share of tier-0/1 peak the loss
    sends it, with the instances it has today (no margin: ``plan provision`` adds that)."""
    for lost in _losable(topology):
        for shares in failover_shares(topology, lost):
            for svc in topology.services:
                if svc.tier in CRITICAL_TIERS and svc.peak_load > 0:
                    yield from _survivor_gap(svc, lost, shares)


def _losable(topology: Topology) -> list[str]:
    """The DCs whose loss leaves a survivor to fail over to (none in a one-DC estate)."""
    return topology.dc_names if len(topology.dc_names) >= 2 else []


def _survivor_gap(svc: Service, lost: str, shares: SurvivorShares) -> Iterator[Finding]:
    """A finding if ``shares.dc`` cannot carry its new share of ``svc``'s peak today."""
    dc, share = shares.dc, shares.of(svc)
    required = share * svc.peak_load
    carries = svc.instances_in(dc) * svc.capacity_per_instance
    if carries >= required * (1 - SHARE_TOLERANCE):
        return
    gap = required - carries
    missing = max(1, math.ceil(gap / svc.capacity_per_instance - 1e-9))
    yield Finding(
        rule="dc-capacity",
        severity=Severity.error,
        subject=f"{svc.name}@{dc}",
        message=(
            f"losing {lost} sends {dc} {share:.0%} of peak ({required:,.0f} req/s); "
            f"{dc} carries {carries:,.0f} of {svc.peak_load:,.0f} req/s peak "
            f"({carries / svc.peak_load:.0%}); gap {gap:,.0f} req/s ({missing} instance(s))"
        ),
        hint=(
            f"add {missing} instance(s) of {svc.name} in {dc}, or keep emergency "
            f"capacity ready (revive plan provision --lost-dc {lost})"
        ),
    )


def spare_capacity(topology: Topology) -> Iterator[Finding]:
    """Emergency capacity is only a plan if compute can grant it: each survivor's spare
    instances must cover what the failover capacity plan adds there."""
    spare = {dc.name: dc.spare_instances for dc in topology.datacenters}
    if all(has is None for has in spare.values()):
        return  # no limit is known anywhere: nothing to compare the plans with
    for lost in _losable(topology):
        for survivor in plan_failover_capacity(topology, lost).survivors:
            has = spare[survivor.dc]
            if has is not None and survivor.total_add > has:
                yield _spare_shortfall(lost, survivor.dc, survivor.total_add, has)


def _spare_shortfall(lost: str, dc: str, needs: int, has: int) -> Finding:
    return Finding(
        rule="spare-capacity",
        severity=Severity.error,
        subject=dc,
        message=(
            f"losing {lost} needs {needs} emergency instance(s) in {dc}; "
            f"it has {has} spare, short by {needs - has}"
        ),
        hint=(
            f"raise the compute quota in {dc} to {needs} spare instances, or add instances "
            f"there now (revive plan provision --lost-dc {lost})"
        ),
    )


def ops_tool_replicas(topology: Topology) -> Iterator[Finding]:
    """Ops tools decide how fast recovery goes: each needs a replica in 2+ DCs."""
    for name, tool in topology.ops_tools.items():
        if tool.kind == ToolKind.health_checker:
            continue  # health_checker_replicas says it more precisely
        dcs = sorted(tool.replicas)
        if len(dcs) < 2:
            where = ", ".join(dcs) or "no DC"
            yield Finding(
                rule="ops-tool-replicas",
                severity=Severity.error,
                subject=name,
                message=f"{tool.kind} tool has replicas in {where} only",
                hint=(
                    f"run a replica of {name} in every DC; "
                    "recovery needs it most when one DC is gone"
                ),
            )


def health_checker_replicas(topology: Topology) -> Iterator[Finding]:
    """A health checker that burns with its DC cannot trigger the failover it exists for."""
    checkers = {n: t for n, t in topology.ops_tools.items() if t.kind == ToolKind.health_checker}
    if not checkers:
        yield Finding(
            rule="health-checker-replicas",
            severity=Severity.error,
            subject="health_checker",
            message="no health checker is declared, so nothing can notice a DC loss",
            hint="declare a health_checker ops tool with a replica in every DC",
        )
    for name, tool in checkers.items():
        if len(tool.replicas) < 2:
            where = ", ".join(sorted(tool.replicas)) or "no DC"
            yield Finding(
                rule="health-checker-replicas",
                severity=Severity.error,
                subject=name,
                message=f"health checker runs in {where} only; losing it blinds failover",
                hint=f"run {name} in 2+ DCs, each able to check every DC",
            )


def boot_tool_reachable(topology: Topology) -> Iterator[Finding]:
    """A service cannot start in a DC where a tool it boots with has no replica."""
    for svc in topology.services:
        for tool_name in svc.boot_requires:
            tool = topology.ops_tools[tool_name]
            for dc in topology.dc_names:
                if svc.runs_in(dc) and dc not in tool.replicas:
                    yield Finding(
                        rule="boot-tool-reachable",
                        severity=Severity.error,
                        subject=f"{svc.name}@{dc}",
                        message=(
                            f"boots with {tool_name} ({tool.kind}), "
                            f"which has no replica in {dc}"
                        ),
                        hint=f"add a {tool_name} replica in {dc} so {svc.name} restarts there",
                    )


def dependency_on_lower_tier(topology: Topology) -> Iterator[Finding]:
    """Failure isolation: a critical service must not hard-depend on a less critical one."""
    for svc in topology.services:
        for dep_name in svc.hard_dependencies:
            dep = topology.service(dep_name)
            if dep.tier > svc.tier:
                yield Finding(
                    rule="dependency-on-lower-tier",
                    severity=Severity.warning,
                    subject=svc.name,
                    message=(
                        f"tier {svc.tier} service hard-depends on {dep.name} (tier {dep.tier})"
                    ),
                    hint=(
                        f"make the call to {dep.name} soft (feature flag, cache, circuit "
                        f"breaker) or raise {dep.name} to tier {svc.tier}"
                    ),
                )


def caches_dependency_ips(topology: Topology) -> Iterator[Finding]:
    """Callers that cache a partner's IP do not follow a GSLB switch until restarted."""
    for svc in topology.services:
        if svc.caches_dependency_ips:
            yield Finding(
                rule="caches-dependency-ips",
                severity=Severity.warning,
                subject=svc.name,
                message="caches dependency IPs; it keeps calling the lost DC after a switch",
                hint=(
                    "resolve names per connection with a short TTL; until then failover "
                    f"must restart or patch {svc.name}"
                ),
            )


def database_declared(topology: Topology) -> Iterator[Finding]:
    """The database is the bottleneck after a switch (the seed's lesson): the ramp must
    know which services it is, never guess it from a name."""
    if not topology.databases:
        yield Finding(
            rule="no-database-declared",
            severity=Severity.warning,
            subject="services",
            message="no service has role: database, so no drill, ramp or failover can run",
            hint="mark the database services `role: database` (and caches `role: cache`)",
        )


RULES: list[Rule] = [
    tier_redundancy,
    dc_capacity,
    spare_capacity,
    ops_tool_replicas,
    health_checker_replicas,
    boot_tool_reachable,
    dependency_on_lower_tier,
    caches_dependency_ips,
    database_declared,
]
