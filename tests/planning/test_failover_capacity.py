"""The failover capacity plan: what every survivor of a DC loss must add."""

from __future__ import annotations

from typing import Any

import pytest

from revive.errors import PlanningError
from revive.planning import plan_capacity, plan_failover_capacity
from revive.topology import Topology, load, parse
from tests.factories import EXAMPLE, build, estate, service

DCS = ("east", "west", "north")


def three_dcs(*services: dict[str, Any], **fields: Any) -> Topology:
    """An estate in three DCs that are not called dc1/dc2, with no ops tools to distract."""
    data = estate(*services, datacenters=[{"name": dc} for dc in DCS], ops_tools={})
    data.update(fields)
    return parse(data)


def lines(plan, dc: str) -> dict[str, tuple[int, int, int]]:
    (survivor,) = [s for s in plan.survivors if s.dc == dc]
    return {line.service: (line.have, line.need, line.add) for line in survivor.services}


@pytest.mark.parametrize("lost", ["dc1", "dc2"])
@pytest.mark.parametrize("share", [None, 1.5])
def test_on_two_dcs_the_survivor_gets_todays_plan(lost: str, share: float | None) -> None:
    topo = load(EXAMPLE)
    survivor = "dc2" if lost == "dc1" else "dc1"
    plan = plan_failover_capacity(topo, lost, share=share)
    today = plan_capacity(topo, survivor, share=share)
    assert [s.dc for s in plan.survivors] == [survivor]
    got = {line.service: line.model_dump() for line in plan.survivors[0].services}
    for line in today.services:
        if line.service in got:
            assert got[line.service] == line.model_dump(exclude={"share"})
        else:  # left out only when there is nothing to have or need
            assert (line.have, line.need) == (0, 0)
    assert list(got) == [line.service for line in today.services if line.service in got]
    assert plan.survivors[0].total_add == today.total_add
    assert plan.survivors[0].share == 1.0


def test_three_dcs_split_the_lost_dcs_load_by_class() -> None:
    topo = three_dcs(
        # web runs everywhere: losing east sends each survivor half of its peak
        service("web", traffic_class="web", peak_load=3000, capacity_per_instance=100,
                instances={"east": 10, "west": 10, "north": 10}),
        # api runs in east and west only: west takes all of it, north none
        service("api", traffic_class="api", tier=2, peak_load=1000, capacity_per_instance=100,
                instances={"east": 5, "west": 5}),
        service("db", role="database", peak_load=1000, capacity_per_instance=100,
                instances={"east": 4, "west": 4, "north": 4}),
    )
    plan = plan_failover_capacity(topo, "east")
    assert plan.lost_dc == "east"
    assert [s.dc for s in plan.survivors] == ["west", "north"]
    # web: 1.2 x 0.5 x 3000 / 100 = 18; api: 1.0 x 1000 / 100 = 10;
    # db carries web (75% of load) x 0.5 + api (25%) x 1 = 62.5% in west: 1.2 x 625 / 100
    assert lines(plan, "west") == {"web": (10, 18, 8), "db": (4, 8, 4), "api": (5, 10, 5)}
    # north: db carries 37.5% = 1.2 x 375 / 100 -> 5; api neither runs nor is needed there
    assert lines(plan, "north") == {"web": (10, 18, 8), "db": (4, 5, 1)}
    west, north = plan.survivors
    assert (west.share, north.share) == (0.625, 0.375)
    assert (west.total_add, north.total_add) == (17, 9)


def test_measured_weights_decide_where_the_load_goes() -> None:
    topo = three_dcs(service("web", traffic_class="web", peak_load=1000,
                             capacity_per_instance=100,
                             instances={"east": 5, "west": 5, "north": 5}))
    weights = {"web": {"east": 0.5, "west": 0.4, "north": 0.1}}
    plan = plan_failover_capacity(topo, "east", weights=weights, share=1.0)
    assert lines(plan, "west") == {"web": (5, 8, 3)}   # 0.8 of 1000 req/s
    assert lines(plan, "north") == {"web": (5, 2, 0)}  # 0.2 of 1000 req/s


def test_a_share_replaces_the_tier_margin_on_every_tier() -> None:
    topo = three_dcs(
        service("web", tier=0, traffic_class="web", peak_load=1000, capacity_per_instance=100,
                instances=dict.fromkeys(DCS, 1)),
        service("reco", tier=3, traffic_class="reco", peak_load=1000,
                capacity_per_instance=100, instances=dict.fromkeys(DCS, 1)),
    )
    default = plan_failover_capacity(topo, "north")
    assert lines(default, "east") == {"web": (1, 6, 5), "reco": (1, 5, 4)}  # 1.2 x 500, 500
    doubled = plan_failover_capacity(topo, "north", share=2.0)
    assert lines(doubled, "east") == {"web": (1, 10, 9), "reco": (1, 10, 9)}


def test_the_json_shape_is_the_documented_one() -> None:
    data = plan_failover_capacity(build(), "dc1").model_dump(mode="json")
    assert data == {
        "lost_dc": "dc1",
        "survivors": [{
            "dc": "dc2",
            "share": 1.0,
            "services": [{"service": "app", "tier": 0, "have": 2, "need": 3, "add": 1}],
            "total_add": 1,
        }],
    }


def test_an_unknown_lost_dc_names_the_known_ones() -> None:
    with pytest.raises(PlanningError, match=r"unknown datacenter 'dc9' \(topology has: "
                                            r"east, west, north\)"):
        plan_failover_capacity(three_dcs(service("web", instances={"east": 1})), "dc9")


@pytest.mark.parametrize("share", [0, -1, 11])
def test_a_share_out_of_range_is_refused(share: float) -> None:
    with pytest.raises(PlanningError, match="share must be above 0"):
        plan_failover_capacity(build(), "dc1", share=share)


def test_a_single_dc_estate_has_no_survivor() -> None:
    topo = build(service("app", instances={"dc1": 2}), datacenters=[{"name": "dc1"}],
                 ops_tools={})
    with pytest.raises(PlanningError, match="no DC survives"):
        plan_failover_capacity(topo, "dc1")
