"""Traffic per class: each class has its own users, keys and errors; the DB is per DC."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx
import numpy as np
import pytest

from revive.ops.endpoint import ReplicatedEndpoint
from revive.ops.interfaces import Metrics, Traffic
from revive.ops.sim import SimMetrics, SimTraffic
from revive.planning.shares import default_weights
from revive.sim import SimConfig, Simulator
from revive.sim.app import create_app
from revive.sim.clock import VirtualClock
from revive.sim.estate import BadRequest, Estate, Unavailable, UnknownTarget
from revive.sim.load import DcInputs, LoadModel
from revive.sim.metrics import read_sample, render
from tests.factories import build, service, tools

QUIET = SimConfig(traffic_noise=0.0, restart_jitter=0.0)
BOTH = {"dc1": "https://x.dc1.example", "dc2": "https://x.dc2.example"}


def two_classes(web: str = "web", api: str = "api", *, api_in_dc2: int = 6, db: int = 12,
                **extra: Any):
    """A DB, a cache and two user-facing services; ``web`` is 3/4 of the load, ``api`` 1/4."""
    return build(
        service("user-db", group="storage", role="database", peak_load=10_000,
                capacity_per_instance=1_000, instances={"dc1": db, "dc2": db}),
        service("cache", group="storage", role="cache", peak_load=5_000,
                capacity_per_instance=1_000, instances={"dc1": 10, "dc2": 10}),
        service("web", traffic_class=web, peak_load=15_000, capacity_per_instance=1_000,
                instances={"dc1": 20, "dc2": 20},
                features=[{"name": "previews", "priority": 1, "cost": 0.2}]),
        service("api", tier=1, traffic_class=api, peak_load=5_000,
                capacity_per_instance=1_000, instances={"dc1": 6, "dc2": api_in_dc2}),
        ops_tools=tools(
            gslb={"kind": "traffic", "replicas": dict(BOTH)},
            registry={"kind": "registry", "replicas": dict(BOTH)},
        ),
        **extra,
    )


def sim_for(topology: Any = None, seed: int = 1) -> Simulator:
    sim = Simulator(topology or two_classes(), seed=seed, config=QUIET)
    sim.advance(5)
    return sim


# --- the estate's GSLB ---------------------------------------------------------------------


def test_class_weights_start_where_each_class_runs_and_add_up_to_the_dc_weights() -> None:
    topo = build(
        service("user-db", group="storage", role="database", peak_load=1_000),
        service("front", peak_load=300),
        service("batch", tier=2, peak_load=100, instances={"dc1": 2}, redundancy="single-dc"),
    )
    estate = Estate(topo, clock=VirtualClock(), config=QUIET, seed=1)
    assert estate.class_weights == default_weights(topo)
    assert estate.class_weights["tier2"] == {"dc1": 1.0, "dc2": 0.0}
    # front is 3/4 of the user load and split evenly; batch's 1/4 is all in dc1
    assert estate.weights == {"dc1": pytest.approx(0.625), "dc2": pytest.approx(0.375)}
    copy = estate.class_weights
    copy["tier0"]["dc1"] = 0.0
    assert estate.class_weights["tier0"]["dc1"] == 0.5  # a copy


def test_set_class_weights_moves_one_class_is_validated_and_logged() -> None:
    estate = Estate(two_classes(), clock=VirtualClock(), config=QUIET, seed=1)
    estate.set_class_weights("api", {"dc1": 1, "dc2": 3})
    assert estate.class_weights == {"web": {"dc1": 0.5, "dc2": 0.5},
                                    "api": {"dc1": 0.25, "dc2": 0.75}}
    assert estate.weights == {"dc1": pytest.approx(0.75 * 0.5 + 0.25 * 0.25),
                              "dc2": pytest.approx(0.75 * 0.5 + 0.25 * 0.75)}
    assert sum(estate.weights.values()) == pytest.approx(1.0)
    entry = estate.log[-1]
    assert (entry.kind, entry.target) == ("set_class_weights", "gslb/api")
    with pytest.raises(UnknownTarget, match="tier7"):
        estate.set_class_weights("tier7", {"dc1": 1})
    for bad in ({"dc1": -1.0}, {"dc1": math.nan}, {"dc1": 0.0}):
        with pytest.raises(BadRequest):
            estate.set_class_weights("api", bad)
    with pytest.raises(UnknownTarget):
        estate.set_class_weights("api", {"dc9": 1.0})
    assert estate.class_weights["api"] == {"dc1": 0.25, "dc2": 0.75}  # nothing changed
    estate.tool_down("gslb", "dc1")
    estate.tool_down("gslb", "dc2")
    with pytest.raises(Unavailable):
        estate.set_class_weights("api", {"dc2": 1.0})


def test_set_weights_moves_every_class_alike() -> None:
    estate = Estate(two_classes(), clock=VirtualClock(), config=QUIET, seed=1)
    estate.set_weights({"dc2": 1.0})
    assert estate.class_weights == {"web": {"dc1": 0.0, "dc2": 1.0},
                                    "api": {"dc1": 0.0, "dc2": 1.0}}
    assert estate.weights == {"dc1": 0.0, "dc2": pytest.approx(1.0)}


# --- the load model ------------------------------------------------------------------------


def _failover_trace(classes: dict[str, float] | None, *, paced: bool) -> list[tuple]:
    """dc1 is lost and every class moves into dc2 together, at once or paced."""
    model = LoadModel(["dc1", "dc2"], 100_000.0, SimConfig(), seed=3, classes=classes)
    model.warm_up()
    model.power_loss("dc1")
    inputs = {
        "dc1": DcInputs(up=False, db_capacity=0.0),
        "dc2": DcInputs(up=True, db_capacity=120_000.0),
    }
    share = 0.5 if paced else 1.0
    model.set_shares({"dc1": 1 - share, "dc2": share}, 0.0)
    trace = []
    for t in range(1800):
        if paced and t and t % 60 == 0 and share < 1.0 and trace[-1][1] < 0.7:
            share = min(1.0, share + 0.05)
            model.set_shares({"dc1": 1 - share, "dc2": share}, float(t))
        m = model.step(float(t), 1.0, inputs)["dc2"]
        trace.append((m.share, m.db_utilisation, m.cache_hit_ratio, m.error_rate, m.p99_ms,
                      m.requests_rps, m.surge_rps))
    return trace


@pytest.mark.parametrize("paced", [False, True])
def test_classes_moved_together_match_the_single_class_model(paced: bool) -> None:
    one = np.array(_failover_trace(None, paced=paced))
    split = np.array(_failover_trace({"web": 0.7, "api": 0.3}, paced=paced))
    # share, requests and surges are exact; the cache-driven numbers differ by the small
    # key-space rounding of two caches sized for 70% and 30% of the reads
    np.testing.assert_allclose(split[:, [0, 5, 6]], one[:, [0, 5, 6]], rtol=1e-9)
    np.testing.assert_allclose(split[:, 1], one[:, 1], rtol=2e-3)  # DB utilisation
    np.testing.assert_allclose(split[:, 2], one[:, 2], atol=1e-3)  # hit ratio
    np.testing.assert_allclose(split[:, 3], one[:, 3], atol=1e-3)  # error rate
    np.testing.assert_allclose(split[:, 4], one[:, 4], rtol=5e-3)  # p99


def test_a_one_class_estate_and_its_two_class_split_agree_in_the_simulator() -> None:
    whole, split = sim_for(two_classes(api="web")), sim_for(two_classes())
    assert whole.traffic_classes == ["web"] and split.traffic_classes == ["web", "api"]
    for sim in (whole, split):
        sim.estate.power_loss("dc1")
        sim.estate.set_weights({"dc2": 1.0})
    for _ in range(10):
        for sim in (whole, split):
            sim.advance(60)
        a, b = whole.metrics["dc2"], split.metrics["dc2"]
        assert b.share == pytest.approx(a.share)
        assert b.requests_rps == pytest.approx(a.requests_rps, rel=1e-9)
        assert b.db_utilisation == pytest.approx(a.db_utilisation, rel=2e-3)
        assert b.cache_hit_ratio == pytest.approx(a.cache_hit_ratio, abs=1e-3)
        assert b.error_rate == pytest.approx(a.error_rate, abs=1e-3)


def test_moving_one_class_warms_and_loads_the_survivor_for_that_class_only() -> None:
    sim = sim_for()
    before = {c: sim.class_metrics[c, "dc2"] for c in ("web", "api")}
    db_before = sim.metrics["dc2"].db_first_rps
    sim.estate.power_loss("dc1")
    sim.estate.set_class_weights("api", {"dc2": 1.0})
    sim.advance(2)
    web, api = sim.class_metrics["web", "dc2"], sim.class_metrics["api", "dc2"]
    assert web.share == 0.5 and api.share == 1.0
    assert web.surge_rps == 0.0 < api.surge_rps  # only api's users reconnect
    assert web.cache_hit_ratio == pytest.approx(before["web"].cache_hit_ratio, abs=1e-3)
    assert api.cache_hit_ratio < before["api"].cache_hit_ratio * 0.6  # half its users cold
    assert web.db_first_rps == pytest.approx(before["web"].db_first_rps, rel=1e-3)
    assert sim.metrics["dc2"].db_first_rps - db_before == pytest.approx(
        api.db_first_rps - before["api"].db_first_rps)
    assert sim.class_metrics["web", "dc1"].error_rate == 1.0  # web's dc1 half is still lost
    assert sim.class_metrics["api", "dc1"].error_rate == 0.0  # api has no users there
    assert web.db_utilisation == api.db_utilisation == sim.metrics["dc2"].db_utilisation


def test_a_feature_flag_changes_only_its_own_class_load() -> None:
    sim = sim_for()
    web, api = sim.class_metrics["web", "dc1"].requests_rps, sim.class_metrics["api", "dc1"]
    sim.estate.set_flag("web", "previews", False)
    sim.advance(2)
    assert sim.class_metrics["web", "dc1"].requests_rps == pytest.approx(web / 1.2)
    assert sim.class_metrics["api", "dc1"].requests_rps == pytest.approx(api.requests_rps)


def test_a_service_error_counts_for_its_own_class_and_by_load_for_the_dc() -> None:
    # api is too small in dc2 (3000 of its 5000 peak); a big DB keeps DB errors out of it
    sim = sim_for(two_classes(api_in_dc2=3, db=40))
    sim.estate.power_loss("dc1")
    sim.estate.set_weights({"dc2": 1.0})
    sim.advance(10)
    web, api = sim.class_metrics["web", "dc2"], sim.class_metrics["api", "dc2"]
    assert api.error_rate == pytest.approx(0.4, rel=1e-6)
    assert web.error_rate < 1e-6
    expected = (web.error_rate * web.requests_rps + api.error_rate * api.requests_rps) / (
        web.requests_rps + api.requests_rps)
    assert sim.metrics["dc2"].error_rate == pytest.approx(expected)
    assert sim.metrics["dc2"].error_rate == pytest.approx(0.25 * 0.4, rel=1e-3)


def test_a_cold_class_sees_a_higher_p99_than_a_warm_one_in_the_same_dc() -> None:
    sim = sim_for()
    sim.estate.power_loss("dc1")
    sim.estate.set_class_weights("api", {"dc2": 1.0})
    sim.advance(30)
    web, api = sim.class_metrics["web", "dc2"], sim.class_metrics["api", "dc2"]
    assert api.cache_hit_ratio < web.cache_hit_ratio
    assert api.p99_ms > web.p99_ms


def test_the_oracle_predicts_next_tick_utilisation_per_class_and_for_all() -> None:
    sim = sim_for()
    sim.estate.power_loss("dc1")
    sim.advance(5)
    predicted = sim.predicted_db_utilisation_for("api", {"dc2": 1.0})
    together = sim.predicted_db_utilisation("dc2", 0.8)
    assert predicted["dc1"] == math.inf  # no database capacity left there
    sim.estate.set_class_weights("api", {"dc2": 1.0})
    sim.advance(1)
    m = sim.metrics["dc2"]
    assert predicted["dc2"] == pytest.approx(m.db_first_rps / m.db_capacity_rps, rel=1e-9)
    other = sim_for()
    other.estate.power_loss("dc1")
    other.advance(5)
    other.estate.set_weights({"dc1": 0.2, "dc2": 0.8})
    other.advance(1)
    m = other.metrics["dc2"]
    assert together == pytest.approx(m.db_first_rps / m.db_capacity_rps, rel=1e-9)


# --- /metrics, HTTP and the adapters ---------------------------------------------------------


def test_class_series_round_trip_through_read_sample() -> None:
    sim = sim_for()
    sim.estate.set_class_weights("api", {"dc1": 0.2, "dc2": 0.8})
    sim.advance(30)
    text = render(sim)
    for (cls, dc), m in sim.class_metrics.items():
        got = read_sample(text, dc, cls)
        assert (got.share, got.error_rate, got.cache_hit_ratio) == (
            m.share, m.error_rate, m.cache_hit_ratio)
        assert got.p99_ms == pytest.approx(m.p99_ms, rel=1e-12)
        assert got.db_util == sim.metrics[dc].db_utilisation
        assert got.retry_ratio == sim.metrics[dc].retry_ratio
    assert read_sample(text, "dc2", "api").share == pytest.approx(0.8)
    with pytest.raises(KeyError, match="api, web"):
        read_sample(text, "dc2", "tier9")


def _drive(sim: Simulator, script: Any) -> None:
    async def main() -> None:
        app = create_app(sim)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://sim"
        ) as client:
            await script(client, app)

    asyncio.run(main())


def test_http_routes_read_and_move_class_weights() -> None:
    sim = sim_for()

    async def script(client: httpx.AsyncClient, app: Any) -> None:
        body = (await client.get("/gslb/weights")).json()
        assert body["classes"] == {"web": {"dc1": 0.5, "dc2": 0.5},
                                   "api": {"dc1": 0.5, "dc2": 0.5}}
        assert body["weights"] == {"dc1": pytest.approx(0.5), "dc2": pytest.approx(0.5)}
        moved = await client.put("/gslb/weights/api", json={"weights": {"dc1": 1, "dc2": 3}})
        assert moved.json() == {"class": "api", "weights": {"dc1": 0.25, "dc2": 0.75}}
        state = (await client.get("/state")).json()
        assert state["class_weights"]["api"] == {"dc1": 0.25, "dc2": 0.75}
        unknown = await client.put("/gslb/weights/nope", json={"weights": {"dc1": 1}})
        assert unknown.status_code == 404 and unknown.json()["kind"] == "UnknownTarget"
        bad = await client.put("/gslb/weights/api", json={"weights": {"dc1": -1}})
        assert bad.status_code == 422 and bad.json()["kind"] == "BadRequest"
        via = await client.put("/r/gslb/dc2/gslb/weights/web", json={"weights": {"dc2": 1}})
        assert via.json()["weights"] == {"dc1": 0.0, "dc2": 1.0}

    _drive(sim, script)
    assert sim.estate.class_weights["web"] == {"dc1": 0.0, "dc2": 1.0}


def test_the_sim_adapters_read_and_move_classes() -> None:
    sim = sim_for()
    result: dict[str, Any] = {}

    async def script(client: httpx.AsyncClient, app: Any) -> None:
        def endpoint(tool: str) -> ReplicatedEndpoint:
            return ReplicatedEndpoint(
                tool, {"dc1": f"http://sim/r/{tool}/dc1", "dc2": f"http://sim/r/{tool}/dc2"},
                prefer_dc="dc2", transport_factory=lambda: httpx.ASGITransport(app=app),
            )

        traffic = SimTraffic(endpoint("gslb"))
        metrics = SimMetrics(ReplicatedEndpoint(  # no metrics tool declared: straight to sim
            "sim-metrics", {"sim": "http://sim"}, prefer_dc=None,
            transport_factory=lambda: httpx.ASGITransport(app=app),
        ))
        assert isinstance(traffic, Traffic) and isinstance(metrics, Metrics)
        result["before"] = await traffic.class_weights()
        await traffic.set_class_weights("api", {"dc2": 1.0})
        result["after"] = await traffic.class_weights()
        await client.post("/clock/wait", json={"for_s": 10})
        result["sample"] = await metrics.class_sample("api", "dc2")
        await traffic.aclose()
        await metrics.aclose()

    _drive(sim, script)
    assert result["before"]["api"] == {"dc1": 0.5, "dc2": 0.5}
    assert result["after"]["api"] == {"dc1": 0.0, "dc2": 1.0}
    sample = result["sample"]
    m = sim.class_metrics["api", "dc2"]
    assert sample.share == 1.0 and sample.cache_hit_ratio == m.cache_hit_ratio
    assert sample.db_util == sim.metrics["dc2"].db_utilisation
