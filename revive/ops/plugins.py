"""The plug-in point: which adapter code talks to which ops tool, found by entry point.

Every adapter, the built-in ones included, is an ``Adapter`` published in the entry-point
group ``revive.adapters``; a team's own package adds one by declaring it in its
``pyproject.toml``, without editing revive::

    [project.entry-points."revive.adapters"]
    my-gslb = "my_package.gslb:ADAPTER"

An ``Adapter`` names the tool kinds it serves, a pydantic model for its ``settings:`` (unknown
keys are typos), and a factory per kind that receives a ``ToolContext``: the tool's validated
settings, its replicas, the DC the run executes from, and the shared replica rules
(``ReplicatedEndpoint`` for HTTP, ``ReplicaSet`` for anything else).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from revive.errors import InputError
from revive.ops.endpoint import EndpointPolicy, ReplicatedEndpoint
from revive.ops.replicas import ReplicaSet
from revive.topology.models import OpsTool, ToolKind, Topology

log = logging.getLogger("revive.ops")

ENTRY_POINT_GROUP = "revive.adapters"

Loc = tuple[str | int, ...]


class AdapterSettings(BaseModel):
    """Base of every adapter's ``settings:`` model: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoSettings(AdapterSettings):
    """For adapters that need nothing beyond the tool's replicas."""


@dataclass(frozen=True)
class ToolContext:
    """Everything an adapter factory gets to build its client for one ops tool."""

    name: str
    tool: OpsTool
    settings: Any
    run_dc: str | None
    timeout_s: float = 30.0
    sim_url: str | None = None
    policy: EndpointPolicy | None = None
    """Replica rules for this tool (an ``EndpointPolicy`` is a ``ReplicaPolicy`` too)."""
    topology: Topology | None = None
    """The estate (services, DCs, ``spare_instances``) for adapters that need it."""

    @property
    def replicas(self) -> dict[str, str]:
        """DC -> the replica's address, as the topology gives it."""
        return dict(self.tool.replicas)

    @property
    def prefer_dc(self) -> str | None:
        return self.run_dc if self.run_dc in self.tool.replicas else None

    def endpoint(
        self, replicas: Mapping[str, str] | None = None, **kwargs: Any
    ) -> ReplicatedEndpoint:
        """An HTTP client over the tool's replicas (or ``replicas``, e.g. with a path added)."""
        chosen = dict(replicas if replicas is not None else self.replicas)
        prefer = self.run_dc if self.run_dc in chosen else None
        kwargs.setdefault("timeout", self.timeout_s)
        if self.policy is not None:
            kwargs.setdefault("policy", self.policy)
        return ReplicatedEndpoint(self.name, chosen, prefer_dc=prefer, **kwargs)

    def replica_set(self, dcs: Mapping[str, object] | None = None, **kwargs: Any) -> ReplicaSet:
        """The replica rules for a tool not reached over HTTP (a socket, kazoo, a client)."""
        chosen = dict(dcs if dcs is not None else self.replicas)
        prefer = self.run_dc if self.run_dc in chosen else None
        if self.policy is not None:
            kwargs.setdefault("policy", self.policy)
        return ReplicaSet(self.name, chosen, prefer_dc=prefer, **kwargs)


Factory = Callable[[ToolContext], object]


@dataclass(frozen=True)
class Adapter:
    """One adapter: the kinds it serves, its settings model, a factory per kind.

    A kind mapped to ``None`` is accepted in a topology but built by no factory (chat tools:
    revive's chat is configured from the environment). Factories must not open connections:
    clients connect on first use, so a toolbox that fails half-built leaves nothing open.
    """

    name: str
    kinds: Mapping[ToolKind, Factory | None]
    settings: type[AdapterSettings] = NoSettings
    summary: str = ""

    def factory(self, kind: ToolKind) -> Factory | None:
        return self.kinds.get(kind)


def secret(env: str | None = None, file: str | None = None, *, what: str) -> SecretStr | None:
    """A credential from the environment variable ``env`` or the file ``file``.

    Credentials never live in the topology itself: settings name where to find them
    (``token_env: VAULT_TOKEN``, ``password_file: /run/secrets/x``). Raises ``InputError``
    when a named source is missing, so a run fails before acting rather than half-way.
    """
    if env:
        value = os.environ.get(env)
        if value is None:
            raise InputError(f"{what}: environment variable {env} is not set")
        return SecretStr(value)
    if file:
        try:
            return SecretStr(Path(file).read_text().strip())
        except OSError as exc:
            raise InputError(f"{what}: cannot read {file}: {exc.strerror}") from exc
    return None


@functools.cache
def _discover() -> tuple[dict[str, Adapter], dict[str, str]]:
    found: dict[str, Adapter] = {}
    broken: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            adapter = ep.load()
        except Exception as exc:  # a broken plug-in must not take the others down
            broken[ep.name] = f"{type(exc).__name__}: {exc}"
            log.warning("adapter %s (%s) failed to load: %s", ep.name, ep.value, exc)
            continue
        if not isinstance(adapter, Adapter):
            broken[ep.name] = f"{ep.value} is not a revive.ops.plugins.Adapter"
            continue
        found.setdefault(ep.name, adapter)
    return found, broken


def adapters() -> dict[str, Adapter]:
    """Every adapter installed: the built-ins and those of any installed package."""
    return dict(_discover()[0])


def adapter(name: str) -> Adapter:
    """The adapter called ``name``; ``InputError`` naming the installed ones otherwise."""
    found, broken = _discover()
    if name in found:
        return found[name]
    if name in broken:
        raise InputError(f"adapter {name!r} is installed but failed to load: {broken[name]}")
    raise InputError(f"unknown adapter {name!r} (installed: {', '.join(sorted(found))})")


def _friendly(err: Mapping[str, Any]) -> str:
    if err["type"] == "missing":
        return "required"
    if err["type"] == "extra_forbidden":
        return "unknown setting"
    return str(err["msg"])


def tool_problems(name: str, tool: OpsTool) -> list[tuple[Loc, str]]:
    """Whether the tool's adapter exists, serves its kind, and accepts its settings."""
    base: Loc = ("ops_tools", name)
    found, broken = _discover()
    chosen = found.get(tool.adapter)
    if chosen is None:
        why = (f"adapter {tool.adapter!r} failed to load: {broken[tool.adapter]}"
               if tool.adapter in broken else
               f"unknown adapter {tool.adapter!r} (installed: {', '.join(sorted(found))})")
        return [((*base, "adapter"), why)]
    if tool.kind not in chosen.kinds:
        kinds = ", ".join(sorted(str(k) for k in chosen.kinds))
        return [((*base, "adapter"),
                 f"adapter {tool.adapter!r} does not serve kind {tool.kind} (it serves: {kinds})")]
    try:
        chosen.settings.model_validate(tool.settings)
    except ValidationError as exc:
        return [((*base, "settings", *err["loc"]), _friendly(err)) for err in exc.errors()]
    return []


def settings_of(name: str, tool: OpsTool) -> AdapterSettings:
    """The tool's settings, validated by its adapter (``InputError`` when they are wrong)."""
    problems = tool_problems(name, tool)
    if problems:
        raise InputError("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))
    return adapter(tool.adapter).settings.model_validate(tool.settings)
