"""Settings for every test (no HTTP proxy, garbage collected after each module), and what the
flow tests and reliability campaigns share: one Prefect server per session, a store per
test, simulators over HTTP.

Unclosed sockets and files are reported when the garbage collector finds them, which can be
in any later test, even in the middle of a hypothesis run, where the warning (an error
here) makes an innocent test fail or look flaky. Collecting at the end of each test module
reports a leak in the module that caused it (after every test would cost minutes).
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from revive.drill.server import SimServer, free_port
from revive.sim import SimConfig, Simulator
from revive.topology import Topology
from tests.postgres import throwaway_database

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """slack_sdk sends every request through $HTTPS_PROXY, even to 127.0.0.1, and every
    server a test talks to is local."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _reports_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Drills write their reports under the test's own directory, never the checkout's."""
    monkeypatch.setenv("REVIVE_REPORTS_DIR", str(tmp_path / "drills"))


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_after_each_module() -> Iterator[None]:
    yield
    gc.collect()


os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """``prefect_test_harness``, but its temporary server keeps its records in PostgreSQL:
    on SQLite it answered 503 ("database is locked") to flow-run writes on a loaded 2-core
    machine, failing runs at random. One server for the session, stopped at its end."""
    import prefect.context
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.server.database.dependencies import temporary_database_interface
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def drain() -> None:  # before the server stops: no stale log or event calls
        from prefect.events.worker import EventsWorker

        with contextlib.suppress(RuntimeError):  # never started
            result = APILogWorker.instance().drain()
            if inspect.isawaitable(result):
                await result
        result = EventsWorker.drain_all()
        if inspect.isawaitable(result):
            await result

    with contextlib.ExitStack() as stack:
        url = stack.enter_context(throwaway_database("revive_prefect", "the flow tests"))
        database = url.set(drivername="postgresql+asyncpg").render_as_string(
            hide_password=False)
        stack.enter_context(temporary_database_interface())
        stack.enter_context(temporary_settings({PREFECT_SERVER_DATABASE_CONNECTION_URL: database}))
        server = SubprocessASGIServer(port=free_port())
        prior = SubprocessASGIServer._instances.get(None)
        SubprocessASGIServer._instances[None] = server  # where flows look for this process's
        try:
            server.start(timeout=120)  # 30 s is tight on 2 busy cores
            stack.enter_context(temporary_settings({PREFECT_API_URL: server.api_url}))
            stack.enter_context(prefect.context._temporary_global_settings_context(
                prefect.context.get_settings_context()))
            yield
            run_coro_as_sync(drain())
        finally:
            server.stop()
            if prior is not None:
                SubprocessASGIServer._instances[None] = prior
            else:
                SubprocessASGIServer._instances.pop(None, None)


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


RUNS_FLOWS = ("tests/flows/", "tests/reliability/", "tests/runs/")


def _runs_flows(node: pytest.Item) -> bool:
    return any(d in str(node.fspath).replace("\\", "/") for d in RUNS_FLOWS)


@pytest.fixture(autouse=True)
def _collect_prefect_sockets(request: pytest.FixtureRequest) -> Iterator[None]:
    """Collect that socket after each test that runs flows, where its warning is ignored."""
    yield
    if _runs_flows(request.node):
        gc.collect()


#: Test directories whose files must not run at the same time as each other under xdist: the
#: lab's tests pick free subnets and network namespaces on the host, check-then-act.
SERIAL_DIRECTORIES = ("tests/lab/",)


def _xdist_group(item: pytest.Item) -> str:
    """The xdist group of a test (``make test`` runs ``-n 2 --dist loadgroup``): its file, so
    module-scoped servers start once and a file's tests keep their order, or its directory
    for SERIAL_DIRECTORIES."""
    path = str(item.fspath).replace("\\", "/")
    for directory in SERIAL_DIRECTORIES:
        if directory in path:
            return directory
    return item.nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _runs_flows(item):
            item.add_marker(PREFECT_SOCKET)
        item.add_marker(pytest.mark.xdist_group(_xdist_group(item)))
