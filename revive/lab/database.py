"""Each DC's own PostgreSQL cluster, so a fire takes the DC's database down with it.

A real failover must survive the database it depended on being gone (or refusing), not only
the services in front of it. Each DC therefore runs its own PostgreSQL 15 cluster: its data
in ``<dir>/data``, its Unix socket in ``<dir>``, bound to the DC's address (in the DC's
network namespace through ``wrap``), and a small exporter that tells Prometheus how busy it
is, which failover gates can read.

``initdb`` and ``postgres`` refuse to run as root, and CI runs as root: as root, both run as
the ``postgres`` system user through ``setpriv``, which *execs* (``runuser`` and ``su`` fork
and wait), so the pid a ``Daemon`` records is the postmaster's own, and ``Daemon.stop`` and
``fire`` reach every backend through its process group. The directory must then be reachable
by that user: a root-owned ``0700`` temporary directory above it blocks it, so
``init_cluster`` says which one; ``postgres_dir`` makes one that works.

Settings are for a lab, not for data: ``fsync=off``, 16 MB of shared buffers, 50
connections, trust authentication from local sockets, loopback and the lab's subnet.
Commits still reach the OS before they return, so a killed (not a crashed-machine) cluster
comes back with its data.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from revive.lab.daemon import Daemon, DaemonError, pid_alive, port_open, program
from revive.lab.netns import SUPERNET

log = logging.getLogger(__name__)

POSTGRES_USER = "postgres"  # the system user (as root) and the cluster's superuser
#: Debian's layout; the newest version wins.
PG_BIN_DIRS = tuple(str(p) for p in sorted(
    Path("/usr/lib/postgresql").glob("*/bin"),
    key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True))
#: Who may connect without a password: local sockets always, and these networks.
DEFAULT_TRUST = ("127.0.0.1/32", "::1/128", str(SUPERNET))
LAB_CONF = "revive_lab.conf"
LAB_SETTINGS = {
    "fsync": "off",  # a lab database is rebuilt, never recovered from a power cut
    "full_page_writes": "off",
    "shared_buffers": "'16MB'",
    "max_connections": "50",
    "huge_pages": "off",
    "max_wal_size": "'256MB'",
    "log_line_prefix": "'%m [%p] '",
}
SOCKET_PATH_MAX = 107  # sun_path: the socket is <dir>/.s.PGSQL.<port>
SEED_TABLE = "items"
CONNECT_TIMEOUT_S = 2


class DatabaseError(DaemonError):
    """A lab cluster could not be made, started, reached or changed."""


def pg_program(name: str) -> str:
    """``initdb``, ``postgres``...: Debian's newest versioned directory first, then the PATH.

    The versioned directory first, so ``initdb`` and ``postgres`` are always one version.
    """
    for bin_dir in PG_BIN_DIRS:
        if (Path(bin_dir) / name).exists():
            return f"{bin_dir}/{name}"
    return program(name, "postgresql")


def _root() -> bool:
    return os.geteuid() == 0


def as_postgres(argv: Sequence[str]) -> list[str]:
    """Run ``argv`` as the postgres user when we are root (exec, same pid); as is otherwise."""
    if not _root():
        return list(argv)
    setpriv = program("setpriv", "util-linux")
    return [setpriv, f"--reuid={POSTGRES_USER}", f"--regid={POSTGRES_USER}", "--init-groups",
            "--reset-env", "--", *argv]


def _give_to_postgres(path: Path) -> None:
    if _root():
        user = pwd.getpwnam(POSTGRES_USER)
        os.chown(path, user.pw_uid, user.pw_gid)


def postgres_dir(prefix: str = "revive-pg-", parent: Path = Path("/tmp")) -> Path:
    """A new directory the postgres user owns, under a parent it can traverse."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    _give_to_postgres(path)
    return path


def _blocking_ancestor(path: Path) -> Path | None:
    """The first directory above ``path`` the postgres user cannot traverse (for the error)."""
    user = pwd.getpwnam(POSTGRES_USER)
    groups = {g for g in os.getgrouplist(POSTGRES_USER, user.pw_gid)}
    for parent in reversed(path.resolve().parents):
        st = parent.stat()
        if st.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return parent
    return None


def _check_reachable(dir: Path) -> None:
    if not _root():
        return
    done = subprocess.run(as_postgres(["test", "-w", str(dir), "-a", "-x", str(dir)]),
                          capture_output=True, timeout=30, check=False)
    if done.returncode != 0:
        blocker = _blocking_ancestor(dir)
        where = f"{blocker} is closed to it" if blocker else "check its permissions"
        raise DatabaseError(
            f"the {POSTGRES_USER} user cannot use {dir} ({where}); PostgreSQL refuses to run "
            f"as root, so its directory must be reachable by {POSTGRES_USER}: see "
            "revive.lab.database.postgres_dir()")


def _hba(trust: Sequence[str]) -> str:
    lines = ["# written by revive.lab.database: a lab cluster, trust only",
             "local all all trust"]
    lines += [f"host all all {network} trust" for network in trust]
    return "\n".join(lines) + "\n"


def _write_owned(path: Path, text: str) -> None:
    path.write_text(text)
    _give_to_postgres(path)


def init_cluster(dir: Path, *, trust: Sequence[str] = DEFAULT_TRUST,
                 timeout_s: float = 120.0) -> Path:
    """Make a cluster in ``dir/data`` (once; later calls only rewrite the lab settings).

    Returns the data directory. ``trust`` lists the networks that connect without a
    password (the lab's subnet among them).
    """
    initdb = pg_program("initdb")
    dir = dir.resolve()
    dir.mkdir(parents=True, exist_ok=True)
    _give_to_postgres(dir)
    _check_reachable(dir)
    data = dir / "data"
    if not (data / "PG_VERSION").exists():
        if data.exists():  # an initdb that died half-way: it refuses a non-empty directory
            shutil.rmtree(data)
        argv = as_postgres([initdb, "-D", str(data), "-U", POSTGRES_USER, "--auth=trust",
                            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
        try:
            done = subprocess.run(argv, capture_output=True, text=True, cwd=dir,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise DatabaseError(f"initdb {data} took more than {timeout_s:.0f} s") from exc
        if done.returncode != 0:
            raise DatabaseError(f"initdb {data} failed:\n{done.stdout}{done.stderr}")
    _write_owned(data / "pg_hba.conf", _hba(trust))
    _write_owned(data / LAB_CONF, "".join(f"{k} = {v}\n" for k, v in LAB_SETTINGS.items()))
    conf = data / "postgresql.conf"
    include = f"include_if_exists = '{LAB_CONF}'"
    if include not in conf.read_text():
        with conf.open("a") as out:
            out.write(f"\n# lab settings, written by revive.lab.database\n{include}\n")
    return data


def dsn(host: str, port: int, dbname: str = "postgres", user: str = POSTGRES_USER) -> str:
    """A libpq connection string for the lab cluster at ``host:port``."""
    return make_conninfo(host=host, port=port, dbname=dbname, user=user,
                         connect_timeout=CONNECT_TIMEOUT_S)


def _connects(conninfo: str) -> bool:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT 1").fetchone()
    return True


def start_database(dir: Path, *, host: str, port: int, name: str = "database",
                   wrap: Callable[[list[str]], list[str]] | None = None,
                   timeout_s: float = 60.0) -> Daemon:
    """Start the cluster in ``dir`` (made if needed) on ``host:port``; return it accepting.

    Runs ``postgres`` in the foreground (as the postgres user when root), prefixed by
    ``wrap`` (e.g. ``ip netns exec <ns>``). Readiness is checked by connecting from this
    process, so ``host`` must be reachable from here (the DC's address, not its namespace's
    127.0.0.1). Restarting on the same ``dir`` brings the DC's data back, also after ``fire``.
    """
    postgres = pg_program("postgres")
    dir = dir.resolve()
    data = dir / "data"
    if not (data / "PG_VERSION").exists():
        init_cluster(dir)
    if len(str(dir)) + len("/.s.PGSQL.65535") > SOCKET_PATH_MAX:
        raise DatabaseError(f"{dir} is too long for a Unix socket path: use a shorter one")
    if wrap is None and port_open(port, host):
        raise DatabaseError(f"{name}: {host}:{port} is already in use; it would not be ours")
    argv = as_postgres([postgres, "-D", str(data), "-c", f"listen_addresses={host}",
                        "-p", str(port), "-k", str(dir)])
    if wrap is not None:
        argv = wrap(argv)
    daemon = Daemon(name, argv, log=dir / f"{name}.log", cwd=dir).start()
    try:
        daemon.wait_ready(lambda: _connects(dsn(host, port)), timeout_s=timeout_s,
                          what=f"accepting connections on {host}:{port}")
    except BaseException:
        daemon.stop()
        raise
    return daemon


def cluster_processes(data: Path) -> list[int]:
    """Pids of every process of the cluster in ``data``: postgres chdirs there, all inherit."""
    target = str(data.resolve())
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "cwd") == target and pid_alive(int(entry.name)):
                    pids.append(int(entry.name))
    return pids


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    members.append(int(entry.name))
    return members


def fire(daemon: Daemon, timeout_s: float = 10.0) -> None:
    """Kill the cluster as a fire would: SIGKILL to the postmaster's group, no shutdown."""
    if daemon.pid is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(daemon.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while _group_members(daemon.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    daemon.stop(timeout_s=1.0)  # reaps the postmaster; the group is already gone
    if _group_members(daemon.pid):
        raise DatabaseError(f"{daemon.name}: processes of group {daemon.pid} survived SIGKILL")


def create_database(dsn_admin: str, name: str) -> None:
    """Create database ``name`` unless it exists."""
    with psycopg.connect(dsn_admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):  # a concurrent creator
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def seed(dsn: str, rows: int = 2000) -> int:
    """(Re)fill ``items(id, name, stock)`` with ``rows`` rows: what the demo services read."""
    with psycopg.connect(dsn) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {SEED_TABLE} ("
                     "id integer PRIMARY KEY, name text NOT NULL, stock integer NOT NULL)")
        conn.execute(f"TRUNCATE {SEED_TABLE}")
        conn.execute(f"INSERT INTO {SEED_TABLE} (id, name, stock) "
                     "SELECT g, 'item-' || g, g %% 100 FROM generate_series(1, %s) AS g",
                     (rows,))
        count = conn.execute(f"SELECT count(*) FROM {SEED_TABLE}").fetchone()
    return int(count[0]) if count else 0


def revoke(dsn_admin: str, db: str) -> int:
    """Refuse every connection to ``db`` and end those open; returns how many were ended.

    ``REVOKE CONNECT`` alone does not stop a superuser (the lab's services may connect as
    one), so connections are also disallowed outright with ``ALLOW_CONNECTIONS false``.
    ``dsn_admin`` must name another database (``postgres``).
    """
    ident = sql.Identifier(db)
    with psycopg.connect(dsn_admin, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident))
        conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(ident))
        ended = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()", (db,)).fetchone()
    return int(ended[0]) if ended else 0


def grant(dsn_admin: str, db: str) -> None:
    """Undo ``revoke``: ``db`` accepts connections again."""
    ident = sql.Identifier(db)
    with psycopg.connect(dsn_admin, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(ident))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO PUBLIC").format(ident))


# --- the exporter --------------------------------------------------------------------------


def utilisation_query() -> str:
    """Client backends running a query right now, the asking one excluded."""
    return ("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND state = 'active' AND pid <> pg_backend_pid()")


@dataclass
class Reading:
    up: bool
    active: int
    at: float  # time.monotonic() of the reading


class Exporter:
    """Polls one cluster in the background; scrapes answer at once from the last reading.

    Prometheus scrapes every second with a timeout no longer than that, and a database cut
    off by a partition can take seconds to time out, so a scrape never waits on the
    database: a reading older than ``stale_s`` reads as down.
    """

    def __init__(self, dsn: str, dc: str, capacity: int, *, interval_s: float = 0.5,
                 stale_s: float = 5.0) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, not {capacity}")
        self.dsn, self.dc, self.capacity = dsn, dc, capacity
        self.interval_s, self.stale_s = interval_s, stale_s
        self.reading = Reading(up=False, active=0, at=time.monotonic())
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None

    def poll(self) -> Reading:
        try:
            if self._conn is None or self._conn.closed:
                # tcp_user_timeout: a partitioned peer fails the read instead of hanging.
                self._conn = psycopg.connect(self.dsn, autocommit=True,
                                             connect_timeout=CONNECT_TIMEOUT_S,
                                             tcp_user_timeout=3000,
                                             options="-c statement_timeout=3000")
            row = self._conn.execute(utilisation_query()).fetchone()
            self.reading = Reading(up=True, active=int(row[0]) if row else 0,
                                   at=time.monotonic())
        except Exception as exc:  # any failure reads as down; the poller must live on
            log.debug("%s: %s", self.dc, exc)
            self.close()
            self.reading = Reading(up=False, active=0, at=time.monotonic())
        return self.reading

    def run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(self.interval_s)
        self.close()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def metrics(self) -> str:
        """Prometheus text: no utilisation sample while down (unknown is not idle)."""
        reading = self.reading
        up = reading.up and time.monotonic() - reading.at <= self.stale_s
        label = f'{{dc="{_escape(self.dc)}"}}'
        lines = [
            "# HELP lab_db_up Whether the DC's database answered the exporter's last query.",
            "# TYPE lab_db_up gauge",
            f"lab_db_up{label} {1 if up else 0}",
            "# HELP lab_db_capacity Concurrent queries the DC's database is sized for.",
            "# TYPE lab_db_capacity gauge",
            f"lab_db_capacity{label} {self.capacity}",
        ]
        if up:
            lines += [
                "# HELP lab_db_active_queries Client backends running a query.",
                "# TYPE lab_db_active_queries gauge",
                f"lab_db_active_queries{label} {reading.active}",
                "# HELP lab_db_utilisation Client backends running a query / capacity.",
                "# TYPE lab_db_utilisation gauge",
                f"lab_db_utilisation{label} {reading.active / self.capacity:g}",
            ]
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def serve_exporter(exporter: Exporter, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP server answering ``/metrics`` from ``exporter`` (call ``serve_forever``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/", "/metrics"):
                self.send_error(404)
                return
            body = exporter.metrics().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes every second would flood the log."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def fetch_metrics(host: str, port: int, timeout_s: float = 2.0) -> str:
    """The exporter's current text (no proxy: the lab is local)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{host}:{port}/metrics", timeout=timeout_s) as response:
        return str(response.read().decode())


def parse_metrics(text: str) -> dict[str, float]:
    """``{"lab_db_up": 1.0, ...}`` from one exporter's text (labels dropped)."""
    values = {}
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{.*\})?\s+(\S+)$", line)
        if match and not line.startswith("#"):
            values[match.group(1)] = float(match.group(2))
    return values


def start_exporter(dir: Path, *, dsn: str, dc: str, capacity: int, host: str, port: int,
                   name: str = "db-exporter",
                   wrap: Callable[[list[str]], list[str]] | None = None,
                   timeout_s: float = 30.0) -> Daemon:
    """Start the exporter (this module, as a process) and return it serving ``/metrics``."""
    argv = [sys.executable, "-m", "revive.lab.database", "exporter", "--dsn", dsn, "--dc", dc,
            "--capacity", str(capacity), "--host", host, "--port", str(port)]
    if wrap is not None:
        argv = wrap(argv)
    elif port_open(port, host):
        raise DatabaseError(f"{name}: {host}:{port} is already in use; it would not be ours")
    dir.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(name, argv, log=dir / f"{name}.log", cwd=dir).start()
    try:
        daemon.wait_ready(lambda: "lab_db_up" in fetch_metrics(host, port), timeout_s=timeout_s,
                          what=f"serving metrics on {host}:{port}")
    except BaseException:
        daemon.stop()
        raise
    return daemon


@contextlib.contextmanager
def _signals_stop(server: ThreadingHTTPServer) -> Iterator[None]:
    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m revive.lab.database")
    commands = parser.add_subparsers(dest="command", required=True)
    exp = commands.add_parser("exporter", help="serve lab_db_utilisation and lab_db_up")
    exp.add_argument("--dsn", required=True)
    exp.add_argument("--dc", required=True)
    exp.add_argument("--capacity", type=int, required=True)
    exp.add_argument("--host", default="127.0.0.1")
    exp.add_argument("--port", type=int, required=True)
    exp.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    exporter = Exporter(args.dsn, args.dc, args.capacity, interval_s=args.interval)
    server = serve_exporter(exporter, args.host, args.port)
    poller = threading.Thread(target=exporter.run, name="poller", daemon=True)
    poller.start()
    log.info("exporter for %s on %s:%d", args.dc, args.host, args.port)
    with _signals_stop(server):
        server.serve_forever(poll_interval=0.2)
    exporter.stop()
    poller.join(timeout=5)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
