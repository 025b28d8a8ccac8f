"""Build every adapter a runbook needs from the topology: one per ops-tool kind.

Each declared tool's ``adapter`` key picks its implementation through the plug-in point
(``revive.ops.plugins``); the adapter gets the tool's validated ``settings`` and its per-DC
replicas, preferring the DC the run executes from. A kind the topology does not declare talks
to the simulator when there is one (a drill), and is an error otherwise. Runs on the
simulator alone keep its virtual clock; as soon as one real tool is in play, the run waits in
real time, polling each action's own tool.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from revive.errors import InputError, NotFoundError
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
from revive.ops.plugins import ToolContext, adapter, settings_of
from revive.ops.wallclock import WallClock
from revive.topology import ToolKind, Topology

#: Where the simulator's adapters find it when a run names no ``sim_url``.
SIM_URL_ENV = sim.SIM_URL_ENV

#: Toolbox field -> the tool kind that fills it.
FIELD_KINDS: dict[str, ToolKind] = {
    "compute": ToolKind.compute,
    "services": ToolKind.deploy,
    "registry": ToolKind.registry,
    "health": ToolKind.health_checker,
    "traffic": ToolKind.traffic,
    "metrics": ToolKind.metrics,
    "config": ToolKind.config_store,
}
#: Kinds revive does not act on through the toolbox (chat is configured from the environment).
_NOT_BUILT = frozenset({ToolKind.chat})


class ToolProbes:
    """``ToolHealth`` over every declared tool: each adapter's own ``probe()``."""

    def __init__(self, tools: Mapping[str, object]) -> None:
        self._tools = dict(tools)

    async def replicas(self, tool: str) -> dict[str, bool]:
        adapter_ = self._tools.get(tool)
        probe = getattr(adapter_, "probe", None)
        if probe is None:
            raise NotFoundError(f"no probe for ops tool {tool!r}", tool=tool, target=tool)
        return await probe()

    async def aclose(self) -> None:
        """Each tool's adapter is closed by the toolbox that owns it."""


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
    #: Every declared tool's adapter by tool name (several kinds may share one).
    tools: dict[str, object] = field(default_factory=dict)
    #: The simulator's own adapters for undeclared kinds.
    extras: list[object] = field(default_factory=list)
    #: True when every adapter is the simulator's: the run is on virtual time.
    simulated: bool = True

    async def aclose(self) -> None:
        closed: set[int] = set()
        owned = [getattr(self, f.name) for f in fields(self)
                 if f.name not in {"tools", "extras", "simulated"}]
        for item in [*owned, *self.tools.values(), *self.extras]:
            if id(item) not in closed and hasattr(item, "aclose"):
                closed.add(id(item))
                await item.aclose()


def build_toolbox(
    topology: Topology, *, sim_url: str | None, run_dc: str | None, timeout_s: float = 30.0
) -> Toolbox:
    """Adapters for every kind; ``InputError`` (nothing built) when one cannot be had."""
    sim_url = sim_url.rstrip("/") if sim_url else None
    tools = build_tools(topology, sim_url=sim_url, run_dc=run_dc, timeout_s=timeout_s)
    simulated = all(topology.ops_tools[name].adapter == "sim" for name in tools)
    built: dict[str, object] = {}
    extras: list[object] = []
    missing: list[str] = []
    for field_name, kind in FIELD_KINDS.items():
        declared = [n for n, t in topology.ops_tools.items() if t.kind == kind and n in tools]
        if declared:
            built[field_name] = tools[declared[0]]
        elif sim_url:
            built[field_name] = sim.SIM_KINDS[kind](
                _sim_endpoint(f"sim-{field_name}", sim_url, timeout_s))
            extras.append(built[field_name])
        else:
            missing.append(str(kind))
    if missing:
        raise InputError(
            f"no ops tool of kind {', '.join(missing)} in the topology, and no simulator "
            f"to stand in: declare one under ops_tools (or set sim_url / ${SIM_URL_ENV} "
            "for a drill)"
        )
    sim_clock = sim.SimClock(_sim_endpoint("sim-clock", sim_url, timeout_s)) if sim_url else None
    if sim_clock is not None:
        extras.append(sim_clock)
    clock: Clock
    if simulated and sim_clock is not None:
        clock = sim_clock
    else:
        clock = WallClock(tools, fallback=sim_clock)
    return Toolbox(**built, tool_health=ToolProbes(tools), clock=clock, tools=tools,
                   extras=extras, simulated=simulated and sim_clock is not None)


def build_tools(
    topology: Topology,
    *,
    sim_url: str | None,
    run_dc: str | None,
    timeout_s: float = 30.0,
    names: list[str] | None = None,
) -> dict[str, object]:
    """The adapter of each declared tool (or of ``names``), by tool name.

    Adapters open no connection until first used, so a failed build leaves nothing open.
    """
    tools: dict[str, object] = {}
    for name, tool in topology.ops_tools.items():
        if tool.kind in _NOT_BUILT or (names is not None and name not in names):
            continue
        make = adapter(tool.adapter).factory(tool.kind)
        if make is None:
            continue
        ctx = ToolContext(name, tool, settings_of(name, tool), run_dc, timeout_s, sim_url,
                          topology=topology)
        tools[name] = make(ctx)
    return tools


def _sim_endpoint(name: str, sim_url: str, timeout_s: float) -> ReplicatedEndpoint:
    return ReplicatedEndpoint(name, {"sim": sim_url}, prefer_dc=None, timeout=timeout_s)
