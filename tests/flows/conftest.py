"""One Prefect test harness for every flow test, and simulators served over HTTP."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from revive.drill.server import SimServer
from revive.sim import SimConfig, Simulator
from revive.topology import Topology

os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):  # 30 s is tight on 2 busy cores
        yield


@pytest.fixture
def store_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each flow test gets its own revive store."""
    url = f"sqlite:///{tmp_path / 'revive.db'}"
    monkeypatch.setenv("REVIVE_DATABASE_URL", url)
    return url


@pytest.fixture
def serve():
    """``serve(topology, seed=..., config=...)`` -> (Simulator, url), stopped after the test."""
    servers: list[SimServer] = []

    def start(topology: Topology, *, seed: int = 1, config: SimConfig | None = None):
        sim = Simulator(topology, seed=seed, config=config)
        sim.advance(5)
        server = SimServer(sim).__enter__()
        servers.append(server)
        return sim, server.url

    yield start
    for server in servers:
        server.__exit__(None, None, None)


# Prefect 3.9 leaves one API-client socket to its own test server open per async flow run
# (seen with a bare ``@flow async def f(): pass`` under prefect_test_harness). Only that
# warning is ignored, and only in flow tests: revive's own clients are checked with
# warnings as errors in tests/ops and tests/sim.
PREFECT_SOCKET = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning"
)


@pytest.fixture(autouse=True)
def _collect_prefect_sockets() -> Iterator[None]:
    """Collect that socket after each flow test, where its warning is ignored."""
    yield
    gc.collect()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/flows/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(PREFECT_SOCKET)
