"""``revive lab up | status | down``: DCs of real processes on this machine.

Per DC: its own network namespace (or loopback addresses where namespaces cannot be made),
PostgreSQL cluster and utilisation exporter, Docker registry, ZooKeeper node, supervisord
running the demo services, an HAProxy that is both the DC's replica of the GSLB and its local
load balancer, and a Prometheus scraping every DC. A load generator in the root namespace
plays the users: a steady rate per traffic class through the GSLB.

Everything ``up`` starts is recorded in ``<dir>/lab.json`` as it starts, so ``down`` stops
all of it, also after an ``up`` that crashed half-way. Every process carries
``REVIVE_LAB_ID`` (and ``REVIVE_LAB_DC``) in its environment: a fire kills a DC by that mark,
and ``down`` sweeps whatever is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from pydantic import BaseModel, Field

from revive.lab import database as db
from revive.lab.daemon import Daemon, DaemonError, free_port, pid_alive, port_open, stop_group
from revive.lab.loadgen import start_loadgen
from revive.lab.netns import Network, make_network, network_from_state
from revive.lab.prometheus import start_prometheus
from revive.lab.registry import start_registry
from revive.lab.supervisor import conf_dir, start_supervisord
from revive.lab.zookeeper import start_zookeeper
from revive.render import environment

log = logging.getLogger("revive.lab")

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "runbooks" / "lab.yaml"
POINTER = Path(".revive") / "lab.json"
DEFAULT_DIR = Path(".revive") / "lab"
EXTRA_OFFSET = 100
MAX_INSTANCES = 4
SPARE = 6
VERSION = "v1"


class LabService(BaseModel):
    """One demo service: its place in the topology and the load its users send."""

    name: str
    tier: int
    group: str
    traffic_class: str
    redundancy: str
    first_dc_only: bool = False
    capacity_per_instance: float
    peak_load: float
    rate: float
    """Requests per second the load generator sends to its class."""
    base_port: int = 0


SERVICES = [
    LabService(name="login", tier=0, group="auth", traffic_class="accounts",
               redundancy="active-active", capacity_per_instance=25, peak_load=40, rate=16),
    LabService(name="feed", tier=1, group="social", traffic_class="feed",
               redundancy="active-active", capacity_per_instance=25, peak_load=40, rate=16),
    LabService(name="search", tier=2, group="discovery", traffic_class="search",
               redundancy="cold-standby", first_dc_only=True, capacity_per_instance=30,
               peak_load=20, rate=8),
]
#: How hard each demo instance leans on its DC's database: a cache miss costs a query.
DEMO = {"db_cost_ms": 60.0, "cache_keys": 4000, "cache_size": 1500, "zipf": 1.05, "pool": 4,
        "timeout_ms": 800.0}
#: Active queries the DC's database runs at full utilisation.
DB_CAPACITY = 2


class DcLab(BaseModel):
    """One DC of the lab: where it listens and what runs there."""

    name: str
    address: str
    ports: dict[str, int]
    gslb_ports: dict[str, int]
    local_ports: dict[str, int]
    pids: dict[str, int] = Field(default_factory=dict)
    db_dir: str = ""
    """The DC's PostgreSQL cluster: a directory the postgres user can reach, wherever the
    lab directory is (a private temporary directory may not be)."""


class LabState(BaseModel):
    """``<dir>/lab.json``: everything ``down`` and the drill need to find the lab again."""

    lab_id: str
    dir: str
    isolation: str
    """``netns`` (a DC can be cut off) or ``loopback`` (fallback; no partition)."""
    isolation_note: str = ""
    network: dict[str, Any] = Field(default_factory=dict)
    dcs: list[DcLab]
    services: list[LabService]
    loadgen: dict[str, Any] = Field(default_factory=dict)
    pids: dict[str, int] = Field(default_factory=dict)
    topology: str = ""
    up: bool = False
    fired: list[str] = Field(default_factory=list)

    def dc(self, name: str) -> DcLab:
        for dc in self.dcs:
            if dc.name == name:
                return dc
        raise KeyError(f"the lab has no DC {name!r} (has: {', '.join(d.name for d in self.dcs)})")

    @property
    def path(self) -> Path:
        return Path(self.dir) / "lab.json"

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(self.path)


class LabError(DaemonError):
    """The lab could not be brought up, found or stopped."""


def lab_dir(dir: Path | str | None) -> Path:
    """The lab directory: as given, the one ``up`` last recorded, or ``.revive/lab``."""
    if dir is not None:
        return Path(dir).resolve()
    if POINTER.exists():
        with contextlib.suppress(ValueError, KeyError, OSError):
            return Path(json.loads(POINTER.read_text())["dir"])
    return DEFAULT_DIR.resolve()


def load_state(dir: Path | str | None = None) -> LabState:
    path = lab_dir(dir) / "lab.json"
    if not path.exists():
        raise LabError(f"no lab in {path.parent} (start one with `revive lab up`)")
    return LabState.model_validate_json(path.read_text())


# --- up ------------------------------------------------------------------------------------


def up(dir: Path | str | None = None, *, dcs: tuple[str, ...] = ("dc1", "dc2"),
       prefer_netns: bool = True, progress: Callable[[str], None] = log.info) -> LabState:
    """Start the whole lab and return once users are served in every DC."""
    root = lab_dir(dir)
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(LabError):
        if load_state(root).up:
            raise LabError(f"a lab is already up in {root}: `revive lab down` first")
    down(root, quiet=True)  # leftovers of a crashed up
    _clean(root, dcs)  # a lab starts fresh: no program file, artifact or data of an old one
    lab_id = hashlib.sha256(str(root).encode()).hexdigest()[:10]
    net = make_network(lab_id, list(dcs), prefer_netns=prefer_netns)
    isolation = "netns" if isinstance(net, Network) else "loopback"
    state = LabState(
        lab_id=lab_id, dir=str(root), isolation=isolation,
        isolation_note="" if isolation == "netns" else getattr(net, "reason", ""),
        network=net.to_state(), dcs=[], services=_services(),
    )
    for i, name in enumerate(dcs):
        address = net.address(name) if isolation == "netns" else f"127.0.0.{10 + i}"
        state.dcs.append(DcLab(
            name=name, address=address,
            ports={k: free_port() for k in ("db", "db_exporter", "registry", "zookeeper",
                                             "supervisord", "haproxy_admin", "prometheus")},
            gslb_ports={s.traffic_class: free_port() for s in state.services},
            local_ports={s.traffic_class: free_port() for s in state.services},
        ))
    state.loadgen = {"address": net.host_address if isolation == "netns" else "127.0.0.1",
                     "port": free_port(), "out": str(root / "loadgen.jsonl")}
    state.save()
    POINTER.parent.mkdir(parents=True, exist_ok=True)
    POINTER.write_text(json.dumps({"dir": str(root)}))
    try:
        _start(state, net, progress)
    except BaseException:
        progress("lab up failed: stopping what it started")
        down(root, quiet=True)
        raise
    state.up = True
    state.save()
    return state


def _clean(root: Path, dcs: tuple[str, ...]) -> None:
    old = [root / "loadgen.jsonl", root / "topology.yaml", root / "supervisor.password"]
    for path in old:
        path.unlink(missing_ok=True)
    with contextlib.suppress(LabError, ValueError):
        old = load_state(root)
        dcs = (*dcs, *(d.name for d in old.dcs))
        for d in old.dcs:
            if d.db_dir:
                shutil.rmtree(d.db_dir, ignore_errors=True)
    for name in dict.fromkeys(dcs):
        shutil.rmtree(root / name, ignore_errors=True)


def _services() -> list[LabService]:
    base = 20000
    out = []
    for i, svc in enumerate(SERVICES):
        out.append(svc.model_copy(update={"base_port": base + i * 200}))
    return out


def instance_ports(svc: LabService) -> list[int]:
    """Every port an instance of ``svc`` may listen on: deployed ones, then extras."""
    return ([svc.base_port + i for i in range(MAX_INSTANCES)]
            + [svc.base_port + EXTRA_OFFSET + k for k in range(SPARE)])


def _marked(state: LabState, dc: str | None, wrap: Callable[[list[str]], list[str]] | None
            ) -> Callable[[list[str]], list[str]]:
    """``env REVIVE_LAB_ID=.. [REVIVE_LAB_DC=..] [ip netns exec ..] argv``: ``env`` and ``ip``
    exec, so the pid is the program's, and the mark finds it for a fire or ``down``."""
    marks = [f"REVIVE_LAB_ID={state.lab_id}"] + ([f"REVIVE_LAB_DC={dc}"] if dc else [])

    def apply(argv: list[str]) -> list[str]:
        inner = wrap(argv) if wrap else argv
        return ["env", *marks, *inner]

    return apply


def _start(state: LabState, net: Any, progress: Callable[[str], None]) -> None:
    root = Path(state.dir)
    password = secrets.token_urlsafe(16)
    password_file = root / "supervisor.password"
    password_file.write_text(password)
    password_file.chmod(0o600)
    topology_path = root / "topology.yaml"
    topology_path.write_text(render_topology(state, password_file))
    state.topology = str(topology_path)
    state.save()

    def record(dc: DcLab | None, name: str, daemon: Daemon) -> None:
        if daemon.pid is not None:
            (dc.pids if dc else state.pids)[name] = daemon.pid
            state.save()

    for dc in state.dcs:
        wrap = net.wrap(dc.name) if state.isolation == "netns" else None
        mark = _marked(state, dc.name, wrap)
        here = root / dc.name
        progress(f"{dc.name}: database")
        db_dir = db.postgres_dir(prefix=f"revive-lab-{state.lab_id}-")
        dc.db_dir = str(db_dir)
        state.save()
        db.init_cluster(db_dir)
        record(dc, "database", db.start_database(db_dir, host=dc.address, port=dc.ports["db"],
                                                 name=f"db-{dc.name}", wrap=wrap))
        admin = db.dsn(dc.address, dc.ports["db"])
        db.create_database(admin, "lab")
        db.seed(db.dsn(dc.address, dc.ports["db"], "lab"), rows=DEMO["cache_keys"])
        record(dc, "db_exporter", db.start_exporter(
            here, dsn=db.dsn(dc.address, dc.ports["db"], "lab"), dc=dc.name,
            capacity=DB_CAPACITY, host=dc.address, port=dc.ports["db_exporter"],
            name=f"db-exporter-{dc.name}", wrap=mark))
        progress(f"{dc.name}: registry, zookeeper")
        record(dc, "registry", start_registry(here / "registry", port=dc.ports["registry"],
                                              host=dc.address, wrap=mark))
        record(dc, "zookeeper", start_zookeeper(here / "zookeeper", port=dc.ports["zookeeper"],
                                                host=dc.address, wrap=mark))
        progress(f"{dc.name}: supervisord")
        (here / "artifacts").mkdir(parents=True, exist_ok=True)
        record(dc, "supervisord", start_supervisord(
            here / "supervisor", port=dc.ports["supervisord"], username="revive",
            password=password, host=dc.address, wrap=mark,
            env={"REVIVE_LAB_HOST": dc.address,
                 "REVIVE_LAB_DSN": f"postgresql://postgres@{dc.address}:{dc.ports['db']}/lab"
                                   "?connect_timeout=2"}))
        progress(f"{dc.name}: haproxy (GSLB replica and local load balancer)")
        record(dc, "haproxy", start_lab_haproxy(state, dc, here / "haproxy", mark))
    progress("artifacts: pushed to every DC's registry")
    asyncio.run(_push_artifacts(state))
    progress("demo services: deployed through the supervisord adapter")
    asyncio.run(_deploy_services(state))
    targets = [f"{d.address}:{p}" for d in state.dcs
               for p in [d.ports["db_exporter"],
                         *(port for s in state.services for port in instance_ports(s))]]
    for dc in state.dcs:
        wrap = net.wrap(dc.name) if state.isolation == "netns" else None
        progress(f"{dc.name}: prometheus")
        record(dc, "prometheus", start_prometheus(
            root / dc.name / "prometheus", port=dc.ports["prometheus"], scrape_targets=targets,
            scrape_interval_s=1.0, host=dc.address, wrap=_marked(state, dc.name, wrap)))
    progress("users: the load generator")
    gen = state.loadgen
    record(None, "loadgen", start_loadgen(
        root, targets={s.traffic_class: [f"http://{d.address}:{d.gslb_ports[s.traffic_class]}/"
                                         for d in state.dcs] for s in state.services},
        rates={s.traffic_class: s.rate for s in state.services}, host=gen["address"],
        port=gen["port"], out=Path(gen["out"]), wrap=_marked(state, None, None)))
    progress("waiting until every class is served")
    wait_served(state)


def render_topology(state: LabState, password_file: Path) -> str:
    """``runbooks/lab.yaml`` with this lab's addresses, ports and directories."""
    root = Path(state.dir)
    first = state.dcs[0].name

    def replicas(pattern: str) -> dict[str, str]:
        return {d.name: pattern.format(address=d.address, **d.ports) for d in state.dcs}

    services = []
    programs = {}
    health = {}
    for svc in state.services:
        instances = {d.name: (1 if (d.name == first or not svc.first_dc_only) else 0)
                     for d in state.dcs}
        services.append({**svc.model_dump(), "instances": instances})
        programs[svc.name] = {
            "command": " ".join([
                sys.executable, "-m", "revive.lab.demo", "--service", svc.name,
                "--traffic-class", svc.traffic_class, "--dc", "%(ENV_REVIVE_LAB_DC)s",
                "--host", "%(ENV_REVIVE_LAB_HOST)s", "--port", "{port}",
                "--db-dsn", "%(ENV_REVIVE_LAB_DSN)s",
                *[f"--{k.replace('_', '-')}={v}" for k, v in DEMO.items()],
            ]),
            "base_port": svc.base_port, "extra_offset": EXTRA_OFFSET, "startsecs": 1,
            "stopwaitsecs": 3,
        }
        health[svc.name] = {"urls": {d.name: [f"http://{d.address}:{p}/healthz"
                                              for p in instance_ports(svc)]
                                     for d in state.dcs}}
    template = environment().from_string(TEMPLATE.read_text())
    return template.render(
        lab_dir=str(root), dcs=[d.model_dump() for d in state.dcs], replicas=replicas,
        backends={s.traffic_class: f"gslb_{s.traffic_class}" for s in state.services},
        servers={d.name: d.name for d in state.dcs}, password_file=str(password_file),
        conf_dirs={d.name: str(conf_dir(root / d.name / "supervisor")) for d in state.dcs},
        artifacts_dirs={d.name: str(root / d.name / "artifacts") for d in state.dcs},
        programs=programs, vantage={d.name: "direct" for d in state.dcs},
        health_urls=health, one_each={d.name: 1 for d in state.dcs}, services=services,
    )


def start_lab_haproxy(state: LabState, dc: DcLab, dir: Path,
                      wrap: Callable[[list[str]], list[str]]) -> Daemon:
    """The DC's HAProxy (``runbooks/templates/lab/haproxy.cfg.j2``), ready on its admin port."""
    from revive.lab.daemon import program

    dir.mkdir(parents=True, exist_ok=True)
    first = state.dcs[0].name
    classes = []
    for svc in state.services:
        runs = {d.name: (d.name == first or not svc.first_dc_only) for d in state.dcs}
        classes.append({
            "name": svc.traffic_class, "key": svc.traffic_class,
            "gslb_port": dc.gslb_ports[svc.traffic_class],
            "local_ports": {d.name: d.local_ports[svc.traffic_class] for d in state.dcs},
            "weights": {n: (100 if runs[n] else 0) for n in runs},
            "instance_ports": instance_ports(svc),
        })
    config = dir / "haproxy.cfg"
    config.write_text(environment().get_template("lab/haproxy.cfg.j2").render(
        dc=dc.name, address=dc.address, admin_port=dc.ports["haproxy_admin"], classes=classes,
        dcs=[{"name": d.name, "address": d.address} for d in state.dcs]))
    daemon = Daemon(f"haproxy-{dc.name}", wrap([program("haproxy"), "-f", str(config), "-db"]),
                    log=dir / "haproxy.log", cwd=dir).start()
    try:
        daemon.wait_ready(lambda: port_open(dc.ports["haproxy_admin"], dc.address),
                          timeout_s=30, what="answering on its admin socket")
    except BaseException:
        daemon.stop()
        raise
    return daemon


async def _push_artifacts(state: LabState) -> None:
    from revive.ops.adapters.oci import make_tarball, push_artifact

    for dc in state.dcs:
        async with httpx.AsyncClient(base_url=f"http://{dc.address}:{dc.ports['registry']}",
                                     timeout=30) as client:
            for svc in state.services:
                manifest = json.dumps({"service": svc.name, "version": VERSION}).encode()
                await push_artifact(client, svc.name, VERSION,
                                    make_tarball({"service.json": manifest}))


async def _deploy_services(state: LabState) -> None:
    """Each DC's initial instances, deployed the way an emergency deploy would be."""
    from revive.ops.toolbox import build_tools
    from revive.topology import load

    topology = load(state.topology)
    tools = build_tools(topology, sim_url=None, run_dc=None, names=["deploy"])
    deploy: Any = tools["deploy"]
    try:
        refs = []
        for svc in topology.services:
            if svc.name == "lab-db":
                continue
            for dc, count in svc.instances.items():
                if count:
                    refs.append(await deploy.deploy(svc.name, dc, count, VERSION,
                                                    request_id=f"lab-up:{svc.name}@{dc}"))
        deadline = time.monotonic() + 60
        pending = list(refs)
        while pending:
            statuses = [await deploy.action_status(r) for r in pending]
            failed = [s for s in statuses if s.state == "failed"]
            if failed:
                raise LabError(f"demo service did not start: {failed[0].ref.target}: "
                               f"{failed[0].error}")
            pending = [s.ref for s in statuses if not s.finished]
            if pending and time.monotonic() > deadline:
                raise LabError(f"demo services not running after 60 s: "
                               f"{', '.join(r.target for r in pending)}")
            await asyncio.sleep(0.5)
    finally:
        await deploy.aclose()


def read_lines(state: LabState) -> list[dict[str, Any]]:
    """The load generator's per-class, per-second lines so far."""
    path = Path(state.loadgen.get("out", ""))
    if not path.exists():
        return []
    lines = []
    for raw in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(raw))
    return lines


def wait_served(state: LabState, *, timeout_s: float = 90.0, ratio: float = 0.95,
                seconds: int = 3) -> None:
    """Until every class's users succeed (``ratio``) for ``seconds`` seconds in a row."""
    from revive.lab.loadgen import success_ratio

    deadline = time.monotonic() + timeout_s
    classes = [s.traffic_class for s in state.services]
    last: dict[str, float | None] = {}
    while time.monotonic() < deadline:
        lines = read_lines(state)
        now = max((line["t"] for line in lines), default=0)
        last = {c: success_ratio(lines, c, since=now - seconds + 1, until=now + 1)
                for c in classes}
        if lines and all(v is not None and v >= ratio for v in last.values()):
            return
        time.sleep(0.5)
    raise LabError(f"users are not served after {timeout_s:.0f} s: "
                   + ", ".join(f"{c} {v if v is None else f'{v:.0%}'}" for c, v in last.items()))


# --- fire, partition -----------------------------------------------------------------------


def _marked_pids(lab_id: str, dc: str | None = None) -> list[int]:
    """Processes carrying the lab's mark (and ``dc``'s, if given) in their environment."""
    found = []
    want = {f"REVIVE_LAB_ID={lab_id}".encode()}
    if dc is not None:
        want.add(f"REVIVE_LAB_DC={dc}".encode())
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            env = set((proc / "environ").read_bytes().split(b"\0"))
            if want <= env:
                found.append(int(proc.name))
    return found


def fire(state: LabState, dc: str) -> None:
    """The DC burns: every process of it killed at once, no clean shutdown."""
    target = state.dc(dc)
    for pid in target.pids.values():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    for pid in _marked_pids(state.lab_id, dc):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    state.fired = sorted({*state.fired, dc})
    state.save()


def partition(state: LabState, dc: str) -> None:
    """The DC is cut off: its processes live on, nobody reaches them."""
    if state.isolation != "netns":
        raise LabError(f"a partition needs network namespaces, and this lab runs on loopback "
                       f"addresses ({state.isolation_note or 'namespaces unavailable'})")
    network_from_state(state.network).partition(dc)


# --- status, down --------------------------------------------------------------------------


def status(dir: Path | str | None = None) -> dict[str, Any]:
    """Each DC's components: running, answering; the users' success per class."""
    from revive.lab.loadgen import success_ratio

    state = load_state(dir)
    dcs = []
    for dc in state.dcs:
        parts = {}
        for name, pid in dc.pids.items():
            port = {"database": "db", "haproxy": "haproxy_admin"}.get(name, name)
            parts[name] = {"pid": pid, "running": pid_alive(pid),
                           "answering": port_open(dc.ports[port], dc.address)
                           if port in dc.ports else None}
        dcs.append({"name": dc.name, "address": dc.address, "components": parts,
                    "fired": dc.name in state.fired})
    lines = read_lines(state)
    now = max((line["t"] for line in lines), default=0)
    users = {s.traffic_class: success_ratio(lines, s.traffic_class, since=now - 4, until=now + 1)
             for s in state.services}
    gen = state.pids.get("loadgen")
    return {"dir": state.dir, "up": state.up, "isolation": state.isolation,
            "isolation_note": state.isolation_note, "topology": state.topology, "dcs": dcs,
            "loadgen": {"pid": gen, "running": bool(gen and pid_alive(gen))},
            "users_success": users}


def down(dir: Path | str | None = None, *, quiet: bool = False) -> list[int]:
    """Stop everything the lab started (also after a crashed ``up``); the pids that were
    still running."""
    root = lab_dir(dir)
    try:
        state = load_state(root)
    except (LabError, ValueError):
        return []
    stopped = []
    for pid in _all_pids(state):
        if pid_alive(pid):
            stopped.append(pid)
            stop_group(pid, timeout_s=5)
    for pid in _marked_pids(state.lab_id):
        if pid_alive(pid):
            stopped.append(pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    if state.network:
        with contextlib.suppress(Exception):
            network_from_state(state.network).destroy()
    for dc in state.dcs:  # the clusters live outside the lab directory: nothing left behind
        if dc.db_dir:
            shutil.rmtree(dc.db_dir, ignore_errors=True)
    state.up = False
    state.save()
    if POINTER.exists():
        with contextlib.suppress(ValueError, KeyError, OSError):
            if json.loads(POINTER.read_text())["dir"] == str(root):
                POINTER.unlink()
    if not quiet:
        log.info("lab in %s stopped (%d processes)", root, len(stopped))
    return stopped


def _all_pids(state: LabState) -> Iterator[int]:
    yield from state.pids.values()
    for dc in state.dcs:
        yield from dc.pids.values()


def lab_topology(state: LabState) -> dict[str, Any]:
    return yaml.safe_load(Path(state.topology).read_text())
