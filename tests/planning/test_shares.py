"""Where a lost DC's users go, on random N-DC estates (hypothesis).

The weights are what a GSLB would hold: per traffic class, per DC, summing to 1, with
zeros (a DC that does not serve a class) written out or left out of the mapping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from revive.errors import PlanningError
from revive.planning.shares import (
    ClassWeights,
    dc_load_share,
    default_weights,
    failover_shares,
    failover_weights,
)
from revive.topology import Topology, parse
from tests.factories import build, estate, service

TOL = 1e-9
DC_NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,9}", fullmatch=True)
CLASS_NAMES = st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True)
WEIGHTS = st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1.0))


@dataclass(frozen=True)
class Case:
    topology: Topology
    weights: ClassWeights
    lost: str


def _class_weights(draw: st.DrawFn, dcs: list[str]) -> dict[str, float]:
    """One class's weights: random, zeros included, some zeros left out, summing to 1."""
    raw = {dc: draw(WEIGHTS) for dc in dcs}
    if not any(raw.values()):
        raw[draw(st.sampled_from(dcs))] = 1.0
    total = math.fsum(raw.values())
    omit_zeros = draw(st.booleans())
    return {dc: w / total for dc, w in raw.items() if w > 0 or not omit_zeros}


@st.composite
def cases(draw: st.DrawFn) -> Case:
    dcs = draw(st.lists(DC_NAMES, min_size=2, max_size=5, unique=True))
    classes = draw(st.lists(CLASS_NAMES, min_size=1, max_size=4, unique=True))
    services = [
        service(
            f"s{i}",
            tier=draw(st.integers(0, 3)),
            traffic_class=name,
            instances={dc: draw(st.integers(0, 3)) for dc in dcs},
            peak_load=draw(st.integers(0, 5000)),
        )
        for i, name in enumerate(classes)
    ]
    services.append(service("db", role="database", instances=dict.fromkeys(dcs, 1)))
    topology = parse(estate(*services, datacenters=[{"name": dc} for dc in dcs],
                            ops_tools={}))
    weights = {name: _class_weights(draw, dcs) for name in classes}
    return Case(topology, weights, draw(st.sampled_from(dcs)))


def _served(per_dc: dict[str, float], dc: str) -> bool:
    return per_dc.get(dc, 0.0) > 0


@settings(max_examples=300, deadline=None)
@given(case=cases())
def test_a_lost_dcs_users_go_to_the_survivors_in_proportion(case: Case) -> None:
    named = {dc for per_dc in case.weights.values() for dc in per_dc}
    if named <= {case.lost}:  # the weights know of no other DC: nowhere to go
        with pytest.raises(PlanningError, match="no DC survives"):
            failover_weights(case.weights, case.lost)
        return
    after = failover_weights(case.weights, case.lost)
    assert set(after) == set(case.weights)
    for name, before in case.weights.items():
        moved = after[name]
        survivors = {dc: w for dc, w in moved.items() if dc != case.lost}
        assert moved.get(case.lost, 0.0) == 0.0
        assert math.isclose(math.fsum(survivors.values()), 1.0, abs_tol=TOL)
        served_before = [dc for dc in survivors if _served(before, dc)]
        for dc in served_before:
            assert moved[dc] > 0, f"{dc} served {name} before the loss and is drained"
        for a in served_before:
            for b in served_before:
                assert math.isclose(moved[a] * before[b], moved[b] * before[a], rel_tol=TOL)
        if served_before:
            assert all(w == 0 for dc, w in survivors.items() if dc not in served_before)


@settings(max_examples=200, deadline=None)
@given(case=cases())
def test_a_class_only_the_lost_dc_served_is_spread_evenly(case: Case) -> None:
    only_lost = {name: {case.lost: 1.0} for name in case.weights}
    for shares in failover_shares(case.topology, case.lost, only_lost):
        survivors = len(case.topology.dc_names) - 1
        assert all(math.isclose(w, 1 / survivors) for w in shares.classes.values())


@settings(max_examples=200, deadline=None)
@given(case=cases())
def test_survivors_carry_all_the_load_after_a_loss(case: Case) -> None:
    topo = case.topology
    before = default_weights(topo)
    for per_dc in before.values():
        assert math.isclose(math.fsum(per_dc.values()), 1.0, abs_tol=TOL)
    assert math.isclose(math.fsum(dc_load_share(topo, before, dc) for dc in topo.dc_names),
                        1.0, abs_tol=TOL)
    shares = failover_shares(topo, case.lost, case.weights)
    assert [s.dc for s in shares] == [dc for dc in topo.dc_names if dc != case.lost]
    assert math.isclose(math.fsum(s.load_share for s in shares), 1.0, abs_tol=TOL)
    for name in topo.traffic_classes:
        assert math.isclose(math.fsum(s.classes[name] for s in shares), 1.0, abs_tol=TOL)


def test_a_class_running_in_some_dcs_is_split_only_over_them() -> None:
    topo = build(
        service("a", traffic_class="web", instances={"dc1": 1, "dc2": 1}),
        service("b", traffic_class="api", instances={"dc2": 1}),
        datacenters=[{"name": "dc1"}, {"name": "dc2"}],
    )
    assert default_weights(topo) == {
        "web": {"dc1": 0.5, "dc2": 0.5},
        "api": {"dc1": 0.0, "dc2": 1.0},
    }


def test_a_database_carries_the_load_of_every_class_its_dc_serves() -> None:
    topo = parse(estate(
        service("web", traffic_class="web", peak_load=300,
                instances={"east": 1, "west": 1, "north": 1}),
        service("api", traffic_class="api", peak_load=100, instances={"east": 1, "west": 1}),
        service("db", role="database", instances={"east": 1, "west": 1, "north": 1}),
        datacenters=[{"name": "east"}, {"name": "west"}, {"name": "north"}], ops_tools={},
    ))
    shares = {s.dc: s for s in failover_shares(topo, "east")}
    # web (75% of load) goes half to each survivor; api (25%) only to west
    assert shares["west"].classes == {"web": 0.5, "api": 1.0}
    assert shares["north"].classes == {"web": 0.5, "api": 0.0}
    assert math.isclose(shares["west"].load_share, 0.75 * 0.5 + 0.25)
    assert math.isclose(shares["north"].load_share, 0.75 * 0.5)
    assert shares["north"].of(topo.service("db")) == shares["north"].load_share
    assert shares["north"].of(topo.service("api")) == 0.0


def test_no_survivor_and_unknown_dc_are_refused() -> None:
    with pytest.raises(PlanningError, match="no DC survives"):
        failover_weights({"web": {"dc1": 1.0}}, "dc1")
    with pytest.raises(PlanningError, match="unknown datacenter 'dc9'"):
        failover_shares(build(), "dc9")
