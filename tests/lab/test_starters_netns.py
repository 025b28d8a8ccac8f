"""The lab's program starters inside a DC's network namespace, bound to the DC's address.

A registry, a Prometheus, a ZooKeeper node and a supervisord (whose program learns its DC
from supervisord's environment) are started in dc1's namespace through ``wrap``, each on
dc1's own address; each answers from the root namespace at that address, as revive and the
load generator will reach them. Stopped, nothing of them is left in the namespace, and the
network is removed. Every wait is on a state with a generous deadline, never a duration.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from revive.lab import netns
from revive.lab.daemon import Daemon, pid_alive
from revive.lab.netns import Network
from revive.lab.prometheus import prometheus_url, start_prometheus
from revive.lab.registry import registry_url, start_registry
from revive.lab.supervisor import rpc, start_supervisord, write_program
from revive.lab.zookeeper import SLF4J_SIMPLE_JAR, ZOOKEEPER_JAR, four_letter, start_zookeeper
from tests.ops.programs import require

DC = "dc1"
USER, PASSWORD = "revive", "lab-pw"
# Every namespace has its own ports: the programs' usual ones, as each DC of the lab uses.
PORTS = {"registry": 5000, "prometheus": 9090, "zookeeper": 2181, "supervisord": 9001}
DEADLINE_S = 30.0  # far beyond what any state change takes here; never a timing assertion


def need_programs() -> None:
    """Skip where a program or namespaces are missing, except in CI, where that fails."""
    require("ip", "iproute2")
    require("docker-registry", "docker-registry")
    require("prometheus", "prometheus")
    require("supervisord", "supervisor")
    require("java", "default-jre-headless")
    require(ZOOKEEPER_JAR.name, "zookeeper", paths=(str(ZOOKEEPER_JAR),))
    require(SLF4J_SIMPLE_JAR.name, "libslf4j-java", paths=(str(SLF4J_SIMPLE_JAR),))
    ok, why = netns.available()
    if not ok:
        if os.environ.get("REVIVE_REQUIRE_TOOLS") == "1":
            pytest.fail(f"network namespaces are unavailable: {why}", pytrace=False)
        pytest.skip(f"network namespaces are unavailable: {why}")


def until(check: Callable[[], Any], what: str, deadline_s: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            value = check()
        except Exception:  # not there yet
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} after {deadline_s:.0f} s")
        time.sleep(0.1)


def pids_in(net: Network, dc: str) -> list[int]:
    """The processes running in ``dc``'s namespace now."""
    out = subprocess.run(["ip", "netns", "pids", net.namespace(dc)], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    return [int(pid) for pid in out.split()]


@pytest.fixture
def network() -> Iterator[Network]:
    need_programs()
    net = Network.create(f"starters-{uuid.uuid4().hex[:8]}", [DC, "dc2"])
    try:
        yield net
    finally:
        net.destroy()


def test_each_starter_runs_in_the_dc_namespace_and_answers_at_its_address(
        network: Network, tmp_path: Path) -> None:
    host, wrap = network.address(DC), network.wrap(DC)
    seen = tmp_path / "dc.txt"
    write_program(tmp_path / "supervisord", "where",
                  f"sh -c 'echo %(ENV_LAB_DC)s > {seen} && exec sleep 600'", startsecs=0)
    starters: dict[str, Callable[[], Daemon]] = {
        "registry": lambda: start_registry(tmp_path / "registry", port=PORTS["registry"],
                                           host=host, wrap=wrap),
        "prometheus": lambda: start_prometheus(
            tmp_path / "prometheus", port=PORTS["prometheus"], host=host, wrap=wrap,
            scrape_targets=[f"{host}:{PORTS['prometheus']}"]),
        "zookeeper": lambda: start_zookeeper(tmp_path / "zookeeper", port=PORTS["zookeeper"],
                                             host=host, wrap=wrap),
        "supervisord": lambda: start_supervisord(
            tmp_path / "supervisord", port=PORTS["supervisord"], username=USER,
            password=PASSWORD, host=host, wrap=wrap, env={"LAB_DC": DC}),
    }
    daemons: list[Daemon] = []
    try:
        with ThreadPoolExecutor(max_workers=len(starters)) as pool:  # together: java is slow
            futures = {what: pool.submit(start) for what, start in starters.items()}
        daemons += [f.result() for f in futures.values() if f.exception() is None]
        for what, future in futures.items():
            if (error := future.exception()) is not None:
                raise AssertionError(f"{what} did not start in {DC}'s namespace") from error

        inside = set(pids_in(network, DC))
        assert {d.pid for d in daemons} <= inside  # ip execs: the Daemon's pid is the program
        assert not pids_in(network, "dc2")

        # Each answers from the root namespace, at dc1's own address.
        assert httpx.get(f"{registry_url(PORTS['registry'], host)}/v2/",
                         timeout=10, trust_env=False).status_code == 200
        assert httpx.get(f"{prometheus_url(PORTS['prometheus'], host)}/-/ready",
                         timeout=10, trust_env=False).status_code == 200
        assert four_letter(PORTS["zookeeper"], "ruok", host=host, timeout_s=10) == "imok"
        state = rpc(PORTS["supervisord"], USER, PASSWORD, "supervisor.getState", host=host)
        assert state["statename"] == "RUNNING"

        # supervisord's program runs in the namespace and got the DC from its environment.
        def where_running() -> dict[str, Any] | None:
            info = rpc(PORTS["supervisord"], USER, PASSWORD, "supervisor.getProcessInfo",
                       "where", host=host)
            written = seen.exists() and seen.read_text().strip()
            return info if info["statename"] == "RUNNING" and written else None

        child = until(where_running, "supervisord's program RUNNING")["pid"]
        assert seen.read_text().strip() == DC
        assert child in pids_in(network, DC)
    finally:
        with ThreadPoolExecutor(max_workers=len(daemons) or 1) as pool:
            list(pool.map(Daemon.stop, daemons))

    # Nothing left: neither the programs nor supervisord's child, in the namespace or out.
    assert not [d.name for d in daemons if d.alive()]
    assert not pid_alive(child)
    until(lambda: not pids_in(network, DC), f"{DC}'s namespace empty")
