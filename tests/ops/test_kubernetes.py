"""The kubernetes adapter against a local API server per DC (tests/ops/fake_kube.py).

No cluster runs here: each DC's "cluster" is a real HTTP server answering with objects built
from kubernetes_asyncio's models, so the adapter goes through the real client library, its
serialisation, content types, bearer auth and timeouts.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from revive.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    OpsError,
    PermanentOpsError,
    QuotaError,
    TopologyError,
    TransientOpsError,
)
from revive.ops.adapters.kubernetes import (
    ADAPTER,
    PREVIOUS_IMAGE,
    PROVISIONED,
    RESTARTED_AT,
    KubernetesTool,
)
from revive.ops.interfaces import Compute, ServiceControl
from revive.ops.models import ActionState
from revive.ops.plugins import ToolContext, adapter, settings_of
from revive.ops.replicas import ReplicaPolicy
from revive.topology import Topology, loads, parse
from revive.topology.models import ToolKind
from tests.factories import estate, service
from tests.ops.fake_kube import STRATEGIC, FakeKube

T = TypeVar("T")
TOKEN = "kube-t0ken-for-tests"
TOKEN_ENV = "REVIVE_TEST_K8S_TOKEN"
IMAGE = "registry.example:5000/shop/web"
DEADLINE_S = 30.0  # a generous bound against hangs, never an assertion on duration
FAST = ReplicaPolicy(max_attempts=2, backoff_base_s=0.01, backoff_cap_s=0.05)

Kubes = dict[str, FakeKube]


def run(main: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main, DEADLINE_S)

    return asyncio.run(bounded())


@pytest.fixture
def kubes() -> Iterator[Kubes]:
    servers = {dc: FakeKube(dc, TOKEN) for dc in ("dc1", "dc2")}
    try:
        for kube in servers.values():
            kube.up()
            kube.add_deployment("shop", "web", image=f"{IMAGE}:1.0", replicas=2)
            kube.add_deployment("shop", "worker", image="registry.example/worker:v7",
                                replicas=3, container="main", sidecar="envoy:1.29")
        yield servers
    finally:
        for kube in servers.values():
            kube.down()


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)


def settings(**extra: Any) -> dict[str, Any]:
    return {
        "services": {
            "web": {"namespace": "shop", "deployment": "web"},
            "worker": {"namespace": "shop", "deployment": "worker", "container": "main",
                       "image": "registry.example/worker:v{version}"},
            "ghost": {"namespace": "shop", "deployment": "ghost"},
        },
        "token_env": TOKEN_ENV,
        **extra,
    }


def topology(kubes: Kubes, *, kind: str = "deploy", **extra: Any) -> Topology:
    tool = {"kind": kind, "adapter": "kubernetes",
            "replicas": {dc: k.url for dc, k in kubes.items()}, "settings": settings(**extra)}
    data = estate(service("web"), service("worker"), service("ghost"),
                  datacenters=[{"name": "dc1", "spare_instances": 5}, {"name": "dc2"}])
    data["ops_tools"]["k8s"] = tool
    return parse(data)


def make(kubes: Kubes, *, kind: str = "deploy", timeout_s: float = 5.0,
         **extra: Any) -> KubernetesTool:
    topo = topology(kubes, kind=kind, **extra)
    tool = topo.ops_tools["k8s"]
    ctx = ToolContext("k8s", tool, settings_of("k8s", tool), "dc1", timeout_s,
                      policy=FAST, topology=topo)
    factory = ADAPTER.factory(ToolKind(kind))
    assert factory is not None
    made = factory(ctx)
    assert isinstance(made, KubernetesTool)
    return made


async def closing(tool: KubernetesTool, main: Coroutine[Any, Any, T]) -> T:
    try:
        return await main
    finally:
        await tool.aclose()


def image_of(dep: dict[str, Any], container: str = "app") -> str:
    return next(c["image"] for c in dep["spec"]["template"]["spec"]["containers"]
                if c["name"] == container)


# The plug-in point


def test_the_entry_point_resolves_to_this_adapter_for_deploy_and_compute(kubes: Kubes) -> None:
    assert adapter("kubernetes") is ADAPTER
    assert set(ADAPTER.kinds) == {ToolKind.deploy, ToolKind.compute}
    deploy, compute = make(kubes), make(kubes, kind="compute")
    assert isinstance(deploy, ServiceControl)
    assert isinstance(compute, Compute)
    assert TOKEN not in repr(deploy)
    assert all(not k.requests for k in kubes.values())  # factories connect to nothing
    run(deploy.aclose())
    run(compute.aclose())


# Settings


def topology_text(settings_yaml: str) -> str:
    return f"""\
datacenters:
  - name: dc1
ops_tools:
  k8s:
    kind: deploy
    adapter: kubernetes
    replicas: {{dc1: "https://api.k8s.dc1:6443"}}
    settings:
{settings_yaml}
services:
  - name: web
    tier: 0
    group: shop
    redundancy: single-dc
    instances: {{dc1: 2}}
    capacity_per_instance: 100
    peak_load: 100
"""


def problems(settings_data: dict[str, Any]) -> str:
    text = yaml.safe_dump(settings_data, default_flow_style=False)
    indented = "".join(f"      {line}\n" for line in text.splitlines())
    with pytest.raises(TopologyError) as info:
        loads(topology_text(indented))
    return str(info.value)


def test_valid_settings_load() -> None:
    text = "      services: {web: {namespace: shop, deployment: web, image: 'r/web:{version}'}}\n"
    topo = loads(topology_text(text + "      token_file: /run/secrets/k8s\n"
                                      "      timeout_s: 5\n"))
    assert topo.ops_tools["k8s"].settings["services"]["web"]["deployment"] == "web"


@pytest.mark.parametrize(("data", "where", "what"), [
    ({"services": {"web": {"deployment": "web"}}},
     "ops_tools.k8s.settings.services.web.namespace", "required"),
    ({"token_env": "X"}, "ops_tools.k8s.settings.services", "required"),
    ({"services": {}}, "ops_tools.k8s.settings.services", "at least 1"),
    ({"services": {"web": {"namespace": "Shop_NS", "deployment": "web"}}},
     "ops_tools.k8s.settings.services.web.namespace", "pattern"),
    ({"services": {"web": {"namespace": "shop", "deployment": "web", "image": "r/web:1.0"}}},
     "ops_tools.k8s.settings.services.web.image", "{version}"),
    ({"services": {"web": {"namespace": "shop", "deployment": "web"}}, "timeout_s": 0},
     "ops_tools.k8s.settings.timeout_s", "greater than 0"),
    ({"services": {"web": {"namespace": "shop", "deployment": "web"}}, "token": "x"},
     "ops_tools.k8s.settings.token", "unknown setting"),
    ({"services": {"web": {"namespace": "shop", "deployment": "web"}},
      "token_env": "A", "token_file": "/b"},
     "ops_tools.k8s.settings", "not both"),
    ({"services": {"web": {"namespace": "shop", "deployment": "web"}},
      "ca_file": "/ca.pem", "insecure_skip_tls_verify": True},
     "ops_tools.k8s.settings", "not both"),
])
def test_wrong_settings_are_located(data: dict[str, Any], where: str, what: str) -> None:
    message = problems(data)
    line = next((ln for ln in message.splitlines() if f"{where}:" in ln), "")
    assert what in line, message


def test_a_token_env_that_is_not_set_fails_the_build(
    kubes: Kubes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(InputError, match=TOKEN_ENV):
        make(kubes)


# ServiceControl


def test_state_reads_the_deployment_of_the_named_dc_only(kubes: Kubes) -> None:
    tool = make(kubes)
    kubes["dc2"].observe("shop", "web", ready=1)

    async def main() -> tuple[Any, ...]:
        return (await tool.state("web", "dc1"), await tool.state("worker", "dc1"),
                await tool.state("ghost", "dc1"))

    web, worker, ghost = run(closing(tool, main()))
    assert (web.exists, web.instances, web.healthy, web.version, web.busy) == (
        True, 2, 2, "1.0", False)
    # The template's {version} part, from the named container (not the sidecar).
    assert (worker.instances, worker.version) == (3, "7")
    assert (ghost.exists, ghost.instances, ghost.healthy) == (False, 0, 0)
    assert not kubes["dc2"].requests
    assert {r.authorization for r in kubes["dc1"].requests} == {f"Bearer {TOKEN}"}


def test_restart_patches_the_pod_template_annotation_with_a_strategic_merge(
    kubes: Kubes,
) -> None:
    tool = make(kubes)
    kube = kubes["dc1"]

    async def main() -> tuple[Any, ...]:
        ref = await tool.restart("web", "dc1")
        state = await tool.state("web", "dc1")
        running = await tool.action_status(ref)
        kube.observe("shop", "web", ready=1)
        halfway = await tool.action_status(ref)
        kube.finish_rollout("shop", "web")
        return ref, state, running, halfway, await tool.action_status(ref)

    ref, state, running, halfway, done = run(closing(tool, main()))
    assert (ref.tool, ref.kind, ref.target) == ("k8s", "restart", "web@dc1")
    [patch] = kube.patches()
    assert patch.path == "/apis/apps/v1/namespaces/shop/deployments/web"
    assert patch.content_type == STRATEGIC
    assert patch.authorization == f"Bearer {TOKEN}"
    stamp = patch.body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    dep = kube.deployment("shop", "web")
    assert dep["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == stamp
    assert dep["spec"]["template"]["metadata"]["labels"] == {"app": "web"}  # merged, kept
    assert image_of(dep) == f"{IMAGE}:1.0"
    assert state.busy
    assert (running.state, halfway.state, done.state) == (
        ActionState.running, ActionState.running, ActionState.done)
    assert done.ended_at is not None
    assert not kubes["dc2"].patches()


def test_deploy_sets_the_image_and_the_replicas_and_keeps_other_containers(
    kubes: Kubes,
) -> None:
    tool = make(kubes)
    kube = kubes["dc1"]

    async def main() -> tuple[Any, ...]:
        web = await tool.deploy("web", "dc1", 4, "2.0")
        await tool.deploy("worker", "dc1", 5, "8")
        kube.finish_rollout("shop", "web")
        kube.finish_rollout("shop", "worker")
        return (web, await tool.action_status(web), await tool.state("web", "dc1"),
                await tool.state("worker", "dc1"))

    ref, status, web, worker = run(closing(tool, main()))
    assert ref.kind == "deploy" and status.state == ActionState.done
    dep = kube.deployment("shop", "web")
    assert (dep["spec"]["replicas"], image_of(dep)) == (4, f"{IMAGE}:2.0")
    assert dep["metadata"]["annotations"][PREVIOUS_IMAGE] == f"{IMAGE}:1.0"
    assert (web.instances, web.healthy, web.version) == (4, 4, "2.0")
    workers = kube.deployment("shop", "worker")
    assert image_of(workers, "main") == "registry.example/worker:v8"
    assert image_of(workers, "sidecar") == "envoy:1.29"
    assert (worker.instances, worker.version) == (5, "8")
    assert {p.content_type for p in kube.patches()} == {STRATEGIC}


def test_set_version_and_back_to_the_previous_image(kubes: Kubes) -> None:
    tool = make(kubes)
    kube = kubes["dc1"]

    async def main() -> list[str]:
        seen = []
        await tool.set_version("web", "dc1", "3.1")
        seen.append(image_of(kube.deployment("shop", "web")))
        await tool.set_version("web", "dc1", None)
        seen.append(image_of(kube.deployment("shop", "web")))
        kube.finish_rollout("shop", "web")
        seen.append((await tool.state("web", "dc1")).version)
        return seen

    assert run(closing(tool, main())) == [f"{IMAGE}:3.1", f"{IMAGE}:1.0", "1.0"]
    assert kube.deployment("shop", "web")["spec"]["replicas"] == 2


def test_going_back_without_a_recorded_previous_image_is_a_conflict(kubes: Kubes) -> None:
    tool = make(kubes)
    with pytest.raises(ConflictError, match=PREVIOUS_IMAGE):
        run(closing(tool, tool.set_version("web", "dc1", None)))
    assert not kubes["dc1"].patches()


def test_a_resent_request_id_patches_nothing_again_even_from_a_new_process(
    kubes: Kubes,
) -> None:
    first, resumed = make(kubes), make(kubes)

    async def main() -> tuple[Any, ...]:
        a = await first.restart("web", "dc1", request_id="run-7/step-3")
        b = await first.restart("web", "dc1", request_id="run-7/step-3")
        c = await resumed.restart("web", "dc1", request_id="run-7/step-3")
        d = await resumed.deploy("web", "dc1", 3, "2.0", request_id="run-7/step-4")
        e = await first.deploy("web", "dc1", 3, "2.0", request_id="run-7/step-4")
        await resumed.aclose()
        return a, b, c, d, e

    a, b, c, d, e = run(closing(first, main()))
    assert a == b == c and d == e and a != d
    assert len(kubes["dc1"].patches()) == 2


def test_a_patch_refused_by_a_concurrent_writer_is_read_and_sent_again(kubes: Kubes) -> None:
    tool = make(kubes)
    kube = kubes["dc1"]

    async def main() -> None:
        kube.conflicts = 1
        await tool.deploy("web", "dc1", 3, "2.0")
        assert kube.deployment("shop", "web")["spec"]["replicas"] == 3
        assert len(kube.patches()) == 2
        kube.conflicts = 10
        with pytest.raises(ConflictError, match="kept changing"):
            await tool.restart("web", "dc1")

    run(closing(tool, main()))


def test_a_stalled_rollout_fails_the_action(kubes: Kubes) -> None:
    tool = make(kubes)

    async def main() -> Any:
        ref = await tool.deploy("web", "dc1", 2, "9.9")
        kubes["dc1"].stall_rollout("shop", "web")
        return await tool.action_status(ref)

    status = run(closing(tool, main()))
    assert status.state == ActionState.failed
    assert status.error is not None and "progress deadline" in status.error


# Compute


def test_provision_scales_up_within_the_dc_quota(kubes: Kubes) -> None:
    tool = make(kubes, kind="compute")
    kube = kubes["dc1"]

    async def main() -> tuple[Any, ...]:
        before = await tool.quota("dc1")
        ref = await tool.provision("web", "dc1", 3, request_id="p1")
        again = await tool.provision("web", "dc1", 3, request_id="p1")  # resent: no-op
        after = await tool.quota("dc1")
        with pytest.raises(QuotaError, match="quota"):
            await tool.provision("worker", "dc1", 3)
        await tool.provision("worker", "dc1", 2)
        kube.finish_rollout("shop", "web")
        return before, ref, again, after, await tool.quota("dc1"), await tool.action_status(ref)

    before, ref, again, after, last, status = run(closing(tool, main()))
    assert (before, after, last) == (5, 2, 0)
    assert ref == again and ref.kind == "provision"
    assert status.state == ActionState.done
    web = kube.deployment("shop", "web")
    assert web["spec"]["replicas"] == 5
    assert web["metadata"]["annotations"][PROVISIONED] == "3"
    assert kube.deployment("shop", "worker")["spec"]["replicas"] == 5
    assert len(kube.patches()) == 2  # the refused one patched nothing


def test_a_dc_without_spare_instances_declared_has_no_limit(kubes: Kubes) -> None:
    tool = make(kubes, kind="compute")

    async def main() -> int | None:
        await tool.provision("web", "dc2", 50)
        return await tool.quota("dc2")

    assert run(closing(tool, main())) is None
    assert kubes["dc2"].deployment("shop", "web")["spec"]["replicas"] == 52
    assert not kubes["dc1"].patches()


# Faults


def test_unknown_deployment_service_or_dc_is_not_found(kubes: Kubes) -> None:
    tool = make(kubes)

    async def main() -> None:
        with pytest.raises(NotFoundError, match="shop/ghost"):
            await tool.restart("ghost", "dc1")
        with pytest.raises(NotFoundError, match=r"settings\.services"):
            await tool.state("nope", "dc1")
        with pytest.raises(NotFoundError, match="dc9"):
            await tool.deploy("web", "dc9", 1, "1.0")

    run(closing(tool, main()))
    assert not kubes["dc1"].patches()


def test_one_dc_api_down_fails_that_dc_only(kubes: Kubes) -> None:
    tool = make(kubes)
    kubes["dc1"].down()

    async def main() -> tuple[Any, ...]:
        with pytest.raises(TransientOpsError, match="dc1") as info:
            await tool.restart("web", "dc1")
        ref = await tool.restart("web", "dc2")
        return info.value, ref, await tool.probe()

    error, ref, probe = run(closing(tool, main()))
    assert error.tool == "k8s" and error.target == "web@dc1"
    assert ref.target == "web@dc2"
    assert probe == {"dc1": False, "dc2": True}
    assert len(kubes["dc2"].patches()) == 1


def test_an_api_server_error_is_transient_and_retried_on_that_dc_only(kubes: Kubes) -> None:
    tool = make(kubes)
    kubes["dc1"].error(503)
    with pytest.raises(TransientOpsError, match="503"):
        run(closing(tool, tool.state("web", "dc1")))
    assert len(kubes["dc1"].requests) == FAST.max_attempts
    assert not kubes["dc2"].requests


@pytest.mark.parametrize(("status", "says"), [(403, "RBAC"), (422, "Invalid")])
def test_a_refusal_is_permanent_and_not_retried(kubes: Kubes, status: int, says: str) -> None:
    tool = make(kubes)
    kubes["dc1"].error(status)
    with pytest.raises(PermanentOpsError, match=says) as info:
        run(closing(tool, tool.restart("web", "dc1")))
    assert not isinstance(info.value, TransientOpsError)
    assert str(status) in str(info.value)
    assert len(kubes["dc1"].requests) == 1


def test_a_slow_api_times_out_as_transient_without_hanging(kubes: Kubes) -> None:
    tool = make(kubes, timeout_s=0.3)
    kubes["dc1"].hang(DEADLINE_S)

    async def main() -> tuple[Any, ...]:
        with pytest.raises(TransientOpsError, match="no answer within") as info:
            await tool.state("web", "dc1")
        return info.value, await tool.state("web", "dc2"), await tool.probe()

    error, other, probe = run(closing(tool, main()))
    assert isinstance(error, OpsError) and error.target == "web@dc1"
    assert other.exists
    assert probe == {"dc1": False, "dc2": True}


def test_a_wrong_token_is_permanent_and_says_to_check_the_token(
    kubes: Kubes, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "not-the-token"
    monkeypatch.setenv(TOKEN_ENV, wrong)
    tool = make(kubes)
    with pytest.raises(PermanentOpsError, match="check the token") as info:
        run(closing(tool, tool.restart("web", "dc1")))
    assert not isinstance(info.value, TransientOpsError)
    assert TOKEN_ENV in str(info.value) and wrong not in str(info.value)
    assert len(kubes["dc1"].requests) == 1  # a refusal is not retried
    assert kubes["dc1"].requests[0].authorization == f"Bearer {wrong}"


def test_a_rotated_token_file_is_read_again(kubes: Kubes, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings_ = {"token_env": None, "token_file": str(token_file)}
    tool = make(kubes, **settings_)

    async def main() -> bool:
        await tool.state("web", "dc1")
        for kube in kubes.values():
            kube.token = "rotated"
        token_file.write_text("rotated\n")
        stat = token_file.stat()
        os.utime(token_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        return (await tool.state("web", "dc1")).exists

    assert run(closing(tool, main()))
    assert kubes["dc1"].requests[-1].authorization == "Bearer rotated"


def test_a_closed_adapter_refuses_calls(kubes: Kubes) -> None:
    tool = make(kubes)

    async def main() -> None:
        await tool.state("web", "dc1")
        await tool.aclose()
        with pytest.raises(PermanentOpsError, match="closed"):
            await tool.state("web", "dc1")

    run(main())
