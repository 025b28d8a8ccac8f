"""A DC's own PostgreSQL cluster: started as the postgres user, seeded, watched, killed.

One cluster serves the module (initdb takes seconds); a test that fires or stops it leaves
the ``running`` fixture to start it again on the same directory, as a DC coming back.
Utilisation is read through the real exporter while real ``pg_sleep`` queries run, polled
until it crosses a threshold: nothing here asserts a duration.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from revive.lab import database as db
from revive.lab import netns
from revive.lab.daemon import Daemon, free_port, pid_alive, port_open
from tests.ops.programs import require

HOST = "127.0.0.1"
DEADLINE_S = 30.0  # far beyond what any state change takes here; never a timing assertion


def until(check: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        with contextlib.suppress(OSError, psycopg.Error):
            if check():
                return
        if time.monotonic() > deadline:
            pytest.fail(f"not {what} after {deadline_s:.0f} s")
        time.sleep(0.1)


@dataclass
class Cluster:
    dir: Path
    port: int
    host: str = HOST
    daemon: Daemon | None = None
    extra: list[Daemon] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def admin(self) -> str:
        return db.dsn(self.host, self.port)

    def start(self, **kwargs: object) -> Daemon:
        self.daemon = db.start_database(self.dir, host=self.host, port=self.port,
                                        name="db-dc1", **kwargs)  # type: ignore[arg-type]
        return self.daemon

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    for name in ("initdb", "postgres"):
        require(name, "postgresql", paths=tuple(f"{d}/{name}" for d in db.PG_BIN_DIRS))
    path = db.postgres_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(base: Path) -> Iterator[Cluster]:
    assert db.init_cluster(base / "dc1") == (base / "dc1" / "data").resolve()
    c = Cluster(base / "dc1", free_port())
    try:
        yield c
    finally:
        c.stop()
        assert db.cluster_processes(c.data) == []


@pytest.fixture
def running(cluster: Cluster) -> Cluster:
    """The module's cluster, started again if a test before fired or stopped it."""
    if cluster.host != HOST or cluster.daemon is None or not cluster.daemon.alive():
        cluster.stop()
        cluster.host = HOST
        cluster.start()
    return cluster


@pytest.fixture
def exporter(running: Cluster, base: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    daemon = db.start_exporter(base / "exporter", dsn=running.admin, dc="dc1", capacity=4,
                               host=HOST, port=port)
    try:
        yield HOST, port
    finally:
        daemon.stop()
    assert daemon.pid is not None and not pid_alive(daemon.pid)


def metrics(address: tuple[str, int]) -> dict[str, float]:
    return db.parse_metrics(db.fetch_metrics(*address))


def need_netns() -> None:
    ok, why = netns.available()
    if not ok:
        if os.environ.get("REVIVE_REQUIRE_TOOLS") == "1":
            pytest.fail(f"network namespaces are unavailable: {why}", pytrace=False)
        pytest.skip(f"network namespaces are unavailable: {why}")


def test_the_cluster_runs_as_the_postgres_user_and_its_pid_is_the_postmaster(
        running: Cluster) -> None:
    daemon = running.daemon
    assert daemon is not None and daemon.pid is not None
    with psycopg.connect(running.admin) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert backend is not None
    cmdline = Path(f"/proc/{daemon.pid}/cmdline").read_bytes().split(b"\0")
    assert b"-D" in cmdline and str(running.data).encode() in cmdline
    if os.geteuid() == 0:  # initdb and postgres refuse root: setpriv made them postgres
        assert Path(f"/proc/{daemon.pid}").stat().st_uid != 0
    processes = db.cluster_processes(running.data)
    assert daemon.pid in processes and len(processes) > 1  # postmaster and its workers


def test_databases_are_created_once_and_seeded(running: Cluster) -> None:
    db.create_database(running.admin, "app")
    db.create_database(running.admin, "app")  # idempotent
    app = db.dsn(running.host, running.port, "app")
    assert db.seed(app) == 2000
    assert db.seed(app, rows=50) == 50  # refilled, not appended
    with psycopg.connect(app) as conn:
        row = conn.execute(f"SELECT name, stock FROM {db.SEED_TABLE} WHERE id = 7").fetchone()
    assert row == ("item-7", 7)


def test_init_again_keeps_the_data_and_the_cluster_restarts(running: Cluster) -> None:
    with psycopg.connect(running.admin, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS marker (n int)")
        conn.execute("INSERT INTO marker VALUES (1)")
    version = (running.data / "PG_VERSION").stat()
    assert db.init_cluster(running.dir) == running.data.resolve()
    assert (running.data / "PG_VERSION").stat().st_ino == version.st_ino
    running.stop()
    running.start()
    with psycopg.connect(running.admin) as conn:
        assert conn.execute("SELECT count(*) > 0 FROM marker").fetchone() == (True,)


def _sleep_query(dsn: str, errors: list[BaseException]) -> None:
    """One client running a long query until the test cancels it."""
    try:
        with (psycopg.connect(dsn, autocommit=True) as conn,
              contextlib.suppress(psycopg.errors.QueryCanceled)):
            conn.execute("SELECT pg_sleep(300)")
    except BaseException as exc:  # reported by the test, not lost in the thread
        errors.append(exc)


def test_the_exporter_reports_utilisation_while_queries_run(
        running: Cluster, exporter: tuple[str, int]) -> None:
    until(lambda: metrics(exporter).get("lab_db_up") == 1.0, "up")
    until(lambda: metrics(exporter).get("lab_db_utilisation") == 0.0, "idle")
    assert metrics(exporter)["lab_db_capacity"] == 4.0
    errors: list[BaseException] = []
    threads = []
    for _ in range(3):
        thread = threading.Thread(target=_sleep_query, args=(running.admin, errors))
        thread.start()
        threads.append(thread)
    try:
        until(lambda: metrics(exporter).get("lab_db_utilisation", 0) >= 0.75,
              "3 of 4 busy")
        assert metrics(exporter)["lab_db_active_queries"] >= 3
    finally:
        with psycopg.connect(running.admin, autocommit=True) as conn:
            def cancel() -> bool:
                conn.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity "
                             "WHERE query LIKE '%pg_sleep(300)%' AND pid <> pg_backend_pid()")
                return not any(thread.is_alive() for thread in threads)
            until(cancel, "the sleeping queries cancelled")
        for thread in threads:
            thread.join(timeout=DEADLINE_S)
    assert errors == []
    until(lambda: metrics(exporter).get("lab_db_utilisation") == 0.0, "idle again")


def test_fire_kills_every_process_and_the_dc_comes_back_with_its_data(
        running: Cluster, exporter: tuple[str, int]) -> None:
    with psycopg.connect(running.admin, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS before_fire (n int)")
        conn.execute("INSERT INTO before_fire VALUES (42)")
    until(lambda: metrics(exporter).get("lab_db_up") == 1.0, "up")
    assert running.daemon is not None
    db.fire(running.daemon)
    assert db.cluster_processes(running.data) == []
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(running.admin).close()
    until(lambda: metrics(exporter).get("lab_db_up") == 0.0, "down in the exporter")
    assert "lab_db_utilisation" not in metrics(exporter)  # unknown is not idle
    running.start()  # a fire leaves a stale postmaster.pid: postgres must cope
    until(lambda: metrics(exporter).get("lab_db_up") == 1.0, "up again")
    with psycopg.connect(running.admin) as conn:
        assert conn.execute("SELECT n FROM before_fire").fetchone() == (42,)


def test_revoke_ends_and_refuses_connections_until_granted(running: Cluster) -> None:
    db.create_database(running.admin, "shop")
    shop = db.dsn(running.host, running.port, "shop")
    with psycopg.connect(shop, autocommit=True) as held:
        assert db.revoke(running.admin, "shop") >= 1
        with pytest.raises(psycopg.OperationalError):
            held.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError, match="not currently accepting"):
        psycopg.connect(shop).close()
    with psycopg.connect(running.admin) as conn:  # the other databases still serve
        assert conn.execute("SELECT 1").fetchone() == (1,)
    db.grant(running.admin, "shop")
    with psycopg.connect(shop) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_stop_leaves_no_process_of_the_cluster(running: Cluster) -> None:
    assert db.cluster_processes(running.data)
    running.stop()
    assert db.cluster_processes(running.data) == []
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    assert str(running.data) not in ps.stdout
    assert not port_open(running.port, running.host)


def test_the_cluster_runs_in_a_dc_namespace_and_dies_with_it(running: Cluster) -> None:
    require("ip", "iproute2")
    need_netns()
    net = netns.Network.create(f"test-db-{os.getpid()}", ["dc1"])
    try:
        running.stop()
        running.host = net.address("dc1")
        daemon = running.start(wrap=net.wrap("dc1"))
        assert daemon.pid in db.cluster_processes(running.data)  # ip netns exec execs
        with psycopg.connect(running.admin) as conn:  # from the root namespace, via the bridge
            assert conn.execute("SELECT inet_server_addr()::text").fetchone() == (
                f"{net.address('dc1')}/32",)
        # An exporter in the root namespace must not hang on a partitioned database.
        exporter = db.start_exporter(running.dir.parent / "exporter-ns", dsn=running.admin,
                                     dc="dc1", capacity=4, host=HOST, port=free_port())
        address = (HOST, int(exporter.argv[-1]))
        try:
            until(lambda: metrics(address).get("lab_db_up") == 1.0, "up")
            net.partition("dc1")
            try:
                until(lambda: metrics(address).get("lab_db_up") == 0.0, "down while cut off")
                assert daemon.alive()
            finally:
                net.heal("dc1")
            until(lambda: metrics(address).get("lab_db_up") == 1.0, "up after heal")
        finally:
            exporter.stop()
        db.fire(daemon)
        assert db.cluster_processes(running.data) == []
        running.daemon = None
    finally:
        running.stop()
        net.destroy()


def test_a_directory_the_postgres_user_cannot_reach_is_explained(tmp_path: Path) -> None:
    require("initdb", "postgresql", paths=tuple(f"{d}/initdb" for d in db.PG_BIN_DIRS))
    if os.geteuid() == 0:
        closed = tmp_path / "closed"
        closed.mkdir(mode=0o700)
        with pytest.raises(db.DatabaseError, match="postgres_dir"):
            db.init_cluster(closed / "dc1")
    else:  # not root: nobody to switch to, the program runs as is
        assert db.as_postgres(["postgres", "-V"]) == ["postgres", "-V"]


def test_the_exporter_command_line_needs_its_arguments() -> None:
    done = subprocess.run([sys.executable, "-m", "revive.lab.database", "exporter"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2 and "--dsn" in done.stderr
