"""dc-capacity and spare-capacity on N DCs: every possible loss, every survivor."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from revive.readiness import Finding, Severity, run_check
from revive.readiness.rules import dc_capacity, spare_capacity
from revive.topology import Topology, load, parse
from tests.factories import EXAMPLE, estate, service

DCS = ("east", "west", "north")


def replicated(dcs: tuple[str, ...]) -> dict[str, Any]:
    """A secret store and a health checker in every DC, so only capacity can be wrong."""
    urls = {dc: f"https://x.{dc}.example" for dc in dcs}
    return {
        "vault": {"kind": "secret_store", "replicas": dict(urls)},
        "health": {"kind": "health_checker", "replicas": dict(urls)},
    }


def three_dcs(*services: dict[str, Any], spare: dict[str, int] | None = None) -> Topology:
    spare = spare or {}
    datacenters = [{"name": dc, **({"spare_instances": spare[dc]} if dc in spare else {})}
                   for dc in DCS]
    return parse(estate(*services, datacenters=datacenters, ops_tools=replicated(DCS)))


def sized(name: str, per_dc: dict[str, int], **fields: Any) -> dict[str, Any]:
    """A service with a 1,000 req/s peak and 100 req/s per instance."""
    return service(name, peak_load=1000, capacity_per_instance=100, instances=per_dc, **fields)


def of(rule: str, topology: Topology) -> list[Finding]:
    return [f for f in run_check(topology).findings if f.rule == rule]


def test_an_n_plus_1_estate_has_no_capacity_error() -> None:
    """Three DCs, each sized for 50-60% of every service's peak, survive any one loss."""
    topo = three_dcs(
        sized("db", {"east": 5, "west": 6, "north": 5}, role="database"),
        sized("cache", {"east": 6, "west": 5, "north": 6}, role="cache"),
        sized("web", {"east": 5, "west": 5, "north": 6}, depends_on=["db", "cache"],
              boot_requires=["vault"]),
        sized("api", {"east": 6, "west": 6, "north": 5}, traffic_class="api", tier=1,
              redundancy="active-standby"),
        spare={"east": 100, "west": 100, "north": 100},
    )
    assert run_check(topo).findings == []


def test_an_undersized_survivor_is_named_with_the_lost_dc_and_the_gap() -> None:
    topo = three_dcs(sized("web", {"east": 5, "west": 5, "north": 3}),
                     sized("db", dict.fromkeys(DCS, 5), role="database"))
    found = of("dc-capacity", topo)
    # north falls short whichever of the others is lost; east and west never do
    assert [(f.subject, f.severity) for f in found] == [("web@north", Severity.error)] * 2
    east, west = sorted(found, key=lambda f: f.message)
    assert east.message == (
        "losing east sends north 50% of peak (500 req/s); north carries 300 of 1,000 req/s "
        "peak (30%); gap 200 req/s (2 instance(s))"
    )
    assert "losing west sends north 50%" in west.message
    assert "add 2 instance(s) of web in north" in east.hint
    assert "revive plan provision --lost-dc east" in east.hint


def test_a_shared_database_must_carry_every_class_its_survivor_takes() -> None:
    """web and api are half the load each; api runs in east and west only. Losing one of
    those sends the other half of web and all of api: 75% of the database's peak."""
    def with_db(per_dc: int) -> Topology:
        return three_dcs(
            sized("web", dict.fromkeys(DCS, 5), traffic_class="web"),
            sized("api", {"east": 10, "west": 10}, traffic_class="api"),
            sized("db", dict.fromkeys(DCS, per_dc), role="database"),
        )

    assert [f for f in of("dc-capacity", with_db(8)) if f.subject.startswith("db@")] == []
    short = {f.subject: f.message for f in of("dc-capacity", with_db(7))
             if f.subject.startswith("db@")}
    assert set(short) == {"db@east", "db@west"}  # north takes only a quarter
    assert short["db@west"].startswith("losing east sends west 75% of peak (750 req/s)")
    assert short["db@east"].startswith("losing west sends east 75% of peak (750 req/s)")


def test_spare_capacity_short_of_the_failover_plan_is_an_error() -> None:
    services = (sized("web", {"east": 5, "west": 5, "north": 3}),
                sized("db", dict.fromkeys(DCS, 6), role="database"))
    # losing east or west: north needs 1.2 x 500 / 100 = 6 web, has 3 -> adds 3
    found = of("spare-capacity", three_dcs(*services, spare={"north": 2}))
    assert [(f.subject, f.severity) for f in found] == [("north", Severity.error)] * 2
    assert sorted(f.message for f in found) == [
        "losing east needs 3 emergency instance(s) in north; it has 2 spare, short by 1",
        "losing west needs 3 emergency instance(s) in north; it has 2 spare, short by 1",
    ]
    assert of("spare-capacity", three_dcs(*services, spare={"north": 3})) == []
    assert of("spare-capacity", three_dcs(*services)) == []  # no limit known


def test_a_single_dc_estate_has_no_loss_to_survive() -> None:
    topo = parse(estate(service("app", instances={"dc1": 1}), datacenters=[{"name": "dc1"}],
                        ops_tools={}))
    assert list(dc_capacity(topo)) == []
    assert list(spare_capacity(topo)) == []


def todays_subjects(topology: Topology) -> set[str]:
    """The two-DC rule as it was: every DC carries 100% of tier-0/1 peak on its own."""
    return {
        f"{svc.name}@{dc}"
        for dc in topology.dc_names
        for svc in topology.services
        if svc.tier <= 1 and svc.peak_load > 0
        and svc.instances_in(dc) * svc.capacity_per_instance < svc.peak_load
    }


def test_on_two_dcs_the_example_gets_todays_findings() -> None:
    topo = load(EXAMPLE)
    assert {f.subject for f in dc_capacity(topo)} == todays_subjects(topo)


@st.composite
def two_dc_estates(draw: st.DrawFn) -> Topology:
    services = [
        service(
            f"s{i}",
            tier=draw(st.integers(0, 3)),
            role=draw(st.sampled_from(["service", "database", "cache"])),
            instances={"dc1": draw(st.integers(0, 6)), "dc2": draw(st.integers(0, 6))},
            capacity_per_instance=draw(st.sampled_from([50, 100, 150, 333])),
            peak_load=draw(st.integers(0, 1000)),
        )
        for i in range(draw(st.integers(1, 6)))
    ]
    for svc in services:
        if svc["role"] == "service":
            svc["traffic_class"] = draw(st.sampled_from(["web", "api", None]))
    return parse(estate(*services))


@settings(max_examples=200, deadline=None)
@given(topo=two_dc_estates())
def test_on_two_dcs_any_estate_gets_todays_findings(topo: Topology) -> None:
    assert {f.subject for f in dc_capacity(topo)} == todays_subjects(topo)
