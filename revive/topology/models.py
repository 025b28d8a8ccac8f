"""The topology: data centers, ops tools and services, as pydantic models.

These models are the edge between a user's YAML and every plan, check and runbook. They
validate shapes and ranges on their own; cross-references (unknown service, unknown DC,
dependency cycles) need the whole file and are checked in ``validate.py``.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    field_validator,
)

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Tier = Annotated[int, Field(ge=0, le=3)]


class Strict(BaseModel):
    """Base for topology models: unknown keys are typos, not extensions."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


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


class TierPolicy(Strict):
    """What a tier demands: the redundancy levels it may use and its recovery-time target."""

    redundancy: list[Redundancy] = Field(min_length=1)
    rto_target_s: Annotated[int, Field(gt=0)]


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
    adapter: Name = "sim"
    replicas: dict[Name, Name] = Field(default_factory=dict)


class Dependency(Strict):
    """A call from one service to another; a soft one degrades the caller, never blocks it."""

    name: Name
    soft: bool = False


class Feature(Strict):
    """A run-time switchable part of a service; priority 1 goes back on first."""

    name: Name
    priority: Annotated[int, Field(ge=1)]
    cost: Annotated[float, Field(gt=0, le=1)]


class Service(Strict):
    """One deployable component and everything a plan or check needs to know about it."""

    name: Name
    tier: Tier
    group: Name
    redundancy: Redundancy
    depends_on: list[Dependency] = Field(default_factory=list)
    boot_requires: list[Name] = Field(default_factory=list)
    instances: dict[Name, Annotated[int, Field(ge=0)]]
    capacity_per_instance: Annotated[float, Field(gt=0)]
    peak_load: Annotated[float, Field(ge=0)]
    restart_seconds: Annotated[float, Field(gt=0, le=86400)] = 60
    caches_dependency_ips: bool = False
    features: list[Feature] = Field(default_factory=list)

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

    def instances_in(self, dc: str) -> int:
        return self.instances.get(dc, 0)

    def runs_in(self, dc: str) -> bool:
        return self.instances_in(dc) > 0


class Topology(Strict):
    """A whole estate. Build it with ``revive.topology.load`` to get located errors."""

    environment: Environment = Environment.production
    datacenters: list[Datacenter] = Field(min_length=1)
    tier_policy: dict[Tier, TierPolicy] = Field(default_factory=lambda: dict(DEFAULT_TIER_POLICY))
    ops_tools: dict[Name, OpsTool] = Field(default_factory=dict)
    services: list[Service] = Field(min_length=1)

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
