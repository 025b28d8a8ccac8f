"""http-template against a real local HTTP API (a team's GSLB and compute API), wired from
topology YAML alone: round trips, refusals, failover, per-DC routing, actions, the sandbox."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
import yaml

from revive.errors import (
    InputError,
    NoDataError,
    NotFoundError,
    PermanentOpsError,
    TopologyError,
    TransientOpsError,
)
from revive.ops.adapters.http_template import ADAPTER, METHODS, TemplateTool, required_calls
from revive.ops.interfaces import Compute, Metrics, Traffic
from revive.ops.models import ActionState
from revive.ops.plugins import ToolContext, adapter, settings_of
from revive.topology import loads
from revive.topology.models import ToolKind
from tests.ops.http_gslb import TOKEN, GslbReplica, GslbState
from tests.ops.http_servers import running

T = TypeVar("T")
AUTH_ENV = "REVIVE_TEST_GSLB_AUTH"

GSLB_CALLS: dict[str, Any] = {
    "weights": {"url": "/api/v1/dcs", "result": "data.weights"},
    "set_weights": {
        "method": "PUT",
        "url": "{{ replica }}/api/v1/dcs",
        "body": {"weights": "{{ weights }}"},
        "success": "status == 200 and json.ok",
    },
    "class_weights": {"url": "/api/v1/classes", "result": "data.classes"},
    "set_class_weights": {
        "method": "put",
        "url": "/api/v1/classes/{{ traffic_class | urlencode }}",
        "body": '{"weights": {{ weights | tojson }}}',
        "success": "status == 200 and json.ok",
    },
}

COMPUTE_CALLS: dict[str, Any] = {
    "provision": {
        "method": "POST",
        "url": "/api/v1/compute/{{ dc }}/{{ service }}?count={{ count }}",
        "headers": {"Idempotency-Key": "{{ request_id or '' }}"},
        "idempotent": True,
        "replica_dc": "{{ dc }}",
        "result": "operation.name",
    },
    "quota": {"url": "/api/v1/quota/{{ dc }}", "replica_dc": "{{ dc }}",
              "result_expr": "json.left if json.left >= 0 else none"},
    "action_status": {
        "url": "/api/v1/operations/{{ ref.id }}",
        "result": "status",
        "states": {"RUNNING": "running", "SUCCEEDED": "done", "ERROR": "failed"},
    },
}


class Api:
    """Two replicas (dc1, dc2) of one API sharing a state."""

    def __init__(self) -> None:
        self.state = GslbState(dcs=("dc1", "dc2"),
                               classes={"web": {"dc1": 0.5, "dc2": 0.5},
                                        "api": {"dc1": 0.5, "dc2": 0.5}},
                               quota={"dc1": 5, "dc2": 2})
        self.replicas = {dc: GslbReplica(dc, self.state) for dc in ("dc1", "dc2")}

    def urls(self) -> dict[str, str]:
        return {dc: r.base for dc, r in self.replicas.items()}


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv(AUTH_ENV, f"Bearer {TOKEN}")
    found = Api()
    with running(*found.replicas.values()):
        yield found


def topology_text(kind: str, replicas: dict[str, str], settings: dict[str, Any]) -> str:
    data = {
        "environment": "drill",
        "datacenters": [{"name": "dc1"}, {"name": "dc2"}],
        "ops_tools": {"gslb": {"kind": kind, "adapter": "http-template",
                               "replicas": replicas, "settings": settings}},
        "services": [{"name": "web", "tier": 0, "group": "core",
                      "redundancy": "active-active", "instances": {"dc1": 2, "dc2": 2},
                      "capacity_per_instance": 100, "peak_load": 100,
                      "traffic_class": "web"}],
    }
    return yaml.safe_dump(data, sort_keys=False)


def gslb_settings(**extra: Any) -> dict[str, Any]:
    return {"headers_env": {"Authorization": AUTH_ENV}, "timeout_s": 2.0,
            "calls": copy.deepcopy(GSLB_CALLS), **extra}


def build(replicas: dict[str, str], settings: dict[str, Any], kind: str = "traffic") -> Any:
    """The adapter as a run builds it: YAML -> topology -> validated settings -> factory."""
    topology = loads(topology_text(kind, replicas, settings))
    tool = topology.ops_tools["gslb"]
    ctx = ToolContext("gslb", tool, settings_of("gslb", tool), run_dc="dc1", timeout_s=5.0,
                      topology=topology)
    factory = ADAPTER.factory(ToolKind(kind))
    assert factory is not None
    return factory(ctx)


def call(tool: TemplateTool, method: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        try:
            return await method()
        finally:
            await tool.aclose()

    return asyncio.run(main())


def test_the_entry_point_resolves_to_this_adapter() -> None:
    assert adapter("http-template") is ADAPTER
    assert set(ADAPTER.kinds) >= {ToolKind.traffic, ToolKind.compute, ToolKind.deploy}
    assert required_calls(ToolKind.traffic) == (
        "weights", "set_weights", "class_weights", "set_class_weights")


def test_a_traffic_tool_wired_from_yaml_round_trips_weights(api: Api) -> None:
    gslb = build(api.urls(), gslb_settings())
    assert isinstance(gslb, Traffic)

    async def main() -> tuple[Any, ...]:
        await gslb.set_class_weights("web", {"dc1": 3, "dc2": 1})
        classes = await gslb.class_weights()
        await gslb.set_weights({"dc1": 0.2, "dc2": 0.8})
        return classes, await gslb.weights(), await gslb.class_weights(), await gslb.probe()

    classes, weights, after, probe = call(gslb, main)
    assert classes["web"] == {"dc1": 0.75, "dc2": 0.25}
    assert classes["api"] == {"dc1": 0.5, "dc2": 0.5}
    assert weights == pytest.approx({"dc1": 0.2, "dc2": 0.8})
    assert after["api"] == pytest.approx({"dc1": 0.2, "dc2": 0.8})
    assert probe == {"dc1": True, "dc2": True}
    # The local DC's replica took every call, each with the token from the environment.
    assert [s.path for s in api.replicas["dc2"].seen] == ["/gslb/"]  # the probe
    assert all(seen.authorized for r in api.replicas.values() for seen in r.seen)
    assert {s.path for s in api.replicas["dc1"].seen} >= {
        "/gslb/api/v1/classes/web", "/gslb/api/v1/dcs", "/gslb/api/v1/classes"}


def test_a_false_success_condition_is_permanent_with_the_body(api: Api) -> None:
    gslb = build(api.urls(), gslb_settings())
    with pytest.raises(PermanentOpsError, match=r"success condition .* false.*"
                       r"unknown datacenter dc9") as info:
        call(gslb, lambda: gslb.set_weights({"dc9": 1.0}))
    assert info.value.tool == "gslb"
    gslb = build(api.urls(), gslb_settings())
    with pytest.raises(NotFoundError, match="no traffic class nope"):
        call(gslb, lambda: gslb.set_class_weights("nope", {"dc1": 1.0}))


def test_a_failing_replica_fails_over_to_the_other(api: Api) -> None:
    api.replicas["dc1"].set_mode("fail")
    gslb = build(api.urls(), gslb_settings())

    async def main() -> dict[str, dict[str, float]]:
        await gslb.set_class_weights("web", {"dc1": 0, "dc2": 1})  # PUT: idempotent
        return await gslb.class_weights()

    assert call(gslb, main)["web"] == {"dc1": 0.0, "dc2": 1.0}
    assert api.replicas["dc1"].seen and api.replicas["dc2"].seen


def test_a_replica_down_is_skipped(api: Api) -> None:
    api.replicas["dc1"].down()
    gslb = build(api.urls(), gslb_settings())
    assert call(gslb, gslb.weights) == {"dc1": 0.5, "dc2": 0.5}
    gslb = build(api.urls(), gslb_settings())
    assert call(gslb, gslb.probe) == {"dc1": False, "dc2": True}


def test_every_replica_down_or_slow_is_a_transient_error(api: Api) -> None:
    for replica in api.replicas.values():
        replica.set_mode("hang")
    gslb = build(api.urls(), gslb_settings(timeout_s=0.3))
    with pytest.raises(TransientOpsError, match="every replica failed"):
        call(gslb, gslb.class_weights)
    for replica in api.replicas.values():
        replica.down()
    gslb = build(api.urls(), gslb_settings())
    with pytest.raises(TransientOpsError, match="gslb: every replica failed for GET"):
        call(gslb, gslb.weights)


def test_a_compute_api_routes_per_dc_and_polls_actions(api: Api) -> None:
    settings = {"headers_env": {"Authorization": AUTH_ENV}, "calls": COMPUTE_CALLS}
    compute = build(api.urls(), settings, kind="compute")
    assert isinstance(compute, Compute)

    async def main() -> tuple[Any, ...]:
        ref = await compute.provision("web", "dc2", 2, request_id="r-1")
        again = await compute.provision("web", "dc2", 2, request_id="r-1")
        states = [(await compute.action_status(ref)).state for _ in range(2)]
        return ref, again, states, await compute.quota("dc2"), await compute.quota("dc1")

    ref, again, states, quota2, quota1 = call(compute, main)
    assert ref.id == again.id == "op-1"  # the same request id started nothing new
    assert (ref.kind, ref.target, ref.tool) == ("provision", "web@dc2", "gslb")
    assert states == [ActionState.running, ActionState.done]
    assert (quota2, quota1) == (0, 5)
    # The dc argument named the replica: dc2's got the provisioning, dc1's only its quota.
    assert {s.path for s in api.replicas["dc2"].seen if s.method == "POST"} == {
        "/gslb/api/v1/compute/dc2/web"}
    assert not [s for s in api.replicas["dc1"].seen if s.method == "POST"]


def test_an_api_refusal_on_an_action_is_permanent(api: Api) -> None:
    settings = {"headers_env": {"Authorization": AUTH_ENV}, "calls": COMPUTE_CALLS}
    compute = build(api.urls(), settings, kind="compute")
    with pytest.raises(PermanentOpsError, match=r"HTTP 403.*quota: 2 left in dc2"):
        call(compute, lambda: compute.provision("web", "dc2", 9, request_id="r-2"))


def test_results_convert_to_the_protocol_types_and_missing_series_hold(api: Api) -> None:
    """A metrics API: the sample is built by an expression; a missing series is no data."""
    settings = {"headers_env": {"Authorization": AUTH_ENV}, "calls": {
        "sample": {"url": "/api/v1/quota/{{ dc }}", "result_expr":
                   "{'share': json.left / 10, 'db_util': 0.5, 'p99_ms': '120', "
                   "'error_rate': 0.01}"},
        "class_sample": {"url": "/api/v1/quota/{{ dc }}", "result": "series.0"},
    }}
    metrics = build(api.urls(), settings, kind="metrics")
    assert isinstance(metrics, Metrics)
    sample = call(metrics, lambda: metrics.sample("dc1"))
    assert (sample.share, sample.p99_ms, sample.error_rate) == (0.5, 120.0, 0.01)
    metrics = build(api.urls(), settings, kind="metrics")
    with pytest.raises(NoDataError, match="no 'series' in the answer"):
        call(metrics, lambda: metrics.class_sample("web", "dc1"))


def test_a_missing_method_for_the_kind_names_the_key() -> None:
    settings = gslb_settings()
    del settings["calls"]["set_class_weights"]
    with pytest.raises(InputError, match=r"ops_tools\.gslb\.settings\.calls\."
                       r"set_class_weights: required for kind traffic"):
        build({"dc1": "http://127.0.0.1:9/x"}, settings)


def test_a_missing_secret_fails_before_acting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUTH_ENV, raising=False)
    with pytest.raises(InputError, match=rf"settings\.headers_env\.Authorization: environment "
                       rf"variable {AUTH_ENV} is not set"):
        build({"dc1": "http://127.0.0.1:9/x"}, gslb_settings())


def test_a_sandbox_escape_is_refused_at_validation() -> None:
    settings = gslb_settings()
    settings["calls"]["weights"]["url"] = "/x/{{ ''.__class__.__mro__ }}"
    settings["calls"]["class_weights"]["success"] = "json['__class__']"
    with pytest.raises(TopologyError) as info:
        loads(topology_text("traffic", {"dc1": "http://127.0.0.1:9"}, settings))
    text = str(info.value)
    assert "ops_tools.gslb.settings.calls.weights.url: refused: access to the private " \
           "attribute '__class__'" in text
    assert "ops_tools.gslb.settings.calls.class_weights.success: refused" in text


def test_a_sandbox_escape_is_refused_at_render_and_sends_nothing(api: Api) -> None:
    settings = gslb_settings()
    settings["calls"]["weights"]["url"] = "/api/v1/dcs?x={{ 'a' | attr('__class__') }}"
    gslb = build(api.urls(), settings)
    with pytest.raises(PermanentOpsError, match=r"calls\.weights\.url: refused by the "
                       r"template sandbox: access to attribute '__class__'"):
        call(gslb, gslb.weights)
    assert api.replicas["dc1"].seen == [] and api.replicas["dc2"].seen == []
    settings["calls"]["weights"]["url"] = "/api/v1/dcs?x={{ 'a' * 10**9 }}"
    gslb = build(api.urls(), settings)
    with pytest.raises(PermanentOpsError, match="template sandbox: repetition too large"):
        call(gslb, gslb.weights)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda c: c.update(weightz={"url": "/x"}),
         "ops_tools.gslb.settings.calls.weightz: unknown method 'weightz'"),
        (lambda c: c["weights"].update(url="/x/{{ dc"),
         "ops_tools.gslb.settings.calls.weights.url: does not parse"),
        (lambda c: c["set_class_weights"].update(url="/c/{{ traffic_klass }}"),
         "ops_tools.gslb.settings.calls.set_class_weights.url: unknown variable(s) "
         "traffic_klass"),
        (lambda c: c["weights"].update(url="https://elsewhere.example/w"),
         "ops_tools.gslb.settings.calls.weights.url: must be relative"),
        (lambda c: c["weights"].update(method="FETCH"),
         "ops_tools.gslb.settings.calls.weights.method:"),
        (lambda c: c["set_weights"].update(success="status = 200"),
         "ops_tools.gslb.settings.calls.set_weights.success: does not parse"),
        (lambda c: c["weights"].update(result="data..weights"),
         "ops_tools.gslb.settings.calls.weights.result:"),
        (lambda c: c["weights"].update(headers_env={"X-Key": "not a name"}),
         "ops_tools.gslb.settings.calls.weights.headers_env:"),
        (lambda c: c["set_weights"].pop("url"),
         "ops_tools.gslb.settings.calls.set_weights.url: required"),
        (lambda c: c["set_weights"].update(body={"w": "{{ weights | nosuchfilter }}"}),
         "ops_tools.gslb.settings.calls.set_weights.body.w: does not parse"),
    ],
)
def test_settings_errors_name_the_key(change: Callable[[dict[str, Any]], Any], where: str) -> None:
    settings = gslb_settings()
    change(settings["calls"])
    with pytest.raises(TopologyError) as info:
        loads(topology_text("traffic", {"dc1": "http://127.0.0.1:9"}, settings))
    assert where in str(info.value)


def test_calls_are_required() -> None:
    with pytest.raises(TopologyError, match=r"ops_tools\.gslb\.settings\.calls: required"):
        loads(topology_text("traffic", {"dc1": "http://127.0.0.1:9"}, {}))


def test_every_protocol_method_of_every_kind_is_a_known_call() -> None:
    for kind in ADAPTER.kinds:
        assert set(required_calls(kind)) <= set(METHODS)
