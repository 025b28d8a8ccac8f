"""The ``zookeeper`` adapter against two real ZooKeeper nodes, one per DC, as the lab runs them.

Flags and the retry policy are written to every reachable node and read from the first that
answers; versioned writes survive a concurrent writer; a node that is down, silent or
refusing gives a clear error or lets the other DC's node serve; the probe speaks ``ruok`` and
``srvr``. The two nodes start once for the module (about a second and 65 MB each); each test
works under its own znode root.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.security import make_acl

from revive.errors import (
    ConflictError,
    InputError,
    PermanentOpsError,
    TopologyError,
    TransientOpsError,
)
from revive.lab.daemon import Daemon, free_port, port_open
from revive.lab.zookeeper import (
    SLF4J_SIMPLE_JAR,
    ZOOKEEPER_JAR,
    serving,
    start_zookeeper,
    zookeeper_config,
)
from revive.ops import plugins
from revive.ops.adapters import zookeeper as zk_adapter
from revive.ops.adapters.zookeeper import ClientFactory, ZooKeeperStore
from revive.ops.interfaces import ConfigStore
from revive.ops.models import RetryPolicy
from revive.ops.plugins import ToolContext, settings_of
from revive.ops.replicas import BreakerState
from revive.ops.toolbox import ToolProbes
from revive.topology import loads
from revive.topology.models import ToolKind
from tests.factories import dump, estate, service, tools
from tests.ops.programs import require

T = TypeVar("T")
TOOL = "zk"
TIMEOUT_S = 5.0  # a live local node answers in milliseconds; generous for a busy CI machine
FAULT_TIMEOUT_S = 3.0  # what a silent node costs per attempt while a live node also serves
SILENT_TIMEOUT_S = 1.0  # where no live node has to answer, only silent ones
DEADLINE_S = 60.0  # "no hang": far beyond any timeout here, never a duration assertion


def run(main: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(main, DEADLINE_S))


# --- the nodes -----------------------------------------------------------------------------------


@dataclass
class Node:
    """One DC's ZooKeeper node, which a test may stop and the fixture brings back."""

    dc: str
    dir: Path
    port: int
    daemon: Daemon

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.daemon.stop()

    def ensure_running(self) -> None:
        if not self.daemon.alive():
            self.daemon = start_zookeeper(self.dir, port=self.port, name=f"zookeeper-{self.dc}")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    require("java", "default-jre-headless")
    require(ZOOKEEPER_JAR.name, "zookeeper", paths=(str(ZOOKEEPER_JAR),))
    require(SLF4J_SIMPLE_JAR.name, "libslf4j-java", paths=(str(SLF4J_SIMPLE_JAR),))
    started: dict[str, Node] = {}
    try:
        for dc in ("dc1", "dc2"):
            where, port = tmp_path_factory.mktemp(f"zookeeper-{dc}"), free_port()
            daemon = start_zookeeper(where, port=port, name=f"zookeeper-{dc}")
            started[dc] = Node(dc, where, port, daemon)
        yield started
    finally:
        for node in started.values():
            node.stop()


@pytest.fixture
def live(nodes: dict[str, Node]) -> Iterator[dict[str, Node]]:
    """Both nodes running at the start and the end of the test, whatever it stopped."""
    for node in nodes.values():
        node.ensure_running()
    yield nodes
    for node in nodes.values():
        node.ensure_running()


@pytest.fixture
def root() -> str:
    """A znode root of this test's own."""
    return f"/revive-test/{uuid.uuid4().hex[:12]}"


@contextmanager
def kazoo_clients(nodes: dict[str, Node]) -> Iterator[dict[str, KazooClient]]:
    """The test's own clients, one per node, to look at and change what the adapter wrote."""
    clients: dict[str, KazooClient] = {}
    try:
        for dc, node in nodes.items():
            client = clients[dc] = KazooClient(hosts=node.address)
            client.start(timeout=30)
        yield clients
    finally:
        for client in clients.values():
            client.stop()
            client.close()


@pytest.fixture
def direct(live: dict[str, Node]) -> Iterator[dict[str, KazooClient]]:
    with kazoo_clients(live) as clients:
        yield clients


# --- building the adapter ----------------------------------------------------------------------


def topology_text(replicas: dict[str, str], settings: dict[str, Any] | None = None) -> str:
    tool: dict[str, Any] = {"kind": "config_store", "adapter": "zookeeper", "replicas": replicas}
    if settings is not None:
        tool["settings"] = settings
    return dump(estate(service("app"), ops_tools=tools(zk=tool)))


def make_store(
    replicas: dict[str, str],
    root: str,
    *,
    run_dc: str = "dc1",
    client_factory: ClientFactory | None = None,
    **settings: Any,
) -> ZooKeeperStore:
    """The store as the toolbox builds it: topology -> validated settings -> factory."""
    settings = {"flags_path": f"{root}/flags", "retry_policy_path": f"{root}/retry-policy",
                "timeout_s": TIMEOUT_S, **settings}
    topology = loads(topology_text(replicas, settings))
    tool = topology.ops_tools[TOOL]
    ctx = ToolContext(TOOL, tool, settings_of(TOOL, tool), run_dc, topology=topology)
    if client_factory is not None:
        return ZooKeeperStore(ctx, client_factory=client_factory)
    factory = plugins.adapter("zookeeper").factory(tool.kind)
    assert factory is not None
    store = factory(ctx)
    assert isinstance(store, ZooKeeperStore)
    return store


def addresses(nodes: dict[str, Node]) -> dict[str, str]:
    return {dc: node.address for dc, node in nodes.items()}


async def closing(store: ZooKeeperStore, body: Callable[[ZooKeeperStore], Any]) -> Any:
    try:
        return await body(store)
    finally:
        await store.aclose()


def znode(client: KazooClient, path: str) -> bytes | None:
    try:
        data, _ = client.get(path)
    except NoNodeError:
        return None
    return data


# --- normal operation ----------------------------------------------------------------------------


def test_flags_round_trip(live: dict[str, Node], root: str) -> None:
    async def main(store: ZooKeeperStore) -> list[dict[tuple[str, str], bool]]:
        seen = [await store.flags()]
        await store.set_flag("login", "history", True)
        await store.set_flag("search", "facets", False)
        seen.append(await store.flags())
        await store.set_flag("login", "history", False)
        await store.set_flag("login", "history", False)  # already off: nothing to change
        seen.append(await store.flags())
        return seen

    store = make_store(addresses(live), root)
    assert isinstance(store, ConfigStore)
    empty, both, flipped = run(closing(store, main))
    assert empty == {}
    assert both == {("login", "history"): True, ("search", "facets"): False}
    assert flipped == {("login", "history"): False, ("search", "facets"): False}


def test_flags_are_written_to_every_node(
    live: dict[str, Node], direct: dict[str, KazooClient], root: str
) -> None:
    async def main(store: ZooKeeperStore) -> None:
        await store.set_flag("login", "history", True)
        await store.set_flag("login", "history", True)  # says so already: no second write

    run(closing(make_store(addresses(live), root), main))
    for client in direct.values():
        data, stat = client.get(f"{root}/flags/login/history")
        assert (data, stat.version) == (b"on", 0)


def test_flags_in_other_spellings_are_read_and_json_keeps_its_other_keys(
    live: dict[str, Node], direct: dict[str, KazooClient], root: str
) -> None:
    written = {
        "a/true": b"true", "a/zero": b"0", "b/json": b'{"enabled": true, "owner": "team-b"}',
        "b/bare": b"false", "c/garbage": b"maybe", "c/empty": b"",
    }
    client = direct["dc1"]
    for name, data in written.items():
        client.create(f"{root}/flags/{name}", data, makepath=True)

    async def main(store: ZooKeeperStore) -> dict[tuple[str, str], bool]:
        before = await store.flags()
        await store.set_flag("b", "json", False)
        await store.set_flag("b", "bare", True)
        assert before == {("a", "true"): True, ("a", "zero"): False, ("b", "json"): True,
                          ("b", "bare"): False}
        return await store.flags()

    after = run(closing(make_store({"dc1": live["dc1"].address}, root), main))
    assert after[("b", "json")] is False and after[("b", "bare")] is True
    assert json.loads(znode(client, f"{root}/flags/b/json") or b"") == {
        "enabled": False, "owner": "team-b"}
    assert znode(client, f"{root}/flags/b/bare") == b"on"


def test_the_retry_policy_is_set_everywhere_and_cleared_by_none(
    live: dict[str, Node], direct: dict[str, KazooClient], root: str
) -> None:
    policy = RetryPolicy(budget=0.2, max_attempts=2, base_backoff_s=0.5, max_backoff_s=4)
    path = f"{root}/retry-policy"

    async def main(store: ZooKeeperStore) -> list[RetryPolicy | None]:
        await store.set_retry_policy(None)  # clearing what is not there is fine
        seen = [await store.retry_policy()]
        await store.set_retry_policy(policy)
        seen.append(await store.retry_policy())
        for client in direct.values():
            assert RetryPolicy.model_validate_json(znode(client, path) or b"") == policy
        await store.set_retry_policy(None)
        seen.append(await store.retry_policy())
        return seen

    assert run(closing(make_store(addresses(live), root), main)) == [None, policy, None]
    for client in direct.values():
        assert znode(client, path) is None


def test_an_empty_retry_policy_znode_means_none(
    live: dict[str, Node], direct: dict[str, KazooClient], root: str
) -> None:
    direct["dc1"].create(f"{root}/retry-policy", b"", makepath=True)
    got = run(closing(make_store({"dc1": live["dc1"].address}, root),
                      lambda store: store.retry_policy()))
    assert got is None


def test_the_probe_says_both_serving_nodes_are_up(live: dict[str, Node], root: str) -> None:
    async def main(store: ZooKeeperStore) -> dict[str, bool]:
        return await ToolProbes({TOOL: store}).replicas(TOOL)

    assert run(closing(make_store(addresses(live), root), main)) == {"dc1": True, "dc2": True}


# --- versioned writes --------------------------------------------------------------------------


class RacingClient(KazooClient):
    """A client whose reads of ``target`` are each followed by another writer's change,
    made before our read's answer is handed back: our write then carries a stale version."""

    def __init__(self, hosts: str, *, target: str, races: int,
                 racer: Callable[[str, int], None]) -> None:
        super().__init__(hosts=hosts)
        self.address, self.target, self.races, self.racer = hosts, target, races, racer
        self.raced = 0

    def get_async(self, path: str, watch: Any = None) -> Any:
        result = super().get_async(path, watch)
        if path == self.target and self.raced < self.races:
            self.raced += 1
            with suppress(Exception):
                result.get(timeout=30)  # our read has its answer (and its version) ...
            self.racer(self.address, self.raced)  # ... then someone else writes
        return result


def racing_factory(
    direct: dict[str, KazooClient], nodes: dict[str, Node], target: str, races: int
) -> tuple[ClientFactory, list[RacingClient]]:
    by_address = {node.address: direct[dc] for dc, node in nodes.items()}
    made: list[RacingClient] = []

    def racer(hosts: str, n: int) -> None:
        by_address[hosts].set(target, json.dumps({"on": False, "owner": f"racer-{n}"}).encode())

    def factory(hosts: str) -> KazooClient:
        client = RacingClient(hosts, target=target, races=races, racer=racer)
        made.append(client)
        return client

    return factory, made


def test_a_change_between_our_read_and_write_is_read_again_not_overwritten(
    live: dict[str, Node], direct: dict[str, KazooClient], root: str
) -> None:
    target = f"{root}/flags/login/history"
    for client in direct.values():
        client.create(target, b'{"on": false}', makepath=True)
    factory, made = racing_factory(direct, live, target, races=1)

    run(closing(make_store(addresses(live), root, client_factory=factory),
                lambda store: store.set_flag("login", "history", True)))

    assert [client.raced for client in made] == [1, 1]
    for client in direct.values():
        # Our write came after the racer's and kept its key: a fresh read, then a new write.
        assert json.loads(znode(client, target) or b"") == {"on": True, "owner": "racer-1"}


def test_a_znode_that_changes_under_every_attempt_is_a_conflict(
    live: dict[str, Node], direct: dict[str, KazooClient], root: str
) -> None:
    target = f"{root}/flags/login/history"
    for client in direct.values():
        client.create(target, b'{"on": false}', makepath=True)
    factory, made = racing_factory(direct, live, target, races=1000)
    store = make_store(addresses(live), root, client_factory=factory, write_attempts=3)

    with pytest.raises(ConflictError, match=r"login/history.*changed between our read and "
                                            r"our write 3 times"):
        run(closing(store, lambda store: store.set_flag("login", "history", True)))
    assert [client.raced for client in made] == [3, 3]
    for client in direct.values():
        assert json.loads(znode(client, target) or b"")["on"] is False


# --- faults --------------------------------------------------------------------------------------


def test_with_dc1_down_writes_land_on_dc2_and_reads_come_from_it(
    live: dict[str, Node], root: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main(store: ZooKeeperStore) -> tuple[Any, ...]:
        await store.set_flag("login", "history", True)  # both nodes up: dc1's client connected
        live["dc1"].stop()
        with caplog.at_level(logging.WARNING, logger="revive.ops.zookeeper"):
            await store.set_flag("search", "facets", True)
        flags = await store.flags()
        return flags, store.set.current_dc, await store.probe()

    store = make_store(addresses(live), root, timeout_s=FAULT_TIMEOUT_S)
    flags, answered_by, probed = run(closing(store, main))
    assert flags == {("login", "history"): True, ("search", "facets"): True}
    assert answered_by == "dc2"
    assert probed == {"dc1": False, "dc2": True}
    assert "reached dc2 but not dc1" in caplog.text

    with kazoo_clients({"dc2": live["dc2"]}) as direct:
        assert znode(direct["dc2"], f"{root}/flags/search/facets") == b"on"


def test_every_node_down_is_a_transient_error_and_the_probe_says_down(root: str) -> None:
    replicas = {"dc1": f"127.0.0.1:{free_port()}", "dc2": f"zk://127.0.0.1:{free_port()}"}

    async def main(store: ZooKeeperStore) -> dict[str, bool]:
        with pytest.raises(TransientOpsError, match="reached no node"):
            await store.set_flag("login", "history", True)
        with pytest.raises(TransientOpsError, match="every replica failed"):
            await store.flags()
        with pytest.raises(TransientOpsError):
            await store.set_retry_policy(None)
        return await store.probe()

    store = make_store(replicas, root, timeout_s=FAULT_TIMEOUT_S)
    assert run(closing(store, main)) == {"dc1": False, "dc2": False}


@contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never says a word."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            with suppress(TimeoutError, OSError):
                conn, _ = listener.accept()
                accepted.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_a_node_that_accepts_and_never_answers_fails_within_the_timeout(
    live: dict[str, Node], direct: dict[str, KazooClient], root: str
) -> None:
    direct["dc2"].create(f"{root}/flags/login/history", b"on", makepath=True)
    with silent_server() as port:
        replicas = {"dc1": f"127.0.0.1:{port}", "dc2": live["dc2"].address}

        async def main(store: ZooKeeperStore) -> tuple[Any, ...]:
            flags = await store.flags()  # dc1 first: it times out, dc2 answers
            probed = await store.probe()
            return flags, probed, store.set.breaker_state("dc1")

        store = make_store(replicas, root, timeout_s=FAULT_TIMEOUT_S,
                           session_timeout_s=FAULT_TIMEOUT_S)
        flags, probed, _ = run(closing(store, main))
        assert flags == {("login", "history"): True}
        assert probed == {"dc1": False, "dc2": True}

        async def alone(store: ZooKeeperStore) -> BreakerState:
            # Each round times out on the one node, until its breaker opens.
            with pytest.raises(TransientOpsError, match=f"no session from 127.0.0.1:{port}"):
                await store.flags()
            return store.set.breaker_state("dc1")

        silent = make_store({"dc1": f"127.0.0.1:{port}"}, root, timeout_s=SILENT_TIMEOUT_S,
                            session_timeout_s=SILENT_TIMEOUT_S)
        assert run(closing(silent, alone)) is BreakerState.OPEN


@contextmanager
def four_letter_server(replies: dict[bytes, bytes]) -> Iterator[int]:
    """Answers each four-letter word from ``replies`` (nothing for others) and hangs up."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with conn, suppress(OSError):
                conn.settimeout(5)
                conn.sendall(replies.get(conn.recv(4), b""))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        listener.close()


@pytest.mark.parametrize(
    "replies",
    [
        {b"ruok": b"ruok is not executed because it is not in the whitelist.\n"},
        {b"ruok": b"imok", b"srvr": b"This ZooKeeper instance is not currently serving requests\n"},
        {},
    ],
    ids=["not-whitelisted", "not-serving", "no-reply"],
)
def test_the_probe_says_down_unless_imok_and_serving(
    live: dict[str, Node], root: str, replies: dict[bytes, bytes]
) -> None:
    with four_letter_server(replies) as port:
        replicas = {"dc1": f"127.0.0.1:{port}", "dc2": live["dc2"].address}
        got = run(closing(make_store(replicas, root, timeout_s=FAULT_TIMEOUT_S),
                          lambda store: store.probe()))
    assert got == {"dc1": False, "dc2": True}


def test_a_node_refusing_the_write_is_a_permanent_error(
    live: dict[str, Node], direct: dict[str, KazooClient], root: str
) -> None:
    read_only = [make_acl("world", "anyone", read=True)]
    for client in direct.values():
        client.create(root, b"", makepath=True)
        client.create(f"{root}/flags", b"", acl=read_only)

    with pytest.raises(PermanentOpsError, match="refused"):
        run(closing(make_store(addresses(live), root),
                    lambda store: store.set_flag("login", "history", True)))


def test_names_that_cannot_be_znodes_are_refused(live: dict[str, Node], root: str) -> None:
    async def main(store: ZooKeeperStore) -> None:
        for service_name, feature in [("a/b", "x"), ("login", ""), ("..", "x")]:
            with pytest.raises(PermanentOpsError, match="cannot be a znode name"):
                await store.set_flag(service_name, feature, True)

    run(closing(make_store(addresses(live), root), main))


# --- settings, addresses, entry point ----------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"flags_path": "revive/flags"}, "ops_tools.zk.settings.flags_path"),
        ({"flags_path": "/revive//flags"}, "ops_tools.zk.settings.flags_path"),
        ({"retry_policy_path": "/zookeeper/x"}, "ops_tools.zk.settings.retry_policy_path"),
        ({"flags_path": "/r/flags", "retry_policy_path": "/r/flags/retry"},
         "ops_tools.zk.settings.retry_policy_path"),
        ({"write_attempts": 0}, "ops_tools.zk.settings.write_attempts"),
        ({"timeout_s": -1}, "ops_tools.zk.settings.timeout_s"),
        ({"flag_path": "/x"}, "ops_tools.zk.settings.flag_path: unknown setting"),
    ],
)
def test_wrong_settings_are_refused_with_their_key(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(TopologyError, match=message.replace(".", r"\.")):
        loads(topology_text({"dc1": "127.0.0.1:2181", "dc2": "127.0.0.1:2182"}, settings))


def test_settings_have_defaults() -> None:
    topology = loads(topology_text({"dc1": "127.0.0.1:2181"}))
    settings = settings_of(TOOL, topology.ops_tools[TOOL])
    assert settings.flags_path == "/revive/flags"
    assert settings.retry_policy_path == "/revive/retry-policy"


def test_replica_addresses() -> None:
    assert zk_adapter.parse_address("zk://127.0.0.1:2182") == ("127.0.0.1", 2182)
    assert zk_adapter.parse_address("zk1.dc1.example") == ("zk1.dc1.example", 2181)
    for bad in ("http://zk:2181", "zk:notaport", "zk://h:2181/chroot"):
        with pytest.raises(InputError, match="ZooKeeper address"):
            zk_adapter.parse_address(bad)


def test_the_adapter_is_found_through_its_entry_point_for_both_kinds() -> None:
    found = plugins.adapter("zookeeper")
    assert found is zk_adapter.ADAPTER
    assert found.factory(ToolKind.config_store) is not None
    assert found.factory(ToolKind.discovery) is not None


def test_zoo_cfg_binds_the_given_host_only(tmp_path: Path) -> None:
    text = zookeeper_config(data_dir=tmp_path, port=2181, host="10.213.7.11")
    assert "clientPortAddress=10.213.7.11" in text.splitlines()
    assert "clientPortAddress=127.0.0.1" in zookeeper_config(data_dir=tmp_path, port=2181)


def test_start_zookeeper_binds_the_given_host_through_the_wrapped_command(
        tmp_path: Path) -> None:
    """``host`` is the only address it listens on; ``wrap``'s command line is what runs."""
    require("java", "default-jre-headless")
    require(ZOOKEEPER_JAR.name, "zookeeper", paths=(str(ZOOKEEPER_JAR),))
    require(SLF4J_SIMPLE_JAR.name, "libslf4j-java", paths=(str(SLF4J_SIMPLE_JAR),))
    host, port = "127.0.0.2", free_port()  # another loopback address: no namespace needed
    daemon = start_zookeeper(tmp_path / "zk", port=port, host=host, name="zookeeper-host",
                             wrap=lambda argv: ["env", "REVIVE_WRAPPED=zookeeper", *argv])
    try:
        assert serving(port, host=host)
        assert not port_open(port, "127.0.0.1")
        assert daemon.argv[:2] == ["env", "REVIVE_WRAPPED=zookeeper"]
        environ = Path(f"/proc/{daemon.pid}/environ").read_bytes().split(b"\0")
        assert b"REVIVE_WRAPPED=zookeeper" in environ  # env exec'd java: same pid
    finally:
        daemon.stop()
    assert not daemon.alive()
