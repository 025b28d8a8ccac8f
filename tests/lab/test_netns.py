"""Lab networks: one namespace per DC on a bridge, so a DC can be cut off while it runs.

A tiny HTTP server runs in each DC's namespace (started through ``wrap``, stopped through
``Daemon.stop``): reachable from the root namespace and from the other DC, unreachable while
its DC is partitioned though still alive, reachable again once healed. Removal leaves no
namespace or link, also from the recorded state after a crash. The loopback fallback says
clearly that it cannot partition. Everything waits on states, never on durations.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from revive.lab import netns
from revive.lab.daemon import Daemon, pid_alive
from revive.lab.netns import LoopbackNetwork, Network, NetworkError
from tests.ops.programs import require

PORT = 8080  # every namespace has its own ports: the same one in each DC
DEADLINE_S = 30.0  # far beyond what any state change takes here; never a timing assertion


def need_netns() -> None:
    """Skip where namespaces cannot be made, except in CI, where that is a failure."""
    require("ip", "iproute2")
    ok, why = netns.available()
    if not ok:
        if os.environ.get("REVIVE_REQUIRE_TOOLS") == "1":
            pytest.fail(f"network namespaces are unavailable: {why}", pytrace=False)
        pytest.skip(f"network namespaces are unavailable: {why}")


def until(check: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} after {deadline_s:.0f} s")
        time.sleep(0.1)


def reachable(host: str, port: int = PORT) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


def reachable_from(net: Network, dc: str, host: str, port: int = PORT) -> bool:
    """Whether a process in ``dc``'s namespace can connect to ``host:port``."""
    probe = (f"import socket; socket.create_connection(({host!r}, {port}), timeout=2).close()")
    done = subprocess.run(net.wrap(dc)([sys.executable, "-c", probe]), capture_output=True,
                          timeout=30, check=False)
    return done.returncode == 0


def addresses_in(net: Network, dc: str) -> str:
    """``ip addr`` as seen from inside ``dc``'s namespace."""
    return subprocess.run(net.wrap(dc)(["ip", "-4", "-o", "addr", "show"]), capture_output=True,
                          text=True, timeout=30, check=True).stdout


def lab_names(net: Network) -> tuple[list[str], list[str]]:
    """The namespaces and links of this lab that exist now, by name."""
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True,
                                      text=True, check=True).stdout or "[]")
    return ([line.split()[0] for line in namespaces.splitlines()
             if line.startswith(f"rv-{net.tag}-")],
            [link["ifname"] for link in links if net.tag in link["ifname"]])


def net_namespace_inode(path: str) -> int:
    return os.stat(path).st_ino


@dataclass
class Lab:
    net: Network
    servers: dict[str, Daemon]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    need_netns()
    root = tmp_path_factory.mktemp("netns")
    net = Network.create(f"test-netns-{os.getpid()}", ["dc1", "dc2"])
    servers: dict[str, Daemon] = {}
    try:
        for dc in net.dcs:
            argv = net.wrap(dc)([sys.executable, "-m", "http.server", "--bind",
                                 net.address(dc), "--directory", str(root), str(PORT)])
            servers[dc] = Daemon(f"http-{dc}", argv, log=root / f"http-{dc}.log").start()
            servers[dc].wait_ready(lambda dc=dc: reachable(net.address(dc)), timeout_s=DEADLINE_S,
                                   what=f"serving on {net.address(dc)}:{PORT}")
        yield Lab(net, servers)
    finally:
        for server in servers.values():
            server.stop()
        net.destroy()
        assert lab_names(net) == ([], [])
        assert not [s.pid for s in servers.values() if s.pid and pid_alive(s.pid)]


def test_each_dc_has_its_own_namespace_and_address(lab: Lab) -> None:
    net = lab.net
    assert net.address("dc1") != net.address("dc2")
    namespaces, links = lab_names(net)
    assert sorted(namespaces) == sorted(net.namespace(dc) for dc in net.dcs)
    assert net.bridge in links
    for dc, server in lab.servers.items():
        assert server.pid is not None
        # ``ip netns exec`` execs: the recorded pid is the server itself, in the DC's namespace.
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
        assert b"http.server" in cmdline
        assert (net_namespace_inode(f"/proc/{server.pid}/ns/net")
                == net_namespace_inode(f"/run/netns/{net.namespace(dc)}"))
    assert (net_namespace_inode("/proc/self/ns/net")
            != net_namespace_inode(f"/run/netns/{net.namespace('dc1')}"))


def test_dcs_are_reachable_from_the_root_namespace_and_from_each_other(lab: Lab) -> None:
    net = lab.net
    assert reachable(net.address("dc1")) and reachable(net.address("dc2"))
    assert reachable_from(net, "dc2", net.address("dc1"))
    assert reachable_from(net, "dc1", net.address("dc2"))


def test_a_partitioned_dc_runs_on_but_nobody_reaches_it_until_healed(lab: Lab) -> None:
    net = lab.net
    dc1 = net.address("dc1")
    net.partition("dc1")
    try:
        assert net.partitioned("dc1") and not net.partitioned("dc2")
        until(lambda: not reachable(dc1), "dc1 cut off from the root namespace")
        assert not reachable_from(net, "dc2", dc1)
        assert lab.servers["dc1"].alive()
        assert reachable_from(net, "dc1", dc1)  # inside its own namespace it still serves
        assert reachable(net.address("dc2"))
    finally:
        net.heal("dc1")
    assert not net.partitioned("dc1")
    until(lambda: reachable(dc1), "dc1 reachable again after heal")
    until(lambda: reachable_from(net, "dc2", dc1), "dc1 reachable from dc2 after heal")


def test_daemon_stop_stops_a_program_started_in_a_namespace(lab: Lab, tmp_path: Path) -> None:
    daemon = Daemon("sleeper", lab.net.wrap("dc2")(["sleep", "300"]),
                    log=tmp_path / "sleeper.log").start()
    try:
        assert daemon.pid is not None
        until(lambda: Path(f"/proc/{daemon.pid}/cmdline").read_bytes().startswith(b"sleep"),
              "the sleeper exec'd by ip netns exec")
    finally:
        daemon.stop()
    assert not pid_alive(daemon.pid)


def test_a_crashed_lab_is_cleaned_up_from_its_recorded_state(tmp_path: Path) -> None:
    need_netns()
    net = Network.create(f"test-crash-{os.getpid()}", ["a", "b"])
    state_file = tmp_path / "network.json"
    state_file.write_text(json.dumps(net.to_state()))
    leftover = Daemon("leftover", net.wrap("a")(["sleep", "300"]), log=tmp_path / "l.log")
    try:
        leftover.start()
        until(lambda: Path(f"/proc/{leftover.pid}/cmdline").read_bytes().startswith(b"sleep"),
              "the leftover running in its namespace")
        del net  # the orchestration crashed: only the JSON file is left
        recorded = netns.network_from_state(json.loads(state_file.read_text()))
        assert isinstance(recorded, Network)
        recorded.destroy()
        assert lab_names(recorded) == ([], [])
        until(lambda: not leftover.alive(), "the leftover process killed")
        recorded.destroy()  # idempotent
    finally:
        leftover.stop()


def test_create_again_removes_the_leftovers_of_the_same_lab() -> None:
    need_netns()
    lab_id = f"test-again-{os.getpid()}"
    first = Network.create(lab_id, ["dc1", "dc2", "dc3"])
    second = Network.create(lab_id, ["dc1"])  # as after a crashed ``up`` with other DCs
    try:
        namespaces, links = lab_names(second)
        assert namespaces == [second.namespace("dc1")]
        assert sorted(links) == sorted([second.bridge, second.links[0].host_if])
        assert first.tag == second.tag
    finally:
        second.destroy()
    assert lab_names(second) == ([], [])


def test_a_subnet_already_routed_on_the_host_is_not_taken_again() -> None:
    need_netns()
    # Two lab ids whose hash picks the same /24: the second must move to another one.
    base = f"test-clash-{os.getpid()}"
    wanted = int(netns.lab_tag(base), 16) % 256
    other = next(f"{base}-{n}" for n in range(100_000)
                 if int(netns.lab_tag(f"{base}-{n}"), 16) % 256 == wanted)
    first = Network.create(base, ["dc1"])
    try:
        second = Network.create(other, ["dc1"])
        try:
            assert second.subnet != first.subnet
            assert second.address("dc1") in addresses_in(second, "dc1")
        finally:
            second.destroy()
    finally:
        first.destroy()


def test_hostile_names_still_give_valid_interface_names() -> None:
    need_netns()
    dcs = [" dc one ", "x" * 40, "Zürich-机房", "../../etc/passwd", "-", "dc\n2; rm -rf /"]
    net = Network.create("lab with spaces ü " + "y" * 40, dcs)
    try:
        names = [net.bridge] + [n for link in net.links for n in (link.host_if, link.ns_if)]
        assert all(len(name) <= netns.IFNAMSIZ and name.isascii() for name in names)
        assert all("/" not in link.namespace for link in net.links)
        assert len({net.address(dc) for dc in dcs}) == len(dcs)
        namespaces, links = lab_names(net)
        assert len(namespaces) == len(dcs) and len(links) == 1 + len(dcs)
        for dc in dcs:
            assert net.address(dc) in addresses_in(net, dc)
    finally:
        net.destroy()
    assert lab_names(net) == ([], [])


def test_make_network_picks_namespaces_when_available() -> None:
    need_netns()
    net = netns.make_network(f"test-make-{os.getpid()}", ["dc1"])
    try:
        assert isinstance(net, Network)
    finally:
        net.destroy()


# --- the loopback fallback (no root needed) ------------------------------------------------


def test_loopback_puts_every_dc_on_127_0_0_1_and_cannot_partition() -> None:
    net = netns.make_network("test-loopback", ["dc1", "dc2"], prefer_netns=False)
    assert isinstance(net, LoopbackNetwork)
    assert net.address("dc1") == net.address("dc2") == "127.0.0.1"
    assert net.wrap("dc1")(["sleep", "1"]) == ["sleep", "1"]
    with pytest.raises(NetworkError, match="partition needs network namespaces: "):
        net.partition("dc1")
    with pytest.raises(NetworkError, match="no DC 'dc9'"):
        net.address("dc9")
    assert not net.partitioned("dc2")
    again = netns.network_from_state(json.loads(json.dumps(net.to_state())))
    assert isinstance(again, LoopbackNetwork) and again.dcs == ["dc1", "dc2"]
    again.destroy()  # nothing to remove, and no error


def test_names_are_short_and_stable_whatever_the_lab_id() -> None:
    for lab_id in ("", "a", "ü" * 100, "lab/../x\n"):
        tag = netns.lab_tag(lab_id)
        assert tag == netns.lab_tag(lab_id) and len(tag) == 6 and tag.isalnum()
    with pytest.raises(NetworkError, match="distinct"):
        LoopbackNetwork.create("x", ["dc1", "dc1"])
