"""The failover's recovery graph: every step of a DC loss, each waiting only for its own
pre-conditions (Maelstrom's lesson: an unrelated part never holds up a critical one).

- ``features-off`` and ``ramp:retry-policy`` wait for nothing;
- an image copy waits for nothing, the emergency deploy that needs it waits for the copy;
- provisions wait for nothing (capacity does not wait for unrelated deploys), except for
  a restart of the same service in the same DC (a service takes one action at a time);
- restarts (services down in a target, callers that cached the lost DC's IPs) follow the
  restart plan of their DC: hard dependencies first, tier first, under the DC's cap;
- ``approval:traffic``, the one gate before any traffic moves, waits for nothing (it asks
  at once; in production the people on call answer while capacity comes up);
- ``ramp:<class>`` waits for the gate, the retry policy and the features being off, and
  for the end (success or not) of every deploy, provision and restart of the class's
  services and their hard dependencies, in every target DC. A failed step there does not
  block the class: its users fail in the lost DC anyway, and the verdict says degraded.

Pure: the flow surveys the tools, this module turns the survey into steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from revive.planning.graph import Step
from revive.planning.restart import effective_tiers, restart_steps
from revive.topology import Topology

GATE = "approval:traffic"
RETRY_POLICY = "ramp:retry-policy"
FEATURES_OFF = "features-off"
FIRST = -1
"""Priority of the steps that change nothing but settings: they go first."""
GATE_PRIORITY = 9
"""The gate asks after every action that can start has started."""


class Survey(BaseModel):
    """What the failover found before acting, per target DC."""

    lost: str
    targets: list[str]
    copies: dict[str, dict[str, str]] = Field(default_factory=dict)
    """dc -> service -> the DC whose registry has its image."""
    deploys: dict[str, dict[str, int]] = Field(default_factory=dict)
    """dc -> service -> instances to deploy (it ran only in the lost DC)."""
    provisions: dict[str, dict[str, int]] = Field(default_factory=dict)
    """dc -> service -> instances to add."""
    restarts: dict[str, list[str]] = Field(default_factory=dict)
    """dc -> services to restart (down, or holding IPs cached for the lost DC)."""
    classes: list[str] = Field(default_factory=list)
    """Traffic classes with users in the lost DC, in priority order."""
    version: str = "v1"


def copy_key(service: str, version: str, dc: str) -> str:
    return f"copy:{service}:{version}@{dc}"


def ramp_key(traffic_class: str) -> str:
    return f"ramp:{traffic_class}"


def closure(topology: Topology, names: Sequence[str]) -> set[str]:
    """``names`` and everything they hard-depend on, transitively."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(topology.service(name).hard_dependencies)
    return seen


def recovery_graph(
    topology: Topology,
    survey: Survey,
    *,
    max_parallel: int,
    estimates: Mapping[str, float] | None = None,
) -> tuple[list[Step], dict[str, int]]:
    """The steps of one failover and the caps of their pools."""
    tier = effective_tiers(topology)
    est = estimates or {}
    steps = [
        Step(key=FEATURES_OFF, action="features", priority=(FIRST,)),
        Step(key=RETRY_POLICY, action="retry_policy", priority=(FIRST,)),
        Step(key=GATE, action="approval", priority=(GATE_PRIORITY,)),
    ]
    pools: dict[str, int] = {}
    touching: dict[str, list[str]] = {}  # service -> its deploy/provision/restart keys
    for dc in survey.targets:
        for name in survey.copies.get(dc, {}):
            steps.append(Step(key=copy_key(name, survey.version, dc), action="copy",
                              target=f"{name}@{dc}", priority=(tier[name], 0, name),
                              estimate_s=est.get("copy", 45.0)))
        for name in survey.deploys.get(dc, {}):
            key = f"deploy:{name}@{dc}"
            after = (copy_key(name, survey.version, dc),) \
                if name in survey.copies.get(dc, {}) else ()
            steps.append(Step(key=key, action="deploy", target=f"{name}@{dc}", after=after,
                              priority=(tier[name], 1, name),
                              estimate_s=topology.service(name).boot_seconds))
            touching.setdefault(name, []).append(key)
        restarting: set[str] = set()
        restarts = survey.restarts.get(dc, [])
        if restarts:
            planned, _ = restart_steps(topology, dc, services=restarts,
                                       max_parallel=max_parallel)
            pool = f"restart@{dc}"
            pools[pool] = max_parallel
            for step in planned:
                steps.append(step.model_copy(update={"pool": pool}))
                name = step.target.split("@")[0]
                restarting.add(name)
                touching.setdefault(name, []).append(step.key)
        for name in survey.provisions.get(dc, {}):
            # A service takes one action at a time: new instances after its restart.
            key = f"provision:{name}@{dc}"
            waits = (f"restart:{name}@{dc}",) if name in restarting else ()
            steps.append(Step(key=key, action="provision", target=f"{name}@{dc}",
                              after_end=waits, priority=(tier[name], 2, name),
                              estimate_s=topology.service(name).boot_seconds))
            touching.setdefault(name, []).append(key)
    for name in survey.classes:
        cls = topology.traffic_classes[name]
        ready = sorted(k for svc in closure(topology, cls.services)
                       for k in touching.get(svc, ()))
        steps.append(Step(key=ramp_key(name), action="ramp", target=name,
                          after=(GATE, RETRY_POLICY, FEATURES_OFF), after_end=tuple(ready),
                          priority=(cls.priority, 3, name)))
    return steps, pools
