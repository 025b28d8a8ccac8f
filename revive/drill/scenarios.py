"""The faults a drill can inject, by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from revive.sim import Simulator
from revive.topology import ToolKind


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    inject: Callable[[Simulator, str], None]
    run_from_lost_dc: bool = False
    """Run the runbook from the lost DC, so its clients must fail over to other replicas."""


def _dc_fire(sim: Simulator, lost: str) -> None:
    sim.estate.power_loss(lost)


def _health_checker_down(sim: Simulator, lost: str) -> None:
    """The lost DC burns and every health checker replica is down too."""
    sim.estate.power_loss(lost)
    for name, tool in sim.topology.ops_tools.items():
        if tool.kind == ToolKind.health_checker:
            for dc in tool.replicas:
                if sim.estate.dc_up(dc):
                    sim.estate.tool_down(name, dc)


def _ops_tool_replica_down(sim: Simulator, lost: str) -> None:
    """The DC keeps its power, but its registry and secret-store replicas are dead: the
    runbook, running from that DC, must reach the other DC's replicas for every deploy and
    restart while it evacuates the DC."""
    for name, tool in sim.topology.ops_tools.items():
        if tool.kind in (ToolKind.registry, ToolKind.secret_store) and lost in tool.replicas:
            sim.estate.tool_down(name, lost)


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("dc-fire", "the lost DC loses power, its ops-tool replicas and health "
                 "checker with it", _dc_fire),
        Scenario("health-checker-down", "a DC fire, and no health checker replica answers",
                 _health_checker_down),
        Scenario("ops-tool-replica-down", "the DC's registry and secret-store replicas die; "
                 "its traffic is evacuated by a runbook running in that DC",
                 _ops_tool_replica_down, run_from_lost_dc=True),
    )
}
