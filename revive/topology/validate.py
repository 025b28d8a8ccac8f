"""Checks that need the whole topology: names that must resolve, names that must be unique,
and hard dependencies that must not form a cycle.

Each check yields ``(loc, message)`` pairs; the loader turns them into located issues.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from revive.topology.models import MAX_SECONDS, Role, Topology
from revive.topology.source import Loc

Problem = tuple[Loc, str]

MAX_SETTING = 1e15
"""Beyond any timeout, port or count an adapter takes, and below where floats lose integers."""


def find_problems(topology: Topology) -> list[Problem]:
    """Every cross-reference problem in ``topology``, in no particular order."""
    return [
        *_duplicates(topology),
        *_unknown_names(topology),
        *_hard_cycles(topology),
        *_roles(topology),
        *_simulation(topology),
        *_adapters(topology),
        *_ramp(topology),
        *_settings_numbers(topology),
    ]


def _settings_numbers(topology: Topology) -> Iterator[Problem]:
    """Numbers in an adapter's ``settings:`` (timeouts, ports, counts) are finite and bounded
    too, whatever the adapter's model says: ``.inf`` or ``1e308`` is a mistake there."""
    for name, tool in topology.ops_tools.items():
        yield from _bounded(("ops_tools", name, "settings"), tool.settings, MAX_SETTING)


def _bounded(root: Loc, value: Any, limit: float) -> Iterator[Problem]:
    stack: list[tuple[Loc, Any]] = [(root, value)]
    while stack:
        loc, item = stack.pop()
        if isinstance(item, dict):
            stack.extend(((*loc, str(k)), v) for k, v in item.items())
        elif isinstance(item, list):
            stack.extend(((*loc, i), v) for i, v in enumerate(item))
        elif isinstance(item, bool) or not isinstance(item, int | float):
            continue
        elif not math.isfinite(item):
            yield loc, "Input should be a finite number"
        elif abs(item) > limit:
            yield loc, f"Input should be between {-limit:g} and {limit:g}"


def _ramp(topology: Topology) -> Iterator[Problem]:
    """``ramp:`` holds the ramp policy's fields and the scrape interval, each in range."""
    from pydantic import ValidationError

    from revive.ramp.pacing import RampPacing

    try:
        pacing = RampPacing.model_validate(topology.ramp)
    except ValidationError as exc:
        for err in exc.errors():
            message = {"extra_forbidden": "unknown key"}.get(err["type"], err["msg"])
            yield ("ramp", *err["loc"]), message
        return
    # The policy's own fields have no upper bounds; "1e300" (a string in YAML) is a number
    # once validated, so the bounds are checked on the validated values.
    given = pacing.model_dump(include=set(topology.ramp) & set(RampPacing.model_fields))
    yield from _bounded(("ramp",), given, MAX_SECONDS)


def _adapters(topology: Topology) -> Iterator[Problem]:
    """Each tool's adapter is installed, serves the tool's kind and accepts its settings."""
    from revive.ops.plugins import tool_problems  # the ops layer builds on the topology

    for name, tool in topology.ops_tools.items():
        yield from tool_problems(name, tool)


def _simulation(topology: Topology) -> Iterator[Problem]:
    dc = topology.simulation.cached_ips_point_to
    if dc is not None and dc not in topology.dc_names:
        yield ("simulation", "cached_ips_point_to"), (
            f"unknown datacenter {dc!r} (declared: {', '.join(topology.dc_names)})")


def _roles(topology: Topology) -> Iterator[Problem]:
    """Only services users reach belong to a traffic class; back ends are shared."""
    for i, svc in enumerate(topology.services):
        if svc.traffic_class is not None and svc.role != Role.service:
            yield ("services", i, "traffic_class"), (
                f"only role: service has a traffic class ({svc.name!r} is role: {svc.role}, "
                "a shared back end)"
            )


def _duplicates(topology: Topology) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for i, dc in enumerate(topology.datacenters):
        if dc.name in seen:
            yield ("datacenters", i, "name"), f"duplicate datacenter {dc.name!r}"
        seen.setdefault(dc.name, i)
    seen = {}
    for i, svc in enumerate(topology.services):
        if svc.name in seen:
            first = seen[svc.name]
            yield (
                ("services", i, "name"),
                f"duplicate service {svc.name!r} (first defined at services[{first}])",
            )
        seen.setdefault(svc.name, i)
        if svc.name in topology.ops_tools:
            yield ("services", i, "name"), f"{svc.name!r} is also the name of an ops tool"
        features: set[str] = set()
        for j, feature in enumerate(svc.features):
            if feature.name in features:
                yield ("services", i, "features", j, "name"), (
                    f"duplicate feature {feature.name!r} in service {svc.name!r}"
                )
            features.add(feature.name)
        deps: set[str] = set()
        for j, dep in enumerate(svc.depends_on):
            if dep.name in deps:
                yield ("services", i, "depends_on", j), f"{dep.name!r} listed twice"
            deps.add(dep.name)


def _unknown_names(topology: Topology) -> Iterator[Problem]:
    dcs = set(topology.dc_names)
    services = {svc.name for svc in topology.services}
    known_dcs = ", ".join(topology.dc_names)
    for name, tool in topology.ops_tools.items():
        for dc in tool.replicas:
            if dc not in dcs:
                yield ("ops_tools", name, "replicas", dc), (
                    f"unknown datacenter {dc!r} (declared: {known_dcs})"
                )
    for i, svc in enumerate(topology.services):
        for dc in svc.instances:
            if dc not in dcs:
                yield ("services", i, "instances", dc), (
                    f"unknown datacenter {dc!r} (declared: {known_dcs})"
                )
        for j, dep in enumerate(svc.depends_on):
            if dep.name not in services:
                yield ("services", i, "depends_on", j), f"unknown service {dep.name!r}"
        for j, tool in enumerate(svc.boot_requires):
            if tool not in topology.ops_tools:
                yield ("services", i, "boot_requires", j), f"unknown ops tool {tool!r}"


def _hard_cycles(topology: Topology) -> Iterator[Problem]:
    """Report each cycle of hard dependencies once, as the cycle itself: ``a -> b -> a``.

    Iterative depth-first search with colours, so a 10,000-service estate neither recurses
    too deep nor costs more than one pass over the edges.
    """
    index = {svc.name: i for i, svc in enumerate(topology.services)}
    edges = {
        svc.name: [d for d in svc.hard_dependencies if d in index] for svc in topology.services
    }
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(edges, white)
    for root in edges:
        if colour[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        colour[root] = grey
        while stack:
            node, next_edge = stack[-1]
            targets = edges[node]
            if next_edge == len(targets):
                stack.pop()
                path.pop()
                colour[node] = black
                continue
            stack[-1] = (node, next_edge + 1)
            target = targets[next_edge]
            if colour[target] == grey:
                cycle = [*path[path.index(target) :], target]
                i = index[node]
                dep_index = [d.name for d in topology.services[i].depends_on].index(target)
                yield ("services", i, "depends_on", dep_index), (
                    "dependency cycle: " + " -> ".join(cycle)
                )
            elif colour[target] == white:
                colour[target] = grey
                stack.append((target, 0))
                path.append(target)
