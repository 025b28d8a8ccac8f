"""Build every adapter a runbook needs from the topology: one per ops-tool kind.

Each tool's ``adapter`` key picks the implementation; each adapter gets a
``ReplicatedEndpoint`` over the tool's per-DC replicas, preferring the DC the run executes
from. Only the simulator's adapters exist so far: real ones register in ``ADAPTERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from revive.errors import InputError
from revive.ops import sim
from revive.ops.endpoint import ReplicatedEndpoint
from revive.ops.interfaces import (
    Clock,
    Compute,
    ConfigStore,
    HealthChecker,
    Metrics,
    Registry,
    ServiceControl,
    ToolHealth,
    Traffic,
)
from revive.topology import ToolKind, Topology

#: Where the simulator's adapters find it when a run names no ``sim_url``.
SIM_URL_ENV = "REVIVE_SIM_URL"


@dataclass
class Toolbox:
    """One adapter per kind, plus the clock the runbook waits on."""

    compute: Compute
    services: ServiceControl
    registry: Registry
    health: HealthChecker
    traffic: Traffic
    metrics: Metrics
    config: ConfigStore
    tool_health: ToolHealth
    clock: Clock

    async def aclose(self) -> None:
        for f in fields(self):
            await getattr(self, f.name).aclose()


# field of Toolbox -> (tool kind it talks to, simulator adapter class)
_SIM: dict[str, tuple[ToolKind | None, Callable[[ReplicatedEndpoint], object]]] = {
    "compute": (ToolKind.compute, sim.SimCompute),
    "services": (ToolKind.deploy, sim.SimServiceControl),
    "registry": (ToolKind.registry, sim.SimRegistry),
    "health": (ToolKind.health_checker, sim.SimHealthChecker),
    "traffic": (ToolKind.traffic, sim.SimTraffic),
    "metrics": (ToolKind.metrics, sim.SimMetrics),
    "config": (ToolKind.config_store, sim.SimConfigStore),
    "tool_health": (None, sim.SimToolHealth),
    "clock": (None, sim.SimClock),
}
ADAPTERS = {"sim"}


def build_toolbox(
    topology: Topology, *, sim_url: str, run_dc: str | None, timeout_s: float = 30.0
) -> Toolbox:
    """Adapters for every kind. A kind the topology does not declare, and the clock, talk
    to the simulator directly; declared tools go through their replicas."""
    sim_url = sim_url.rstrip("/")
    built = {}
    for name, (kind, adapter) in _SIM.items():
        tool_name, replicas = f"sim-{name}", {"sim": sim_url}
        declared = [(n, t) for n, t in topology.ops_tools.items() if kind and t.kind == kind]
        if declared:
            tool_name, tool = declared[0]
            if tool.adapter not in ADAPTERS:
                raise InputError(
                    f"ops_tools.{tool_name}.adapter: {tool.adapter!r} is not available "
                    f"(available: {', '.join(sorted(ADAPTERS))})"
                )
            replicas = {dc: f"{sim_url}/r/{tool_name}/{dc}" for dc in tool.replicas}
        endpoint = ReplicatedEndpoint(
            tool_name, replicas, prefer_dc=run_dc if run_dc in replicas else None,
            timeout=timeout_s,
        )
        built[name] = adapter(endpoint)
    return Toolbox(**built)
