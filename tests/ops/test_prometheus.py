"""The prometheus adapter against two real Prometheus replicas scraping a test exporter.

Both replicas (dc1's and dc2's) scrape one exporter whose gauges the test sets, as real
per-DC metrics replicas each scrape every DC. Faults are real too: a replica stopped, a
replica that accepts and never answers, one that answers 503, nothing listening at all.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from revive.errors import NoDataError, PermanentOpsError, TopologyError, TransientOpsError
from revive.lab.daemon import Daemon, free_port, port_open
from revive.lab.prometheus import prometheus_url, start_prometheus, wait_for_series
from revive.ops import plugins
from revive.ops.adapters.prometheus import ADAPTER, PrometheusMetrics, PrometheusSettings
from revive.ops.interfaces import Metrics
from revive.ramp import Sample
from revive.topology import loads
from tests.factories import dump, estate, tools
from tests.ops.programs import require
from tests.ops.prometheus_servers import Exporter, exporter, silent_server
from tests.ops.replica_servers import replica_servers

T = TypeVar("T")
TOOL = "prom"
HOSTILE = 'we"ird\\cl\'ass}{dc}'
INJECTION = 'x"} or vector(1) or x{y="'
SERIES_TIMEOUT_S = 60.0
NO_HANG_S = 60.0  # a safety net against a hang, never a timing assertion

QUERIES = {
    "share": 'revive_class_share{class="{class}",dc="{dc}"}',
    "db_util": 'revive_db_utilisation_ratio{dc="{dc}"}',
    "p99_ms": '1000 * revive_class_p99_latency_seconds{class="{class}",dc="{dc}"}',
    "error_rate": 'revive_class_error_ratio{class="{class}",dc="{dc}"}',
    "retry_ratio": 'revive_retry_ratio{dc="{dc}"}',
    "cache_hit_ratio": "revive_class_cache_hit_ratio{class='{class}',dc='{dc}'}",
}
DC_QUERIES = {
    "share": 'revive_traffic_share{dc="{dc}"}',
    "db_util": 'revive_db_utilisation_ratio{dc="{dc}"}',
    "p99_ms": '1000 * revive_p99_latency_seconds{dc="{dc}"}',
    "error_rate": 'revive_error_ratio{dc="{dc}"}',
}
# class -> dc -> (share, p99 s, error ratio, cache hit ratio); each value tells its lane apart.
CLASSES = {
    "messaging": {"dc1": (0.6, 0.120, 0.01, 0.9), "dc2": (0.4, 0.250, 0.02, 0.5)},
    "calls": {"dc1": (0.3, 0.080, 0.03, 0.7), "dc2": (0.7, 0.300, 0.04, 0.2)},
    HOSTILE: {"dc1": (0.55, 0.5, 0.05, 0.6), "dc2": (0.45, 0.6, 0.06, 0.4)},
}
DCS = {"dc1": (0.5, 0.72, 0.15, 0.200, 0.011), "dc2": (0.5, 0.41, 0.05, 0.150, 0.007)}


def run(main: Coroutine[Any, Any, T]) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main, NO_HANG_S)

    return asyncio.run(bounded())


def feed(source: Exporter) -> None:
    for cls, lanes in CLASSES.items():
        for dc, (share, p99, errors, hits) in lanes.items():
            source.set("revive_class_share", share, **{"class": cls, "dc": dc})
            source.set("revive_class_p99_latency_seconds", p99, **{"class": cls, "dc": dc})
            source.set("revive_class_error_ratio", errors, **{"class": cls, "dc": dc})
            source.set("revive_class_cache_hit_ratio", hits, **{"class": cls, "dc": dc})
    for dc, (share, util, retries, p99, errors) in DCS.items():
        source.set("revive_traffic_share", share, dc=dc)
        source.set("revive_db_utilisation_ratio", util, dc=dc)
        source.set("revive_retry_ratio", retries, dc=dc)
        source.set("revive_p99_latency_seconds", p99, dc=dc)
        source.set("revive_error_ratio", errors, dc=dc)
    source.set("revive_unbounded_ratio", math.inf)


@dataclass
class Estate:
    """Two Prometheus replicas (dc1, dc2) that have both scraped the exporter."""

    urls: dict[str, str]
    exporter: Exporter
    tmp: Path


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    require("prometheus", "prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    daemons: list[Daemon] = []
    with exporter() as source:
        feed(source)
        try:
            urls: dict[str, str] = {}
            for dc in ("dc1", "dc2"):
                port = free_port()
                daemons.append(start_prometheus(tmp / dc, port=port, name=f"prometheus-{dc}",
                                                scrape_targets=[source.target],
                                                external_labels={"replica": dc}))
                urls[dc] = prometheus_url(port)
            for url in urls.values():  # the last series the exporter shows, on each replica
                wait_for_series(url, "revive_retry_ratio{dc='dc2'}", SERIES_TIMEOUT_S)
            yield Estate(urls, source, tmp)
        finally:
            for daemon in daemons:
                daemon.stop()


def tool_entry(replicas: dict[str, str], **settings: Any) -> dict[str, Any]:
    settings.setdefault("queries", QUERIES)
    if "dc_queries" in settings and settings["dc_queries"] is None:
        del settings["dc_queries"]
    else:
        settings.setdefault("dc_queries", DC_QUERIES)
    return {"kind": "metrics", "adapter": "prometheus", "replicas": replicas,
            "settings": settings}


def topology_text(entry: dict[str, Any]) -> str:
    return dump(estate(ops_tools=tools(**{TOOL: entry})))


def metrics(replicas: dict[str, str], *, run_dc: str = "dc1", timeout_s: float = 10.0,
            **settings: Any) -> PrometheusMetrics:
    """The adapter as the toolbox builds it: from a topology that passed validation."""
    topology = loads(topology_text(tool_entry(replicas, **settings)))
    tool = topology.ops_tools[TOOL]
    ctx = plugins.ToolContext(TOOL, tool, plugins.settings_of(TOOL, tool), run_dc, timeout_s,
                              topology=topology)
    made = ADAPTER.factory(tool.kind)
    assert made is not None
    adapter = made(ctx)
    assert isinstance(adapter, PrometheusMetrics)
    return adapter


def expected(cls: str, dc: str) -> dict[str, float]:
    share, p99, errors, hits = CLASSES[cls][dc]
    _, util, retries, _, _ = DCS[dc]
    return {"share": share, "db_util": util, "p99_ms": p99 * 1000, "error_rate": errors,
            "retry_ratio": retries, "cache_hit_ratio": hits}


def values(sample: Sample) -> dict[str, float]:
    return sample.model_dump(exclude={"t"})


# --- plug-in ---------------------------------------------------------------------------------


def test_found_through_its_entry_point_and_implements_metrics(prom: Estate) -> None:
    assert plugins.adapter("prometheus") is ADAPTER
    adapter = metrics(prom.urls)
    assert isinstance(adapter, Metrics)
    run(adapter.aclose())


# --- normal operation ------------------------------------------------------------------------


def test_class_sample_reads_every_field_of_each_lane(prom: Estate) -> None:
    async def main() -> dict[tuple[str, str], Sample]:
        adapter = metrics(prom.urls)
        try:
            return {(cls, dc): await adapter.class_sample(cls, dc)
                    for cls in ("messaging", "calls") for dc in ("dc1", "dc2")}
        finally:
            await adapter.aclose()

    samples = run(main())
    for (cls, dc), sample in samples.items():
        assert values(sample) == pytest.approx(expected(cls, dc)), (cls, dc)
        assert sample.t > 1e9  # Prometheus's own evaluation time, in Unix seconds


def test_sample_is_the_dc_level_view_from_dc_queries(prom: Estate) -> None:
    async def main() -> dict[str, Sample]:
        adapter = metrics(prom.urls)
        try:
            return {dc: await adapter.sample(dc) for dc in ("dc1", "dc2")}
        finally:
            await adapter.aclose()

    for dc, sample in run(main()).items():
        share, util, _, p99, errors = DCS[dc]
        # dc_queries leave retry_ratio and cache_hit_ratio out: the Sample's 0.0 defaults.
        assert values(sample) == pytest.approx({
            "share": share, "db_util": util, "p99_ms": p99 * 1000, "error_rate": errors,
            "retry_ratio": 0.0, "cache_hit_ratio": 0.0})


def test_sample_uses_queries_when_they_need_no_class(prom: Estate) -> None:
    dc_only = {**DC_QUERIES, "retry_ratio": QUERIES["retry_ratio"]}

    async def main() -> tuple[Sample, Sample]:
        adapter = metrics(prom.urls, queries=dc_only, dc_queries=None)
        try:
            return await adapter.sample("dc2"), await adapter.class_sample("calls", "dc2")
        finally:
            await adapter.aclose()

    sample, class_sample = run(main())
    assert sample.db_util == pytest.approx(DCS["dc2"][1])
    assert sample.retry_ratio == pytest.approx(DCS["dc2"][2])
    assert values(class_sample) == values(sample)  # nothing in queries names a class


def test_sample_follows_the_exporter(prom: Estate) -> None:
    prom.exporter.set("revive_db_utilisation_ratio", 0.93, dc="dc2")
    try:
        for url in prom.urls.values():
            wait_for_series(url, 'revive_db_utilisation_ratio{dc="dc2"}', SERIES_TIMEOUT_S,
                            until=lambda v: v == pytest.approx(0.93))

        async def main() -> Sample:
            adapter = metrics(prom.urls)
            try:
                return await adapter.class_sample("calls", "dc2")
            finally:
                await adapter.aclose()

        assert run(main()).db_util == pytest.approx(0.93)
    finally:
        prom.exporter.set("revive_db_utilisation_ratio", DCS["dc2"][1], dc="dc2")
        for url in prom.urls.values():
            wait_for_series(url, 'revive_db_utilisation_ratio{dc="dc2"}', SERIES_TIMEOUT_S,
                            until=lambda v: v == pytest.approx(DCS["dc2"][1]))


def test_query_times_one_instant_query(prom: Estate) -> None:
    async def main() -> float:
        adapter = metrics(prom.urls)
        try:
            return (await adapter.query('revive_traffic_share{dc="dc1"}')).value
        finally:
            await adapter.aclose()

    assert run(main()) == pytest.approx(0.5)


def test_probe_reports_each_replica(prom: Estate) -> None:
    async def main() -> dict[str, bool]:
        adapter = metrics(prom.urls)
        try:
            return await adapter.probe()
        finally:
            await adapter.aclose()

    assert run(main()) == {"dc1": True, "dc2": True}


# --- escaping ----------------------------------------------------------------------------------


def test_hostile_class_name_is_escaped_in_the_label_matcher(prom: Estate) -> None:
    """Quotes, a backslash, braces and even ``{dc}`` in a class name are matched literally."""

    async def main() -> Sample:
        adapter = metrics(prom.urls)
        try:
            return await adapter.class_sample(HOSTILE, "dc2")
        finally:
            await adapter.aclose()

    assert values(run(main())) == pytest.approx(expected(HOSTILE, "dc2"))


def test_injection_through_a_class_name_finds_no_data_instead_of_a_value(prom: Estate) -> None:
    async def main() -> None:
        adapter = metrics(prom.urls)
        try:
            await adapter.class_sample(INJECTION, "dc1")
        finally:
            await adapter.aclose()

    with pytest.raises(NoDataError, match="no data"):
        run(main())


def test_regex_matcher_matches_the_class_name_literally(prom: Estate) -> None:
    regex = {**QUERIES, "share": 'revive_class_share{class=~"{class}",dc=~"{dc}"}'}

    async def main(cls: str) -> float:
        adapter = metrics(prom.urls, queries=regex)
        try:
            return (await adapter.class_sample(cls, "dc1")).share
        finally:
            await adapter.aclose()

    assert run(main("calls")) == pytest.approx(0.3)
    assert run(main(HOSTILE)) == pytest.approx(0.55)
    with pytest.raises(NoDataError):
        run(main("c.lls"))  # as a regex it would match "calls"
    with pytest.raises(NoDataError):
        run(main(".*"))


# --- answers that are not a value ------------------------------------------------------------


def test_missing_series_is_no_data_never_zero(prom: Estate) -> None:
    async def main() -> None:
        adapter = metrics(prom.urls)
        try:
            await adapter.class_sample("ghost", "dc1")
        finally:
            await adapter.aclose()

    with pytest.raises(NoDataError) as caught:
        run(main())
    message = str(caught.value)
    assert "share" in message and "'ghost'" in message and "dc1" in message
    assert 'revive_class_share{class="ghost",dc="dc1"}' in message
    assert caught.value.tool == TOOL


@pytest.mark.parametrize("query", ['scalar(revive_nothing{dc="{dc}"})',
                                   'revive_unbounded_ratio + 0 * revive_retry_ratio{dc="{dc}"}'])
def test_nan_or_inf_is_no_data(prom: Estate, query: str) -> None:
    async def main() -> None:
        adapter = metrics(prom.urls, queries={**QUERIES, "db_util": query})
        try:
            await adapter.class_sample("calls", "dc1")
        finally:
            await adapter.aclose()

    with pytest.raises(NoDataError, match="db_util"):
        run(main())


def test_more_than_one_series_is_an_ambiguous_query(prom: Estate) -> None:
    async def main() -> None:
        adapter = metrics(prom.urls, queries={**QUERIES, "share": 'revive_class_share{dc="{dc}"}'})
        try:
            await adapter.class_sample("calls", "dc1")
        finally:
            await adapter.aclose()

    with pytest.raises(PermanentOpsError, match=r"ambiguous query .*revive_class_share"):
        run(main())


@pytest.mark.parametrize(("query", "error"), [
    ('sum(revive_class_share{class="{class}",dc="{dc}"}', "parse error"),
    ('revive_class_share{class="{class}",dc="{dc}"}[1m]', "returns a matrix"),
])
def test_a_query_prometheus_refuses_is_permanent(prom: Estate, query: str, error: str) -> None:
    async def main() -> None:
        adapter = metrics(prom.urls, queries={**QUERIES, "p99_ms": query})
        try:
            await adapter.class_sample("calls", "dc1")
        finally:
            await adapter.aclose()

    with pytest.raises(PermanentOpsError, match=error) as caught:
        run(main())
    assert "p99_ms" in str(caught.value)


def test_an_answer_that_is_not_prometheus_is_permanent() -> None:
    async def main(url: str) -> None:
        adapter = metrics({"dc1": url})
        try:
            await adapter.class_sample("calls", "dc1")
        finally:
            await adapter.aclose()

    with replica_servers("dc1") as servers, pytest.raises(PermanentOpsError,
                                                           match="Prometheus API"):
        run(main(servers["dc1"].url))


# --- faults ----------------------------------------------------------------------------------


def test_a_stopped_replica_fails_over_to_the_other(prom: Estate, tmp_path: Path) -> None:
    port = free_port()
    own = start_prometheus(tmp_path / "dc1", port=port, scrape_targets=[prom.exporter.target])
    replicas = {"dc1": prometheus_url(port), "dc2": prom.urls["dc2"]}

    async def main() -> tuple[dict[str, bool], Sample, dict[str, bool], str | None]:
        adapter = metrics(replicas, run_dc="dc1")
        try:
            before = await adapter.probe()
            await asyncio.to_thread(own.stop)  # dc1's replica burns with its DC
            sample = await adapter.class_sample("messaging", "dc1")
            return before, sample, await adapter.probe(), adapter.endpoint.current_dc
        finally:
            await adapter.aclose()

    try:
        before, sample, after, answered_by = run(main())
    finally:
        own.stop()
    assert before == {"dc1": True, "dc2": True}
    assert values(sample) == pytest.approx(expected("messaging", "dc1"))
    assert after == {"dc1": False, "dc2": True}
    assert answered_by == "dc2"


def test_a_replica_that_never_answers_times_out_and_fails_over(prom: Estate) -> None:
    async def main() -> tuple[Sample, dict[str, bool], str | None]:
        async with silent_server() as stuck:
            adapter = metrics({"dc1": stuck, "dc2": prom.urls["dc2"]}, timeout_s=1.0)
            try:
                sample = await adapter.class_sample("calls", "dc2")
                return sample, await adapter.probe(), adapter.endpoint.current_dc
            finally:
                await adapter.aclose()

    sample, probed, answered_by = run(main())
    assert values(sample) == pytest.approx(expected("calls", "dc2"))
    assert probed == {"dc1": False, "dc2": True}
    assert answered_by == "dc2"


def test_every_replica_stuck_is_transient() -> None:
    async def main() -> None:
        async with silent_server() as one, silent_server() as two:
            adapter = metrics({"dc1": one, "dc2": two}, timeout_s=0.3)
            try:
                await adapter.sample("dc1")
            finally:
                await adapter.aclose()

    with pytest.raises(TransientOpsError, match="every replica failed") as caught:
        run(main())
    assert not isinstance(caught.value, NoDataError)


def test_nothing_listening_is_transient_and_probes_false() -> None:
    replicas = {"dc1": prometheus_url(free_port()), "dc2": prometheus_url(free_port())}

    async def main() -> dict[str, bool]:
        adapter = metrics(replicas)
        try:
            with pytest.raises(TransientOpsError) as caught:
                await adapter.class_sample("calls", "dc1")
            assert TOOL in str(caught.value) and "every replica failed" in str(caught.value)
            assert not isinstance(caught.value, NoDataError)
            return await adapter.probe()
        finally:
            await adapter.aclose()

    assert run(main()) == {"dc1": False, "dc2": False}


def test_a_replica_answering_503_fails_over(prom: Estate) -> None:
    async def main(url: str) -> Sample:
        adapter = metrics({"dc1": url, "dc2": prom.urls["dc2"]})
        try:
            return await adapter.class_sample("messaging", "dc2")
        finally:
            await adapter.aclose()

    with replica_servers("dc1") as servers:
        servers["dc1"].error(503)
        sample = run(main(servers["dc1"].url))
        assert servers["dc1"].hits  # it was asked first, and its 503 was not the answer
    assert values(sample) == pytest.approx(expected("messaging", "dc2"))


# --- settings --------------------------------------------------------------------------------

REPLICAS = {"dc1": "http://prom.dc1.example:9090", "dc2": "http://prom.dc2.example:9090"}


def problems(**settings: Any) -> str:
    with pytest.raises(TopologyError) as caught:
        loads(topology_text(tool_entry(REPLICAS, **settings)))
    return str(caught.value)


def test_valid_settings_load() -> None:
    topology = loads(topology_text(tool_entry(REPLICAS, timeout_s=2.5)))
    settings = plugins.settings_of(TOOL, topology.ops_tools[TOOL])
    assert isinstance(settings, PrometheusSettings)
    assert settings.timeout_s == 2.5
    assert settings.queries.retry_ratio == QUERIES["retry_ratio"]


def test_queries_are_required() -> None:
    text = topology_text({"kind": "metrics", "adapter": "prometheus", "replicas": REPLICAS})
    with pytest.raises(TopologyError, match=rf"ops_tools\.{TOOL}\.settings\.queries: required"):
        loads(text)


@pytest.mark.parametrize("field", ["share", "db_util", "p99_ms", "error_rate"])
def test_each_core_query_is_required(field: str) -> None:
    queries = {k: v for k, v in QUERIES.items() if k != field}
    assert f"ops_tools.{TOOL}.settings.queries.{field}: required" in problems(queries=queries)


@pytest.mark.parametrize(("query", "why"), [
    ('revive_class_share{class="{cls}"}', "unknown placeholder '{cls}'"),
    ("revive_class_share{class={class}}", "outside a string literal"),
    ("revive_class_share{class=`{class}`}", "raw"),
    ('revive_class_share{class="{ class }"}', "without blanks"),
    ('revive_class_share{class="{class}} # {dc}', "unterminated string"),
    ("", "at least 1 character"),
])
def test_bad_placeholders_are_refused_where_they_are(query: str, why: str) -> None:
    found = problems(queries={**QUERIES, "error_rate": query})
    assert f"ops_tools.{TOOL}.settings.queries.error_rate:" in found
    assert why in found


def test_dc_queries_cannot_use_class() -> None:
    found = problems(dc_queries={**DC_QUERIES, "share": 'x{class="{class}",dc="{dc}"}'})
    assert f"ops_tools.{TOOL}.settings.dc_queries.share:" in found
    assert "{class} is not available here" in found


def test_dc_queries_required_when_queries_use_class() -> None:
    found = problems(dc_queries=None)
    assert f"ops_tools.{TOOL}.settings.dc_queries:" in found
    assert "queries.share" in found and "sample(dc)" in found


@pytest.mark.parametrize(("settings", "where", "why"), [
    ({"timeout_s": 0}, "timeout_s", "greater than 0"),
    ({"timeout_s": "soon"}, "timeout_s", "valid number"),
    ({"query": "up"}, "query", "unknown setting"),
    ({"queries": {**QUERIES, "p50_ms": "x"}}, "queries.p50_ms", "unknown setting"),
])
def test_wrong_settings_are_located(settings: dict[str, Any], where: str, why: str) -> None:
    found = problems(**settings)
    assert f"ops_tools.{TOOL}.settings.{where}:" in found and why in found


def test_start_prometheus_binds_the_given_host_through_the_wrapped_command(
        tmp_path: Path) -> None:
    """``host`` is the only address it listens on; ``wrap``'s command line is what runs."""
    require("prometheus", "prometheus")
    host, port = "127.0.0.2", free_port()  # another loopback address: no namespace needed
    daemon = start_prometheus(tmp_path / "p", port=port, scrape_targets=[f"{host}:{port}"],
                              host=host,
                              wrap=lambda argv: ["env", "REVIVE_WRAPPED=prometheus", *argv])
    try:
        url = prometheus_url(port, host)
        assert url == f"http://{host}:{port}"
        assert httpx.get(f"{url}/-/ready", timeout=5).status_code == 200
        assert not port_open(port, "127.0.0.1")
        assert daemon.argv[:2] == ["env", "REVIVE_WRAPPED=prometheus"]
        environ = Path(f"/proc/{daemon.pid}/environ").read_bytes().split(b"\0")
        assert b"REVIVE_WRAPPED=prometheus" in environ  # env exec'd prometheus: same pid
    finally:
        daemon.stop()
    assert not daemon.alive()
