"""The registry-v2 adapter against two real ``docker-registry`` processes (dc1, dc2).

Each DC has its own registry: ``has`` asks that DC's, ``copy`` moves an image between two of
them checking every blob, and nothing ever silently answers from another DC's registry.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from revive.errors import (
    DependencyError,
    InputError,
    NotFoundError,
    PermanentOpsError,
    TopologyError,
    TransientOpsError,
)
from revive.lab.daemon import Daemon, DaemonError, free_port, port_open
from revive.lab.registry import registry_url, start_registry
from revive.ops import plugins
from revive.ops.adapters import oci, registry_v2
from revive.ops.adapters.registry_v2 import RegistryV2, RegistryV2Settings
from revive.ops.endpoint import EndpointPolicy
from revive.ops.interfaces import Registry
from revive.ops.models import ActionRef, ActionState
from revive.ops.plugins import ToolContext
from revive.topology import loads
from revive.topology.models import OpsTool, ToolKind
from tests.ops.programs import require
from tests.ops.registry_fakes import RecordingTransport, Sent, SilentServer
from tests.ops.replica_servers import replica_servers

T = TypeVar("T")
TOOL = "registry"
# Few, quick retries: a dead or silent registry fails the call in a few seconds at most.
POLICY = EndpointPolicy(max_attempts=2, backoff_base_s=0.01, backoff_cap_s=0.05)
FILES = {"bin/app": b"#!/bin/sh\necho hello\n", "etc/app.conf": b"port=8080\n"}


def run(main: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(main)


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """dc1 and dc2, each its own real registry: DC -> base URL."""
    require("docker-registry", "docker-registry")
    root = tmp_path_factory.mktemp("registries")
    daemons: list[Daemon] = []
    try:
        urls = {}
        for dc in ("dc1", "dc2"):
            port = free_port()
            daemons.append(start_registry(root / dc, port=port, name=f"registry-{dc}"))
            urls[dc] = registry_url(port)
        yield urls
    finally:
        for daemon in daemons:
            daemon.stop()


def context(replicas: dict[str, str], timeout_s: float = 5.0, **settings: Any) -> ToolContext:
    tool = OpsTool(kind=ToolKind.registry, adapter="registry-v2", replicas=replicas,
                   settings=settings)
    return ToolContext(TOOL, tool, RegistryV2Settings.model_validate(settings), run_dc="dc1",
                       timeout_s=timeout_s, policy=POLICY)


def adapter(replicas: dict[str, str], **settings: Any) -> RegistryV2:
    """Built through the entry point's factory, as a toolbox builds it."""
    factory = plugins.adapter("registry-v2").factory(ToolKind.registry)
    assert factory is not None
    built = factory(context(replicas, **settings))
    assert isinstance(built, RegistryV2)
    return built


def recording(replicas: dict[str, str], log: list[Sent], **settings: Any) -> RegistryV2:
    return RegistryV2(context(replicas, **settings),
                      transport_factory=lambda: RecordingTransport(log))


async def push(url: str, repository: str, tag: str, files: dict[str, bytes] = FILES) -> bytes:
    """Publish a build to one registry, as CI would; returns the layer (tarball) bytes."""
    tarball = oci.make_tarball(files)
    async with httpx.AsyncClient(base_url=url) as client:
        await oci.push_artifact(client, repository, tag, tarball)
    return tarball


def writes(log: list[Sent]) -> list[Sent]:
    return [s for s in log if s.method in ("POST", "PUT", "PATCH", "DELETE")]


# --- the plug-in and its settings ---------------------------------------------------------


def test_the_entry_point_resolves_to_the_adapter() -> None:
    found = plugins.adapter("registry-v2")
    assert found is registry_v2.ADAPTER
    assert found.settings is RegistryV2Settings
    built = adapter({"dc1": "http://127.0.0.1:1"})
    assert isinstance(built, Registry)
    run(built.aclose())


TOPOLOGY = """\
environment: staging
datacenters:
  - name: dc1
  - name: dc2
ops_tools:
  registry:
    kind: registry
    adapter: registry-v2
    replicas: {dc1: "http://registry.dc1.example", dc2: "http://registry.dc2.example"}
    settings: SETTINGS
services:
  - name: app
    tier: 0
    group: core
    redundancy: active-active
    instances: {dc1: 2, dc2: 2}
    capacity_per_instance: 100
    peak_load: 200
"""


def topology(settings: dict[str, Any]) -> str:
    return TOPOLOGY.replace("SETTINGS", json.dumps(settings))


def test_valid_settings_load_through_the_topology() -> None:
    settings = {"repositories": {"app": "team/app-image"}, "tag_format": "v{version}",
                "username": "revive", "password_env": "REGISTRY_PASSWORD", "timeout_s": 10}
    topo = loads(topology(settings))
    assert topo.ops_tools["registry"].settings == settings
    assert yaml.safe_load(topology({}))["ops_tools"]["registry"]["settings"] == {}
    loads(topology({}))  # every setting is optional


@pytest.mark.parametrize(
    ("settings", "where"),
    [
        ({"tag_format": "latest"}, "ops_tools.registry.settings.tag_format"),
        ({"tag_format": "{build}"}, "ops_tools.registry.settings.tag_format"),
        ({"repositories": {"app": "Team/App"}}, "ops_tools.registry.settings.repositories.app"),
        ({"timeout_s": 0}, "ops_tools.registry.settings.timeout_s"),
        ({"timeout_s": "soon"}, "ops_tools.registry.settings.timeout_s"),
        ({"tag": "{version}"}, "ops_tools.registry.settings.tag"),
        ({"username": "revive"}, "ops_tools.registry.settings"),
        ({"password_env": "X"}, "ops_tools.registry.settings"),
        ({"username": "u", "password_env": "X", "password_file": "/f"},
         "ops_tools.registry.settings"),
    ],
)
def test_wrong_settings_are_located(settings: dict[str, Any], where: str) -> None:
    with pytest.raises(TopologyError) as info:
        loads(topology(settings))
    assert f"{where}:" in str(info.value)


def test_credentials_come_from_the_environment_and_are_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(InputError, match="REGISTRY_PW"):
        adapter({"dc1": "http://127.0.0.1:1"}, username="revive", password_env="REGISTRY_PW")
    monkeypatch.setenv("REGISTRY_PW", "s3cret-pw")
    built = adapter({"dc1": "http://127.0.0.1:1"}, username="revive",
                    password_env="REGISTRY_PW")
    assert "s3cret-pw" not in repr(built) and "s3cret-pw" not in repr(vars(built))
    run(built.aclose())


def test_basic_auth_is_sent_from_a_password_file(
    registries: dict[str, str], tmp_path: Path
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("file-pw\n")
    log: list[Sent] = []
    registry = recording(registries, log, username="revive", password_file=str(secret))

    async def main() -> None:
        try:
            await registry.has("app", "0.0.1", "dc1")
        finally:
            await registry.aclose()

    run(main())
    # base64("revive:file-pw")
    assert log and log[0].headers["authorization"] == "Basic cmV2aXZlOmZpbGUtcHc="


# --- normal operation ---------------------------------------------------------------------


def test_push_has_copy_and_fetch_between_two_dcs(registries: dict[str, str]) -> None:
    registry = adapter(registries)

    async def main() -> None:
        try:
            tarball = await push(registries["dc1"], "app", "1.0")
            assert await registry.has("app", "1.0", "dc1")
            assert not await registry.has("app", "1.0", "dc2")
            assert not await registry.has("app", "9.9", "dc1")

            ref = await registry.copy("app", "1.0", "dc1", "dc2", request_id="copy-1")
            assert ref.tool == TOOL and ref.kind == "copy_artifact"
            assert ref.target == "app:1.0@dc2"
            status = await registry.action_status(ref)
            assert status.state == ActionState.done and status.finished

            assert await registry.has("app", "1.0", "dc2")
            async with httpx.AsyncClient(base_url=registries["dc2"]) as dc2:
                assert await oci.fetch_layer(dc2, "app", "1.0") == tarball
                copied = await oci.manifest_digest(dc2, "app", "1.0")
            async with httpx.AsyncClient(base_url=registries["dc1"]) as dc1:
                assert copied == await oci.manifest_digest(dc1, "app", "1.0")
        finally:
            await registry.aclose()

    run(main())


def test_a_second_copy_pushes_nothing_and_a_resend_does_nothing(
    registries: dict[str, str],
) -> None:
    log: list[Sent] = []
    registry = recording(registries, log)

    async def main() -> None:
        try:
            await push(registries["dc1"], "idem", "2.0")
            first = await registry.copy("idem", "2.0", "dc1", "dc2", request_id="r1")
            pushed = writes(log)
            assert [s.method for s in pushed] == ["POST", "PUT", "POST", "PUT", "PUT"]
            assert pushed[-1].path == "/v2/idem/manifests/2.0"

            log.clear()
            again = await registry.copy("idem", "2.0", "dc1", "dc2", request_id="r2")
            assert writes(log) == []  # checked (GET/HEAD), pushed nothing
            assert log and (await registry.action_status(again)).state == ActionState.done

            log.clear()
            resent = await registry.copy("idem", "2.0", "dc1", "dc2", request_id="r1")
            assert resent == first and log == []  # same ref, nothing sent at all
        finally:
            await registry.aclose()

    run(main())


def test_concurrent_resends_copy_once(registries: dict[str, str]) -> None:
    log: list[Sent] = []
    registry = recording(registries, log)

    async def main() -> None:
        try:
            await push(registries["dc1"], "twice", "1.0")
            refs = await asyncio.gather(*(
                registry.copy("twice", "1.0", "dc1", "dc2", request_id="same")
                for _ in range(3)))
            assert refs[0] == refs[1] == refs[2]
            assert len([s for s in log if s.path == "/v2/twice/manifests/1.0"
                        and s.method == "PUT"]) == 1
        finally:
            await registry.aclose()

    run(main())


def test_repository_mapping_and_tag_format(registries: dict[str, str]) -> None:
    registry = adapter(registries, repositories={"web": "team/web-image"},
                       tag_format="{artifact}-v{version}")

    async def main() -> None:
        try:
            await push(registries["dc1"], "team/web-image", "web-v3.1")
            assert await registry.has("web", "3.1", "dc1")
            await registry.copy("web", "3.1", "dc1", "dc2")
            async with httpx.AsyncClient(base_url=registries["dc2"]) as dc2:
                assert await oci.manifest_digest(dc2, "team/web-image", "web-v3.1")
            with pytest.raises(PermanentOpsError, match="tag_format"):
                await registry.has("web", "3.1+build.7", "dc1")
        finally:
            await registry.aclose()

    run(main())


def test_a_copy_is_judged_by_the_target_registry_after_a_restart(
    registries: dict[str, str],
) -> None:
    async def main() -> None:
        await push(registries["dc1"], "resumed", "1.0")
        first = adapter(registries)
        try:
            ref = await first.copy("resumed", "1.0", "dc1", "dc2", request_id="x")
        finally:
            await first.aclose()
        later = adapter(registries)  # a resumed run in a new process knows no action
        try:
            assert (await later.action_status(ref)).state == ActionState.done
            gone = ActionRef(id=ref.id.replace("resumed", "never"), kind=ref.kind,
                             target="never:1.0@dc2", tool=TOOL)
            status = await later.action_status(gone)
            assert status.state == ActionState.failed and "never:1.0" in (status.error or "")
            with pytest.raises(NotFoundError):
                await later.action_status(ActionRef(id="x", kind="deploy", target="t",
                                                    tool=TOOL))
        finally:
            await later.aclose()

    run(main())


def test_probe_reports_each_dc(registries: dict[str, str]) -> None:
    dead = {**registries, "dc3": f"http://127.0.0.1:{free_port()}"}
    registry = adapter(dead)

    async def main() -> dict[str, bool]:
        try:
            return await registry.probe()
        finally:
            await registry.aclose()

    assert run(main()) == {"dc1": True, "dc2": True, "dc3": False}


# --- faults -------------------------------------------------------------------------------


def test_a_tampered_descriptor_size_is_refused_and_nothing_is_pushed(
    registries: dict[str, str],
) -> None:
    log: list[Sent] = []
    registry = recording(registries, log)

    async def main() -> None:
        try:
            async with httpx.AsyncClient(base_url=registries["dc1"]) as dc1:
                await oci.push_artifact(dc1, "tampered", "1.0", oci.make_tarball(FILES))
                good = await oci.get_manifest(dc1, "tampered", "1.0")
                assert good is not None
                body = json.loads(good.raw)
                body["layers"][0]["size"] += 1  # the registry stores it all the same
                await oci.put_manifest(dc1, "tampered", "1.0", json.dumps(body).encode(),
                                       oci.OCI_MANIFEST)
                with pytest.raises(PermanentOpsError, match="descriptor says"):
                    await oci.fetch_layer(dc1, "tampered", "1.0")

            with pytest.raises(PermanentOpsError, match="descriptor says") as info:
                await registry.copy("tampered", "1.0", "dc1", "dc2", request_id="t")
            assert info.value.tool == TOOL
            assert writes(log) == []
            assert not await registry.has("tampered", "1.0", "dc2")
        finally:
            await registry.aclose()

    run(main())


def test_a_missing_artifact_is_not_found(registries: dict[str, str]) -> None:
    registry = adapter(registries)

    async def main() -> None:
        try:
            with pytest.raises(NotFoundError, match="not in dc1's registry"):
                await registry.copy("ghost", "1.0", "dc1", "dc2", request_id="g")
            # a retry after the failure really tries again (and fails the same way)
            with pytest.raises(NotFoundError):
                await registry.copy("ghost", "1.0", "dc1", "dc2", request_id="g")
            with pytest.raises(DependencyError, match="no registry replica in dc9"):
                await registry.has("app", "1.0", "dc9")
        finally:
            await registry.aclose()

    run(main())


def test_a_registry_down_is_transient_and_never_answered_by_another_dc(
    registries: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    doomed = start_registry(tmp_path / "dc3", port=port, name="registry-dc3")
    doomed.stop()
    replicas = {"dc1": registries["dc1"], "dc2": registries["dc2"], "dc3": registry_url(port)}
    registry = adapter(replicas)

    async def main() -> None:
        try:
            await push(registries["dc1"], "down", "1.0")
            with pytest.raises(TransientOpsError, match="dc3"):
                await registry.copy("down", "1.0", "dc3", "dc2", request_id="d")
            with pytest.raises(TransientOpsError):
                await registry.copy("down", "1.0", "dc1", "dc3", request_id="e")
            with pytest.raises(TransientOpsError):
                await registry.has("down", "1.0", "dc3")  # dc1 has it: still no answer
            assert await registry.has("down", "1.0", "dc1")  # the other DCs still answer
            assert not await registry.has("down", "1.0", "dc2")
        finally:
            await registry.aclose()

    run(main())


def test_a_registry_that_never_answers_times_out(registries: dict[str, str]) -> None:
    silent = SilentServer()
    try:
        replicas = {"dc1": registries["dc1"], "dc2": silent.url}
        built = RegistryV2(context(replicas, timeout_s=0.3))

        async def main() -> None:
            try:
                await push(registries["dc1"], "slow", "1.0")
                with pytest.raises(TransientOpsError, match="dc2"):
                    await built.copy("slow", "1.0", "dc1", "dc2", request_id="s")
                with pytest.raises(TransientOpsError):
                    await built.has("slow", "1.0", "dc2")
            finally:
                await built.aclose()

        run(main())
    finally:
        silent.close()


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, PermanentOpsError), (403, PermanentOpsError), (400, PermanentOpsError),
     (503, TransientOpsError)],
)
def test_registry_refusals_are_typed(status: int, error: type[Exception]) -> None:
    body = {"errors": [{"code": "DENIED", "message": "requested access is denied"}]}
    with replica_servers("dc1") as servers:
        servers["dc1"].error(status, body)
        registry = adapter({"dc1": servers["dc1"].url})

        async def main() -> None:
            try:
                with pytest.raises(error) as info:  # (this fake server answers no HEAD)
                    await registry.copy("app", "1.0", "dc1", "dc1")
                if status != 503:
                    assert not isinstance(info.value, TransientOpsError)
                    assert "DENIED" in str(info.value) and TOOL in str(info.value)
            finally:
                await registry.aclose()

        run(main())


def test_start_registry_refuses_a_port_it_does_not_own(tmp_path: Path) -> None:
    require("docker-registry", "docker-registry")
    with (replica_servers("busy") as servers,
          pytest.raises(DaemonError, match="already in use")):
        start_registry(tmp_path / "r", port=servers["busy"].port)


def test_start_registry_binds_the_given_host_through_the_wrapped_command(tmp_path: Path) -> None:
    """``host`` is the only address it listens on; ``wrap``'s command line is what runs."""
    require("docker-registry", "docker-registry")
    host, port = "127.0.0.2", free_port()  # another loopback address: no namespace needed
    daemon = start_registry(tmp_path / "r", port=port, host=host,
                            wrap=lambda argv: ["env", "REVIVE_WRAPPED=registry", *argv])
    try:
        assert registry_url(port, host) == f"http://{host}:{port}"
        assert httpx.get(f"{registry_url(port, host)}/v2/", timeout=5).status_code == 200
        assert not port_open(port, "127.0.0.1")
        assert daemon.argv[:2] == ["env", "REVIVE_WRAPPED=registry"]
        environ = Path(f"/proc/{daemon.pid}/environ").read_bytes().split(b"\0")
        assert b"REVIVE_WRAPPED=registry" in environ  # env exec'd the registry: same pid
    finally:
        daemon.stop()
    assert not daemon.alive()
