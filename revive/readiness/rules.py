"""The seed's checklist as rules: each one a function from a topology to findings.

Every rule names the lesson it encodes. Rules never raise on a valid topology and never
look outside it, so ``revive check`` is safe to run at any time, daily or mid-incident.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from revive.readiness.models import Finding, Severity
from revive.topology import Redundancy, ToolKind, Topology

Rule = Callable[[Topology], Iterator[Finding]]
CRITICAL_TIERS = (0, 1)


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
    """Every DC must carry 100% of tier-0/1 peak on its own, with the instances it has today."""
    for dc in topology.dc_names:
        for svc in topology.services:
            if svc.tier not in CRITICAL_TIERS or svc.peak_load <= 0:
                continue
            carries = svc.instances_in(dc) * svc.capacity_per_instance
            if carries < svc.peak_load:
                gap = svc.peak_load - carries
                missing = -(-gap // svc.capacity_per_instance)
                yield Finding(
                    rule="dc-capacity",
                    severity=Severity.error,
                    subject=f"{svc.name}@{dc}",
                    message=(
                        f"{dc} carries {carries:,.0f} of {svc.peak_load:,.0f} req/s peak "
                        f"({carries / svc.peak_load:.0%}); gap {gap:,.0f} req/s"
                    ),
                    hint=(
                        f"add {missing:.0f} instance(s) of {svc.name} in {dc}, or keep "
                        f"emergency capacity ready (revive plan provision --dc {dc})"
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


RULES: list[Rule] = [
    tier_redundancy,
    dc_capacity,
    ops_tool_replicas,
    health_checker_replicas,
    boot_tool_reachable,
    dependency_on_lower_tier,
    caches_dependency_ips,
]
