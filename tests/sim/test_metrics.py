"""/metrics text: real Prometheus exposition that round-trips into the controller's Sample."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from revive.ramp.controller import Sample
from revive.sim import SimConfig, Simulator
from revive.sim.metrics import read_sample, render
from tests.factories import build, service, tools

BOTH = {"dc1": "https://x.dc1.example", "dc2": "https://x.dc2.example"}


def small_sim(seed: int = 3) -> Simulator:
    topology = build(
        service("user-db", group="storage", role="database", peak_load=1_000,
                capacity_per_instance=200, instances={"dc1": 6, "dc2": 6}),
        service("front", peak_load=2_000, capacity_per_instance=500,
                instances={"dc1": 4, "dc2": 4},
                features=[{"name": "previews", "priority": 1, "cost": 0.2}]),
        ops_tools=tools(compute={"kind": "compute", "replicas": dict(BOTH)}),
    )
    return Simulator(topology, seed=seed, config=SimConfig(restart_jitter=0.0))


def series(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the text, keyed by name and label set."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return series(text)[name, frozenset(labels.items())]


def test_render_round_trips_the_dc_metrics_through_read_sample() -> None:
    sim = small_sim()
    sim.estate.set_weights({"dc1": 0.3, "dc2": 0.7})
    sim.advance(90)
    text = render(sim)
    for dc in sim.dcs:
        m = sim.metrics[dc]
        got = read_sample(text, dc)
        assert isinstance(got, Sample)
        assert got.t == 90.0
        assert got.share == m.share
        assert got.db_util == m.db_utilisation
        assert got.p99_ms == pytest.approx(m.p99_ms, rel=1e-12)
        assert got.error_rate == m.error_rate
        assert got.retry_ratio == m.retry_ratio
        assert got.cache_hit_ratio == m.cache_hit_ratio
        assert value(text, "revive_db_offered_rps", dc=dc) == m.db_offered_rps
        assert value(text, "revive_db_goodput_rps", dc=dc) == m.db_goodput_rps
        assert value(text, "revive_db_capacity_rps", dc=dc) == m.db_capacity_rps
        assert value(text, "revive_requests_per_second", dc=dc) == m.requests_rps
        assert value(text, "revive_surge_rps", dc=dc) == m.surge_rps
    assert read_sample(text, "dc2").share > read_sample(text, "dc1").share


def test_every_metric_is_a_gauge_with_the_documented_labels() -> None:
    sim = small_sim()
    sim.advance(5)
    families = {f.name: f for f in text_string_to_metric_families(render(sim))}
    expected = {
        "revive_sim_time_seconds": set(),
        "revive_service_instances": {"dc", "service"},
        "revive_service_healthy_instances": {"dc", "service"},
        "revive_service_version_info": {"dc", "service", "version"},
        "revive_ops_tool_replica_up": {"tool", "dc"},
        "revive_feature_enabled": {"service", "feature"},
    }
    per_dc = [
        "dc_up", "traffic_share", "requests_per_second", "db_utilisation_ratio",
        "db_offered_rps", "db_goodput_rps", "db_capacity_rps", "cache_hit_ratio",
        "p99_latency_seconds", "error_ratio", "retry_ratio", "surge_rps", "quota_remaining",
        "gslb_weight",
    ]
    expected.update({f"revive_{name}": {"dc"} for name in per_dc})
    per_class = [
        "class_traffic_share", "class_requests_per_second", "class_cache_hit_ratio",
        "class_error_ratio", "class_p99_latency_seconds",
    ]
    expected.update({f"revive_{name}": {"class", "dc"} for name in per_class})
    assert set(families) == set(expected)
    for name, labels in expected.items():
        assert families[name].type == "gauge"
        assert families[name].samples
        assert all(set(s.labels) == labels for s in families[name].samples), name


def test_service_tool_and_feature_series_follow_a_power_loss() -> None:
    sim = small_sim()
    sim.estate.set_flag("front", "previews", False)
    sim.estate.power_loss("dc1")
    sim.advance(10)
    text = render(sim)
    assert value(text, "revive_dc_up", dc="dc1") == 0.0
    assert value(text, "revive_dc_up", dc="dc2") == 1.0
    for svc, n in [("user-db", 6), ("front", 4)]:
        assert value(text, "revive_service_instances", dc="dc1", service=svc) == n
        assert value(text, "revive_service_healthy_instances", dc="dc1", service=svc) == 0
        assert value(text, "revive_service_healthy_instances", dc="dc2", service=svc) == n
        labels = {"dc": "dc2", "service": svc, "version": "v1"}
        assert value(text, "revive_service_version_info", **labels) == 1.0
    for tool in ("vault", "health", "compute"):
        assert value(text, "revive_ops_tool_replica_up", tool=tool, dc="dc1") == 0.0
        assert value(text, "revive_ops_tool_replica_up", tool=tool, dc="dc2") == 1.0
    assert value(text, "revive_feature_enabled", service="front", feature="previews") == 0.0
    assert value(text, "revive_gslb_weight", dc="dc1") == 0.5
    assert value(text, "revive_quota_remaining", dc="dc2") == math.inf  # no spare_instances
    assert read_sample(text, "dc1").error_rate == 1.0


def test_a_dc_without_database_capacity_renders_infinite_utilisation() -> None:
    sim = small_sim()
    sim.estate.fail_next_restarts("user-db", "dc1")
    sim.estate.restart("user-db", "dc1")  # healthy 0 while it restarts, power still on
    sim.advance(5)
    assert math.isinf(sim.metrics["dc1"].db_utilisation)
    text = render(sim)
    assert 'revive_db_utilisation_ratio{dc="dc1"} +Inf' in text
    assert read_sample(text, "dc1").db_util == math.inf


def test_read_sample_of_an_unknown_dc_names_it() -> None:
    text = render(small_sim())
    with pytest.raises(KeyError, match=r"dc9.*dc1, dc2"):
        read_sample(text, "dc9")
    with pytest.raises(KeyError, match="revive_sim_time_seconds"):
        read_sample("", "dc1")
