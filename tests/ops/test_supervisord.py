"""The supervisord adapter against two real supervisords (dc1, dc2) and a real registry.

Each DC has its own supervisord: every call acts on the named DC's, never on another's.
Programs are ``sleep`` (and a Python HTTP server for deploys, so the unpacked artifact is
seen being served); every wait is on a state, with generous deadlines.
"""

from __future__ import annotations

import asyncio
import io
import sys
import tarfile
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from revive.errors import (
    ConflictError,
    DependencyError,
    InputError,
    NotFoundError,
    PermanentOpsError,
    QuotaError,
    TopologyError,
    TransientOpsError,
)
from revive.lab.daemon import Daemon, free_port, pid_alive, port_open
from revive.lab.registry import registry_url, start_registry
from revive.lab.supervisor import rpc, start_supervisord, supervisord_url, write_program
from revive.ops import plugins
from revive.ops.adapters import oci, supervisord
from revive.ops.adapters.supervisord import (
    ProgramSettings,
    Supervisord,
    UnsafeArtifact,
    unpack_tarball,
)
from revive.ops.interfaces import Compute, ServiceControl
from revive.ops.models import ActionRef, ActionState
from revive.topology import loads
from revive.topology.models import ToolKind
from tests.ops.programs import require
from tests.ops.registry_fakes import SilentServer
from tests.ops.supervisord_helpers import (
    PASSWORD,
    TOOL,
    USER,
    Estate,
    context,
    wait_finished,
    wait_until,
)

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(main)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    """dc1 and dc2 supervisords (``app``: 2 processes, ``worker``: 1), dc1's registry."""
    require("supervisord", "supervisor")
    require("docker-registry", "docker-registry")
    root = tmp_path_factory.mktemp("supervisord")
    password_file = root / "password"
    password_file.write_text(PASSWORD + "\n")
    daemons: list[Daemon] = []
    ports = {dc: free_port() for dc in ("dc1", "dc2")}
    dirs = {dc: root / dc for dc in ports}
    reg_port = free_port()

    def start(dc: str) -> Daemon:
        if dc == "registry":
            return start_registry(root / "registry", port=reg_port, name="registry-dc1")
        write_program(dirs[dc], "app", "sleep 600", numprocs=2, startsecs=0)
        write_program(dirs[dc], "worker", "sleep 600", startsecs=0)
        return start_supervisord(dirs[dc], port=ports[dc], username=USER, password=PASSWORD,
                                 name=f"supervisord-{dc}")

    try:
        with ThreadPoolExecutor(max_workers=3) as pool:  # together: each takes a moment
            futures = [pool.submit(start, name) for name in (*ports, "registry")]
        errors = [e for f in futures if (e := f.exception()) is not None]
        daemons += [f.result() for f in futures if f.exception() is None]
        if errors:
            raise errors[0]
        estate = Estate(root, ports, dirs, password_file, registry_url(reg_port))
        for dc in ports:
            wait_until(lambda dc=dc: all(p["statename"] == "RUNNING" for p in
                                         estate.processes(dc, "app") + estate.processes(dc,
                                                                                        "worker")),
                       f"app and worker RUNNING in {dc}")
        yield estate
    finally:
        # Together: each supervisord takes a moment to stop its programs.
        with ThreadPoolExecutor(max_workers=len(daemons) or 1) as pool:
            list(pool.map(Daemon.stop, daemons))


def make(lab: Estate, *, replicas: dict[str, str] | None = None,
         spare: dict[str, int | None] | None = None, kind: ToolKind = ToolKind.deploy,
         timeout_s: float = 10.0, **overrides: Any) -> Supervisord:
    """Built through the entry point's factory, as a toolbox builds it."""
    replicas = replicas or {dc: lab.url(dc) for dc in lab.ports}
    ctx = context(replicas, lab.settings(**overrides), spare=spare, timeout_s=timeout_s)
    factory = plugins.adapter("supervisord").factory(kind)
    assert factory is not None
    built = factory(ctx)
    assert isinstance(built, Supervisord)
    return built


def pids(lab: Estate, dc: str, group: str) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in lab.processes(dc, group)}


def push(lab: Estate, repository: str, tag: str, tarball: bytes) -> None:
    async def main() -> None:
        async with httpx.AsyncClient(base_url=lab.registry_url, timeout=10) as client:
            await oci.push_artifact(client, repository, tag, tarball)

    run(main())


def two_free_ports() -> int:
    """A port p with p and p+1 free (for a two-instance HTTP deploy)."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and not port_open(port + 1):
            return port
    raise AssertionError("no two consecutive free ports")


# --- the adapter is found and typed ------------------------------------------------------


def test_entry_point_resolves_to_the_adapter() -> None:
    found = plugins.adapter("supervisord")
    assert found is supervisord.ADAPTER
    assert set(found.kinds) == {ToolKind.deploy, ToolKind.compute}
    assert found.settings is supervisord.SupervisordSettings


def test_adapter_implements_both_protocols(lab: Estate) -> None:
    built = make(lab)
    assert isinstance(built, ServiceControl) and isinstance(built, Compute)
    assert PASSWORD not in repr(built) and PASSWORD not in repr(vars(built))


# --- ServiceControl ------------------------------------------------------------------------


def test_state_counts_a_group_and_its_health(lab: Estate) -> None:
    async def main() -> None:
        built = make(lab)
        try:
            state = await built.state("app", "dc1")
            missing = await built.state("nosuch", "dc1")
        finally:
            await built.aclose()
        assert (state.exists, state.instances, state.healthy) == (True, 2, 2)
        assert state.version == "unknown" and not state.busy and state.dc == "dc1"
        assert (missing.exists, missing.instances, missing.healthy) == (False, 0, 0)

    run(main())


def test_restart_gives_new_pids_and_running_again(lab: Estate) -> None:
    before = pids(lab, "dc1", "app")
    other_dc = pids(lab, "dc2", "app")

    async def main() -> None:
        built = make(lab)
        try:
            ref = await built.restart("app", "dc1", request_id="restart-1")
            again = await built.restart("app", "dc1", request_id="restart-1")
            assert again == ref
            assert ref.tool == TOOL and ref.kind == "restart" and ref.target == "app@dc1"
            status = await wait_finished(built, ref)
            assert status.state == ActionState.done, status.error
            assert status.ended_at is not None
        finally:
            await built.aclose()

    run(main())
    after = pids(lab, "dc1", "app")
    assert set(after) == set(before) and all(after[n] != before[n] for n in before)
    assert all(p["statename"] == "RUNNING" for p in lab.processes("dc1", "app"))
    assert pids(lab, "dc2", "app") == other_dc  # the other DC's supervisord was not touched


def test_unknown_program_is_not_found(lab: Estate) -> None:
    async def main() -> None:
        built = make(lab)
        try:
            with pytest.raises(NotFoundError, match="nosuch"):
                await built.restart("nosuch", "dc1")
            with pytest.raises(NotFoundError, match="dc9"):
                await built.state("app", "dc9")
            with pytest.raises(NotFoundError, match="command"):
                await built.deploy("nosuch", "dc1", 1, "1.0")
        finally:
            await built.aclose()

    run(main())


def test_deploy_from_the_registry_then_set_version_and_back(lab: Estate) -> None:
    port = two_free_ports()
    for version in ("1.0", "2.0"):
        push(lab, "web", version, oci.make_tarball(
            {"hello.txt": f"hello from {version}\n".encode(), "static/x.css": b"body{}"}))
    command = f"{sys.executable} -m http.server {{port}} --bind 127.0.0.1 --directory {{dir}}"
    programs = {"web": {"command": command, "base_port": port, "startsecs": 1}}

    def served(expected: str) -> bool:
        return all(httpx.get(f"http://127.0.0.1:{p}/hello.txt", timeout=2).text == expected
                   for p in (port, port + 1))

    async def done(built: Supervisord, ref: ActionRef) -> None:
        status = await wait_finished(built, ref)
        assert status.state == ActionState.done, status.error

    async def main() -> None:
        built = make(lab, programs=programs)
        try:
            await done(built, await built.deploy("web", "dc1", 2, "1.0",
                                                 request_id="deploy-web-1"))
            unpacked = Path(lab.artifacts_dirs()["dc1"]) / "web-1.0"
            assert (unpacked / "hello.txt").read_text() == "hello from 1.0\n"
            state = await built.state("web", "dc1")
            assert (state.exists, state.instances, state.healthy, state.version) == (
                True, 2, 2, "1.0")
            wait_until(lambda: served("hello from 1.0\n"), "serving 1.0")
            first = pids(lab, "dc1", "web")
            # a resend starts nothing new
            again = await built.deploy("web", "dc1", 2, "1.0", request_id="deploy-web-1")
            assert pids(lab, "dc1", "web") == first and again.kind == "deploy"

            await done(built, await built.set_version("web", "dc1", "2.0"))
            assert (await built.state("web", "dc1")).version == "2.0"
            wait_until(lambda: served("hello from 2.0\n"), "serving 2.0")

            await done(built, await built.set_version("web", "dc1", None))  # back to 1.0
            state = await built.state("web", "dc1")
            assert (state.version, state.instances, state.healthy) == ("1.0", 2, 2)
            wait_until(lambda: served("hello from 1.0\n"), "serving 1.0 again")
            assert "web" not in lab.groups("dc2")  # dc2 was never touched
        finally:
            await built.aclose()

    run(main())


def test_a_tarball_with_a_dotdot_member_is_refused(lab: Estate) -> None:
    push(lab, "evil", "1.0", oci.make_tarball({"../evil": b"owned\n", "ok.txt": b"ok\n"}))
    programs = {"evil": {"command": "sleep 600", "startsecs": 1}}

    async def main() -> None:
        built = make(lab, programs=programs)
        try:
            with pytest.raises(PermanentOpsError, match=r"\.\./evil") as info:
                await built.deploy("evil", "dc1", 1, "1.0")
            assert not isinstance(info.value, TransientOpsError)
            with pytest.raises(NotFoundError, match=r"9\.9"):
                await built.deploy("evil", "dc1", 1, "9.9")  # not in the registry
        finally:
            await built.aclose()

    run(main())
    artifacts = Path(lab.artifacts_dirs()["dc1"])
    assert not (artifacts / "evil").exists() and not (artifacts.parent / "evil").exists()
    assert not (artifacts / "evil-1.0").exists()
    assert "evil" not in lab.groups("dc1")
    assert not (Path(lab.conf_dirs()["dc1"]) / "revive-evil.conf").exists()


def test_deploy_needs_a_registry_for_the_dc(lab: Estate) -> None:
    async def main() -> None:
        built = make(lab)
        try:
            with pytest.raises(DependencyError, match="registry_urls"):
                await built.deploy("app", "dc2", 1, "1.0")
            with pytest.raises(ConflictError, match="previous"):
                await built.set_version("app", "dc2", None)
            with pytest.raises(PermanentOpsError, match="version"):
                await built.deploy("app", "dc1", 1, "../1.0")
        finally:
            await built.aclose()

    run(main())


def test_unpack_refuses_unsafe_members(tmp_path: Path) -> None:
    def tarball(*members: tarfile.TarInfo) -> bytes:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            for m in members:
                tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isfile() else None)
        return raw.getvalue()

    absolute = tarfile.TarInfo("/etc/evil")
    absolute.size = 1
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.SYMTYPE, "../../outside"
    for bad in (absolute, link):
        with pytest.raises(UnsafeArtifact):
            unpack_tarball(tarball(bad), tmp_path / "out")
        assert not (tmp_path / "out").exists()
    with pytest.raises(UnsafeArtifact, match="tarball"):
        unpack_tarball(b"not a tarball", tmp_path / "out")
    good = tarfile.TarInfo("a/b.txt")
    good.size = 3
    assert unpack_tarball(tarball(good), tmp_path / "out") == ["a/b.txt"]
    assert (tmp_path / "out" / "a" / "b.txt").read_bytes() == b"xxx"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp dir left behind


# --- Compute -------------------------------------------------------------------------------


def test_provision_adds_instances_without_touching_running_ones(lab: Estate) -> None:
    before = pids(lab, "dc1", "worker")

    async def main() -> None:
        built = make(lab, kind=ToolKind.compute, spare={"dc1": 10})
        try:
            quota = await built.quota("dc1")
            ref = await built.provision("worker", "dc1", 2, request_id="prov-1")
            again = await built.provision("worker", "dc1", 2, request_id="prov-1")
            assert again == ref and ref.kind == "provision" and ref.target == "worker@dc1"
            status = await wait_finished(built, ref)
            assert status.state == ActionState.done, status.error
            state = await built.state("worker", "dc1")
            assert (state.instances, state.healthy) == (3, 3)
            assert await built.quota("dc1") == (quota or 0) - 2
            with pytest.raises(ConflictError, match="prov-1"):
                await built.provision("worker", "dc1", 1, request_id="prov-1")
        finally:
            await built.aclose()

    run(main())
    assert pids(lab, "dc1", "worker") == before  # the running group was never restarted
    extras = sorted(g for g in lab.groups("dc1") if g.startswith("worker_extra_"))
    assert len(extras) == 2, extras  # the resend started nothing
    assert all(lab.processes("dc1", g)[0]["statename"] == "RUNNING" for g in extras)


def test_quota_is_enforced_and_nothing_starts_beyond_it(lab: Estate) -> None:
    async def main() -> None:
        built = make(lab, kind=ToolKind.compute, spare={"dc2": 2})
        try:
            assert await built.quota("dc2") == 2
            assert await built.quota("dc1") is None  # no spare_instances: no limit known
            with pytest.raises(QuotaError, match="nothing started"):
                await built.provision("app", "dc2", 3)
            assert not any("_extra_" in g for g in lab.groups("dc2"))
            ref = await built.provision("app", "dc2", 2)
            assert (await wait_finished(built, ref)).state == ActionState.done
            assert await built.quota("dc2") == 0
            with pytest.raises(QuotaError):
                await built.provision("app", "dc2", 1)
        finally:
            await built.aclose()

    run(main())
    assert sorted(g for g in lab.groups("dc2") if "_extra_" in g) == [
        "app_extra_1", "app_extra_2"]


def test_a_crashing_instance_fails_the_action_with_its_log(lab: Estate) -> None:
    programs = {"crash": {"command": "sh -c 'echo $SAY-{instance}; exit 3'",
                          "environment": {"SAY": 'boom "x" 100%'},
                          "startsecs": 1, "startretries": 0}}

    async def main() -> None:
        built = make(lab, kind=ToolKind.compute, programs=programs)
        try:
            ref = await built.provision("crash", "dc1", 1)
            status = await wait_finished(built, ref)
        finally:
            await built.aclose()
        assert status.state == ActionState.failed
        assert status.error and "FATAL" in status.error
        assert 'boom "x" 100%-100' in status.error  # the environment, quoted, reached it

    run(main())


# --- faults --------------------------------------------------------------------------------


def test_dc1_down_fails_dc1_calls_while_dc2_still_works(lab: Estate, tmp_path: Path) -> None:
    port = free_port()
    daemon = start_supervisord(tmp_path / "dc1", port=port, username=USER, password=PASSWORD,
                               name="supervisord-doomed")
    daemon.stop()
    assert not port_open(port)

    async def main() -> None:
        built = make(lab, replicas={"dc1": f"http://127.0.0.1:{port}", "dc2": lab.url("dc2")})
        try:
            with pytest.raises(TransientOpsError, match="dc1") as info:
                await built.restart("app", "dc1")
            assert "supervisord in dc1" in str(info.value)
            with pytest.raises(TransientOpsError):
                await built.state("app", "dc1")
            state = await built.state("app", "dc2")  # never answered by dc2 for dc1
            assert state.exists and state.dc == "dc2"
            assert await built.probe() == {"dc1": False, "dc2": True}
        finally:
            await built.aclose()

    run(main())


def test_a_silent_supervisord_times_out(lab: Estate) -> None:
    silent = SilentServer()
    try:
        async def main() -> None:
            built = make(lab, replicas={"dc1": silent.url, "dc2": lab.url("dc2")},
                         timeout_s=0.5)
            try:
                with pytest.raises(TransientOpsError, match="dc1"):
                    await built.state("app", "dc1")
                with pytest.raises(TransientOpsError):
                    await built.restart("app", "dc1")
                assert (await built.state("app", "dc2")).healthy >= 2  # plus any extras
            finally:
                await built.aclose()

        run(main())
    finally:
        silent.close()


def test_a_wrong_password_is_a_permanent_error(lab: Estate, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")

    async def main() -> None:
        built = make(lab, password_file=str(wrong))
        try:
            with pytest.raises(PermanentOpsError, match="401"):
                await built.state("app", "dc1")
            assert await built.probe() == {"dc1": False, "dc2": False}
        finally:
            await built.aclose()

    run(main())


def test_an_unknown_action_is_not_found(lab: Estate) -> None:
    async def main() -> None:
        built = make(lab)
        try:
            with pytest.raises(NotFoundError):
                await built.action_status(ActionRef(id="x", kind="restart", target="a", tool=TOOL))
        finally:
            await built.aclose()

    run(main())


# --- starting supervisord on a DC's address -----------------------------------------------


def test_start_supervisord_on_a_host_through_wrap_hands_env_to_its_programs(
        tmp_path: Path) -> None:
    """``env`` reaches the programs, as ``$LAB_DC`` and as ``%(ENV_LAB_DC)s`` in ``command=``.

    ``host`` is the only address it listens on; ``wrap``'s command line is what runs.
    """
    require("supervisord", "supervisor")
    host, port = "127.0.0.2", free_port()  # another loopback address: no namespace needed
    seen = tmp_path / "dc.txt"
    command = f"sh -c 'echo \"%(ENV_LAB_DC)s $LAB_DC\" > {seen} && exec sleep 600'"
    assert ProgramSettings(command=command).command == command  # the adapter accepts it too
    write_program(tmp_path / "sv", "where", command, startsecs=0)
    daemon = start_supervisord(tmp_path / "sv", port=port, username=USER, password=PASSWORD,
                               name="supervisord-host", host=host, env={"LAB_DC": "dc7"},
                               wrap=lambda argv: ["env", "REVIVE_WRAPPED=supervisord", *argv])
    child = 0
    try:
        assert supervisord_url(port, host) == f"http://{host}:{port}"
        assert rpc(port, USER, PASSWORD, "supervisor.getState", host=host)["statename"] == \
            "RUNNING"
        assert not port_open(port, "127.0.0.1")
        assert daemon.argv[:2] == ["env", "REVIVE_WRAPPED=supervisord"]

        def running() -> dict[str, Any] | None:
            info = rpc(port, USER, PASSWORD, "supervisor.getProcessInfo", "where", host=host)
            written = seen.exists() and seen.read_text().strip()
            return info if info["statename"] == "RUNNING" and written else None

        child = wait_until(running, "the program RUNNING, its file written")["pid"]
        assert seen.read_text().split() == ["dc7", "dc7"]
    finally:
        daemon.stop()
    assert not daemon.alive()
    assert child and not pid_alive(child)


# --- settings ------------------------------------------------------------------------------

TOPOLOGY = """
environment: drill
datacenters: [{name: dc1, spare_instances: 4}, {name: dc2}]
ops_tools:
  procs:
    kind: compute
    adapter: supervisord
    replicas: {dc1: "http://127.0.0.1:9001", dc2: "http://127.0.0.1:9002"}
    settings: SETTINGS
services:
  - {name: app, tier: 0, group: core, redundancy: active-active, instances: {dc1: 2, dc2: 2},
     capacity_per_instance: 100, peak_load: 200}
"""
GOOD = ('{conf_dirs: {dc1: /etc/supervisor/conf.d, dc2: /etc/supervisor/conf.d}, '
        'artifacts_dirs: {dc1: /srv/revive}, registry_urls: {dc1: "http://127.0.0.1:5000"}, '
        'repositories: {app: team/app}, username: revive, password_env: SUP_PW, '
        'programs: {app: {group: app-main, command: "/srv/app --port {port}", base_port: 8000, '
        'environment: {MODE: emergency}}}}')


def test_valid_settings_load_through_the_topology() -> None:
    topo = loads(TOPOLOGY.replace("SETTINGS", GOOD))
    settings = plugins.settings_of("procs", topo.ops_tools["procs"])
    assert isinstance(settings, supervisord.SupervisordSettings)
    assert settings.programs["app"].group_of("app") == "app-main"


@pytest.mark.parametrize(
    ("settings", "where"),
    [
        ("{}", "ops_tools.procs.settings.conf_dirs"),
        ("{conf_dirs: {dc1: relative/dir}}", "ops_tools.procs.settings.conf_dirs.dc1"),
        ("{conf_dirs: {dc1: /c}, programs: {app: {command: 'x {port}'}}}",
         "ops_tools.procs.settings.programs.app"),
        ("{conf_dirs: {dc1: /c}, programs: {app: {command: 'x {host}'}}}",
         "ops_tools.procs.settings.programs.app.command"),
        ("{conf_dirs: {dc1: /c}, programs: {app: {command: x, base_port: high}}}",
         "ops_tools.procs.settings.programs.app.base_port"),
        ("{conf_dirs: {dc1: /c}, programs: {'a:b': {command: x}}}",
         "ops_tools.procs.settings.programs.a:b.[key]"),
        ("{conf_dirs: {dc1: /c}, registry_urls: {dc1: 'ftp://x'}}",
         "ops_tools.procs.settings.registry_urls.dc1"),
        ("{conf_dirs: {dc1: /c}, programs: {app: {environment: {A: '\"quoted\"'}}}}",
         "ops_tools.procs.settings.programs.app.environment"),
        ("{conf_dirs: {dc1: /c}, username: revive}", "ops_tools.procs.settings"),
        ("{conf_dirs: {dc1: /c}, timeout_s: 0}", "ops_tools.procs.settings.timeout_s"),
        ("{conf_dirs: {dc1: /c}, conf_dir: /c}", "ops_tools.procs.settings.conf_dir"),
    ],
)
def test_wrong_settings_are_located(settings: str, where: str) -> None:
    with pytest.raises(TopologyError) as info:
        loads(TOPOLOGY.replace("SETTINGS", settings))
    assert f"{where}:" in str(info.value)


def test_every_replica_needs_a_conf_dir_and_a_password_source(
    lab: Estate, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError, match="conf_dirs"):
        make(lab, conf_dirs={"dc1": "/tmp/c"})
    with pytest.raises(InputError, match="SUP_PW"):
        make(lab, password_file=None, password_env="SUP_PW")
    monkeypatch.setenv("SUP_PW", PASSWORD)
    built = make(lab, password_file=None, password_env="SUP_PW")
    assert PASSWORD not in repr(built) and PASSWORD not in repr(vars(built))
