"""Small estates for flow tests, written to YAML so runbooks load them like a user's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from revive.topology import Topology, parse
from tests.factories import estate, service

BOTH = {"dc1": "https://x.dc1.example", "dc2": "https://x.dc2.example"}


def tools() -> dict[str, Any]:
    kinds = ["compute", "registry", "deploy", "traffic", "metrics", "config_store",
             "secret_store", "health_checker"]
    return {kind.replace("_", "-"): {"kind": kind, "adapter": "sim", "replicas": dict(BOTH)}
            for kind in kinds}


def small(**overrides: Any) -> dict[str, Any]:
    """A database, a cache and two app services in one dependency chain, plus a loner."""
    data = estate(
        service("user-db", group="storage", role="database", peak_load=4_000,
                capacity_per_instance=1_000, instances={"dc1": 8, "dc2": 8}, restart_seconds=120,
                boot_requires=["secret-store"]),
        service("cache", group="storage", role="cache", tier=1, depends_on=["user-db"],
                peak_load=8_000, capacity_per_instance=2_000, instances={"dc1": 5, "dc2": 5},
                restart_seconds=30),
        service("api", group="api", depends_on=["cache"], peak_load=10_000,
                capacity_per_instance=1_000, instances={"dc1": 10, "dc2": 7},
                features=[{"name": "previews", "priority": 1, "cost": 0.1}]),
        service("caller", group="api", tier=1, caches_dependency_ips=True, peak_load=1_000,
                capacity_per_instance=1_000, instances={"dc1": 2, "dc2": 2}),
        service("reports", group="batch", tier=3, redundancy="single-dc", peak_load=100,
                capacity_per_instance=100, instances={"dc1": 1}),
        ops_tools=tools(),
    )
    data.update(overrides)
    return data


def write(tmp_path: Path, data: dict[str, Any]) -> tuple[Topology, str]:
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return parse(data), str(path)
