"""The estate's data parts: state enums, read-only views, internal records, tool replicas.

Split out of ``estate.py`` to keep each module readable. Nothing here raises: the replica
plane answers "which replica, how slow, or nobody" and ``Estate`` decides which error that
is. Views are frozen dataclasses so callers (adapters, the load model, tests) can keep and
compare them without seeing later changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from revive.planning.shares import default_weights
from revive.sim.clock import VirtualClock
from revive.sim.load_terms import ALL_USERS
from revive.topology.models import ToolKind, Topology

__all__ = [
    "ActionKind",
    "ActionState",
    "ActionView",
    "LogEntry",
    "ReplicaView",
    "ServiceView",
    "ToolState",
]


class ToolState(StrEnum):
    """One ops-tool replica's condition; ``slow`` still works but adds latency."""

    up = "up"
    down = "down"
    slow = "slow"


class ActionState(StrEnum):
    """Lifecycle of a non-instant action. Actions start at once, so ``pending`` is unused
    today; it is kept so adapters can map queued real-tool jobs onto the same states."""

    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"


class ActionKind(StrEnum):
    provision = "provision"
    restart = "restart"
    patch = "patch"
    rollback = "rollback"
    deploy = "deploy"
    copy_artifact = "copy_artifact"


@dataclass(frozen=True)
class ServiceView:
    """One service in one DC. ``ip_target`` is None for services that do not cache IPs."""

    service: str
    dc: str
    exists: bool
    instances: int
    healthy: int
    version: str
    previous_version: str | None
    busy: bool
    action_id: str | None
    ip_target: str | None


@dataclass(frozen=True)
class ActionView:
    """A non-instant action; ``ends_at`` is the planned end, then the actual one."""

    id: str
    kind: ActionKind
    target: str
    state: ActionState
    error: str | None
    started_at: float
    ends_at: float


@dataclass(frozen=True)
class ReplicaView:
    """One ops-tool replica; reachable iff not down and its DC has power."""

    tool: str
    dc: str
    state: ToolState
    extra_latency_s: float
    reachable: bool


@dataclass(frozen=True)
class LogEntry:
    """One applied change, in application order: the determinism tests compare these."""

    time: float
    kind: str
    target: str
    detail: str


@dataclass
class Cell:
    """Mutable state of one service in one DC."""

    exists: bool
    instances: int
    ip_target: str | None
    healthy: int = 0
    version: str = "v1"
    previous_version: str | None = None
    action_id: str | None = None
    failures_pending: int = 0

    def view(self, service: str, dc: str) -> ServiceView:
        return ServiceView(
            service=service,
            dc=dc,
            exists=self.exists,
            instances=self.instances,
            healthy=self.healthy,
            version=self.version,
            previous_version=self.previous_version,
            busy=self.action_id is not None,
            action_id=self.action_id,
            ip_target=self.ip_target,
        )


@dataclass
class Action:
    """An action in flight or finished; ``complete`` applies its effect or returns an error."""

    id: str
    kind: ActionKind
    target: str
    dcs: frozenset[str]
    started_at: float
    ends_at: float
    complete: Callable[[], str | None]
    cell: Cell | None = None
    event_id: int = 0
    state: ActionState = ActionState.running
    error: str | None = None

    def view(self) -> ActionView:
        return ActionView(
            id=self.id,
            kind=self.kind,
            target=self.target,
            state=self.state,
            error=self.error,
            started_at=self.started_at,
            ends_at=self.ends_at,
        )


def preferred_dc(own: str, dcs: list[str], up: dict[str, bool], weights: dict[str, float]) -> str:
    """Where the GSLB sends a caller that re-resolves: top weight among up DCs, own on ties."""
    alive = [dc for dc in dcs if up[dc]] or [own]
    best = max(weights[dc] for dc in alive)
    tied = [dc for dc in alive if weights[dc] == best]
    return own if own in tied else tied[0]


def class_load_shares(topology: Topology) -> dict[str, float]:
    """Each traffic class's share of the user load, in priority order. An estate that
    declares no user-facing service still has users: one class, ``ALL_USERS``."""
    classes = topology.traffic_classes
    return {n: c.load_share for n, c in classes.items()} if classes else {ALL_USERS: 1.0}


def initial_class_weights(topology: Topology) -> dict[str, dict[str, float]]:
    """Where each class's users are before anything moves them (see ``default_weights``)."""
    if topology.traffic_classes:
        return default_weights(topology)
    return {ALL_USERS: dict.fromkeys(topology.dc_names, 1.0 / len(topology.dc_names))}


def dc_weights(
    class_weights: Mapping[str, Mapping[str, float]], load_shares: Mapping[str, float],
    dcs: list[str],
) -> dict[str, float]:
    """Each DC's share of all users: class weights weighted by class load, summing to 1.

    Shared back ends (database, cache) and IP-caching callers see the DC this way. When
    every class has the same weights (they moved together) those are the DC weights,
    exactly, so callers of the DC-level API read back what they set."""
    first, *rest = class_weights.values()
    if all(w == first for w in rest):
        return {dc: first.get(dc, 0.0) for dc in dcs}
    raw = {dc: sum(load_shares[c] * w.get(dc, 0.0) for c, w in class_weights.items())
           for dc in dcs}
    total = sum(raw.values())
    return {dc: v / total for dc, v in raw.items()} if total > 0 else raw


@dataclass
class Replica:
    state: ToolState = ToolState.up
    extra_latency_s: float = 0.0


class ReplicaPlane:
    """Every ops-tool replica and the question actions ask: which one can I use, how slow?

    A tool kind the topology does not declare is not modelled: it never blocks and adds no
    latency, so a three-line test topology can still provision and patch.
    """

    def __init__(self, topology: Topology, dc_up: dict[str, bool]) -> None:
        self._tools = {name: list(t.replicas) for name, t in topology.ops_tools.items()}
        self._dc_up = dc_up  # shared with the Estate, so power changes are seen at once
        self.replicas = {(n, dc): Replica() for n, dcs in self._tools.items() for dc in dcs}
        self.kinds: dict[ToolKind, list[str]] = {}
        for name, tool in topology.ops_tools.items():
            self.kinds.setdefault(tool.kind, []).append(name)

    def reachable(self, tool: str, dc: str) -> bool:
        replica = self.replicas.get((tool, dc))
        return replica is not None and replica.state != ToolState.down and self._dc_up[dc]

    def latency_of(self, tool: str, prefer_dc: str) -> float | None:
        """Latency of the replica a client uses (its own DC's first), or None if none is up."""
        dcs = self._tools[tool]
        for dc in [prefer_dc, *dcs] if prefer_dc in dcs else dcs:
            if self.reachable(tool, dc):
                return self.replicas[tool, dc].extra_latency_s
        return None

    def modelled(self, kind: ToolKind) -> bool:
        return bool(self.kinds.get(kind))

    def best_of_kind(self, kind: ToolKind, dc: str | None = None) -> float | None:
        """Least latency among reachable replicas of ``kind`` (in ``dc`` if given).

        0.0 if the kind is not modelled; None if it is and nothing is reachable.
        """
        if not self.modelled(kind):
            return 0.0
        latencies = [
            self.replicas[tool, d].extra_latency_s
            for tool in self.kinds[kind]
            for d in self._tools[tool]
            if (dc is None or d == dc) and self.reachable(tool, d)
        ]
        return min(latencies, default=None)

    def dcs_with(self, kind: ToolKind, all_dcs: Iterable[str]) -> set[str]:
        """DCs holding a replica of ``kind`` (every DC if the kind is not modelled)."""
        if not self.modelled(kind):
            return set(all_dcs)
        return {dc for tool in self.kinds[kind] for dc in self._tools[tool]}


class ActionBook:
    """The ledger of actions and the log of applied changes, both in application order.

    Starting an action schedules its completion on the clock; the completion callback
    applies the effect and returns an error message or None, and the book records the end.
    """

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.actions: dict[str, Action] = {}
        self.log: list[LogEntry] = []

    def record(self, kind: str, target: str, detail: str = "") -> None:
        self.log.append(LogEntry(self.clock.now, kind, target, detail))

    def start(
        self,
        kind: ActionKind,
        target: str,
        dcs: Iterable[str],
        duration: float,
        complete: Callable[[], str | None],
        cell: Cell | None = None,
        detail: str = "",
    ) -> str:
        """Register an action, mark its cell busy and schedule its completion event."""
        action_id = f"a{len(self.actions) + 1:04d}"
        now = self.clock.now
        act = Action(action_id, kind, target, frozenset(dcs), now, now + duration, complete, cell)
        act.event_id = self.clock.schedule(act.ends_at, lambda: self.close(act, complete()))
        self.actions[action_id] = act
        if cell is not None:
            cell.action_id = action_id
        extra = f" {detail}" if detail else ""
        self.record(kind, target, f"{action_id} started{extra}, ends at {act.ends_at:.3f}")
        return action_id

    def close(self, act: Action, error: str | None) -> None:
        act.state = ActionState.failed if error else ActionState.done
        act.error, act.ends_at = error, self.clock.now
        if act.cell is not None:
            act.cell.action_id = None
        self.record(
            act.kind, act.target, f"{act.id} failed: {error}" if error else f"{act.id} done"
        )

    def fail_running_in(self, dc: str, reason: str) -> None:
        """Fail every running action that touches ``dc`` now, cancelling its completion."""
        for act in self.actions.values():
            if act.state == ActionState.running and dc in act.dcs:
                self.clock.cancel(act.event_id)
                self.close(act, reason)
