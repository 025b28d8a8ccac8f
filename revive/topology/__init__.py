"""The topology every runbook reads: load it from YAML with located errors, or build it.

``load(path)`` is the front door: it parses, validates shapes with pydantic, checks names
and cycles across the file, and raises ``TopologyError`` listing every problem with its
file, line and key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from revive.errors import Issue, TopologyError
from revive.topology.models import (
    DEFAULT_TIER_POLICY,
    Datacenter,
    Dependency,
    Environment,
    Feature,
    OpsTool,
    Redundancy,
    Role,
    Service,
    TierPolicy,
    ToolKind,
    Topology,
    TrafficClass,
)
from revive.topology.source import Located, parse_yaml, read_yaml
from revive.topology.validate import find_problems

__all__ = [
    "DEFAULT_TIER_POLICY",
    "Datacenter",
    "Dependency",
    "Environment",
    "Feature",
    "OpsTool",
    "Redundancy",
    "Role",
    "Service",
    "TierPolicy",
    "ToolKind",
    "Topology",
    "TrafficClass",
    "content_hash",
    "load",
    "loads",
    "parse",
    "require_databases",
]

DEFAULT_PATH = Path("runbooks/topology.yaml")

_FRIENDLY = {
    "missing": "missing required key",
    "extra_forbidden": "unknown key",
    "string_pattern_mismatch": (
        "not a valid name: 1 to 63 letters, digits, '.', '_' or '-', starting with a "
        "letter or digit"),
}
_SHOW_INPUT = {"string_pattern_mismatch"}


def load(path: Path | str = DEFAULT_PATH) -> Topology:
    """Read and validate a topology file."""
    return _build(read_yaml(path))


def loads(text: str, name: str = "<string>") -> Topology:
    """Validate a topology given as YAML text (``name`` is used in error messages)."""
    return _build(parse_yaml(text, name))


def parse(data: Any, name: str = "<data>") -> Topology:
    """Validate a topology given as plain data, e.g. built by a test or a generator."""
    return _build(Located(data=data, path=name))


def content_hash(topology: Topology) -> str:
    """A stable sha256 of the normalised topology, so a run can say which one it used."""
    return hashlib.sha256(canonical_json(topology).encode()).hexdigest()


def require_databases(topology: Topology, what: str, source: str | Path = "") -> list[Service]:
    """The ``role: database`` services, or invalid input naming the key to add.

    The drill, the ramp and the failover gate every traffic move on the database; an estate
    that declares none loads, checks and plans, but cannot be ramped safely.
    """
    found = topology.databases
    if not found:
        raise TopologyError([Issue(
            line=0, key="services", path=str(source),
            message=(f"{what} needs the database it gates traffic on: mark the database "
                     "services with `role: database` (none is declared)"),
        )])
    return found


def canonical_json(topology: Topology) -> str:
    return json.dumps(topology.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def _build(located: Located) -> Topology:
    issues = [
        located.issue(loc, f"duplicate key {loc[-1]!r}") for loc, _ in located.duplicates
    ]
    if not isinstance(located.data, dict):
        kind = type(located.data).__name__ if located.data is not None else "nothing"
        issues.append(located.issue((), f"expected a mapping at the top level, got {kind}"))
        raise TopologyError(issues)
    try:
        topology = Topology.model_validate(located.data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = tuple(p for p in error["loc"] if p != "[key]")
            issues.append(located.issue(loc, _message(error)))
        raise TopologyError(issues) from None
    issues.extend(located.issue(loc, message) for loc, message in find_problems(topology))
    if issues:
        raise TopologyError(issues)
    return topology


def _message(error: Any) -> str:
    text = _FRIENDLY.get(error["type"], error["msg"])
    shown_for = error["type"] not in _FRIENDLY or error["type"] in _SHOW_INPUT
    if shown_for and "input" in error:
        shown = repr(error["input"])
        if len(shown) <= 60:
            text += f" (got {shown})"
    return text
