"""The simulated estate: what exists where, what is healthy, and what the ops tools allow.

Runbooks drive this state machine through the same adapter interfaces they use against real
tools, and the load model (``revive.sim.load``) reads its views every tick. It reproduces the
failure modes of the seed incident a runbook must cope with: boot tools that burned with the
DC, a health checker that sees nothing, a registry with no image in the surviving DC,
callers that cached a dead DC's IPs, and quota that runs out.

Deterministic: durations come from the topology and ``SimConfig``; the only randomness
(restart jitter) comes from one ``random.Random(seed)`` consumed in call order; actions
complete through ``VirtualClock`` events, never by sleeping. Data shapes live in
``estate_parts``. Tool rule: a tool kind the topology does not declare never blocks; a
declared one needs a reachable replica, and a slow replica adds its latency.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from numbers import Real

from revive.errors import ReviveError
from revive.sim.clock import VirtualClock
from revive.sim.config import RetryPolicy, SimConfig
from revive.sim.estate_parts import (
    ActionBook,
    ActionKind,
    ActionState,
    ActionView,
    Cell,
    LogEntry,
    Replica,
    ReplicaPlane,
    ReplicaView,
    ServiceView,
    ToolState,
    class_load_shares,
    dc_weights,
    initial_class_weights,
    preferred_dc,
)
from revive.topology.models import Service, ToolKind, Topology

__all__ = [
    "ActionKind",
    "ActionState",
    "ActionView",
    "ArtifactMissing",
    "BadRequest",
    "Conflict",
    "Estate",
    "LogEntry",
    "QuotaExceeded",
    "ReplicaView",
    "ServiceView",
    "SimError",
    "ToolState",
    "Unavailable",
    "UnknownTarget",
]


class SimError(ReviveError):
    """Base of every error the simulated estate raises; adapters map these to tool errors."""


class UnknownTarget(SimError):
    """A service, DC, tool, feature, artifact or action name the estate does not have."""


class QuotaExceeded(SimError):
    """The compute API refused: not enough spare instances in that DC. Nothing changed."""


class Unavailable(SimError):
    """What the action needs is down: the DC lost power or no tool replica is reachable."""


class ArtifactMissing(Unavailable):
    """The DC's registry lacks the image the action needs: copy or push it there first."""


class Conflict(SimError):
    """The action does not fit the current state (busy, already exists, does not exist)."""


class BadRequest(SimError, ValueError):
    """A malformed argument (negative weight, zero count); also a ValueError."""


class Estate:
    """DCs of services and ops tools, driven by runbooks and read by the load model."""

    def __init__(
        self, topology: Topology, *, clock: VirtualClock, config: SimConfig, seed: int
    ) -> None:
        self.topology, self.clock, self.config = topology, clock, config
        self._rng = random.Random(seed)
        self._dcs = topology.dc_names
        self._services: dict[str, Service] = {s.name: s for s in topology.services}
        self._up = dict.fromkeys(self._dcs, True)
        self._tools = ReplicaPlane(topology, self._up)
        self._cells: dict[tuple[str, str], Cell] = {}
        # IP-caching callers last resolved their dependencies when the GSLB sent everything
        # to one DC (``cached_ips_point_to``, default the first): the seed's callers that
        # kept calling the burned DC.
        primary = self._dc(config.cached_ips_point_to or self._dcs[0])
        for svc in topology.services:
            for dc in self._dcs:
                n, ip = svc.instances_in(dc), primary if svc.caches_dependency_ips else None
                self._cells[dc, svc.name] = Cell(n > 0, n, ip, healthy=n)
        self._caching = [k for k in self._cells if self._services[k[1]].caches_dependency_ips]
        # GSLB: weights per traffic class; shared back ends see their load-weighted sum.
        self.class_load_shares = class_load_shares(topology)
        self._class_weights = initial_class_weights(topology)
        self._weights = dc_weights(self._class_weights, self.class_load_shares, self._dcs)
        self._quota: dict[str, int | None] = {
            dc.name: dc.spare_instances for dc in topology.datacenters
        }
        self._flags = {(s.name, f.name): True for s in topology.services for f in s.features}
        self._feature_cost = {s.name: sum(f.cost for f in s.features) for s in topology.services}
        self._retry_policy: RetryPolicy | None = None
        self._registry_dcs = self._tools.dcs_with(ToolKind.registry, self._dcs)
        v1 = {(s.name, "v1") for s in topology.services}
        self._artifacts = {dc: set(v1) if dc in self._registry_dcs else set() for dc in self._dcs}
        self._book = ActionBook(clock)
        self.log: list[LogEntry] = self._book.log  # applied changes, for tests and replays
        self._health: dict[str, dict[str, int]] = {}
        self._health_at = clock.now
        self._probe_health(clock.now, 0.0)
        clock.add_ticker(self._probe_health, config.health_check_interval_s)

    # --- names: every bad one raises UnknownTarget naming it ---------------------------------

    def _dc(self, dc: str) -> str:
        if dc not in self._up:
            raise UnknownTarget(f"unknown datacenter {dc!r} (known: {', '.join(self._dcs)})")
        return dc

    def _service(self, name: str) -> Service:
        if name not in self._services:
            raise UnknownTarget(f"unknown service {name!r}")
        return self._services[name]

    def _cell(self, service: str, dc: str) -> Cell:
        self._service(service)
        return self._cells[self._dc(dc), service]

    def _feature(self, service: str, feature: str) -> tuple[str, str]:
        self._service(service)
        if (service, feature) not in self._flags:
            raise UnknownTarget(f"service {service!r} has no feature {feature!r}")
        return service, feature

    def _artifact(self, artifact: str) -> None:
        if artifact not in self._services:
            raise UnknownTarget(f"unknown artifact {artifact!r} (artifacts are service images)")

    # --- what an action needs ------------------------------------------------------------

    def _need_up(self, *dcs: str) -> None:
        for dc in dcs:
            if not self._up[self._dc(dc)]:
                raise Unavailable(f"{dc} is down (power loss)")

    def _need_kind(self, kind: ToolKind, dc: str | None = None) -> float:
        """Latency of the best reachable replica of ``kind`` (in ``dc`` if given), or raise."""
        latency = self._tools.best_of_kind(kind, dc)
        if latency is None:
            where = f" in {dc}" if dc else ""
            names = ", ".join(self._tools.kinds[kind])
            raise Unavailable(f"no reachable {kind} replica{where} ({names})")
        return latency

    def _need_registry(self, dc: str) -> float:
        if dc not in self._registry_dcs:
            raise ArtifactMissing(f"{dc} has no registry replica")
        return self._need_kind(ToolKind.registry, dc)

    def _need_image(self, artifact: str, version: str, dc: str) -> float:
        """Registry latency for pulling ``artifact:version`` in ``dc``; raises if it cannot."""
        latency = self._need_registry(dc)
        if (artifact, version) not in self._artifacts[dc]:
            raise ArtifactMissing(f"{artifact}:{version} is not in {dc}'s registry")
        return latency

    def _need_idle(self, cell: Cell, service: str, dc: str, *, exists: bool = True) -> None:
        if cell.action_id is not None:
            raise Conflict(f"{service} in {dc} is busy with {cell.action_id}")
        if exists and not cell.exists:
            raise Conflict(f"{service} does not exist in {dc}; use deploy")

    # --- read views (cheap: the load model calls these every tick) ---------------------------

    def dc_up(self, dc: str) -> bool:
        return self._up[self._dc(dc)]

    @property
    def weights(self) -> dict[str, float]:
        """Each DC's share of all users (a copy): the class weights weighted by each class's
        load share, summing to 1. What shared back ends and IP-caching callers go by."""
        return dict(self._weights)

    @property
    def class_weights(self) -> dict[str, dict[str, float]]:
        """GSLB weights per traffic class and DC, each class's summing to 1 (a copy)."""
        return {c: dict(w) for c, w in self._class_weights.items()}

    @property
    def retry_policy(self) -> RetryPolicy | None:
        """Client retry policy pushed through the config store; None means naive clients."""
        return self._retry_policy

    def healthy_capacity(self, dc: str, service: str) -> float:
        """Load the healthy instances can carry; 0 when the DC has no power."""
        cell = self._cells.get((dc, service)) or self._cell(service, dc)
        if not self._up[dc]:
            return 0.0
        return cell.healthy * self._services[service].capacity_per_instance

    def stale_ip_services(self) -> list[tuple[str, str, str]]:
        """(service, dc it runs in, ip_target) for IP-caching callers that point elsewhere."""
        return [
            (name, dc, str(cell.ip_target))
            for dc, name in self._caching
            if (cell := self._cells[dc, name]).exists and cell.ip_target != dc
        ]

    def enabled_feature_cost(self, service: str) -> float:
        """Share of the service's load caused by features that are switched on."""
        self._service(service)
        return self._feature_cost[service]

    def state(self, service: str, dc: str) -> ServiceView:
        return self._cell(service, dc).view(service, dc)

    def quota(self, dc: str) -> int | None:
        """Spare instances the compute API still grants in ``dc``; None when unlimited."""
        return self._quota[self._dc(dc)]

    def replica(self, tool: str, dc: str) -> ReplicaView:
        r = self._replica(tool, dc)
        return ReplicaView(tool, dc, r.state, r.extra_latency_s, self._tools.reachable(tool, dc))

    def artifacts(self, dc: str) -> frozenset[tuple[str, str]]:
        """(artifact, version) pairs held by ``dc``'s registry."""
        return frozenset(self._artifacts[self._dc(dc)])

    def flag(self, service: str, feature: str) -> bool:
        return self._flags[self._feature(service, feature)]

    @property
    def flags(self) -> dict[tuple[str, str], bool]:
        return dict(self._flags)

    def health_view(self, dc: str) -> dict[str, int]:
        """Healthy instances per existing service in ``dc``, as the health checker saw them.

        The checker probes every ``health_check_interval_s``, so this is the last probe
        (``health_checked_at``), not the instant truth. With no reachable health checker
        replica there is nobody to ask: Unavailable, as in the seed incident.
        """
        self._dc(dc)
        self._need_kind(ToolKind.health_checker)
        return dict(self._health[dc])

    @property
    def health_checked_at(self) -> float:
        return self._health_at

    def action(self, action_id: str) -> ActionView:
        if action_id not in self._book.actions:
            raise UnknownTarget(f"unknown action {action_id!r}")
        return self._book.actions[action_id].view()

    def actions(self) -> list[ActionView]:
        return [a.view() for a in self._book.actions.values()]

    # --- instant changes (logged) -------------------------------------------------------

    def set_class_weights(self, traffic_class: str, weights: Mapping[str, float]) -> None:
        """Set one traffic class's GSLB weights (missing DCs get 0), normalised to sum 1.

        Weight on a down DC is accepted, as a naive operator would set it; the load model
        turns it into errors. Needs a reachable traffic-tool replica if one is declared.
        """
        if traffic_class not in self._class_weights:
            known = ", ".join(self._class_weights)
            raise UnknownTarget(f"unknown traffic class {traffic_class!r} (known: {known})")
        normalised = self._valid_weights(weights)
        self._need_kind(ToolKind.traffic)
        self._class_weights[traffic_class] = normalised
        self._weights = dc_weights(self._class_weights, self.class_load_shares, self._dcs)
        detail = " ".join(f"{dc}={w:.4f}" for dc, w in normalised.items())
        self._book.record("set_class_weights", f"gslb/{traffic_class}", detail)

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Every traffic class to the same DC weights (all classes moving together).

        Kept for callers that predate traffic classes; same rules as ``set_class_weights``.
        """
        normalised = self._valid_weights(weights)
        self._need_kind(ToolKind.traffic)
        self._class_weights = {c: dict(normalised) for c in self._class_weights}
        self._weights = dc_weights(self._class_weights, self.class_load_shares, self._dcs)
        detail = " ".join(f"{dc}={w:.4f}" for dc, w in normalised.items())
        self._book.record("set_weights", "gslb", detail)

    def _valid_weights(self, weights: Mapping[str, float]) -> dict[str, float]:
        """Weights over every DC normalised to sum 1, or BadRequest / UnknownTarget."""
        for dc, w in weights.items():
            self._dc(dc)
            if isinstance(w, bool) or not isinstance(w, Real) or not 0 <= w < math.inf:
                raise BadRequest(f"weight for {dc} must be a non-negative number, got {w!r}")
        total = float(sum(weights.values()))
        if total <= 0:
            raise BadRequest("GSLB weights must sum to more than 0")
        return {dc: weights.get(dc, 0) / total for dc in self._dcs}

    def set_flag(self, service: str, feature: str, on: bool) -> None:
        key = self._feature(service, feature)
        self._need_kind(ToolKind.config_store)
        self._flags[key] = on
        self._feature_cost[service] = sum(
            f.cost for f in self._services[service].features if self._flags[service, f.name]
        )
        self._book.record("set_flag", f"{service}/{feature}", "on" if on else "off")

    def set_retry_policy(self, policy: RetryPolicy | None) -> None:
        self._need_kind(ToolKind.config_store)
        self._retry_policy = policy
        detail = "naive" if policy is None else repr(policy)
        self._book.record("set_retry_policy", "clients", detail)

    def push_artifact(self, artifact: str, version: str, dc: str) -> None:
        """Publish a newly built image (a patch) to ``dc``'s registry, as CI would."""
        self._artifact(artifact)
        self._need_up(dc)
        self._need_registry(dc)
        self._artifacts[dc].add((artifact, version))
        self._book.record("push_artifact", f"{artifact}:{version}@{dc}")

    # --- actions (complete by clock events) --------------------------------------------------

    def provision(self, service: str, dc: str, count: int) -> str:
        """Add ``count`` instances now (unhealthy); healthy after the service's boot time."""
        cell, svc = self._cell(service, dc), self._services[service]
        self._need_up(dc)
        self._need_idle(cell, service, dc)
        if count < 1:
            raise BadRequest(f"count must be >= 1, got {count}")
        latency = self._need_kind(ToolKind.compute, dc)
        self._take_quota(dc, count)
        cell.instances += count

        def complete() -> None:
            cell.healthy = min(cell.instances, cell.healthy + count)

        kind, target, boot = ActionKind.provision, f"{service}@{dc}", svc.boot_seconds + latency
        return self._book.start(kind, target, {dc}, boot, complete, cell, f"+{count}")

    def restart(self, service: str, dc: str) -> str:
        """Restart all instances: healthy 0 for the (jittered) duration, then all or nothing.

        It fails at the end if a boot tool has no reachable replica anywhere at that moment,
        or if an injected failure is pending; success re-resolves cached dependency IPs.
        """
        cell = self._cell(service, dc)
        svc = self._services[service]
        self._need_up(dc)
        self._need_idle(cell, service, dc)
        jitter = self.config.restart_jitter
        duration = svc.restart_seconds * (1 + self._rng.uniform(-jitter, jitter))
        duration += sum(self._tools.latency_of(t, dc) or 0.0 for t in svc.boot_requires)
        cell.healthy = 0

        def complete() -> str | None:
            missing = [t for t in svc.boot_requires if self._tools.latency_of(t, dc) is None]
            injected = cell.failures_pending > 0
            if injected:  # consumed by this restart whatever else goes wrong
                cell.failures_pending -= 1
            if missing:
                return f"boot tool {missing[0]!r} has no reachable replica in any up DC"
            if injected:
                return "injected restart failure"
            cell.healthy = cell.instances
            self._re_resolve(cell, dc)
            return None

        kind, target = ActionKind.restart, f"{service}@{dc}"
        return self._book.start(kind, target, {dc}, duration, complete, cell)

    def patch(self, service: str, dc: str, version: str) -> str:
        """Roll ``version`` over every instance (``patch_s_per_instance`` each)."""
        cell = self._cell(service, dc)
        return self._change_version(ActionKind.patch, service, dc, cell, version)

    def rollback(self, service: str, dc: str) -> str:
        """Go back to ``previous_version`` (which then becomes the rolled-back one)."""
        cell = self._cell(service, dc)
        if cell.previous_version is None:
            raise Conflict(f"{service} in {dc} has no previous version to roll back to")
        return self._change_version(ActionKind.rollback, service, dc, cell, cell.previous_version)

    def _change_version(
        self, kind: ActionKind, service: str, dc: str, cell: Cell, version: str
    ) -> str:
        self._need_up(dc)
        self._need_idle(cell, service, dc)
        latency = self._need_image(service, version, dc)
        duration = self.config.patch_s_per_instance * cell.instances + latency

        def complete() -> None:
            cell.previous_version, cell.version = cell.version, version
            self._re_resolve(cell, dc)

        target = f"{service}@{dc}"
        return self._book.start(kind, target, {dc}, duration, complete, cell, detail=version)

    def deploy(self, service: str, dc: str, instances: int, version: str = "v1") -> str:
        """Emergency deployment where the service does not exist: exists now, healthy later."""
        cell, svc = self._cell(service, dc), self._services[service]
        self._need_up(dc)
        self._need_idle(cell, service, dc, exists=False)
        if cell.exists:
            raise Conflict(f"{service} already exists in {dc}; use provision or patch")
        if instances < 1:
            raise BadRequest(f"instances must be >= 1, got {instances}")
        latency = self._need_image(service, version, dc) + self._need_kind(ToolKind.compute, dc)
        self._take_quota(dc, instances)
        cell.exists, cell.instances, cell.healthy = True, instances, 0
        cell.version, cell.previous_version = version, None

        def complete() -> None:
            cell.healthy = cell.instances
            self._re_resolve(cell, dc)

        kind, target, boot = ActionKind.deploy, f"{service}@{dc}", svc.boot_seconds + latency
        return self._book.start(kind, target, {dc}, boot, complete, cell, f"{instances}x {version}")

    def copy_artifact(self, artifact: str, version: str, src_dc: str, dst_dc: str) -> str:
        """Copy an image between DC registries; both ends must stay reachable throughout."""
        self._artifact(artifact)
        self._need_up(src_dc, dst_dc)
        if src_dc == dst_dc:
            raise BadRequest("source and destination DC are the same")
        latency = self._need_image(artifact, version, src_dc) + self._need_registry(dst_dc)

        def complete() -> str | None:
            for dc in (src_dc, dst_dc):
                if self._tools.best_of_kind(ToolKind.registry, dc) is None:
                    return f"registry in {dc} became unreachable"
            self._artifacts[dst_dc].add((artifact, version))
            return None

        kind, target = ActionKind.copy_artifact, f"{artifact}:{version}@{dst_dc}"
        duration, dcs = self.config.artifact_copy_s + latency, {src_dc, dst_dc}
        return self._book.start(kind, target, dcs, duration, complete, None, f"from {src_dc}")

    # --- faults (instant, logged) -------------------------------------------------------

    def power_loss(self, dc: str) -> None:
        """The DC goes dark: its services and tool replicas vanish, its actions fail."""
        self._up[self._dc(dc)] = False
        for (d, _), cell in self._cells.items():
            if d == dc:
                cell.healthy = 0
        self._book.record("power_loss", dc)
        self._book.fail_running_in(dc, f"power loss in {dc}")

    def power_restore(self, dc: str) -> None:
        """Power is back; services stay down until a runbook restarts them."""
        self._up[self._dc(dc)] = True
        self._book.record("power_restore", dc)

    def tool_down(self, tool: str, dc: str) -> None:
        self._set_replica(tool, dc, ToolState.down, 0.0)

    def tool_slow(self, tool: str, dc: str, extra_latency_s: float) -> None:
        """The replica still answers but every action that uses it takes this much longer."""
        if not 0 <= extra_latency_s < math.inf:
            raise BadRequest(f"extra latency must be >= 0, got {extra_latency_s!r}")
        self._set_replica(tool, dc, ToolState.slow, float(extra_latency_s))

    def tool_restore(self, tool: str, dc: str) -> None:
        self._set_replica(tool, dc, ToolState.up, 0.0)

    def fail_next_restarts(self, service: str, dc: str, count: int = 1) -> None:
        """The next ``count`` restarts of this service in ``dc`` fail at their end."""
        cell = self._cell(service, dc)
        if count < 1:
            raise BadRequest(f"count must be >= 1, got {count}")
        cell.failures_pending += count
        self._book.record("fail_next_restarts", f"{service}@{dc}", str(count))

    def exhaust_quota(self, dc: str) -> None:
        self._quota[self._dc(dc)] = 0
        self._book.record("exhaust_quota", dc)

    # --- machinery --------------------------------------------------------------------

    def _replica(self, tool: str, dc: str) -> Replica:
        if tool not in self.topology.ops_tools:
            raise UnknownTarget(f"unknown ops tool {tool!r}")
        if (tool, self._dc(dc)) not in self._tools.replicas:
            raise UnknownTarget(f"ops tool {tool!r} has no replica in {dc!r}")
        return self._tools.replicas[tool, dc]

    def _set_replica(self, tool: str, dc: str, state: ToolState, latency: float) -> None:
        replica = self._replica(tool, dc)
        replica.state, replica.extra_latency_s = state, latency
        self._book.record(f"tool_{state}", f"{tool}@{dc}", f"+{latency:g}s" if latency else "")

    def _take_quota(self, dc: str, count: int) -> None:
        left = self._quota[dc]
        if left is None:
            return
        if count > left:
            raise QuotaExceeded(f"{dc} has quota for {left} instances, asked {count}")
        self._quota[dc] = left - count

    def _probe_health(self, now: float, dt: float) -> None:
        """One health-checker probe round: snapshot healthy counts if a checker is reachable."""
        if self._tools.best_of_kind(ToolKind.health_checker) is None:
            return
        self._health = {dc: {} for dc in self._dcs}
        for (dc, name), cell in self._cells.items():
            if cell.exists:  # a DC without power has healthy == 0 everywhere
                self._health[dc][name] = cell.healthy
        self._health_at = now

    def _re_resolve(self, cell: Cell, own: str) -> None:
        """An IP-caching caller re-resolves: to the top-weight up DC, own DC on ties."""
        if cell.ip_target is not None:
            cell.ip_target = preferred_dc(own, self._dcs, self._up, self._weights)
