"""The capacity plan: instances needed to carry a share of global peak in one DC."""

from __future__ import annotations

import pytest

from revive.errors import PlanningError
from revive.planning import plan_capacity
from revive.planning.capacity import instances_needed
from tests.factories import build, service


def test_default_shares_give_critical_tiers_a_margin() -> None:
    topo = build(
        service("login", tier=0, peak_load=1000, capacity_per_instance=100,
                instances={"dc1": 10, "dc2": 7}),
        service("reco", tier=3, peak_load=1000, capacity_per_instance=100,
                instances={"dc1": 10}, redundancy="single-dc"),
    )
    plan = plan_capacity(topo, "dc2")
    lines = {line.service: line for line in plan.services}
    assert (lines["login"].share, lines["login"].need, lines["login"].add) == (1.2, 12, 5)
    assert (lines["reco"].have, lines["reco"].need, lines["reco"].add) == (0, 10, 10)
    assert plan.total_add == 15
    assert plan.share is None
    assert [line.service for line in plan.services] == ["login", "reco"]  # tier order


def test_an_explicit_share_applies_to_every_tier_and_never_removes() -> None:
    topo = build(
        service("a", tier=0, peak_load=1000, capacity_per_instance=100, instances={"dc1": 30}),
        service("b", tier=2, peak_load=1000, capacity_per_instance=300, instances={"dc1": 1}),
    )
    plan = plan_capacity(topo, "dc1", share=2.0)
    lines = {line.service: line for line in plan.services}
    assert (lines["a"].need, lines["a"].add) == (20, 0)
    assert (lines["b"].need, lines["b"].add) == (7, 6)  # ceil(2000 / 300)


@pytest.mark.parametrize(
    ("peak", "capacity", "share", "need"),
    [(1000, 100, 1.2, 12), (0, 100, 1.2, 0), (1, 1000, 1.0, 1), (999, 333, 1.0, 3)],
)
def test_instances_needed_rounds_up_exactly(peak, capacity, share, need) -> None:
    assert instances_needed(peak, capacity, share) == need


@pytest.mark.parametrize("share", [0, -1, 11])
def test_a_share_out_of_range_is_refused(share: float) -> None:
    with pytest.raises(PlanningError, match="share must be above 0"):
        plan_capacity(build(), "dc1", share=share)


def test_an_unknown_dc_is_refused() -> None:
    with pytest.raises(PlanningError, match="unknown datacenter 'dc3'"):
        plan_capacity(build(), "dc3")
