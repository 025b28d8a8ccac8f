"""Small topologies for tests, built as plain data so each test shows what it changes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from revive.topology import Topology, parse

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "runbooks" / "topology.yaml"


def service(name: str, **fields: Any) -> dict[str, Any]:
    """A healthy tier-0 active-active service sized for 100% in each DC, unless overridden."""
    data: dict[str, Any] = {
        "name": name,
        "tier": 0,
        "group": "core",
        "redundancy": "active-active",
        "instances": {"dc1": 2, "dc2": 2},
        "capacity_per_instance": 100,
        "peak_load": 200,
        "restart_seconds": 60,
    }
    data.update(fields)
    return data


def tools(**overrides: Any) -> dict[str, Any]:
    """One replicated tool of the kinds the rules look at."""
    both = {"dc1": "https://x.dc1.example", "dc2": "https://x.dc2.example"}
    data = {
        "vault": {"kind": "secret_store", "adapter": "sim", "replicas": dict(both)},
        "health": {"kind": "health_checker", "adapter": "sim", "replicas": dict(both)},
    }
    data.update(overrides)
    return data


def estate(*services: dict[str, Any], **fields: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "environment": "drill",
        "datacenters": [{"name": "dc1"}, {"name": "dc2"}],
        "ops_tools": tools(),
        "services": list(services) or [service("app")],
    }
    data.update(fields)
    return data


def build(*services: dict[str, Any], **fields: Any) -> Topology:
    return parse(estate(*services, **fields))


def example_data() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE.read_text())


def dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(copy.deepcopy(data), sort_keys=False)
