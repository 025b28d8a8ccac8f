"""The lab's demo service as a real process against a real PostgreSQL database.

What the lab relies on: requests are answered (with the DC in ``X-DC``), the cache warms up,
a lost database means 503s and a 503 ``/healthz`` without the process dying, and it serves
again by itself once the database is back; its metrics parse and carry service/class/dc;
SIGTERM stops it cleanly. The PromQL it publishes for the prometheus adapter is checked
against the adapter's settings and, when Prometheus is installed, against a real one.
"""

from __future__ import annotations

import os
import random
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from revive.lab.daemon import Daemon, free_port
from revive.lab.demo import (
    LATENCY_BUCKETS,
    DemoConfig,
    LruCache,
    ZipfKeys,
    demo_argv,
    grouped_queries,
    parse_args,
    prometheus_queries,
    start_demo,
    supervisor_command,
)
from revive.lab.prometheus import prometheus_url, start_prometheus, wait_for_series
from revive.ops.adapters.prometheus import PrometheusSettings, parse_template
from tests.lab.demo_http import get, poll, samples, value
from tests.lab.demo_pg import LabDatabase, lab_database
from tests.ops.programs import require

HOST = "127.0.0.1"
LABELS = {"service": "web", "class": "gold", "dc": "dc1"}
LAB_METRICS = (
    "lab_requests_total", "lab_errors_total", "lab_request_duration_seconds_bucket",
    "lab_request_duration_seconds_count", "lab_request_duration_seconds_sum",
    "lab_cache_lookups_total", "lab_cache_hits_total", "lab_db_inflight", "lab_db_pool_size",
    "lab_db_pool_max", "lab_db_busy_seconds_total", "lab_up", "lab_build_info",
)


class Demo:
    """A started demo process and its base URL."""

    def __init__(self, daemon: Daemon, port: int) -> None:
        self.daemon, self.url = daemon, f"http://{HOST}:{port}"

    def healthy(self) -> bool:
        return get(f"{self.url}/healthz").status_code == 200


@pytest.fixture(scope="module")
def database() -> Iterator[LabDatabase]:
    with lab_database() as db:
        yield db


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Demo]]:
    """Start demo processes for one test; every one is stopped at the end."""
    started: list[Daemon] = []

    def _launch(dsn: str, **options: object) -> Demo:
        port = free_port()
        daemon = start_demo(tmp_path, service="web", traffic_class="gold", dc="dc1",
                            host=HOST, port=port, db_dsn=dsn, version="v42",
                            name=f"demo-{port}", **options)
        started.append(daemon)
        return Demo(daemon, port)

    yield _launch
    for daemon in started:
        daemon.stop()


@pytest.fixture(scope="module")
def demo(database: LabDatabase, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One demo instance shared by the tests that only read it."""
    port = free_port()
    daemon = start_demo(tmp_path_factory.mktemp("demo"), service="web", traffic_class="gold",
                        dc="dc1", host=HOST, port=port, db_dsn=database.dsn, version="v42",
                        pool=3, db_cost_ms=1)
    try:
        instance = Demo(daemon, port)
        poll(instance.healthy, "the demo's database pool")
        yield instance
    finally:
        daemon.stop()


# --- pure parts -----------------------------------------------------------------------------


def test_argv_round_trips_through_the_command_line_and_supervisord() -> None:
    argv = demo_argv(service="web", traffic_class="gold", dc="dc1", host=HOST, port=8080,
                     db_dsn="postgresql://u:p%40ss@db/x", cache_size=10, zipf=0.9,
                     timeout_ms=250, version="v 1")
    assert argv[:3] == [sys.executable, "-m", "revive.lab.demo"]
    assert parse_args(argv[3:]) == DemoConfig(
        service="web", traffic_class="gold", dc="dc1", host=HOST, port=8080,
        db_dsn="postgresql://u:p%40ss@db/x", cache_size=10, zipf=0.9, timeout_ms=250,
        version="v 1")
    command = supervisor_command(argv)
    assert "%%40" in command  # supervisord expands %: a DSN's escapes survive it
    assert shlex.split(command.replace("%%", "%")) == argv
    with pytest.raises(ValueError, match="--pool"):
        demo_argv(service="web", traffic_class="gold", dc="dc1", host=HOST, port=8080,
                  db_dsn="x", pool=0)


def test_zipf_keys_favour_the_first_keys_and_stay_in_range() -> None:
    keys = ZipfKeys(50, 1.1, random.Random(7))
    drawn = [keys() for _ in range(5000)]
    assert set(drawn) <= set(range(50))
    assert drawn.count(0) > drawn.count(1) > drawn.count(10)


def test_lru_cache_evicts_the_least_recently_used() -> None:
    cache = LruCache(2)
    cache.put(1, "a")
    cache.put(2, "b")
    assert cache.get(1) == "a"  # 1 is now the most recent
    cache.put(3, "c")
    assert (cache.get(1), cache.get(2), cache.get(3)) == ("a", None, "c")
    nothing = LruCache(0)
    nothing.put(1, "a")
    assert nothing.get(1) is None and len(nothing) == 0


def test_queries_fit_the_prometheus_adapter() -> None:
    settings = PrometheusSettings.model_validate(prometheus_queries("10s"))
    assert settings.dc_queries is not None
    rendered = parse_template(settings.queries.share).render({"class": "gold", "dc": "dc2"})
    assert 'class="gold",dc="dc2"' in rendered and "[10s]" in rendered


# --- the real process -----------------------------------------------------------------------


def test_requests_are_answered_with_the_dc_and_version(demo: Demo) -> None:
    for _ in range(10):
        response = get(f"{demo.url}/")
        assert response.status_code == 200
        assert response.headers["X-DC"] == "dc1"
        assert response.headers["X-Version"] == "v42"
        assert response.headers["X-Service"] == "web"
        assert response.headers["X-Class"] == "gold"
        assert 0 <= response.json()["key"] < 2000
    first, second = get(f"{demo.url}/?key=1999"), get(f"{demo.url}/?key=1999")
    assert second.headers["X-Cache"] == "hit"
    assert first.json()["value"] == second.json()["value"]
    assert get(f"{demo.url}/?key=nope").status_code == 400


def test_metrics_parse_and_carry_the_labels(demo: Demo) -> None:
    get(f"{demo.url}/")
    found = samples(demo.url)
    for name in LAB_METRICS:
        assert name in found, name
        for labels, _ in found[name]:
            assert {k: labels[k] for k in LABELS} == LABELS, (name, labels)
    assert not [name for name in found if name.endswith("_created")]
    assert value(demo.url, "lab_build_info", version="v42") == 1
    assert value(demo.url, "lab_up") == 1
    assert value(demo.url, "lab_db_pool_max") == 3
    assert value(demo.url, "lab_requests_total") >= 1
    bounds = {labels["le"] for labels, _ in found["lab_request_duration_seconds_bucket"]}
    assert {float(b) for b in bounds - {"+Inf"}} == set(LATENCY_BUCKETS)
    assert min(LATENCY_BUCKETS) == 0.001 and max(LATENCY_BUCKETS) == 2.0


def test_the_cache_warms_up_over_repeated_requests(
    database: LabDatabase, launch: Callable[..., Demo]
) -> None:
    demo = launch(database.dsn, cache_keys=200, cache_size=100, db_cost_ms=1)
    poll(demo.healthy, "the database pool")
    assert get(f"{demo.url}/").headers["X-Cache"] == "miss"  # a cold cache misses
    assert value(demo.url, "lab_cache_lookups_total") == 1
    assert value(demo.url, "lab_cache_hits_total") == 0

    def warm() -> bool | str:
        with httpx.Client(base_url=demo.url, timeout=5.0, trust_env=False) as client:
            for _ in range(50):
                assert client.get("/").status_code == 200
        lookups = value(demo.url, "lab_cache_lookups_total")
        hits = value(demo.url, "lab_cache_hits_total")
        return hits / lookups >= 0.6 or f"{hits:.0f}/{lookups:.0f} hits"

    poll(warm, "a cache hit ratio of 60 %", interval_s=0)


def test_a_lost_database_gives_503_and_the_service_recovers_by_itself(
    launch: Callable[..., Demo],
) -> None:
    with lab_database() as database:
        demo = launch(database.dsn, cache_size=0, pool=2, db_cost_ms=1)
        poll(demo.healthy, "the database pool")
        assert get(f"{demo.url}/").status_code == 200

        assert database.cut_off() >= 1
        poll(lambda: get(f"{demo.url}/healthz").status_code == 503, "/healthz 503")
        response = get(f"{demo.url}/")
        assert response.status_code == 503
        assert response.headers["X-DC"] == "dc1"
        assert "database" in response.json()["error"]
        assert value(demo.url, "lab_up") == 0
        assert value(demo.url, "lab_db_pool_size") == 0
        assert value(demo.url, "lab_errors_total") >= 1
        assert demo.daemon.alive()

        database.restore()
        poll(demo.healthy, "/healthz 200 after CONNECT is granted again")
        poll(lambda: get(f"{demo.url}/").status_code == 200, "GET / 200 again")
        assert value(demo.url, "lab_up") == 1
        assert value(demo.url, "lab_db_pool_size") >= 1


def test_a_miss_reads_the_key_s_row_of_the_seeded_items(launch: Callable[..., Demo]) -> None:
    with lab_database() as database:
        database.seed_items(10)
        demo = launch(database.dsn, db_cost_ms=1)
        poll(demo.healthy, "the database pool")
        assert get(f"{demo.url}/?key=4").json()["value"] == "item-5:5"
        beyond = get(f"{demo.url}/?key=50")  # no such item: still a real, answered read
        assert (beyond.status_code, beyond.json()["value"]) == (200, "")


def test_an_unreachable_database_never_kills_the_service(launch: Callable[..., Demo]) -> None:
    demo = launch(f"postgresql://nobody@{HOST}:{free_port()}/none", pool=1)
    for _ in range(5):
        response = get(f"{demo.url}/")
        assert response.status_code == 503
        assert "database unavailable" in response.json()["error"]
    assert get(f"{demo.url}/healthz").status_code == 503
    assert value(demo.url, "lab_up") == 0
    assert demo.daemon.alive()
    poll(lambda: "database connection failed" in demo.daemon.tail(), "the failure logged")


def test_sigterm_stops_it_cleanly(database: LabDatabase, launch: Callable[..., Demo]) -> None:
    demo = launch(database.dsn, pool=2)
    poll(demo.healthy, "the database pool")
    get(f"{demo.url}/")
    assert demo.daemon.pid is not None
    os.kill(demo.daemon.pid, signal.SIGTERM)
    poll(lambda: not demo.daemon.alive(), "the process to exit")
    assert demo.daemon.tail().splitlines()[-1].endswith("stopped")
    assert "took too long" not in demo.daemon.tail()


def test_the_queries_answer_from_a_real_prometheus(demo: Demo, tmp_path: Path) -> None:
    require("prometheus")
    port = free_port()
    target = demo.url.removeprefix("http://")
    prometheus = start_prometheus(tmp_path / "prometheus", port=port, scrape_targets=[target])
    done = threading.Event()

    def traffic() -> None:  # queries are rates: they need requests in their window
        while not done.wait(0.02):
            get(f"{demo.url}/")

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        settings = prometheus_queries("10s")
        url = prometheus_url(port)
        for name, text in settings["queries"].items():
            query = parse_template(text).render({"class": "gold", "dc": "dc1"})
            got = wait_for_series(url, query, timeout_s=45)
            if name == "share":
                assert got == pytest.approx(1.0)
            elif name == "p99_ms":
                assert 0 < got <= 2000
            else:
                assert 0 <= got <= 1, (name, got)
        for text in settings["dc_queries"].values():
            wait_for_series(url, parse_template(text, frozenset({"dc"})).render({"dc": "dc1"}),
                            timeout_s=45)
        for name, query in grouped_queries("10s").items():
            answer = httpx.get(f"{url}/api/v1/query", params={"query": query}, trust_env=False)
            [series] = answer.json()["data"]["result"]
            assert series["metric"] == {"class": "gold", "dc": "dc1"}, name
    finally:
        done.set()
        sender.join(timeout=10)
        prometheus.stop()
