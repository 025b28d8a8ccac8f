"""Each DC of the lab in its own network namespace, so a DC can be cut off as well as killed.

A fire kills a DC's processes; a partition leaves them running but unreachable, which is the
case a failover must also survive (the old primary still believes it serves). Killing needs
nothing special, cutting off does: every DC gets its own network namespace and address.

Layout, all in one private /24 (``10.213.<x>.0/24``, ``x`` derived from the lab id and moved
on if the host already routes it)::

    root namespace (revive, load generator, Prometheus)        rvb-<tag>  10.213.x.1/24
        |-- rvh-<tag>-1 ==veth== rvn-<tag>-1  in rv-<tag>-1-<dc>       10.213.x.11/24
        `-- rvh-<tag>-2 ==veth== rvn-<tag>-2  in rv-<tag>-2-<dc>       10.213.x.12/24

``<tag>`` is six hex digits of a hash of the lab id and the DC's *index* numbers the links:
Linux allows 15 characters for an interface name, and DC names may be long or hostile.
The root namespace reaches every DC through the bridge; DCs reach each other through it.
``partition`` brings the host end of a DC's veth down (its processes live on, nothing reaches
them); ``heal`` brings it back up.

Processes are started in a namespace through ``wrap(dc)``, which prefixes
``ip netns exec <ns>``. ``ip netns exec`` *execs* the program (it does not fork), so the pid
a ``Daemon`` records is the program's own and ``Daemon.stop`` stops the right process group.

Where namespaces cannot be made (not root, no iproute2, no CAP_NET_ADMIN),
``make_network`` falls back to ``LoopbackNetwork``: every DC on 127.0.0.1, ``wrap`` the
identity, and ``partition`` a clear error instead of a silent no-op.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from revive.errors import ReviveError
from revive.lab.daemon import ProgramMissing, program

log = logging.getLogger(__name__)

#: The private range every lab network is carved from: one /24 per lab.
SUPERNET = ipaddress.ip_network("10.213.0.0/16")
#: A DC's host number in its lab's /24 is ``FIRST_HOST + index`` (index from 1).
FIRST_HOST = 10
MAX_DCS = 99  # two digits in an interface name; far beyond what one machine runs
IFNAMSIZ = 15  # Linux's limit on an interface name (16 bytes with the NUL)
COMMAND_TIMEOUT_S = 30.0
SETTLE_TIMEOUT_S = 10.0  # deleting a namespace frees its veths asynchronously

Wrap = Callable[[list[str]], list[str]]


class NetworkError(ReviveError):
    """A lab network could not be made, changed or removed, or cannot do what was asked."""


def lab_tag(lab_id: str) -> str:
    """Six hex digits naming a lab's links: short, and safe whatever the lab id holds."""
    return hashlib.sha256(lab_id.encode("utf-8", "surrogatepass")).hexdigest()[:6]


def _slug(dc: str, limit: int = 16) -> str:
    """A readable, harmless fragment of a DC name for a namespace name (never a link name)."""
    return re.sub(r"[^a-z0-9]+", "-", dc.lower()).strip("-")[:limit].strip("-")


def _ip_path() -> str:
    return program("ip", "iproute2", paths=("/usr/sbin/ip", "/sbin/ip", "/bin/ip"))


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetworkError(f"{' '.join(argv)}: {exc}") from exc
    if check and done.returncode != 0:
        raise NetworkError(f"{' '.join(argv)} failed: {(done.stderr or done.stdout).strip()}")
    return done


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run([_ip_path(), *args], check=check)


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = _ip("-j", *args).stdout.strip()
    return json.loads(out) if out else []


def _links() -> list[str]:
    return [str(link.get("ifname", "")) for link in _ip_json("link", "show")]


def _namespaces() -> list[str]:
    # Plain output ("name (id: 3)"): ``ip -j netns`` prints nothing when there are none.
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()]


def _routed_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host routes or has an address in (the default route aside)."""
    found: list[ipaddress.IPv4Network] = []
    for route in _ip_json("-4", "route", "show", "table", "all"):
        dst = str(route.get("dst", ""))
        with contextlib.suppress(ValueError):
            net = ipaddress.ip_network(dst, strict=False)
            if isinstance(net, ipaddress.IPv4Network) and net.prefixlen > 0:
                found.append(net)
    for link in _ip_json("-4", "addr", "show"):
        for info in link.get("addr_info", []):
            with contextlib.suppress(ValueError, KeyError):
                net = ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
                if isinstance(net, ipaddress.IPv4Network):
                    found.append(net)
    return found


def _pick_subnet(tag: str) -> ipaddress.IPv4Network:
    """The lab's /24: derived from its tag, moved on past any the host already routes."""
    subnets = list(SUPERNET.subnets(new_prefix=24))
    taken = _routed_networks()
    start = int(tag, 16) % len(subnets)
    for step in range(len(subnets)):
        candidate = subnets[(start + step) % len(subnets)]
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise NetworkError(f"every /24 of {SUPERNET} is already routed on this host")


@dataclass(frozen=True)
class DcLink:
    """One DC's namespace, veth pair and address."""

    dc: str
    index: int
    namespace: str
    host_if: str  # on the bridge, in the root namespace: down = partitioned
    ns_if: str  # in the DC's namespace, holds its address
    address: str


def _dc_links(tag: str, subnet: ipaddress.IPv4Network, dcs: Sequence[str]) -> list[DcLink]:
    if len(set(dcs)) != len(dcs):
        raise NetworkError(f"DC names must be distinct: {list(dcs)!r}")
    if not 0 < len(dcs) <= MAX_DCS:
        raise NetworkError(f"a lab network holds 1 to {MAX_DCS} DCs, not {len(dcs)}")
    links = []
    for index, dc in enumerate(dcs, start=1):
        slug = _slug(dc)
        links.append(DcLink(
            dc=dc,
            index=index,
            namespace=f"rv-{tag}-{index}" + (f"-{slug}" if slug else ""),
            host_if=f"rvh-{tag}-{index}",
            ns_if=f"rvn-{tag}-{index}",
            address=str(subnet.network_address + FIRST_HOST + index),
        ))
    return links


@dataclass
class Network:
    """A lab's bridge, and one namespace with its own address per DC. Root only."""

    lab_id: str
    tag: str
    subnet: str
    bridge: str
    links: list[DcLink]

    # --- making and unmaking --------------------------------------------------------------

    @classmethod
    def create(cls, lab_id: str, dcs: list[str]) -> Network:
        """Build the network, after removing what a previous run of this lab id left behind."""
        tag = lab_tag(lab_id)
        _cleanup_tag(tag)
        subnet = _pick_subnet(tag)
        net = cls(lab_id=lab_id, tag=tag, subnet=str(subnet), bridge=f"rvb-{tag}",
                  links=_dc_links(tag, subnet, dcs))
        for name in [net.bridge] + [n for link in net.links for n in (link.host_if, link.ns_if)]:
            assert len(name) <= IFNAMSIZ, name
        try:
            net._build()
        except BaseException:
            net.destroy()
            raise
        log.info("lab %s: network %s on bridge %s (%s)", lab_id, subnet, net.bridge,
                 ", ".join(f"{link.dc}={link.address}" for link in net.links))
        return net

    def _build(self) -> None:
        subnet = ipaddress.ip_network(self.subnet)
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.host_address}/{subnet.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for link in self.links:
            _ip("netns", "add", link.namespace)
            _ip("link", "add", link.host_if, "type", "veth", "peer", "name", link.ns_if)
            _ip("link", "set", link.ns_if, "netns", link.namespace)
            _ip("link", "set", link.host_if, "master", self.bridge, "up")
            _ip("-n", link.namespace, "addr", "add", f"{link.address}/{subnet.prefixlen}",
                "dev", link.ns_if)
            _ip("-n", link.namespace, "link", "set", link.ns_if, "up")
            _ip("-n", link.namespace, "link", "set", "lo", "up")

    def destroy(self, *, kill_processes: bool = True) -> None:
        """Remove the namespaces, veths and bridge. Idempotent; works from a crashed run's state.

        Processes still running in the namespaces are killed first when ``kill_processes``
        (only the lab starts processes there): a deleted namespace would otherwise live on,
        unnamed, as long as they do.
        """
        namespaces = [link.namespace for link in self.links]
        _remove(namespaces=namespaces,
                links=[self.bridge] + [link.host_if for link in self.links]
                + [link.ns_if for link in self.links],
                kill_processes=kill_processes)

    # --- the state file -------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """What ``from_state`` needs to find (and remove) this network after a crash."""
        return {
            "kind": "netns",
            "lab_id": self.lab_id,
            "tag": self.tag,
            "subnet": self.subnet,
            "bridge": self.bridge,
            "dcs": [
                {"dc": link.dc, "index": link.index, "namespace": link.namespace,
                 "host_if": link.host_if, "ns_if": link.ns_if, "address": link.address}
                for link in self.links
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Network:
        if state.get("kind") != "netns":
            raise NetworkError(f"not a namespace network's state: kind={state.get('kind')!r}")
        return cls(
            lab_id=str(state["lab_id"]),
            tag=str(state["tag"]),
            subnet=str(state["subnet"]),
            bridge=str(state["bridge"]),
            links=[DcLink(dc=str(d["dc"]), index=int(d["index"]),
                          namespace=str(d["namespace"]), host_if=str(d["host_if"]),
                          ns_if=str(d["ns_if"]), address=str(d["address"]))
                   for d in state["dcs"]],
        )

    # --- using it -------------------------------------------------------------------------

    @property
    def dcs(self) -> list[str]:
        return [link.dc for link in self.links]

    @property
    def host_address(self) -> str:
        """The root namespace's address on the bridge: where DCs reach revive, Prometheus..."""
        return str(ipaddress.ip_network(self.subnet).network_address + 1)

    def link(self, dc: str) -> DcLink:
        for link in self.links:
            if link.dc == dc:
                return link
        raise NetworkError(f"lab {self.lab_id!r} has no DC {dc!r} (it has {self.dcs!r})")

    def address(self, dc: str) -> str:
        return self.link(dc).address

    def namespace(self, dc: str) -> str:
        return self.link(dc).namespace

    def wrap(self, dc: str) -> Wrap:
        """Prefix a command line so it runs in ``dc``'s namespace (same pid: ip execs it)."""
        prefix = [_ip_path(), "netns", "exec", self.link(dc).namespace]
        return lambda argv: [*prefix, *argv]

    def partition(self, dc: str) -> None:
        """Cut ``dc`` off: its processes live on, nothing reaches them nor they anything."""
        _ip("link", "set", self.link(dc).host_if, "down")
        log.info("lab %s: %s partitioned", self.lab_id, dc)

    def heal(self, dc: str) -> None:
        _ip("link", "set", self.link(dc).host_if, "up")
        log.info("lab %s: %s healed", self.lab_id, dc)

    def partitioned(self, dc: str) -> bool:
        info = _ip_json("link", "show", "dev", self.link(dc).host_if)
        return bool(info) and "UP" not in info[0].get("flags", [])


def _cleanup_tag(tag: str) -> None:
    """Remove whatever a previous run of the lab with this tag left, found by name."""
    prefixes = (f"rvb-{tag}", f"rvh-{tag}-", f"rvn-{tag}-")
    _remove(namespaces=[ns for ns in _namespaces() if ns.startswith(f"rv-{tag}-")],
            links=[name for name in _links() if name.startswith(prefixes)],
            kill_processes=True)


def _remove(*, namespaces: Sequence[str], links: Sequence[str], kill_processes: bool) -> None:
    existing = set(_namespaces())
    for ns in namespaces:
        if ns in existing and kill_processes:
            _kill_namespace_processes(ns)
    present = set(_links())
    for name in links:  # deleting either end of a veth deletes the pair
        if name in present:
            _ip("link", "del", name, check=False)
    for ns in namespaces:
        if ns in existing:
            _ip("netns", "del", ns, check=False)
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        now_links, now_ns = set(_links()), set(_namespaces())
        left = [n for n in links if n in now_links]
        left_ns = [ns for ns in namespaces if ns in now_ns]
        if not left and not left_ns:
            return
        if time.monotonic() > deadline:
            raise NetworkError(f"could not remove links {left} / namespaces {left_ns}")
        time.sleep(0.1)


def _kill_namespace_processes(ns: str) -> None:
    pids = [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split() if p.isdigit()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if pids:
        log.warning("namespace %s: killed %d leftover process(es) %s", ns, len(pids), pids)


@dataclass
class LoopbackNetwork:
    """The fallback without namespaces: every DC on 127.0.0.1, nothing to cut off."""

    lab_id: str
    dc_names: list[str]
    reason: str = "network namespaces were not asked for"

    @classmethod
    def create(cls, lab_id: str, dcs: list[str], reason: str = "") -> LoopbackNetwork:
        if len(set(dcs)) != len(dcs):
            raise NetworkError(f"DC names must be distinct: {list(dcs)!r}")
        return cls(lab_id, list(dcs), reason or cls.reason)

    @property
    def dcs(self) -> list[str]:
        return list(self.dc_names)

    @property
    def host_address(self) -> str:
        return "127.0.0.1"

    def _known(self, dc: str) -> None:
        if dc not in self.dc_names:
            raise NetworkError(f"lab {self.lab_id!r} has no DC {dc!r} (it has {self.dcs!r})")

    def address(self, dc: str) -> str:
        self._known(dc)
        return "127.0.0.1"

    def wrap(self, dc: str) -> Wrap:
        self._known(dc)
        return lambda argv: list(argv)

    def partition(self, dc: str) -> None:
        self._known(dc)
        raise NetworkError(f"partition needs network namespaces: {self.reason}")

    def heal(self, dc: str) -> None:
        self._known(dc)
        raise NetworkError(f"partition needs network namespaces: {self.reason}")

    def partitioned(self, dc: str) -> bool:
        self._known(dc)
        return False

    def destroy(self, *, kill_processes: bool = True) -> None:
        """Nothing to remove."""

    def to_state(self) -> dict[str, Any]:
        return {"kind": "loopback", "lab_id": self.lab_id, "dcs": self.dcs,
                "reason": self.reason}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LoopbackNetwork:
        if state.get("kind") != "loopback":
            raise NetworkError(f"not a loopback network's state: kind={state.get('kind')!r}")
        return cls(str(state["lab_id"]), [str(d) for d in state["dcs"]],
                   str(state.get("reason", cls.reason)))


def network_from_state(state: Mapping[str, Any]) -> Network | LoopbackNetwork:
    """Either kind of network from what ``to_state`` recorded (for ``lab down``)."""
    if state.get("kind") == "loopback":
        return LoopbackNetwork.from_state(state)
    return Network.from_state(state)


def available() -> tuple[bool, str]:
    """Whether this process can make lab networks, and if not, why not.

    Tries for real in a throwaway namespace (a bridge and a veth pair inside it, so nothing
    touches the root namespace): being root is not enough in a container without
    CAP_NET_ADMIN, and a kernel may lack veth or bridge support.
    """
    try:
        ip = _ip_path()
    except ProgramMissing as exc:
        return False, str(exc)
    probe = f"rv-probe-{os.getpid()}"
    _run([ip, "netns", "del", probe], check=False)  # a probe a killed process left behind
    steps = [
        [ip, "netns", "add", probe],
        [ip, "-n", probe, "link", "add", "rvprobe0", "type", "bridge"],
        [ip, "-n", probe, "link", "add", "rvprobe1", "type", "veth", "peer", "name", "rvprobe2"],
    ]
    try:
        for argv in steps:
            done = _run(argv, check=False)
            if done.returncode != 0:
                why = (done.stderr or done.stdout).strip()
                if os.geteuid() != 0:
                    why = f"not root (uid {os.geteuid()}): {why}"
                elif "Operation not permitted" in why:
                    why = f"no CAP_NET_ADMIN: {why}"
                return False, f"{' '.join(argv[1:])}: {why}"
    except NetworkError as exc:
        return False, str(exc)
    finally:
        _run([ip, "netns", "del", probe], check=False)
    return True, "network namespaces work"


def make_network(lab_id: str, dcs: list[str], prefer_netns: bool = True
                 ) -> Network | LoopbackNetwork:
    """Namespaces when possible and wanted, the loopback fallback otherwise; logs which."""
    if prefer_netns:
        ok, why = available()
        if ok:
            return Network.create(lab_id, dcs)
        log.warning("lab %s: no network namespaces (%s); every DC on 127.0.0.1, "
                    "partitions unavailable", lab_id, why)
    else:
        why = "network namespaces were not asked for"
        log.info("lab %s: loopback network (%s)", lab_id, why)
    return LoopbackNetwork.create(lab_id, dcs, why)
