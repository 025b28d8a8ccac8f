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


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("dc-fire", "the lost DC loses power, its ops-tool replicas and health "
                 "checker with it", _dc_fire),
        Scenario("health-checker-down", "a DC fire, and no health checker replica answers",
                 _health_checker_down),
    )
}
