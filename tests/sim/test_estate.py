"""Estate: each action, each fault and each view, on small topologies plus the example."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from revive.sim.clock import VirtualClock
from revive.sim.config import RetryPolicy, SimConfig
from revive.sim.estate import (
    ActionState,
    ArtifactMissing,
    BadRequest,
    Conflict,
    Estate,
    QuotaExceeded,
    SimError,
    ToolState,
    Unavailable,
    UnknownTarget,
)
from revive.topology import load
from tests.factories import EXAMPLE, build, service, tools

NO_JITTER = SimConfig(restart_jitter=0.0)
DC1_ONLY = {"dc1": "https://x.dc1.example"}
BOTH = {"dc1": "https://x.dc1.example", "dc2": "https://x.dc2.example"}


def make(
    *services: dict[str, Any],
    config: SimConfig = NO_JITTER,
    seed: int = 7,
    **fields: Any,
) -> Estate:
    return Estate(build(*services, **fields), clock=VirtualClock(), config=config, seed=seed)


def tool(kind: str, replicas: dict[str, str] = BOTH) -> dict[str, Any]:
    return {"kind": kind, "adapter": "sim", "replicas": dict(replicas)}


def run(estate: Estate, action_id: str) -> None:
    """Advance until the action ends, as an adapter's wait would."""
    done = estate.clock.advance_until(
        lambda: estate.action(action_id).state in (ActionState.done, ActionState.failed),
        limit=estate.clock.now + 10_000,
    )
    assert done


# --- actions ------------------------------------------------------------------------------


def test_provision_adds_unhealthy_instances_that_boot_after_boot_seconds() -> None:
    estate = make(service("app", boot_seconds=75), ops_tools=tools(compute=tool("compute")),
                  datacenters=[{"name": "dc1"}, {"name": "dc2", "spare_instances": 400}])
    aid = estate.provision("app", "dc2", 3)
    assert aid == "a0001"
    view = estate.state("app", "dc2")
    assert (view.instances, view.healthy, view.busy) == (5, 2, True)
    assert estate.quota("dc2") == 400 - 3
    assert estate.quota("dc1") is None  # no spare_instances declared: no limit
    assert estate.healthy_capacity("dc2", "app") == 200
    estate.clock.advance_to(74.9)
    assert estate.state("app", "dc2").healthy == 2
    estate.clock.advance_to(75.0)
    assert estate.state("app", "dc2").healthy == 5
    assert estate.action(aid).state == ActionState.done
    assert estate.action(aid).ends_at == 75.0
    assert estate.healthy_capacity("dc2", "app") == 500


def test_a_dc_without_spare_instances_grants_any_count() -> None:
    estate = make()
    estate.provision("app", "dc1", 10_000)
    assert estate.state("app", "dc1").instances == 10_002
    assert estate.quota("dc1") is None


def test_provision_beyond_quota_is_refused_and_changes_nothing() -> None:
    estate = make(datacenters=[{"name": "dc1", "spare_instances": 4},
                               {"name": "dc2", "spare_instances": 4}])
    with pytest.raises(QuotaExceeded, match="dc1"):
        estate.provision("app", "dc1", 5)
    assert estate.state("app", "dc1").instances == 2
    assert estate.quota("dc1") == 4
    assert estate.actions() == []
    estate.exhaust_quota("dc1")
    with pytest.raises(QuotaExceeded):
        estate.provision("app", "dc1", 1)
    assert estate.state("app", "dc1").instances == 2
    estate.provision("app", "dc2", 4)  # the other DC's quota is untouched


def test_provision_needs_the_compute_api_of_that_dc() -> None:
    estate = make(ops_tools=tools(compute=tool("compute")))
    estate.tool_down("compute", "dc2")
    with pytest.raises(Unavailable, match="compute"):
        estate.provision("app", "dc2", 1)
    estate.provision("app", "dc1", 1)


def test_restart_takes_jittered_time_with_no_healthy_instances_meanwhile() -> None:
    config = SimConfig(restart_jitter=0.2)
    durations = []
    for seed in range(20):
        estate = make(service("app", restart_seconds=100), config=config, seed=seed)
        aid = estate.restart("app", "dc1")
        assert estate.state("app", "dc1").healthy == 0
        assert estate.healthy_capacity("dc1", "app") == 0
        run(estate, aid)
        assert estate.state("app", "dc1").healthy == 2
        durations.append(estate.action(aid).ends_at)
    assert all(80 <= d <= 120 for d in durations)
    assert len(set(durations)) == 20


def test_restart_fails_without_a_boot_tool_and_succeeds_after_tool_restore() -> None:
    estate = make(
        service("app", boot_requires=["vault"]),
        ops_tools=tools(vault=tool("secret_store", DC1_ONLY)),
    )
    estate.tool_down("vault", "dc1")
    aid = estate.restart("app", "dc2")
    run(estate, aid)
    view = estate.action(aid)
    assert view.state == ActionState.failed
    assert "vault" in (view.error or "")
    assert estate.state("app", "dc2").healthy == 0
    assert not estate.state("app", "dc2").busy
    estate.tool_restore("vault", "dc1")
    run(estate, retry := estate.restart("app", "dc2"))
    assert estate.action(retry).state == ActionState.done
    assert estate.state("app", "dc2").healthy == 2


def test_restart_while_restarting_is_a_conflict() -> None:
    estate = make()
    estate.restart("app", "dc1")
    with pytest.raises(Conflict, match="busy"):
        estate.restart("app", "dc1")
    with pytest.raises(Conflict, match="busy"):
        estate.provision("app", "dc1", 1)


@pytest.mark.parametrize("fix", ["restart", "patch"])
def test_restart_or_patch_re_resolves_cached_dependency_ips(fix: str) -> None:
    estate = make(service("db"), service("caller", caches_dependency_ips=True))
    # callers start pointed at the primary DC (dc1), as if resolved before a switch
    assert estate.state("caller", "dc2").ip_target == "dc1"
    assert estate.state("db", "dc2").ip_target is None
    estate.set_weights({"dc1": 1.0})
    assert estate.stale_ip_services() == [("caller", "dc2", "dc1")]  # nothing re-resolved yet
    estate.set_weights({"dc1": 1, "dc2": 1})  # tie: own DC wins
    run(estate, estate.restart("caller", "dc2"))
    assert estate.state("caller", "dc2").ip_target == "dc2"
    estate.set_weights({"dc1": 3, "dc2": 1})
    aid = (
        estate.restart("caller", "dc2") if fix == "restart" else estate.patch("caller", "dc2", "v1")
    )
    run(estate, aid)
    assert estate.state("caller", "dc2").ip_target == "dc1"
    assert estate.stale_ip_services() == [("caller", "dc2", "dc1")]
    estate.power_loss("dc1")  # a down DC is never preferred
    estate.set_weights({"dc1": 1.0})
    run(estate, estate.restart("caller", "dc2"))
    assert estate.stale_ip_services() == []


def test_patch_needs_the_artifact_and_rollback_restores_the_old_version() -> None:
    estate = make(ops_tools=tools(registry=tool("registry")))
    with pytest.raises(ArtifactMissing, match=r"app:v2 is not in dc1"):
        estate.patch("app", "dc1", "v2")
    with pytest.raises(Conflict, match="no previous version"):
        estate.rollback("app", "dc1")
    estate.push_artifact("app", "v2", "dc1")
    aid = estate.patch("app", "dc1", "v2")
    assert estate.action(aid).ends_at == 2 * 2.0  # patch_s_per_instance * instances
    assert estate.state("app", "dc1").version == "v1"
    run(estate, aid)
    view = estate.state("app", "dc1")
    assert (view.version, view.previous_version, view.healthy) == ("v2", "v1", 2)
    run(estate, estate.rollback("app", "dc1"))
    assert estate.state("app", "dc1").version == "v1"
    assert estate.state("app", "dc2").version == "v1"


def test_deploy_creates_a_component_that_did_not_exist() -> None:
    estate = make(service("app", instances={"dc1": 2}),
                  datacenters=[{"name": "dc1"}, {"name": "dc2", "spare_instances": 400}])
    assert not estate.state("app", "dc2").exists
    with pytest.raises(Conflict, match="use deploy"):
        estate.restart("app", "dc2")
    with pytest.raises(Conflict, match="use deploy"):
        estate.provision("app", "dc2", 1)
    aid = estate.deploy("app", "dc2", 3)
    view = estate.state("app", "dc2")
    assert (view.exists, view.instances, view.healthy, view.version) == (True, 3, 0, "v1")
    assert estate.quota("dc2") == 397
    run(estate, aid)
    assert estate.action(aid).ends_at == 90.0
    assert estate.state("app", "dc2").healthy == 3
    with pytest.raises(Conflict, match="already exists"):
        estate.deploy("app", "dc2", 1)


def test_deploy_needs_the_image_in_that_dcs_registry() -> None:
    estate = make(
        service("app", instances={"dc1": 2}),
        ops_tools=tools(registry=tool("registry", DC1_ONLY)),
    )
    with pytest.raises(ArtifactMissing, match="dc2 has no registry"):
        estate.deploy("app", "dc2", 1)
    assert not estate.state("app", "dc2").exists


def test_copy_artifact_makes_it_present_after_artifact_copy_s() -> None:
    estate = make(ops_tools=tools(registry=tool("registry")))
    estate.push_artifact("app", "v2", "dc1")
    assert ("app", "v2") not in estate.artifacts("dc2")
    with pytest.raises(ArtifactMissing):
        estate.copy_artifact("app", "v3", "dc1", "dc2")
    aid = estate.copy_artifact("app", "v2", "dc1", "dc2")
    estate.clock.advance_to(44.9)
    assert ("app", "v2") not in estate.artifacts("dc2")
    estate.clock.advance_to(45.0)
    assert ("app", "v2") in estate.artifacts("dc2")
    assert estate.action(aid).state == ActionState.done
    run(estate, estate.patch("app", "dc2", "v2"))
    assert estate.state("app", "dc2").version == "v2"


def test_set_weights_normalises_and_refuses_bad_input() -> None:
    estate = make()
    assert estate.weights == {"dc1": 0.5, "dc2": 0.5}
    estate.set_weights({"dc1": 3, "dc2": 1})
    assert estate.weights == {"dc1": 0.75, "dc2": 0.25}
    estate.set_weights({"dc2": 5.0})
    assert estate.weights == {"dc1": 0.0, "dc2": 1.0}
    for bad in ({"dc1": -1.0, "dc2": 2.0}, {"dc1": 0, "dc2": 0}, {"dc1": float("nan")}):
        with pytest.raises(BadRequest):
            estate.set_weights(bad)
    with pytest.raises(UnknownTarget, match="dc9"):
        estate.set_weights({"dc9": 1.0})
    assert estate.weights == {"dc1": 0.0, "dc2": 1.0}
    estate.power_loss("dc1")
    estate.set_weights({"dc1": 1.0})  # a naive operator may do this; the load model punishes it
    assert estate.weights["dc1"] == 1.0


def test_flags_and_retry_policy_go_through_the_config_store() -> None:
    features = [
        {"name": "stickers", "priority": 2, "cost": 0.1},
        {"name": "previews", "priority": 3, "cost": 0.25},
    ]
    estate = make(
        service("app", features=features),
        ops_tools=tools(config=tool("config_store", DC1_ONLY)),
    )
    assert estate.flag("app", "stickers") is True
    assert estate.enabled_feature_cost("app") == pytest.approx(0.35)
    estate.set_flag("app", "previews", False)
    assert estate.enabled_feature_cost("app") == pytest.approx(0.1)
    assert estate.flags == {("app", "stickers"): True, ("app", "previews"): False}
    assert estate.retry_policy is None
    policy = RetryPolicy(budget=0.05)
    estate.set_retry_policy(policy)
    assert estate.retry_policy == policy
    with pytest.raises(UnknownTarget, match="nope"):
        estate.set_flag("app", "nope", True)
    estate.power_loss("dc1")
    with pytest.raises(Unavailable, match="config_store"):
        estate.set_flag("app", "previews", True)
    with pytest.raises(Unavailable):
        estate.set_retry_policy(None)
    assert estate.retry_policy == policy


def test_slow_tools_add_their_latency_to_the_actions_that_use_them() -> None:
    estate = make(
        service("app", boot_requires=["vault"], restart_seconds=60),
        ops_tools=tools(registry=tool("registry"), compute=tool("compute")),
    )
    estate.tool_slow("vault", "dc1", 30)
    estate.tool_slow("compute", "dc1", 5)
    estate.tool_slow("registry", "dc1", 7)
    assert estate.replica("vault", "dc1").state == ToolState.slow
    assert estate.action(estate.restart("app", "dc1")).ends_at == 90
    assert estate.action(estate.restart("app", "dc2")).ends_at == 60  # uses its local vault
    estate.clock.advance_to(90)
    assert estate.action(estate.provision("app", "dc1", 1)).ends_at == 90 + 90 + 5
    assert estate.action(estate.patch("app", "dc2", "v1")).ends_at == 90 + 4
    estate.clock.advance_to(200)
    assert estate.action(estate.patch("app", "dc1", "v1")).ends_at == 200 + 6 + 7


# --- faults -------------------------------------------------------------------------------


def test_power_loss_takes_down_services_tools_and_in_flight_actions() -> None:
    estate = make(ops_tools=tools(registry=tool("registry")))
    restarting = estate.restart("app", "dc1")
    copying = estate.copy_artifact("app", "v1", "dc2", "dc1")
    elsewhere = estate.restart("app", "dc2")
    estate.clock.advance_to(10)
    estate.power_loss("dc1")
    assert not estate.dc_up("dc1")
    assert estate.state("app", "dc1").healthy == 0
    assert estate.healthy_capacity("dc1", "app") == 0
    assert not estate.replica("vault", "dc1").reachable
    for aid in (restarting, copying):
        assert estate.action(aid).state == ActionState.failed
        assert estate.action(aid).error == "power loss in dc1"
        assert estate.action(aid).ends_at == 10
    assert not estate.state("app", "dc1").busy
    run(estate, elsewhere)
    assert estate.action(elsewhere).state == ActionState.done
    with pytest.raises(Unavailable, match="dc1 is down"):
        estate.restart("app", "dc1")


def test_power_restore_leaves_services_down_until_restarted() -> None:
    estate = make()
    estate.power_loss("dc1")
    estate.power_restore("dc1")
    assert estate.dc_up("dc1")
    assert estate.replica("vault", "dc1").reachable
    assert estate.state("app", "dc1").healthy == 0
    run(estate, estate.restart("app", "dc1"))
    assert estate.state("app", "dc1").healthy == 2


def test_tool_down_slow_restore_change_the_replica() -> None:
    estate = make()
    estate.tool_down("vault", "dc2")
    assert estate.replica("vault", "dc2").state == ToolState.down
    assert not estate.replica("vault", "dc2").reachable
    estate.tool_slow("vault", "dc2", 12.5)
    view = estate.replica("vault", "dc2")
    assert (view.state, view.extra_latency_s, view.reachable) == (ToolState.slow, 12.5, True)
    estate.tool_restore("vault", "dc2")
    assert estate.replica("vault", "dc2").state == ToolState.up
    with pytest.raises(BadRequest):
        estate.tool_slow("vault", "dc2", -1)


def test_fail_next_restarts_fails_that_many_then_lets_restarts_through() -> None:
    estate = make()
    estate.fail_next_restarts("app", "dc1", count=2)
    results = []
    for _ in range(3):
        aid = estate.restart("app", "dc1")
        run(estate, aid)
        results.append(estate.action(aid).state)
    assert results == [ActionState.failed, ActionState.failed, ActionState.done]
    assert estate.state("app", "dc2").healthy == 2


def test_health_view_is_unavailable_when_the_only_checker_loses_power() -> None:
    estate = make(ops_tools=tools(health=tool("health_checker", DC1_ONLY)))
    assert estate.health_view("dc2") == {"app": 2}
    estate.power_loss("dc1")
    with pytest.raises(Unavailable, match="health_checker"):
        estate.health_view("dc2")


def test_health_view_reports_the_last_probe() -> None:
    estate = make(config=SimConfig(restart_jitter=0.0, health_check_interval_s=10.0))
    aid = estate.restart("app", "dc1")
    estate.clock.advance_to(5)
    assert estate.health_view("dc1") == {"app": 2}  # probed at 0, before the restart
    estate.clock.advance_to(10)
    assert estate.health_view("dc1") == {"app": 0}
    run(estate, aid)
    assert estate.clock.now == 60
    estate.clock.advance_to(60)
    assert estate.health_checked_at == 60
    assert estate.health_view("dc1") == {"app": 2}


# --- names, determinism, the example -------------------------------------------------------

UNKNOWN_CALLS: list[tuple[str, Callable[[Estate], object]]] = [
    ("ghost", lambda e: e.restart("ghost", "dc1")),
    ("dc9", lambda e: e.restart("app", "dc9")),
    ("dc9", lambda e: e.provision("app", "dc9", 1)),
    ("ghost", lambda e: e.patch("ghost", "dc1", "v1")),
    ("ghost", lambda e: e.deploy("ghost", "dc1", 1)),
    ("ghost", lambda e: e.copy_artifact("ghost", "v1", "dc1", "dc2")),
    ("dc9", lambda e: e.copy_artifact("app", "v1", "dc1", "dc9")),
    ("hammer", lambda e: e.tool_down("hammer", "dc1")),
    (r"vault.*no replica in 'dc3'", lambda e: e.tool_slow("vault", "dc3", 1.0)),
    ("dc9", lambda e: e.power_loss("dc9")),
    ("ghost", lambda e: e.fail_next_restarts("ghost", "dc1")),
    ("dc9", lambda e: e.exhaust_quota("dc9")),
    ("ghost", lambda e: e.healthy_capacity("dc1", "ghost")),
    ("dc9", lambda e: e.healthy_capacity("dc9", "app")),
    ("ghost", lambda e: e.enabled_feature_cost("ghost")),
    ("dc9", lambda e: e.health_view("dc9")),
    ("ghost", lambda e: e.set_flag("ghost", "x", True)),
    ("a9999", lambda e: e.action("a9999")),
]


@pytest.mark.parametrize(("name", "call"), UNKNOWN_CALLS)
def test_unknown_names_raise_unknown_target_naming_them(
    name: str, call: Callable[[Estate], object]
) -> None:
    estate = make(datacenters=[{"name": "dc1"}, {"name": "dc2"}, {"name": "dc3"}])
    with pytest.raises(UnknownTarget, match=name):
        call(estate)
    assert issubclass(UnknownTarget, SimError)


def script(seed: int) -> Estate:
    estate = make(
        service("db", restart_seconds=120),
        service("app", depends_on=["db"], caches_dependency_ips=True),
        config=SimConfig(restart_jitter=0.3),
        seed=seed,
    )
    estate.power_loss("dc1")
    estate.set_weights({"dc2": 1.0})
    estate.restart("db", "dc2")
    estate.restart("app", "dc2")
    estate.clock.advance_to(30)
    estate.fail_next_restarts("db", "dc1")
    estate.power_restore("dc1")
    estate.restart("db", "dc1")
    estate.provision("app", "dc1", 2)
    estate.clock.advance_to(400)
    estate.restart("app", "dc1")
    estate.clock.advance_to(800)
    return estate


def test_same_seed_same_script_gives_identical_logs_and_end_times() -> None:
    a, b = script(seed=11), script(seed=11)
    assert a.log == b.log
    assert [v.ends_at for v in a.actions()] == [v.ends_at for v in b.actions()]
    assert len(a.log) > 10
    c = script(seed=12)
    restarts = [v.ends_at for v in a.actions() if v.kind == "restart"]
    assert restarts != [v.ends_at for v in c.actions() if v.kind == "restart"]


def test_example_restart_of_dc2_groups_after_dc1_burns() -> None:
    topology = load(EXAMPLE)
    estate = Estate(topology, clock=VirtualClock(), config=SimConfig(), seed=2022)
    estate.power_loss("dc1")
    with pytest.raises(Unavailable):
        estate.health_view("dc2")  # the health checker burned with dc1
    groups = {s.group for s in topology.services if s.runs_in("dc2")}
    started: dict[str, str] = {}
    for svc in topology.services:
        if svc.group not in groups:
            continue
        if not svc.runs_in("dc2"):
            with pytest.raises(Conflict, match="does not exist in dc2"):
                estate.restart(svc.name, "dc2")
            continue
        started[svc.name] = estate.restart(svc.name, "dc2")
    assert "config-server" not in started
    estate.tool_down("registry", "dc2")  # a boot-time tool gone too: those restarts fail
    estate.clock.advance_to(2 * max(s.restart_seconds for s in topology.services))
    for name, aid in started.items():
        view = estate.action(aid)
        needs_registry = "registry" in topology.service(name).boot_requires
        assert view.state == (ActionState.failed if needs_registry else ActionState.done), name
        if needs_registry:
            assert "registry" in (view.error or "")
        else:
            assert estate.state(name, "dc2").healthy == topology.service(name).instances_in("dc2")
    assert estate.state("media-transcoder", "dc2").healthy == 0
    with pytest.raises(Unavailable, match="registry"):
        estate.deploy("config-server", "dc2", 2)
    estate.tool_restore("registry", "dc2")
    deploy = estate.deploy("config-server", "dc2", 2)  # the emergency deployment now works
    estate.clock.advance_to(estate.clock.now + 600)
    assert estate.action(deploy).state == ActionState.done
    assert estate.state("config-server", "dc2").exists


def test_ip_caching_callers_start_pointed_at_the_configured_dc() -> None:
    caller = service("caller", caches_dependency_ips=True)
    assert make(caller).state("caller", "dc2").ip_target == "dc1"  # default: the first DC
    pointed = make(caller, config=SimConfig(restart_jitter=0.0, cached_ips_point_to="dc2"))
    assert pointed.state("caller", "dc1").ip_target == "dc2"
    assert [dc for *_, dc in pointed.stale_ip_services()] == ["dc2"]
