"""Every runbook action moves the metric it should, and runs are deterministic."""

from __future__ import annotations

from typing import Any

import pytest

from revive.sim import RetryPolicy, SimConfig, Simulator
from revive.sim.estate import ActionState
from revive.topology import load
from tests.factories import EXAMPLE, build, service, tools

QUIET = SimConfig(traffic_noise=0.0, restart_jitter=0.0)
BOTH = {"dc1": "https://x.dc1.example", "dc2": "https://x.dc2.example"}


def estate_topology(db_instances: int = 12, **extra: Any):
    """A small estate: a DB, a front service with a feature, an IP-caching caller."""
    return build(
        service("user-db", group="storage", role="database", peak_load=10_000,
                capacity_per_instance=1_000, instances={"dc1": db_instances, "dc2": db_instances}),
        service("front", peak_load=20_000, capacity_per_instance=1_000,
                instances={"dc1": 24, "dc2": 24},
                features=[{"name": "previews", "priority": 1, "cost": 0.2}]),
        service("caller", tier=1, peak_load=2_000, capacity_per_instance=1_000,
                instances={"dc1": 3, "dc2": 3}, caches_dependency_ips=True),
        ops_tools=tools(
            compute={"kind": "compute", "replicas": dict(BOTH)},
            registry={"kind": "registry", "replicas": dict(BOTH)},
        ),
        **extra,
    )


def sim_for(topology=None, *, seed: int = 1, config: SimConfig = QUIET) -> Simulator:
    sim = Simulator(topology or estate_topology(), seed=seed, config=config)
    sim.advance(5)
    return sim


def finish(sim: Simulator, action_id: str) -> None:
    assert sim.clock.advance_until(
        lambda: sim.estate.action(action_id).state in (ActionState.done, ActionState.failed),
        limit=sim.clock.now + 10_000,
    )
    assert sim.estate.action(action_id).state == ActionState.done, sim.estate.action(action_id)
    sim.advance(2)


def test_added_database_instances_add_capacity_and_lower_utilisation() -> None:
    sim = sim_for()
    before = sim.metrics["dc2"]
    finish(sim, sim.estate.provision("user-db", "dc2", 6))
    after = sim.metrics["dc2"]
    assert after.db_capacity_rps == pytest.approx(before.db_capacity_rps * 1.5)
    assert after.db_utilisation == pytest.approx(before.db_utilisation / 1.5, rel=0.02)


def test_added_front_instances_stop_overload_errors() -> None:
    overloaded = sim_for(
        build(
            service("user-db", group="storage", role="database", peak_load=1_000,
                    capacity_per_instance=1_000, instances={"dc1": 5, "dc2": 5}),
            service("front", peak_load=20_000, capacity_per_instance=1_000,
                    instances={"dc1": 12, "dc2": 12}),
            ops_tools=tools(compute={"kind": "compute", "replicas": dict(BOTH)}),
        )
    )
    overloaded.estate.set_weights({"dc2": 1.0})
    overloaded.advance(2)
    assert overloaded.metrics["dc2"].error_rate > 0.3
    finish(overloaded, overloaded.estate.provision("front", "dc2", 10))
    assert overloaded.metrics["dc2"].error_rate < 0.01


def test_the_retry_policy_caps_amplification_under_overload() -> None:
    def overload(policy: RetryPolicy | None) -> float:
        sim = sim_for()
        sim.estate.set_retry_policy(policy)
        sim.estate.power_loss("dc1")
        sim.estate.set_weights({"dc2": 1.0})
        sim.advance(120)
        return sim.metrics["dc2"].retry_ratio

    naive, budgeted = overload(None), overload(RetryPolicy(budget=0.1))
    assert naive > 1.0
    assert budgeted == pytest.approx(0.1, abs=1e-6)


def test_feature_flags_add_their_cost_to_load() -> None:
    sim = sim_for()
    on = sim.metrics["dc1"].requests_rps
    sim.estate.set_flag("front", "previews", False)
    sim.advance(2)
    off = sim.metrics["dc1"].requests_rps
    # front's class (tier0) loses the feature's cost; the caller's class (tier1) keeps its load
    kept = (20_000 / (1 + 0.2) + 2_000) / 22_000
    assert off == pytest.approx(on * kept, rel=1e-6)
    assert sim.metrics["dc1"].db_first_rps == pytest.approx(
        sim.load.db_peak / 2 * kept, rel=1e-3
    )


def test_gslb_weights_move_traffic() -> None:
    sim = sim_for()
    sim.estate.set_weights({"dc1": 0.2, "dc2": 0.8})
    sim.advance(2)
    m1, m2 = sim.metrics["dc1"], sim.metrics["dc2"]
    assert (m1.share, m2.share) == (pytest.approx(0.2), pytest.approx(0.8))
    assert m2.requests_rps == pytest.approx(4 * m1.requests_rps)
    assert m2.surge_rps > 0 == m1.surge_rps  # only arrivals reconnect


@pytest.mark.parametrize("fix", ["restart", "patch"])
def test_restart_or_patch_stops_calls_to_a_dead_dc_through_cached_ips(fix: str) -> None:
    sim = sim_for(estate_topology(db_instances=100))  # no DB overload to blur the errors
    sim.estate.push_artifact("caller", "v2", "dc2")
    sim.estate.power_loss("dc1")
    sim.estate.set_weights({"dc2": 1.0})
    sim.advance(2)
    stale = sim.metrics["dc2"].error_rate
    assert stale == pytest.approx(2_000 / 22_000, rel=0.05)  # caller's share of the load
    action = (
        sim.estate.restart("caller", "dc2") if fix == "restart"
        else sim.estate.patch("caller", "dc2", "v2")
    )
    finish(sim, action)
    assert sim.metrics["dc2"].error_rate < 0.001


def test_a_patch_carries_a_version_and_rollback_restores_it() -> None:
    sim = sim_for()
    sim.estate.push_artifact("front", "v2", "dc1")
    finish(sim, sim.estate.patch("front", "dc1", "v2"))
    assert sim.estate.state("front", "dc1").version == "v2"
    finish(sim, sim.estate.rollback("front", "dc1"))
    assert sim.estate.state("front", "dc1").version == "v1"


def test_an_emergency_deployment_creates_a_component_where_it_did_not_exist() -> None:
    topo = build(
        # config's class lived in dc1 only, so it reaches dc2 cold: a DB big enough not to
        # blur the errors
        service("user-db", group="storage", role="database", peak_load=1_000,
                capacity_per_instance=1_000, instances={"dc1": 4, "dc2": 4}),
        service("config", tier=1, redundancy="single-dc", instances={"dc1": 2},
                peak_load=1_000, capacity_per_instance=1_000),
        service("front", instances={"dc1": 2, "dc2": 2}, peak_load=1_000,
                capacity_per_instance=1_000),
        ops_tools=tools(registry={"kind": "registry", "replicas": dict(BOTH)},
                        compute={"kind": "compute", "replicas": dict(BOTH)}),
    )
    sim = sim_for(topo)
    sim.estate.set_retry_policy(RetryPolicy())
    sim.estate.power_loss("dc1")
    sim.estate.set_weights({"dc2": 1.0})
    sim.advance(2)
    assert sim.metrics["dc2"].error_rate == pytest.approx(0.5, rel=0.01)  # config is gone
    finish(sim, sim.estate.deploy("config", "dc2", 2))
    assert sim.estate.state("config", "dc2").exists
    assert sim.metrics["dc2"].error_rate < 0.001


def test_copying_an_artifact_makes_it_present_in_that_registry() -> None:
    sim = sim_for()
    sim.estate.push_artifact("front", "v3", "dc1")
    assert ("front", "v3") not in sim.estate.artifacts("dc2")
    finish(sim, sim.estate.copy_artifact("front", "v3", "dc1", "dc2"))
    assert ("front", "v3") in sim.estate.artifacts("dc2")


def test_power_loss_empties_the_dc_and_errors_its_users() -> None:
    sim = sim_for()
    sim.estate.power_loss("dc1")
    sim.advance(2)
    assert sim.metrics["dc1"].error_rate == 1.0
    assert sim.metrics["dc1"].db_capacity_rps == 0.0
    assert sim.load.caches["dc1"].fill.sum() == 0.0


def _script(seed: int) -> list[tuple]:
    sim = Simulator(load(EXAMPLE), seed=seed)
    trace = []
    sim.estate.power_loss("dc1")
    sim.advance(30)
    for share in (0.6, 0.75, 0.9):
        sim.estate.set_weights({"dc1": 1 - share, "dc2": share})
        action = sim.estate.restart("notification-sender", "dc2") if share == 0.6 else None
        sim.advance(120)
        m = sim.metrics["dc2"]
        trace.append((sim.clock.now, m.db_utilisation, m.cache_hit_ratio, m.error_rate,
                      action and sim.estate.action(action).ends_at))
    return trace


def test_the_same_seed_gives_the_same_run_and_another_seed_does_not() -> None:
    assert _script(5) == _script(5)
    assert _script(5) != _script(6)
