"""The topology: data centers, ops tools and services, as pydantic models.

These models are the edge between a user's YAML and every plan, check and runbook. They
validate shapes and ranges on their own; cross-references (unknown service, unknown DC,
dependency cycles) need the whole file and are checked in ``validate.py``.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    field_validator,
)

from revive.topology.simulation import SimConfig

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
"""Names of DCs, services, features, groups, ops tools and traffic classes end up in URLs,
metric labels, file names, chat and terminal markup: plain characters only."""
Name = Annotated[str, StringConstraints(strip_whitespace=True, pattern=NAME_PATTERN)]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
"""Free text such as a replica's URL or an adapter's name."""
Tier = Annotated[int, Field(ge=0, le=3)]
MAX_MANUAL_CHARS = 4000
ManualText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                              max_length=MAX_MANUAL_CHARS)]
"""What people do by hand when revive itself is unavailable: printed in the runbook documents."""

# Bounds far beyond any real estate, so that no arithmetic on them overflows or runs long.
MAX_LOAD = 1e9
"""Requests (or any load unit) per second, for loads and capacities."""
MIN_CAPACITY = 1e-3
"""An instance's capacity; the instances a plan needs (load / capacity) stay countable."""
MAX_INSTANCES = 1_000_000
MAX_SECONDS = 10_000_000


class Strict(BaseModel):
    """Base for topology models: unknown keys are typos, not extensions."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)


class Environment(StrEnum):
    """Where the topology lives; approval gates apply only in production."""

    production = "production"
    staging = "staging"
    drill = "drill"


class Redundancy(StrEnum):
    """How a service is replicated across DCs, from most to least resilient."""

    active_active = "active-active"
    active_standby = "active-standby"
    cold_standby = "cold-standby"
    single_dc = "single-dc"


class Role(StrEnum):
    """What a service is to recovery: the ramp gates on the database, watches the caches,
    and moves traffic for everything else (each such service belongs to a traffic class)."""

    database = "database"
    cache = "cache"
    service = "service"


class ToolKind(StrEnum):
    """The kinds of ops tool a runbook can act on; one adapter interface per kind."""

    registry = "registry"
    secret_store = "secret_store"
    discovery = "discovery"
    config_store = "config_store"
    deploy = "deploy"
    compute = "compute"
    traffic = "traffic"
    metrics = "metrics"
    health_checker = "health_checker"
    chat = "chat"


class Datacenter(Strict):
    name: Name
    spare_instances: Annotated[int, Field(ge=0, le=MAX_INSTANCES)] | None = None
    """Emergency instances the compute tool can grant here; None means no limit is known."""


class TierPolicy(Strict):
    """What a tier demands: the redundancy levels it may use and its recovery-time target."""

    redundancy: list[Redundancy] = Field(min_length=1)
    rto_target_s: Annotated[int, Field(gt=0, le=MAX_SECONDS)]


DEFAULT_TIER_POLICY: dict[int, TierPolicy] = {
    0: TierPolicy(redundancy=[Redundancy.active_active], rto_target_s=600),
    1: TierPolicy(
        redundancy=[Redundancy.active_active, Redundancy.active_standby], rto_target_s=1800
    ),
    2: TierPolicy(
        redundancy=[Redundancy.active_active, Redundancy.active_standby, Redundancy.cold_standby],
        rto_target_s=7200,
    ),
    3: TierPolicy(redundancy=list(Redundancy), rto_target_s=86400),
}


class OpsTool(Strict):
    """An ops tool with one endpoint per DC; ``adapter`` picks the code that talks to it."""

    kind: ToolKind
    adapter: Text = "sim"
    replicas: dict[Name, Text] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)
    """The adapter's own settings, validated by the adapter (``revive.ops.plugins``)."""


class Dependency(Strict):
    """A call from one service to another; a soft one degrades the caller, never blocks it."""

    name: Name
    soft: bool = False


class Feature(Strict):
    """A run-time switchable part of a service; priority 1 goes back on first."""

    name: Name
    priority: Annotated[int, Field(ge=1, le=MAX_INSTANCES)]
    cost: Annotated[float, Field(gt=0, le=1)]


class Service(Strict):
    """One deployable component and everything a plan or check needs to know about it."""

    name: Name
    tier: Tier
    group: Name
    redundancy: Redundancy
    depends_on: list[Dependency] = Field(default_factory=list)
    boot_requires: list[Name] = Field(default_factory=list)
    instances: dict[Name, Annotated[int, Field(ge=0, le=MAX_INSTANCES)]]
    capacity_per_instance: Annotated[float, Field(ge=MIN_CAPACITY, le=MAX_LOAD)]
    peak_load: Annotated[float, Field(ge=0, le=MAX_LOAD)]
    restart_seconds: Annotated[float, Field(gt=0, le=86400)] = 60
    boot_seconds: Annotated[float, Field(gt=0, le=86400)] = 90
    """A new instance (provisioned or deployed) takes this long to become healthy."""
    role: Role = Role.service
    traffic_class: Name | None = None
    """The GSLB domain / LB backend its users reach; role ``service`` only."""
    caches_dependency_ips: bool = False
    features: list[Feature] = Field(default_factory=list)
    owner: Text | None = None
    """Who to call about this service (a team, a rota, a phone number)."""
    manual: ManualText | None = None
    """The manual fallback beyond the generated commands, for the runbook documents."""

    @field_validator("depends_on", mode="before")
    @classmethod
    def _names_are_hard_dependencies(cls, value: object) -> object:
        """Accept the short form ``[user-db]`` for a hard dependency."""
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @cached_property
    def hard_dependencies(self) -> list[str]:
        return [d.name for d in self.depends_on if not d.soft]

    @property
    def traffic_class_name(self) -> str | None:
        """The class whose traffic reaches this service; None for shared back ends."""
        if self.role != Role.service:
            return None
        return self.traffic_class or f"tier{self.tier}"

    def instances_in(self, dc: str) -> int:
        return self.instances.get(dc, 0)

    def runs_in(self, dc: str) -> bool:
        return self.instances_in(dc) > 0


class TrafficClass(BaseModel):
    """The users of one GSLB domain / LB backend: the unit traffic moves in.

    ``priority`` is the lowest tier among its services (tier 0's traffic moves first);
    ``load_share`` is its services' share of the peak load of every ``role: service``
    service, which is also its share of the shared database and cache in a DC.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    priority: int
    services: tuple[str, ...]
    load_share: float


class Topology(Strict):
    """A whole estate. Build it with ``revive.topology.load`` to get located errors."""

    environment: Environment = Environment.production
    datacenters: list[Datacenter] = Field(min_length=1)
    tier_policy: dict[Tier, TierPolicy] = Field(default_factory=lambda: dict(DEFAULT_TIER_POLICY))
    ops_tools: dict[Name, OpsTool] = Field(default_factory=dict)
    services: list[Service] = Field(min_length=1)
    simulation: SimConfig = Field(default_factory=SimConfig)
    ramp: dict[str, Any] = Field(default_factory=dict)
    """The warm-up ramp's pacing for this estate: ``RampPolicy`` fields and
    ``scrape_interval_s`` (checked in ``validate``); a run's own parameters win."""

    @field_validator("tier_policy", mode="after")
    @classmethod
    def _fill_missing_tiers(cls, value: dict[int, TierPolicy]) -> dict[int, TierPolicy]:
        """A file may override some tiers; the others keep their defaults."""
        return {**DEFAULT_TIER_POLICY, **value}

    @property
    def dc_names(self) -> list[str]:
        return [dc.name for dc in self.datacenters]

    @property
    def groups(self) -> list[str]:
        return sorted({s.group for s in self.services})

    _by_name: dict[str, Service] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: object, /) -> None:
        self._by_name = {s.name: s for s in self.services}

    def service(self, name: str) -> Service:
        """The service called ``name``; KeyError if the topology has none."""
        return self._by_name[name]

    def has_service(self, name: str) -> bool:
        return name in self._by_name

    def datacenter(self, name: str) -> Datacenter:
        """The DC called ``name``; KeyError if the topology has none."""
        for dc in self.datacenters:
            if dc.name == name:
                return dc
        raise KeyError(name)

    @cached_property
    def traffic_classes(self) -> dict[str, TrafficClass]:
        """Every traffic class, in priority order (then by name)."""
        members: dict[str, list[Service]] = {}
        for svc in self.services:
            if (name := svc.traffic_class_name) is not None:
                members.setdefault(name, []).append(svc)
        total = sum(s.peak_load for group in members.values() for s in group)
        classes = [
            TrafficClass(
                name=name,
                priority=min(s.tier for s in group),
                services=tuple(s.name for s in group),
                load_share=(sum(s.peak_load for s in group) / total if total > 0
                            else 1.0 / len(members)),
            )
            for name, group in members.items()
        ]
        return {c.name: c for c in sorted(classes, key=lambda c: (c.priority, c.name))}

    def with_role(self, role: Role) -> list[Service]:
        return [s for s in self.services if s.role == role]

    @property
    def databases(self) -> list[Service]:
        """The shared bottleneck the ramp gates on (``role: database``)."""
        return self.with_role(Role.database)
