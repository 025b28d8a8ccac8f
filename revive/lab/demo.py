"""The lab's demo service: one process is one instance of one service in one DC.

Why a real service: the lab measures recovery by what users see, so the service must behave
like one. Latency and errors come from real causes: each request picks a key from a Zipf
distribution; a hit in the in-process LRU cache is answered at once, a miss queries the DC's
own PostgreSQL through a small pool of connections (``pg_sleep(cost)``, then the key's row of
the seeded ``items`` table, or a catalog row when there is none). A cold cache right after
traffic arrives (a failover) therefore means many database queries, and a loaded or lost
database means slow answers or 503s. The process never crashes on a database problem: it
answers 503, keeps retrying its connections in the background with backoff and serves again
as soon as the database is back.

``GET /`` (``?key=N`` picks the key), ``GET /healthz`` (200 when a database connection
works), ``GET /metrics`` (Prometheus text, ``lab_*`` metrics labelled service/class/dc).
Every answer carries ``X-DC``, ``X-Service``, ``X-Class`` and ``X-Version`` headers: the load
generator counts successes per DC from ``X-DC``.

The orchestration starts it through supervisord: ``demo_argv`` is the command line and
``supervisor_command`` its ``command=`` value; ``start_demo`` runs it as a ``Daemon``.
``prometheus_queries`` gives the PromQL the ``prometheus`` adapter needs over these metrics.
The server part imports aiohttp and psycopg lazily, so building a command line stays cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import random
import shlex
import signal
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from revive.lab.daemon import Daemon, DaemonError, port_open

if TYPE_CHECKING:
    from aiohttp import web
    from psycopg import AsyncConnection

__all__ = [
    "LATENCY_BUCKETS",
    "DbTimeout",
    "DbUnavailable",
    "DemoConfig",
    "LruCache",
    "ZipfKeys",
    "demo_argv",
    "grouped_queries",
    "main",
    "prometheus_queries",
    "start_demo",
    "supervisor_command",
]

log = logging.getLogger("revive.lab.demo")

#: Request latency buckets (seconds): 1 ms to 2 s, dense where a cache hit or a query lands.
LATENCY_BUCKETS = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0,
)
#: The labels every ``lab_*`` series of the demo service carries.
LABELS = ("service", "class", "dc")
#: Reconnect backoff: first retry soon (the lab measures recovery in seconds), capped low.
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0
#: An idle connection unused this long is checked with ``SELECT 1`` (finds killed backends).
PING_AFTER_S = 1.0
PING_TIMEOUT_S = 1.0
#: psycopg's floor for ``connect_timeout`` is 2 s anyway.
CONNECT_TIMEOUT_S = 2
#: After SIGTERM: in-flight requests get this long, and the process is gone within 1 s.
SHUTDOWN_GRACE_S = 0.25
HARD_EXIT_AFTER_S = 0.9
#: The table the lab seeds in each DC's database (``revive.lab.database.seed``): a miss reads
#: the key's row from it when it exists and is readable, else a row of the catalog.
ITEMS_TABLE = "items"
ITEMS_CHECK = (
    f"SELECT CASE WHEN to_regclass('{ITEMS_TABLE}') IS NULL THEN false "
    f"ELSE has_table_privilege(to_regclass('{ITEMS_TABLE}'), 'SELECT') END"
)
#: The miss queries: a real sleep holding the connection (the DB's load), then a tiny real
#: read. Key ``k`` is item ``k + 1`` (the seed numbers items from 1); an absent one reads "".
ITEM_SQL = (
    f"SELECT name || ':' || stock FROM pg_sleep(%(cost)s), {ITEMS_TABLE} "
    "WHERE id = %(key)s + 1"
)
CATALOG_SQL = (
    "SELECT md5(%(key)s::text || ':' || datname) FROM pg_sleep(%(cost)s), pg_database "
    "WHERE datname = current_database()"
)


# --- configuration and command line -------------------------------------------------------


@dataclass(frozen=True)
class DemoConfig:
    """Everything one demo instance needs (the command line's flags)."""

    service: str
    traffic_class: str
    dc: str
    host: str
    port: int
    db_dsn: str
    db_cost_ms: float = 4.0
    cache_keys: int = 2000
    cache_size: int = 1500
    zipf: float = 1.1
    pool: int = 4
    timeout_ms: float = 500.0
    version: str = "dev"

    def __post_init__(self) -> None:
        problems = [
            what for what, bad in (
                ("--db-cost-ms must be >= 0", self.db_cost_ms < 0),
                ("--cache-keys must be >= 1", self.cache_keys < 1),
                ("--cache-size must be >= 0", self.cache_size < 0),
                ("--zipf must be >= 0", self.zipf < 0),
                ("--pool must be >= 1", self.pool < 1),
                ("--timeout-ms must be > 0", self.timeout_ms <= 0),
                ("--port must be 1..65535", not 0 < self.port < 65536),
            ) if bad
        ]
        if problems:
            raise ValueError("; ".join(problems))


def _num(value: float) -> str:
    return format(value, "g")


def demo_argv(
    *,
    service: str,
    traffic_class: str,
    dc: str,
    host: str,
    port: int,
    db_dsn: str,
    db_cost_ms: float = 4.0,
    cache_keys: int = 2000,
    cache_size: int = 1500,
    zipf: float = 1.1,
    pool: int = 4,
    timeout_ms: float = 500.0,
    version: str = "dev",
    python: str | None = None,
) -> list[str]:
    """The command line of one demo instance, run by ``python`` (default: this interpreter).

    ``sys.executable`` is the venv's interpreter, so the command works from supervisord (any
    working directory, no activated venv). Values are checked here, not in the child.
    """
    DemoConfig(service, traffic_class, dc, host, port, db_dsn, db_cost_ms, cache_keys,
               cache_size, zipf, pool, timeout_ms, version)
    return [
        python or sys.executable, "-m", "revive.lab.demo",
        "--service", service, "--traffic-class", traffic_class, "--dc", dc,
        "--host", host, "--port", str(port), "--db-dsn", db_dsn,
        "--db-cost-ms", _num(db_cost_ms), "--cache-keys", str(cache_keys),
        "--cache-size", str(cache_size), "--zipf", _num(zipf), "--pool", str(pool),
        "--timeout-ms", _num(timeout_ms), "--version", version,
    ]


def supervisor_command(argv: Sequence[str]) -> str:
    """``argv`` as supervisord's ``command=``: shell-quoted, ``%`` doubled (its expansion
    character; a DSN may hold ``%``-escapes)."""
    return shlex.join(argv).replace("%", "%%")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m revive.lab.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--service", required=True)
    p.add_argument("--traffic-class", required=True)
    p.add_argument("--dc", required=True)
    p.add_argument("--host", required=True, help="address to listen on")
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--db-dsn", required=True, help="libpq DSN of the DC's database")
    p.add_argument("--db-cost-ms", type=float, default=4.0, help="pg_sleep per cache miss")
    p.add_argument("--cache-keys", type=int, default=2000, help="keys requests pick from")
    p.add_argument("--cache-size", type=int, default=1500, help="LRU capacity (0: no cache)")
    p.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of key popularity")
    p.add_argument("--pool", type=int, default=4, help="database connections")
    p.add_argument("--timeout-ms", type=float, default=500.0,
                   help="longest wait for a pooled connection plus its query; then 503")
    p.add_argument("--version", default="dev", help="reported in X-Version and lab_build_info")
    return p


def parse_args(argv: Sequence[str] | None = None) -> DemoConfig:
    parser = _parser()
    ns = parser.parse_args(argv)
    try:
        return DemoConfig(
            service=ns.service, traffic_class=ns.traffic_class, dc=ns.dc, host=ns.host,
            port=ns.port, db_dsn=ns.db_dsn, db_cost_ms=ns.db_cost_ms,
            cache_keys=ns.cache_keys, cache_size=ns.cache_size, zipf=ns.zipf, pool=ns.pool,
            timeout_ms=ns.timeout_ms, version=ns.version,
        )
    except ValueError as exc:
        parser.error(str(exc))


# --- starting it from the lab -------------------------------------------------------------


def _answers(url: str) -> bool:
    return httpx.get(url, timeout=2.0, trust_env=False).status_code == 200


def start_demo(
    dir: Path,
    *,
    service: str,
    traffic_class: str,
    dc: str,
    host: str,
    port: int,
    db_dsn: str,
    wrap: Callable[[list[str]], list[str]] | None = None,
    name: str | None = None,
    timeout_s: float = 30.0,
    **options: Any,
) -> Daemon:
    """Start one demo instance as a ``Daemon`` (log in ``dir/<name>.log``); return once its
    ``/metrics`` answers (it serves; its database may still be unreachable).

    ``options`` are ``demo_argv``'s optional flags (``cache_size=...``); ``wrap`` prefixes
    the command line (``ip netns exec <ns>``). The caller stops it (``.stop()``).
    """
    if port_open(port, host):
        raise DaemonError(f"demo {service} in {dc}: {host}:{port} is already in use")
    argv = demo_argv(service=service, traffic_class=traffic_class, dc=dc, host=host,
                     port=port, db_dsn=db_dsn, **options)
    name = name or f"demo-{service}-{dc}"
    daemon = Daemon(name, wrap(argv) if wrap else argv, log=dir / f"{name}.log", cwd=dir)
    daemon.start()
    try:
        daemon.wait_ready(lambda: _answers(f"http://{host}:{port}/metrics"),
                          timeout_s=timeout_s, what=f"serving /metrics on {host}:{port}")
    except BaseException:
        daemon.stop()
        raise
    return daemon


# --- the PromQL the prometheus adapter needs ----------------------------------------------


def prometheus_queries(window: str = "10s") -> dict[str, dict[str, str]]:
    """The ``prometheus`` adapter's ``settings`` (``queries`` and ``dc_queries``) over the
    demo's metrics, averaged over ``window`` (give at least two scrape intervals).

    Each expression aggregates to one series. A field with no traffic in ``window`` is NaN
    (the adapter then holds): a ratio without requests is unknown, not 0.
    """
    w = window

    def rate(metric: str, match: str) -> str:
        selector = f"{metric}{{{match}}}" if match else metric
        return f"sum(rate({selector}[{w}]))"

    def p99(match: str) -> str:
        return (f"1000 * histogram_quantile(0.99, sum by (le) "
                f"(rate(lab_request_duration_seconds_bucket{{{match}}}[{w}])))")

    def fields(match: str, whole: str) -> dict[str, str]:
        db = 'dc="{dc}"'
        return {
            "share": f"{rate('lab_requests_total', match)} / {rate('lab_requests_total', whole)}",
            "db_util": f"{rate('lab_db_busy_seconds_total', db)} / sum(lab_db_pool_max{{{db}}})",
            "p99_ms": p99(match),
            "error_rate": (f"{rate('lab_errors_total', match)} / "
                           f"{rate('lab_requests_total', match)}"),
            "cache_hit_ratio": (f"{rate('lab_cache_hits_total', match)} / "
                                f"{rate('lab_cache_lookups_total', match)}"),
        }

    return {
        "queries": fields('class="{class}",dc="{dc}"', 'class="{class}"'),
        "dc_queries": fields('dc="{dc}"', ""),
    }


def grouped_queries(window: str = "10s") -> dict[str, str]:
    """The same views for every (class, dc) at once, one series per pair (dashboards, the
    drill report): traffic share, p99 in ms, error ratio and cache hit ratio."""
    def by(metric: str) -> str:
        return f"sum by (class, dc) (rate({metric}[{window}]))"

    return {
        "share": (f"{by('lab_requests_total')} / ignoring(dc) group_left "
                  f"sum by (class) (rate(lab_requests_total[{window}]))"),
        "p99_ms": (f"1000 * histogram_quantile(0.99, sum by (class, dc, le) "
                   f"(rate(lab_request_duration_seconds_bucket[{window}])))"),
        "error_rate": f"{by('lab_errors_total')} / {by('lab_requests_total')}",
        "cache_hit_ratio": f"{by('lab_cache_hits_total')} / {by('lab_cache_lookups_total')}",
    }


# --- the parts of the service -------------------------------------------------------------


class ZipfKeys:
    """Keys ``0..n-1`` drawn with probability proportional to ``1 / (rank ** s)``: a few hot
    keys and a long tail, as real traffic has (key 0 is the hottest)."""

    def __init__(self, n: int, s: float, rng: random.Random | None = None) -> None:
        self._keys = range(n)
        self._cum = list(itertools.accumulate(1.0 / (rank ** s) for rank in range(1, n + 1)))
        self._rng = rng or random.Random()

    def __call__(self) -> int:
        return self._rng.choices(self._keys, cum_weights=self._cum)[0]


class LruCache:
    """The instance's own cache: ``size`` most recently used keys (0: caches nothing)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[int, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: int) -> str | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: int, value: str) -> None:
        if self.size <= 0:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class DbUnavailable(Exception):
    """No working database connection, or the query failed on its connection."""


class DbTimeout(DbUnavailable):
    """The pool could not give a connection and run the query within the timeout."""


@dataclass
class _Idle:
    conn: AsyncConnection[Any]
    since: float


class DbPool:
    """A fixed number of psycopg async connections, refilled in the background.

    Why not psycopg_pool: it is not installed, and the lab needs exactly this behaviour:
    fail fast (503) when no connection works, wait at most the timeout when all are busy,
    drop a connection at its first error, and reconnect with capped exponential backoff
    so a lost database neither crashes the service nor makes it spin.
    """

    def __init__(self, dsn: str, size: int, *, application_name: str = "revive-lab") -> None:
        self.dsn, self.size, self.application_name = dsn, size, application_name
        self.open = 0
        """Connections believed to work: idle, running a query or being checked."""
        self.inflight = 0
        self.has_items = False
        """Whether the last connection opened could read the seeded ``items`` table."""
        self.on_query: Callable[[float], None] | None = None
        """Told each counted query's seconds (the metrics' utilisation counter)."""
        self._idle: deque[_Idle] = deque()
        self._waiters: deque[asyncio.Future[AsyncConnection[Any]]] = deque()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._down_reason: str | None = "not connected yet"
        self._closed = False

    @property
    def healthy(self) -> bool:
        return self.open > 0

    # The keeper: connects up to ``size``, checks idle connections, backs off on failure.

    async def keep(self) -> None:
        """Run until closed: check long-idle connections, then fill the pool; back off
        (doubling up to ``BACKOFF_MAX_S``) while connecting fails. Never raises."""
        delay = BACKOFF_MIN_S
        while not self._closed:
            try:
                self._wake.clear()  # before the check: a drop found by it must not be slept over
                await self._ping_idle()
                if self.open >= self.size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), PING_AFTER_S)
                    continue
                if await self._connect_one(delay):
                    delay = BACKOFF_MIN_S
                    continue
            except Exception:  # a bug here must not leave the pool without a keeper
                log.exception("database pool keeper failed; retrying")
            await asyncio.sleep(delay * random.uniform(0.75, 1.0))
            delay = min(delay * 2, BACKOFF_MAX_S)

    async def _connect_one(self, delay: float) -> bool:
        import psycopg

        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                application_name=self.application_name,
            )
        except Exception as exc:  # refused, revoked, bad DSN: all mean "retry later"
            self._went_down(" ".join(str(exc).split()) or type(exc).__name__, delay)
            return False
        try:
            cursor = await conn.execute(ITEMS_CHECK)
            row = await cursor.fetchone()
        except Exception as exc:
            await conn.close()
            self._went_down(" ".join(str(exc).split()) or type(exc).__name__, delay)
            return False
        self.has_items = bool(row and row[0])
        self.open += 1
        if self._down_reason is not None:
            log.info("database reachable: %d connection(s)", self.open)
            self._down_reason = None
        self._release(conn)
        return True

    def _went_down(self, reason: str, retry_s: float) -> None:
        """Log a new reason once, not every retry (the backoff would flood the log)."""
        if reason != self._down_reason:
            log.warning("database connection failed (%d open; retrying with backoff from "
                        "%.2f s): %s", self.open, retry_s, reason)
            self._down_reason = reason

    async def _ping_idle(self) -> None:
        """A backend killed while idle is only seen when used: check the long-idle ones."""
        now = time.monotonic()
        stale = [item for item in self._idle if now - item.since >= PING_AFTER_S]
        for item in stale:
            self._idle.remove(item)
        if stale:
            await asyncio.gather(*(self._check(item.conn) for item in stale))

    async def _check(self, conn: AsyncConnection[Any]) -> None:
        with contextlib.suppress(DbUnavailable):
            await self._run_bounded(conn, "SELECT 1", {}, PING_TIMEOUT_S, count=False)

    # Using a connection.

    async def fetch(self, sql: str, params: Mapping[str, Any], timeout_s: float) -> Any:
        """One row of ``sql``; ``DbUnavailable`` or ``DbTimeout`` within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        conn = await self._acquire(deadline)
        return await self._run_bounded(conn, sql, params, deadline - loop.time())

    async def _acquire(self, deadline: float) -> AsyncConnection[Any]:
        if self._idle:
            return self._idle.popleft().conn
        if self.open == 0:
            raise DbUnavailable(f"no database connection ({self._down_reason})")
        waiter: asyncio.Future[AsyncConnection[Any]] = (
            asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            remaining = max(0.0, deadline - asyncio.get_running_loop().time())
            return await asyncio.wait_for(waiter, remaining)
        except TimeoutError:
            raise DbTimeout("no free database connection within the timeout") from None
        except asyncio.CancelledError:
            # A connection handed over just as this request was dropped goes back.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    async def _run_bounded(self, conn: AsyncConnection[Any], sql: str,
                           params: Mapping[str, Any], timeout_s: float, *,
                           count: bool = True) -> Any:
        """Run on ``conn`` in a task of its own: at the timeout the caller answers at once
        while the task cancels the query (psycopg cancels it on the server, which can take
        a while on a sick network) and then drops the connection."""
        task = asyncio.create_task(self._run(conn, sql, params, count))
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout_s))
        if not done:
            task.cancel()
            raise DbTimeout("the database did not answer within the timeout")
        return task.result()

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned query's error is not "never retrieved"

    async def _run(self, conn: AsyncConnection[Any], sql: str, params: Mapping[str, Any],
                   count: bool) -> Any:
        started = time.perf_counter()
        if count:
            self.inflight += 1
        try:
            cursor = await conn.execute(sql, params)
            row = await cursor.fetchone()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and self._reusable(conn):
                self._release(conn)  # timed out, cancelled on the server: still good
            else:
                await self._discard(conn, exc)
            if isinstance(exc, Exception):
                raise DbUnavailable(" ".join(str(exc).split()) or type(exc).__name__) from exc
            raise
        finally:
            if count:
                self.inflight -= 1
                if self.on_query is not None:
                    self.on_query(time.perf_counter() - started)
        self._release(conn)
        return row

    def _reusable(self, conn: AsyncConnection[Any]) -> bool:
        """After a cancelled query psycopg has waited for the server to end it; a connection
        back to idle is kept, so an overloaded database does not also get reconnect churn."""
        from psycopg.pq import TransactionStatus

        return (not self._closed and not conn.closed and not conn.broken
                and conn.info.transaction_status == TransactionStatus.IDLE)

    def _release(self, conn: AsyncConnection[Any]) -> None:
        if self._closed:
            self._tasks.add(asyncio.ensure_future(conn.close()))
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(_Idle(conn, time.monotonic()))

    async def _discard(self, conn: AsyncConnection[Any], exc: BaseException) -> None:
        """Drop a connection at its first error: the keeper opens a fresh one."""
        self.open -= 1
        with contextlib.suppress(Exception):
            await conn.close()
        if isinstance(exc, Exception):
            log.info("dropped a database connection (%d left): %s", self.open,
                     " ".join(str(exc).split()) or type(exc).__name__)
        if self.open == 0:
            self._down_reason = "every connection failed"
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(DbUnavailable("the database connections failed"))
        self._wake.set()

    async def close(self) -> None:
        """Close every connection; queries still running are cancelled."""
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(DbUnavailable("shutting down"))
        while self._idle:
            with contextlib.suppress(Exception):
                await self._idle.popleft().conn.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=SHUTDOWN_GRACE_S)


class DemoMetrics:
    """The instance's ``lab_*`` metrics, in a registry of its own, labelled service/class/dc."""

    def __init__(self, cfg: DemoConfig, pool: DbPool) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            disable_created_metrics,
        )

        disable_created_metrics()  # no *_created series: they only add noise to queries
        self.registry = CollectorRegistry(auto_describe=True)
        labels = (cfg.service, cfg.traffic_class, cfg.dc)
        r = self.registry

        def counter(name: str, doc: str) -> Any:
            return Counter(name, doc, LABELS, registry=r).labels(*labels)

        def gauge(name: str, doc: str) -> Any:
            return Gauge(name, doc, LABELS, registry=r).labels(*labels)

        self.requests = counter("lab_requests", "Requests to GET / (every status)")
        self.errors = counter("lab_errors", "Requests to GET / answered 5xx")
        self.latency = Histogram(
            "lab_request_duration_seconds", "Time to answer GET /", LABELS, registry=r,
            buckets=LATENCY_BUCKETS,
        ).labels(*labels)
        self.lookups = counter("lab_cache_lookups", "Cache lookups (one per request)")
        self.hits = counter("lab_cache_hits", "Cache lookups that found the key")
        gauge("lab_db_inflight", "Database queries running now").set_function(
            lambda: pool.inflight)
        gauge("lab_db_pool_size", "Database connections open and believed to work").set_function(
            lambda: pool.open)
        gauge("lab_db_pool_max", "Database connections the pool keeps (--pool)").set(pool.size)
        busy = counter("lab_db_busy_seconds", "Seconds connections spent on queries (summed)")
        pool.on_query = busy.inc
        gauge("lab_up", "1 while the instance can serve: a database connection works "
              "(the /healthz condition)").set_function(lambda: 1.0 if pool.healthy else 0.0)
        Gauge("lab_build_info", "The instance's version (--version)", (*LABELS, "version"),
              registry=r).labels(*labels, cfg.version).set(1)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class DemoService:
    """The request handlers, the cache and the pool of one instance."""

    def __init__(self, cfg: DemoConfig, rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.keys = ZipfKeys(cfg.cache_keys, cfg.zipf, rng)
        self.cache = LruCache(cfg.cache_size)
        self.pool = DbPool(cfg.db_dsn, cfg.pool,
                           application_name=f"revive-lab-{cfg.service}-{cfg.dc}"[:63])
        self.metrics = DemoMetrics(cfg, self.pool)
        self.headers = {"X-DC": cfg.dc, "X-Service": cfg.service,
                        "X-Class": cfg.traffic_class, "X-Version": cfg.version}

    def _key(self, request: web.Request) -> int | None:
        text = request.query.get("key")
        if text is None:
            return self.keys()
        try:
            key = int(text)
        except ValueError:
            return None
        return key if 0 <= key < self.cfg.cache_keys else None

    async def root(self, request: web.Request) -> web.Response:
        from aiohttp import web

        started = time.perf_counter()
        key = self._key(request)
        if key is None:
            return web.json_response(
                {"error": f"key must be an integer in 0..{self.cfg.cache_keys - 1}"},
                status=400, headers=self.headers)
        status, body = 200, {"service": self.cfg.service, "dc": self.cfg.dc, "key": key}
        self.metrics.lookups.inc()
        value = self.cache.get(key)
        if value is not None:
            self.metrics.hits.inc()
            body |= {"cache": "hit", "value": value}
        else:
            try:
                row = await self.pool.fetch(
                    ITEM_SQL if self.pool.has_items else CATALOG_SQL,
                    {"key": key, "cost": self.cfg.db_cost_ms / 1000.0},
                    self.cfg.timeout_ms / 1000.0)
                value = str(row[0]) if row else ""
                self.cache.put(key, value)
                body |= {"cache": "miss", "value": value}
            except DbTimeout as exc:
                status, body = 503, body | {"error": f"database busy: {exc}"}
            except DbUnavailable as exc:
                status, body = 503, body | {"error": f"database unavailable: {exc}"}
            except Exception as exc:  # a bug must show as a counted 500, not kill the handler
                log.exception("request failed")
                status, body = 500, body | {"error": f"{type(exc).__name__}: {exc}"}
        self.metrics.requests.inc()
        if status >= 500:
            self.metrics.errors.inc()
        self.metrics.latency.observe(time.perf_counter() - started)
        return web.json_response(body, status=status,
                                 headers=self.headers | {"X-Cache": body.get("cache", "miss")})

    async def healthz(self, request: web.Request) -> web.Response:
        from aiohttp import web

        ok = self.pool.healthy
        return web.json_response(
            {"ok": ok, "db_connections": self.pool.open, "dc": self.cfg.dc},
            status=200 if ok else 503, headers=self.headers)

    async def metrics_page(self, request: web.Request) -> web.Response:
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST

        return web.Response(body=self.metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST, **self.headers})


# --- the process --------------------------------------------------------------------------


def _hard_exit() -> None:
    """The last resort when a graceful stop hangs (a query cancel on a dead network)."""
    log.warning("stopping took too long: exiting now")
    logging.shutdown()
    os._exit(0)


async def serve(cfg: DemoConfig) -> None:
    """Serve until SIGTERM or SIGINT, then stop within a second."""
    from aiohttp import web

    service = DemoService(cfg)
    app = web.Application()
    app.router.add_get("/", service.root)
    app.router.add_get("/healthz", service.healthz)
    app.router.add_get("/metrics", service.metrics_page)
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port, reuse_address=True)
    await site.start()
    keeper = asyncio.create_task(service.pool.keep())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("serving %s (class %s) in %s on http://%s:%d, version %s", cfg.service,
             cfg.traffic_class, cfg.dc, cfg.host, cfg.port, cfg.version)
    await stop.wait()
    watchdog = threading.Timer(HARD_EXIT_AFTER_S, _hard_exit)
    watchdog.daemon = True
    watchdog.start()
    keeper.cancel()
    await runner.cleanup()
    await service.pool.close()
    with contextlib.suppress(asyncio.CancelledError):
        await keeper
    log.info("stopped")
    watchdog.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    who = f"demo {cfg.service}/{cfg.dc}".replace("%", "%%")  # a format string: % escaped
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s {who}: %(message)s")
    try:
        asyncio.run(serve(cfg))
    except OSError as exc:  # the port is taken or the address is not ours
        log.error("cannot listen on %s:%d: %s", cfg.host, cfg.port, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
