"""The simulator's HTTP API: each endpoint's happy path and its error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from revive.sim import SimConfig, Simulator
from revive.sim.app import create_app
from revive.sim.metrics import SAMPLE_METRICS, read_sample
from tests.factories import build, service, tools

BOTH = {"dc1": "https://x.dc1.example", "dc2": "https://x.dc2.example"}
Script = Callable[[httpx.AsyncClient], Coroutine[Any, Any, None]]


def make_sim() -> Simulator:
    """Every tool kind the endpoints need, a DB, a service with a feature, one dc1-only."""
    topology = build(
        service("user-db", group="storage", role="database", peak_load=1_000,
                capacity_per_instance=200, instances={"dc1": 6, "dc2": 6}),
        service("front", restart_seconds=60, peak_load=400, capacity_per_instance=100,
                instances={"dc1": 4, "dc2": 4},
                features=[{"name": "previews", "priority": 1, "cost": 0.2}]),
        service("batch", tier=2, instances={"dc1": 2, "dc2": 0}),
        ops_tools=tools(
            compute={"kind": "compute", "replicas": dict(BOTH)},
            registry={"kind": "registry", "replicas": dict(BOTH)},
            config={"kind": "config_store", "replicas": dict(BOTH)},
            gslb={"kind": "traffic", "replicas": dict(BOTH)},
        ),
        datacenters=[{"name": "dc1", "spare_instances": 400}, {"name": "dc2"}],
    )
    return Simulator(topology, seed=11, config=SimConfig(restart_jitter=0.0))


def drive(script: Script, sim: Simulator | None = None) -> Simulator:
    """Run ``script`` against a fresh app (or ``sim``'s) on its own event loop."""
    sim = sim or make_sim()

    async def main() -> None:
        transport = httpx.ASGITransport(app=create_app(sim))
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            await script(client)

    asyncio.run(main())
    return sim


def error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "kind"} and body["kind"] == kind, body
    return str(body["error"])


async def wait_for(client: httpx.AsyncClient, action: str) -> dict[str, Any]:
    response = await client.post("/clock/wait", json={"actions": [action]})
    assert response.status_code == 200, response.text
    result = (await client.get(f"/actions/{action}")).json()
    assert result["ends_at"] == response.json()["now"]
    return dict(result)


def test_health_clock_state_and_metrics() -> None:
    async def script(client: httpx.AsyncClient) -> None:
        assert (await client.get("/healthz")).json() == {"ok": True, "time": 0.0}
        assert (await client.post("/clock/wait", json={"for_s": 30})).json() == {"now": 30.0}
        assert (await client.get("/clock")).json() == {"now": 30.0}
        state = (await client.get("/state")).json()
        assert state["dcs"] == {"dc1": True, "dc2": True}
        # batch's class (tier2) runs in dc1 only, so its users start there: dc1 carries
        # front's half (2/3 of the load) and all of batch's (1/3)
        assert state["weights"] == {"dc1": pytest.approx(2 / 3), "dc2": pytest.approx(1 / 3)}
        assert state["class_weights"] == {"tier0": {"dc1": 0.5, "dc2": 0.5},
                                          "tier2": {"dc1": 1.0, "dc2": 0.0}}
        assert state["quotas"] == {"dc1": 400, "dc2": None}  # None: no limit declared
        assert state["retry_policy"] is None
        assert state["services"]["batch"]["dc2"]["exists"] is False
        assert state["services"]["front"]["dc1"]["healthy"] == 4
        metrics = await client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert len(list(text_string_to_metric_families(metrics.text))) > 10
        sample = read_sample(metrics.text, "dc2")
        assert sample.t == 30.0 and sample.share == pytest.approx(1 / 3)
        # an exporter's name[] filter: only the series asked for, the same values
        some = await client.get("/metrics", params={"name[]": list(SAMPLE_METRICS)})
        assert {f.name for f in text_string_to_metric_families(some.text)} == set(
            SAMPLE_METRICS)
        assert read_sample(some.text, "dc2") == sample
        assert len(some.text) < len(metrics.text) / 2  # the per-class series are in it too

    drive(script)


def test_services_and_their_errors() -> None:
    async def script(client: httpx.AsyncClient) -> None:
        view = (await client.get("/services/dc1/front")).json()
        assert view["instances"] == 4 and view["version"] == "v1" and not view["busy"]
        assert "ghost" in error(await client.get("/services/dc1/ghost"), 404, "UnknownTarget")
        assert "dc9" in error(await client.get("/services/dc9/front"), 404, "UnknownTarget")
        started = await client.post("/services/dc1/front/restart")
        assert started.status_code == 202
        action = started.json()["action"]
        busy = await client.post("/services/dc1/front/restart")
        assert action in error(busy, 409, "Conflict")
        assert (await client.get("/actions")).json()["actions"][0]["id"] == action
        done = await wait_for(client, action)
        assert (done["kind"], done["state"], done["ends_at"]) == ("restart", "done", 60.0)
        assert (await client.get("/services/dc1/front")).json()["healthy"] == 4
        error(await client.get("/actions/a9999"), 404, "UnknownTarget")

    drive(script)


def test_patch_rollback_deploy_and_provision() -> None:
    async def script(client: httpx.AsyncClient) -> None:
        missing = await client.post("/services/dc1/front/patch", json={"version": "v2"})
        assert "v2" in error(missing, 424, "ArtifactMissing")
        no_body = await client.post("/services/dc1/front/patch", json={})
        assert "version" in error(no_body, 422, "BadRequest")
        v2 = {"artifact": "front", "version": "v2"}
        pushed = await client.post("/registry/dc1/push", json=v2)
        assert pushed.json()["ok"] is True
        patch = await client.post("/services/dc1/front/patch", json={"version": "v2"})
        assert (await wait_for(client, patch.json()["action"]))["state"] == "done"
        assert (await client.get("/services/dc1/front")).json()["version"] == "v2"
        rollback = await client.post("/services/dc1/front/rollback")
        await wait_for(client, rollback.json()["action"])
        assert (await client.get("/services/dc1/front")).json()["version"] == "v1"
        deploy = await client.post("/services/dc2/batch/deploy", json={"instances": 3})
        assert (await wait_for(client, deploy.json()["action"]))["state"] == "done"
        assert (await client.get("/services/dc2/batch")).json()["healthy"] == 3
        again = await client.post("/services/dc2/batch/deploy", json={"instances": 3})
        error(again, 409, "Conflict")
        body = {"service": "front", "count": 2}
        provision = await client.post("/compute/dc2/provision", json=body)
        assert provision.status_code == 202
        await wait_for(client, provision.json()["action"])
        assert (await client.get("/services/dc2/front")).json()["healthy"] == 6
        zero = await client.post("/compute/dc2/provision", json={"service": "front", "count": 0})
        error(zero, 422, "BadRequest")
        await client.post("/faults/exhaust-quota/dc2")
        quota = await client.post("/compute/dc2/provision", json=body)
        assert "quota" in error(quota, 409, "QuotaExceeded")

    drive(script)


def test_registry_gslb_and_config_store() -> None:
    async def script(client: httpx.AsyncClient) -> None:
        held = (await client.get("/registry/dc2")).json()
        assert {"artifact": "front", "version": "v1"} in held["artifacts"]
        await client.post("/registry/dc1/push", json={"artifact": "front", "version": "v3"})
        body = {"artifact": "front", "version": "v3", "src_dc": "dc1", "dst_dc": "dc2"}
        copy = await client.post("/registry/copy", json=body)
        assert copy.status_code == 202
        await wait_for(client, copy.json()["action"])
        held = (await client.get("/registry/dc2")).json()
        assert {"artifact": "front", "version": "v3"} in held["artifacts"]
        same = await client.post("/registry/copy", json={**body, "dst_dc": "dc1"})
        error(same, 422, "BadRequest")

        assert (await client.get("/gslb/weights")).json()["classes"]["tier0"] == {
            "dc1": 0.5, "dc2": 0.5}
        moved = await client.put("/gslb/weights", json={"weights": {"dc1": 1, "dc2": 3}})
        assert moved.json() == {"weights": {"dc1": 0.25, "dc2": 0.75}}
        error(await client.put("/gslb/weights", json={"weights": {"dc1": -1}}), 422, "BadRequest")
        error(await client.put("/gslb/weights", json={"weights": {"dc9": 1}}), 404, "UnknownTarget")

        flags = (await client.get("/config/flags")).json()
        assert flags == {"flags": {"front": {"previews": True}}}
        off = await client.put("/config/flags/front/previews", json={"on": False})
        assert off.json() == {"service": "front", "feature": "previews", "on": False}
        unknown = await client.put("/config/flags/front/nope", json={"on": False})
        assert "nope" in error(unknown, 404, "UnknownTarget")
        assert (await client.get("/config/retry-policy")).json() is None
        policy = await client.put("/config/retry-policy", json={"budget": 0.2})
        assert policy.json()["budget"] == 0.2
        assert (await client.get("/config/retry-policy")).json()["max_attempts"] == 3
        error(await client.put("/config/retry-policy", json={"budget": 5}), 422, "BadRequest")
        cleared = await client.put("/config/retry-policy", json=None)
        assert cleared.status_code == 200 and cleared.json() is None

    sim = drive(script)
    assert sim.estate.retry_policy is None
    assert sim.estate.weights == {"dc1": 0.25, "dc2": 0.75}


def test_faults_and_the_errors_they_cause() -> None:
    async def script(client: httpx.AsyncClient) -> None:
        health = (await client.get("/health/dc1")).json()
        assert health["healthy"]["front"] == 4 and health["checked_at"] == 0.0
        assert (await client.post("/faults/power-loss/dc1")).json()["ok"] is True
        down = await client.post("/services/dc1/front/restart")
        assert "dc1" in error(down, 424, "Unavailable")
        await client.post("/faults/power-restore/dc1")
        restart = await client.post("/services/dc1/front/restart")
        assert restart.status_code == 202
        await wait_for(client, restart.json()["action"])

        await client.post("/faults/fail-restarts/dc2/front", json={"count": 1})
        failed = await client.post("/services/dc2/front/restart")
        result = await wait_for(client, failed.json()["action"])
        assert result["state"] == "failed" and "injected" in result["error"]

        slow = await client.post("/faults/tool-slow/compute/dc2", json={"extra_latency_s": 30})
        assert slow.status_code == 200
        bad = await client.post("/faults/tool-slow/compute/dc2", json={"extra_latency_s": -1})
        error(bad, 422, "BadRequest")
        one = {"service": "front", "count": 1}
        provision = await client.post("/compute/dc2/provision", json=one)
        started = (await client.get(f"/actions/{provision.json()['action']}")).json()
        assert started["ends_at"] - started["started_at"] == 90 + 30
        await client.post("/faults/tool-restore/compute/dc2")
        error(await client.post("/faults/tool-down/ghost/dc1"), 404, "UnknownTarget")
        for dc in ("dc1", "dc2"):
            await client.post(f"/faults/tool-down/health/{dc}")
        error(await client.get("/health/dc2"), 424, "Unavailable")

    sim = drive(script)
    assert sim.estate.replica("compute", "dc2").extra_latency_s == 0.0


def test_clock_participants_share_virtual_time() -> None:
    async def script(client: httpx.AsyncClient) -> None:
        a = (await client.post("/clock/join")).json()["participant"]
        b = (await client.post("/clock/join")).json()["participant"]
        long = asyncio.ensure_future(
            client.post("/clock/wait", json={"participant": b, "for_s": 30})
        )
        for _ in range(5):  # a is working: the clock stays put
            assert (await client.get("/clock")).json() == {"now": 0.0}
        short = await client.post("/clock/wait", json={"participant": a, "until": 10})
        assert short.json() == {"now": 10.0}
        assert not long.done()
        assert (await client.post(f"/clock/leave/{a}")).status_code == 200
        assert (await long).json() == {"now": 30.0}
        await client.post(f"/clock/leave/{b}")

        both = await client.post("/clock/wait", json={"until": 50, "for_s": 5})
        error(both, 422, "BadRequest")
        error(await client.post("/clock/wait", json={}), 422, "BadRequest")
        error(await client.post("/clock/wait", json={"for_s": -1}), 422, "BadRequest")
        stranger = await client.post("/clock/wait", json={"participant": "p77", "for_s": 1})
        assert "p77" in error(stranger, 404, "UnknownTarget")
        error(await client.post(f"/clock/leave/{a}"), 404, "UnknownTarget")
        unknown = await client.post("/clock/wait", json={"actions": ["a0404"]})
        assert "a0404" in error(unknown, 404, "UnknownTarget")

    assert drive(script).clock.now == 30.0
