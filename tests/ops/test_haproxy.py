"""The ``haproxy`` traffic adapter against real HAProxy 2.6 replicas (one per DC).

dc1's replica is reached over its unix admin socket, dc2's over a TCP admin port, so both
transports run in every test. Backend servers need not run for weights to be set; the one
traffic test starts two tiny HTTP servers and counts which DC answers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from revive.errors import (
    InputError,
    NotFoundError,
    PermanentOpsError,
    TopologyError,
    TransientOpsError,
)
from revive.lab.daemon import free_port
from revive.lab.haproxy import HAProxyInstance, start_haproxy
from revive.ops import plugins
from revive.ops.adapters.haproxy import ADAPTER, HAProxyTraffic
from revive.ops.interfaces import Traffic
from revive.ops.plugins import ToolContext, settings_of
from revive.ops.replicas import EndpointError
from revive.topology import ToolKind, Topology, loads
from tests import factories
from tests.ops.programs import require

T = TypeVar("T")
DCS = ("dc1", "dc2")
CLASSES = ("web", "api")
SAFETY_NET_S = 60.0  # turns a hang into a failure; no test asserts how long anything takes


def run(main: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main, SAFETY_NET_S)

    return asyncio.run(bounded())


def topology_text(replicas: dict[str, str], settings: dict[str, Any]) -> str:
    """An estate with classes web and api, and the GSLB tool ``gslb`` on HAProxy."""
    gslb = {"kind": "traffic", "adapter": "haproxy", "replicas": replicas, "settings": settings}
    data = factories.estate(
        factories.service("web-app", traffic_class="web"),
        factories.service("api-app", traffic_class="api"),
        ops_tools=factories.tools(gslb=gslb),
    )
    return yaml.safe_dump(data, sort_keys=False)


def adapter_for(replicas: dict[str, str], settings: dict[str, Any], *, run_dc: str = "dc1",
                timeout_s: float = 5.0) -> HAProxyTraffic:
    """The adapter exactly as the toolbox builds it: topology -> settings -> factory."""
    topology: Topology = loads(topology_text(replicas, settings))
    tool = topology.ops_tools["gslb"]
    ctx = ToolContext("gslb", tool, settings_of("gslb", tool), run_dc, timeout_s,
                      topology=topology)
    make = plugins.adapter("haproxy").factory(ToolKind.traffic)
    assert make is not None
    built = make(ctx)
    assert isinstance(built, HAProxyTraffic)
    return built


def start_replicas(base: Path, backends: dict[str, dict[str, str]],
                   frontends: dict[str, int] | None = None) -> dict[str, HAProxyInstance]:
    """dc1's HAProxy on a unix socket, dc2's on a TCP admin port; stopped by the caller."""
    started: dict[str, HAProxyInstance] = {}
    try:
        started["dc1"] = start_haproxy(base / "dc1", name="gslb-dc1", frontends=frontends or {},
                                       backends=backends, admin_socket=base / "dc1.sock")
        started["dc2"] = start_haproxy(base / "dc2", name="gslb-dc2", frontends={},
                                       backends=backends, admin_port=free_port())
    except BaseException:
        for instance in started.values():
            instance.stop()
        raise
    return started


@pytest.fixture
def gslb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, HAProxyInstance]]:
    """Two HAProxy replicas, backends web and api, servers dc1 and dc2 (nothing behind)."""
    require("haproxy")
    backends = {c: {dc: f"127.0.0.1:{free_port()}" for dc in DCS} for c in CLASSES}
    started = start_replicas(tmp_path_factory.mktemp("hap"), backends)
    yield started
    for instance in started.values():
        instance.stop()


def urls(started: dict[str, HAProxyInstance]) -> dict[str, str]:
    return {dc: instance.replica_url for dc, instance in started.items()}


def settings_of_lab(started: dict[str, HAProxyInstance], **extra: Any) -> dict[str, Any]:
    return {**started["dc1"].adapter_settings(), **extra}


def server_weight(instance: HAProxyInstance, backend: str, server: str) -> int:
    return int(instance.command(f"get weight {backend}/{server}").split()[0])


@contextmanager
def silent_socket(path: Path) -> Iterator[str]:
    """A unix socket that takes connections into its backlog and never answers: a hung
    replica (the connect and the write succeed; the reply never comes)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(16)
        yield f"unix://{path}"
    finally:
        sock.close()
        path.unlink(missing_ok=True)


# --- discovery and settings -------------------------------------------------------------


def test_the_entry_point_resolves_to_the_adapter() -> None:
    assert plugins.adapter("haproxy") is ADAPTER
    assert ToolKind.traffic in ADAPTER.kinds


@pytest.mark.parametrize(("settings", "key"), [
    ({"servers": {"dc1": "dc1"}}, "ops_tools.gslb.settings.backends"),
    ({"backends": {"web": "be_web"}}, "ops_tools.gslb.settings.servers"),
    ({"backends": {"web": "be web;shutdown"}, "servers": {"dc1": "dc1"}},
     "ops_tools.gslb.settings.backends.web"),
    ({"backends": {"web": "be_web"}, "servers": {"dc1": "dc1"},
      "replicas": {"dc1": {"socket": "/run/h.sock", "address": "127.0.0.1:1"}}},
     "ops_tools.gslb.settings.replicas.dc1"),
    ({"backends": {"web": "be_web"}, "servers": {"dc1": "dc1"},
      "replicas": {"dc1": {"address": "localhost"}}}, "ops_tools.gslb.settings.replicas.dc1"),
    ({"backends": {"web": "be_web"}, "servers": {"dc1": "dc1"}, "timeout_s": 0},
     "ops_tools.gslb.settings.timeout_s"),
    ({"backends": {"web": "be_web"}, "servers": {"dc1": "dc1"}, "weight": 3},
     "ops_tools.gslb.settings.weight"),
])
def test_wrong_settings_are_located_in_the_topology(settings: dict[str, Any], key: str) -> None:
    with pytest.raises(TopologyError) as caught:
        loads(topology_text({"dc1": "unix:///run/haproxy.sock"}, settings))
    assert key in str(caught.value)


def test_a_replica_url_that_is_not_a_runtime_api_is_refused_before_any_connection() -> None:
    settings = {"backends": {"web": "be_web"}, "servers": {"dc1": "dc1"}}
    with pytest.raises(InputError, match=r"ops_tools\.gslb\.replicas\.dc2: expected unix://"):
        adapter_for({"dc1": "unix:///run/h.sock", "dc2": "https://gslb.dc2.example"}, settings)


def test_settings_replicas_override_the_tool_replica_urls() -> None:
    settings = {"backends": {"web": "be_web"}, "servers": {"dc1": "dc1"},
                "replicas": {"dc2": {"address": "127.0.0.1:9999"}}}
    traffic = adapter_for({"dc1": "unix:///run/h.sock", "dc2": "https://gslb.dc2.example"},
                          settings)
    assert {dc: str(t) for dc, t in traffic.targets.items()} == {
        "dc1": "unix:///run/h.sock", "dc2": "tcp://127.0.0.1:9999"}


# --- normal operation -------------------------------------------------------------------


def test_class_weights_round_trip_on_both_replicas(gslb: dict[str, HAProxyInstance]) -> None:
    async def main() -> None:
        traffic = adapter_for(urls(gslb), settings_of_lab(gslb), run_dc="dc1")
        from_dc2 = adapter_for(urls(gslb), settings_of_lab(gslb), run_dc="dc2")
        assert isinstance(traffic, Traffic)
        assert await traffic.probe() == {"dc1": True, "dc2": True}

        await traffic.set_class_weights("web", {"dc1": 0.25, "dc2": 0.75})
        await traffic.set_class_weights("api", {"dc2": 1.0})  # dc1 missing: 0
        for instance in gslb.values():  # every replica took the absolute weights
            assert server_weight(instance, "be_web", "dc1") == 85
            assert server_weight(instance, "be_web", "dc2") == 256
            assert server_weight(instance, "be_api", "dc1") == 0
        for reader in (traffic, from_dc2):
            weights = await reader.class_weights()
            assert weights["web"] == {"dc1": pytest.approx(0.25, abs=0.01),
                                      "dc2": pytest.approx(0.75, abs=0.01)}
            assert weights["api"] == {"dc1": 0.0, "dc2": 1.0}
        assert from_dc2.replicas.current_dc == "dc2"
        assert await traffic.weights() == {"dc1": pytest.approx(0.125, abs=0.01),
                                           "dc2": pytest.approx(0.875, abs=0.01)}

        await traffic.set_weights({"dc1": 1, "dc2": 1})
        assert await traffic.class_weights() == {c: {"dc1": 0.5, "dc2": 0.5} for c in CLASSES}
        assert await from_dc2.weights() == {"dc1": 0.5, "dc2": 0.5}
        assert traffic.last_missed == {}
        await traffic.aclose()
        await from_dc2.aclose()

    run(main())


def test_weights_read_zero_when_every_server_of_a_class_is_at_zero(
    gslb: dict[str, HAProxyInstance],
) -> None:
    for instance in gslb.values():
        for dc in DCS:
            assert instance.command(f"set weight be_api/{dc} 0").strip() == ""

    async def main() -> None:
        traffic = adapter_for(urls(gslb), settings_of_lab(gslb))
        weights = await traffic.class_weights()
        assert weights["api"] == {"dc1": 0.0, "dc2": 0.0}
        assert weights["web"] == {"dc1": 0.5, "dc2": 0.5}

    run(main())


def test_bad_requests_are_refused_before_anything_is_sent(
    gslb: dict[str, HAProxyInstance],
) -> None:
    async def main() -> None:
        traffic = adapter_for(urls(gslb), settings_of_lab(gslb))
        with pytest.raises(NotFoundError, match="unknown traffic class 'mail'"):
            await traffic.set_class_weights("mail", {"dc1": 1})
        with pytest.raises(NotFoundError, match="no HAProxy server for DC dc9"):
            await traffic.set_class_weights("web", {"dc9": 1})
        with pytest.raises(PermanentOpsError, match="sum to more than 0"):
            await traffic.set_class_weights("web", {"dc1": 0, "dc2": 0})
        with pytest.raises(PermanentOpsError, match="non-negative"):
            await traffic.set_weights({"dc1": -1, "dc2": 1})
        assert await traffic.class_weights() == {c: {"dc1": 0.5, "dc2": 0.5} for c in CLASSES}

    run(main())


def test_a_refusal_from_haproxy_is_a_permanent_error(gslb: dict[str, HAProxyInstance]) -> None:
    async def main() -> None:
        wrong = settings_of_lab(gslb, servers={"dc1": "dc1", "dc2": "nosuch"})
        traffic = adapter_for(urls(gslb), wrong)
        with pytest.raises(PermanentOpsError, match="No such server") as caught:
            await traffic.set_class_weights("web", {"dc1": 1, "dc2": 1})
        assert "set weight be_web/nosuch" in str(caught.value)
        with pytest.raises(PermanentOpsError, match="No such server"):
            await traffic.class_weights()
        # A refusal is an answer: it neither opens a breaker nor looks transient.
        assert not isinstance(caught.value, TransientOpsError)
        assert traffic.replicas.breaker_state("dc1") == "closed"

    run(main())


# --- faults -----------------------------------------------------------------------------


def test_a_killed_replica_is_missed_by_writes_and_skipped_by_reads(
    gslb: dict[str, HAProxyInstance], caplog: pytest.LogCaptureFixture,
) -> None:
    gslb["dc1"].stop()

    async def main() -> None:
        traffic = adapter_for(urls(gslb), settings_of_lab(gslb), run_dc="dc1")
        with caplog.at_level(logging.WARNING, logger="revive.ops"):
            await traffic.set_class_weights("web", {"dc1": 0.0, "dc2": 1.0})
        assert set(traffic.last_missed) == {"dc1"}
        assert any("reached dc2 but not dc1" in r.getMessage() for r in caplog.records)
        assert server_weight(gslb["dc2"], "be_web", "dc1") == 0
        weights = await traffic.class_weights()  # dc1 preferred, answered by dc2
        assert weights["web"] == {"dc1": 0.0, "dc2": 1.0}
        assert traffic.replicas.current_dc == "dc2"
        assert await traffic.probe() == {"dc1": False, "dc2": True}

    run(main())


def test_a_replica_whose_socket_does_not_exist(
    gslb: dict[str, HAProxyInstance], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    missing = tmp_path_factory.mktemp("nosock") / "nothing-here.sock"
    replicas = {"dc1": f"unix://{missing}", "dc2": gslb["dc2"].replica_url}

    async def main() -> None:
        traffic = adapter_for(replicas, settings_of_lab(gslb), run_dc="dc1")
        await traffic.set_class_weights("api", {"dc1": 1, "dc2": 3})
        assert "FileNotFoundError" in traffic.last_missed["dc1"]
        weights = await traffic.class_weights()
        assert weights["api"] == {"dc1": pytest.approx(0.25, abs=0.01),
                                  "dc2": pytest.approx(0.75, abs=0.01)}
        assert await traffic.probe() == {"dc1": False, "dc2": True}

    run(main())


def test_a_replica_that_never_answers_times_out_and_fails_over(
    gslb: dict[str, HAProxyInstance], tmp_path_factory: pytest.TempPathFactory,
) -> None:
    path = tmp_path_factory.mktemp("silent") / "hung.sock"
    with silent_socket(path) as hung:
        replicas = {"dc1": hung, "dc2": gslb["dc2"].replica_url}
        settings = settings_of_lab(gslb, timeout_s=0.5)

        async def main() -> None:
            traffic = adapter_for(replicas, settings, run_dc="dc1")
            weights = await traffic.class_weights()
            assert weights["web"] == {"dc1": 0.5, "dc2": 0.5}
            assert traffic.replicas.current_dc == "dc2"
            await traffic.set_class_weights("web", {"dc1": 1})
            assert "no answer" in traffic.last_missed["dc1"]
            assert server_weight(gslb["dc2"], "be_web", "dc2") == 0
            assert await traffic.probe() == {"dc1": False, "dc2": True}

        run(main())


def test_every_replica_down_or_hung_is_a_transient_error(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    base = tmp_path_factory.mktemp("down")
    settings = {"backends": {"web": "be_web"}, "servers": {"dc1": "dc1", "dc2": "dc2"},
                "timeout_s": 0.3}
    with silent_socket(base / "hung.sock") as hung:
        replicas = {"dc1": f"unix://{base}/gone.sock", "dc2": hung}

        async def main() -> None:
            traffic = adapter_for(replicas, settings)
            with pytest.raises(TransientOpsError, match="every replica failed"):
                await traffic.class_weights()
            with pytest.raises(TransientOpsError, match="no replica took") as caught:
                await traffic.set_class_weights("web", {"dc1": 1})
            assert isinstance(caught.value, EndpointError)
            assert set(caught.value.errors) == {"dc1", "dc2"}
            assert await traffic.probe() == {"dc1": False, "dc2": False}

        run(main())


# --- the weights act on real traffic ----------------------------------------------------


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.server.dc.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a hundred requests per test."""


@contextmanager
def dc_servers() -> Iterator[dict[str, int]]:
    """One tiny HTTP server per DC answering its DC's name; DC -> port."""
    servers: dict[str, ThreadingHTTPServer] = {}
    threads: list[threading.Thread] = []
    try:
        for dc in DCS:
            server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Answer)
            server.daemon_threads = True
            server.dc = dc  # type: ignore[attr-defined]
            servers[dc] = server
            threads.append(threading.Thread(target=server.serve_forever, daemon=True))
            threads[-1].start()
        yield {dc: s.server_address[1] for dc, s in servers.items()}
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()
        for thread in threads:
            thread.join(timeout=10)


def answers(port: int, count: int) -> Counter[str]:
    """Which DC answered each of ``count`` requests, one connection each (503 if none)."""
    seen: Counter[str] = Counter()
    for _ in range(count):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
                seen[response.read().decode()] += 1
        except urllib.error.HTTPError as exc:
            seen[str(exc.code)] += 1
            exc.close()
    return seen


@pytest.fixture
def live_gslb(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, dict[str, HAProxyInstance]]]:
    """Both replicas with a frontend for class web in front of a live server per DC."""
    require("haproxy")
    front = free_port()
    with dc_servers() as ports:
        backends = {"web": {dc: f"127.0.0.1:{port}" for dc, port in ports.items()}}
        started = start_replicas(tmp_path_factory.mktemp("hap"), backends, {"web": front})
        yield front, started
        for instance in started.values():
            instance.stop()


def test_weights_move_real_requests(live_gslb: tuple[int, dict[str, HAProxyInstance]]) -> None:
    front, started = live_gslb
    traffic = adapter_for(urls(started), started["dc1"].adapter_settings())
    run(traffic.set_class_weights("web", {"dc1": 0.0, "dc2": 1.0}))
    assert answers(front, 100) == Counter({"dc2": 100})
    run(traffic.set_class_weights("web", {"dc1": 0.5, "dc2": 0.5}))
    split = answers(front, 100)
    assert split["dc1"] + split["dc2"] == 100
    assert split["dc1"] >= 30 and split["dc2"] >= 30
