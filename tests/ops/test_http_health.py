"""http-health against real local servers: instances (ok, 500, down, slow) seen from a
``direct`` checker and from checkers "in other DCs" (real local forward proxies)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from revive.errors import InputError, NotFoundError, TopologyError, TransientOpsError
from revive.lab.daemon import free_port, port_open
from revive.ops.adapters.http_health import (
    ADAPTER,
    HttpHealth,
    majority,
    parse_status_ranges,
)
from revive.ops.plugins import ToolContext, adapter, settings_of
from revive.ops.replicas import BreakerState
from revive.topology import loads
from revive.topology.models import ToolKind
from tests.ops.http_servers import ForwardProxy, PathServer, running

TOOL = "health"


class Estate:
    """One server standing for every instance, a dead port, and two checker proxies."""

    def __init__(self) -> None:
        self.instances = PathServer("instances", hang_s=20.0)
        self.proxies = {"dc2": ForwardProxy("dc2"), "dc3": ForwardProxy("dc3")}
        self.dead_port = free_port()
        assert not port_open(self.dead_port)

    def url(self, path: str) -> str:
        return f"{self.instances.url}{path}"

    @property
    def dead(self) -> str:
        return f"http://127.0.0.1:{self.dead_port}/healthz"


@pytest.fixture
def estate() -> Iterator[Estate]:
    found = Estate()
    with running(found.proxies["dc2"], found.proxies["dc3"], found.instances):
        found.instances.set("/api/1", 200)
        found.instances.set("/api/2", 500)
        found.instances.set("/api/4", 204)
        found.instances.set("/slow", "hang")
        yield found


def topology_text(replicas: dict[str, str], settings: dict[str, Any]) -> str:
    data = {
        "environment": "drill",
        "datacenters": [{"name": "dc1"}, {"name": "dc2"}, {"name": "dc3"}],
        "ops_tools": {TOOL: {"kind": "health_checker", "adapter": "http-health",
                             "replicas": replicas, "settings": settings}},
        "services": [
            {"name": "api", "tier": 0, "group": "core", "redundancy": "active-active",
             "instances": {"dc1": 3, "dc2": 1}, "capacity_per_instance": 100,
             "peak_load": 100},
            {"name": "db", "tier": 0, "group": "core", "redundancy": "active-active",
             "role": "database", "instances": {"dc1": 1, "dc2": 1},
             "capacity_per_instance": 100, "peak_load": 100},
        ],
    }
    return yaml.safe_dump(data, sort_keys=False)


def build(replicas: dict[str, str], settings: dict[str, Any]) -> HttpHealth:
    """The adapter as a run builds it: topology text -> validated settings -> factory."""
    topology = loads(topology_text(replicas, settings))
    tool = topology.ops_tools[TOOL]
    ctx = ToolContext(TOOL, tool, settings_of(TOOL, tool), run_dc="dc1", timeout_s=5.0,
                      topology=topology)
    made = ADAPTER.factory(ToolKind.health_checker)(ctx)  # type: ignore[misc]
    assert isinstance(made, HttpHealth)
    return made


def api_settings(estate: Estate, **extra: Any) -> dict[str, Any]:
    urls = [estate.url("/api/1"), estate.url("/api/2"), estate.dead, estate.url("/api/4")]
    return {"timeout_s": 1.0, "services": {"api": {"urls": {"dc1": urls}}}, **extra}


def healthy(health: HttpHealth, dc: str = "dc1") -> dict[str, int]:
    async def main() -> dict[str, int]:
        try:
            return await health.healthy(dc)
        finally:
            await health.aclose()

    return asyncio.run(main())


def probe(health: HttpHealth) -> dict[str, bool]:
    async def main() -> dict[str, bool]:
        try:
            return await health.probe()
        finally:
            await health.aclose()

    return asyncio.run(main())


def test_the_entry_point_resolves_to_this_adapter() -> None:
    assert adapter("http-health") is ADAPTER
    assert ToolKind.health_checker in ADAPTER.kinds


def test_three_checkers_outvote_one_partitioned_checker(estate: Estate) -> None:
    """/api/4 answers direct and via dc3 but not via dc2 (partition): 2 of 3 say healthy."""
    estate.proxies["dc2"].partition(estate.url("/api/4"))
    health = build({"dc1": "direct", "dc2": estate.proxies["dc2"].url,
                    "dc3": estate.proxies["dc3"].url}, api_settings(estate))
    assert healthy(health) == {"api": 2}  # /api/1 and /api/4; not the 500 nor the dead one
    # The checks really left from the other DCs' vantage points.
    assert estate.url("/api/4") in estate.proxies["dc2"].forwarded
    assert estate.url("/api/4") in estate.proxies["dc3"].forwarded


def test_a_tie_between_two_checkers_counts_as_unhealthy(estate: Estate) -> None:
    """Direct says /api/4 is up, dc2 cannot reach it: 1-1 is a partition, counted down."""
    estate.proxies["dc2"].partition(estate.url("/api/4"))
    health = build({"dc1": "direct", "dc2": estate.proxies["dc2"].url}, api_settings(estate))
    assert healthy(health) == {"api": 1}


def test_majority_is_strict() -> None:
    assert majority([True, True, False])
    assert not majority([True, False])
    assert not majority([])
    assert majority([True])


def test_a_checker_whose_proxy_is_down_is_excluded_not_a_no_vote(estate: Estate) -> None:
    estate.proxies["dc2"].down()
    health = build({"dc1": "direct", "dc2": estate.proxies["dc2"].url}, api_settings(estate))
    # Counted as a "no", dc2 would tie every healthy instance to 1-1 and report 0.
    assert healthy(health) == {"api": 2}
    health = build({"dc1": "direct", "dc2": estate.proxies["dc2"].url}, api_settings(estate))
    assert probe(health) == {"dc1": True, "dc2": False}


def test_a_dead_proxy_gets_a_circuit_breaker_and_calls_still_answer(estate: Estate) -> None:
    estate.proxies["dc3"].down()
    health = build({"dc1": "direct", "dc3": estate.proxies["dc3"].url}, api_settings(estate))

    async def main() -> list[dict[str, int]]:
        try:
            return [await health.healthy("dc1") for _ in range(4)]
        finally:
            await health.aclose()

    assert asyncio.run(main()) == [{"api": 2}] * 4
    assert health.replica_set.breaker_state("dc3") is BreakerState.OPEN


def test_no_reachable_checker_is_a_transient_error(estate: Estate) -> None:
    for proxy in estate.proxies.values():
        proxy.down()
    replicas = {dc: proxy.url for dc, proxy in estate.proxies.items()}
    with pytest.raises(TransientOpsError, match=r"health: no health checker reachable") as info:
        healthy(build(replicas, api_settings(estate)))
    assert "dc2" in str(info.value) and "dc3" in str(info.value)
    assert probe(build(replicas, api_settings(estate))) == {"dc2": False, "dc3": False}


def test_a_slow_instance_counts_as_unhealthy_within_the_timeout(estate: Estate) -> None:
    settings = api_settings(estate, timeout_s=0.5)
    settings["services"]["slow"] = {"urls": {"dc1": [estate.url("/slow"), estate.url("/api/1")]}}
    health = build({"dc1": "direct", "dc3": estate.proxies["dc3"].url}, settings)
    assert healthy(health) == {"api": 2, "slow": 1}


def test_url_template_uses_instance_counts_from_the_topology(estate: Estate) -> None:
    estate.instances.set("/dc1/api/1", 200)
    estate.instances.set("/dc1/api/2", 200)
    estate.instances.set("/dc1/api/3", 503)
    estate.instances.set("/dc2/api/1", 200)
    settings = {"timeout_s": 1.0, "template_services": ["api"],
                "url": f"http://127.0.0.1:{estate.instances.port}/{{dc}}/{{service}}/{{instance}}",
                "expect_status": ["200-204"]}
    replicas = {"dc1": "direct", "dc3": estate.proxies["dc3"].url}
    assert healthy(build(replicas, settings), "dc1") == {"api": 2}
    assert healthy(build(replicas, settings), "dc2") == {"api": 1}
    assert healthy(build(replicas, settings), "dc3") == {}  # no instances there
    with pytest.raises(NotFoundError, match="unknown datacenter 'dc9'"):
        healthy(build(replicas, settings), "dc9")


def test_expect_status_decides_what_healthy_means(estate: Estate) -> None:
    settings = api_settings(estate, expect_status=[200, "500-503"])
    assert healthy(build({"dc1": "direct"}, settings)) == {"api": 2}  # /api/1, /api/2


@pytest.mark.parametrize(
    ("settings", "where"),
    [
        ({}, "ops_tools.health.settings: Value error, give `services`"),
        ({"services": {"api": {}}}, "ops_tools.health.settings.services.api.urls: required"),
        ({"services": {"api": {"urls": {"dc1": ["ftp://x/h"]}}}},
         "ops_tools.health.settings.services.api.urls.dc1[0]:"),
        ({"url": "http://{service}-{host}.{dc}/h"}, "ops_tools.health.settings.url:"),
        ({"url": "http://{service}/h", "expect_status": "2xx"},
         "ops_tools.health.settings.expect_status:"),
        ({"url": "http://{service}/h", "timeout": 3}, "ops_tools.health.settings.timeout:"),
    ],
)
def test_settings_errors_name_the_key(settings: dict[str, Any], where: str) -> None:
    with pytest.raises(TopologyError) as info:
        loads(topology_text({"dc1": "direct"}, settings))
    assert where in str(info.value)


def test_a_bad_checker_address_names_the_replica() -> None:
    settings = {"url": "http://{service}-{instance}.{dc}.internal:8080/healthz"}
    with pytest.raises(InputError, match=r"ops_tools\.health\.replicas\.dc2: 'proxy:3128'"):
        build({"dc1": "direct", "dc2": "proxy:3128"}, settings)


def test_status_ranges_parse() -> None:
    assert parse_status_ranges("200-299") == ((200, 299),)
    assert parse_status_ranges([200, "300-302"]) == ((200, 200), (300, 302))
    with pytest.raises(ValueError, match="statuses are 100-599"):
        parse_status_ranges("299-200")
