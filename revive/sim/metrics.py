"""The simulator's ``/metrics``: real Prometheus text exposition, and the way back to a Sample.

A ramp controller must decide from what a real one could scrape, so the simulator speaks the
same format a Prometheus exporter does. The text is built by ``prometheus_client`` (a
collector over a fresh registry, nothing global) and read back with its own parser, so the
format (escaping, ``+Inf`` for a DC without database capacity) is the real one, not a lookalike.
Like a real exporter, ``/metrics?name[]=...`` returns only the series asked for: a ramp scrapes
every few simulated seconds and needs a handful of per-DC gauges, not every service's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from revive.ramp.controller import Sample
from revive.sim.engine import Simulator
from revive.sim.load import DcMetrics

__all__ = ["SAMPLE_METRICS", "read_sample", "render"]

# Per-DC gauges read from the load model: (name suffix, help, value of DcMetrics).
_DC_GAUGES: list[tuple[str, str, str]] = [
    ("traffic_share", "Share of user traffic the DC serves.", "share"),
    ("requests_per_second", "User requests per second arriving at the DC.", "requests_rps"),
    ("db_utilisation_ratio", "Offered database load over capacity.", "db_utilisation"),
    ("db_offered_rps", "Database load offered, retries included.", "db_offered_rps"),
    ("db_goodput_rps", "Database requests served usefully.", "db_goodput_rps"),
    ("db_capacity_rps", "Database capacity of the healthy instances.", "db_capacity_rps"),
    ("cache_hit_ratio", "Cache hit ratio of the users the DC serves.", "cache_hit_ratio"),
    ("error_ratio", "Share of user requests that fail.", "error_rate"),
    ("retry_ratio", "Retries per first attempt at the database.", "retry_ratio"),
    ("surge_rps", "Database load of users reconnecting.", "surge_rps"),
]


class _SimCollector(Collector):
    """Yields every gauge of one simulator as it stands at ``collect`` time."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def collect(self) -> Iterator[Metric]:
        yield from self._time_and_dcs()
        yield from self._services()
        yield from self._tools_and_config()

    def _time_and_dcs(self) -> Iterable[Metric]:
        sim, estate = self.sim, self.sim.estate
        t = GaugeMetricFamily("revive_sim_time_seconds", "Virtual seconds since start.")
        t.add_metric([], sim.clock.now)
        up = _gauge("dc_up", "1 if the DC has power.", ["dc"])
        quota = _gauge("quota_remaining", "Spare instances the compute API grants.", ["dc"])
        weight = _gauge("gslb_weight", "GSLB weight of the DC (weights sum to 1).", ["dc"])
        p99 = _gauge("p99_latency_seconds", "p99 latency of user requests.", ["dc"])
        per_dc = {name: _gauge(name, doc, ["dc"]) for name, doc, _ in _DC_GAUGES}
        weights = estate.weights
        for dc in sim.dcs:
            up.add_metric([dc], 1.0 if estate.dc_up(dc) else 0.0)
            quota.add_metric([dc], estate.quota(dc))
            weight.add_metric([dc], weights[dc])
            m: DcMetrics = sim.metrics[dc]
            p99.add_metric([dc], m.p99_ms / 1000.0)
            for name, _, field in _DC_GAUGES:
                per_dc[name].add_metric([dc], float(getattr(m, field)))
        return [t, up, *per_dc.values(), p99, quota, weight]

    def _services(self) -> Iterable[Metric]:
        sim, estate = self.sim, self.sim.estate
        labels = ["dc", "service"]
        instances = _gauge("service_instances", "Instances of the service in the DC.", labels)
        healthy = _gauge("service_healthy_instances", "Healthy instances (truth).", labels)
        version = _gauge(
            "service_version_info", "Version the service runs (value 1).", [*labels, "version"]
        )
        for svc in sim.topology.services:
            for dc in sim.dcs:
                view = estate.state(svc.name, dc)
                if not view.exists:
                    continue
                instances.add_metric([dc, svc.name], view.instances)
                healthy.add_metric([dc, svc.name], view.healthy)
                version.add_metric([dc, svc.name, view.version], 1.0)
        return [instances, healthy, version]

    def _tools_and_config(self) -> Iterable[Metric]:
        sim, estate = self.sim, self.sim.estate
        replica = _gauge("ops_tool_replica_up", "1 if the replica is reachable.", ["tool", "dc"])
        for name, tool in sim.topology.ops_tools.items():
            for dc in tool.replicas:
                replica.add_metric([name, dc], 1.0 if estate.replica(name, dc).reachable else 0.0)
        flag = _gauge("feature_enabled", "1 if the feature flag is on.", ["service", "feature"])
        for (service, feature), on in estate.flags.items():
            flag.add_metric([service, feature], 1.0 if on else 0.0)
        return [replica, flag]


def _gauge(suffix: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"revive_{suffix}", doc, labels=labels)


#: The series ``read_sample`` reads: what a scrape for the ramp controller asks for.
SAMPLE_METRICS: tuple[str, ...] = (
    "revive_sim_time_seconds", "revive_dc_up", "revive_traffic_share",
    "revive_db_utilisation_ratio", "revive_p99_latency_seconds", "revive_error_ratio",
    "revive_retry_ratio", "revive_cache_hit_ratio",
)


def render(sim: Simulator, names: Iterable[str] = ()) -> str:
    """The simulator's current state as Prometheus text exposition (format 0.0.4); only
    the series in ``names`` when it is given (an exporter's ``name[]`` filter)."""
    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    registry.register(_SimCollector(sim))
    names = list(names)
    return generate_latest(registry.restricted_registry(names) if names else registry).decode(
        "utf-8")


def read_sample(text: str, dc: str) -> Sample:
    """Parse exposition text into the ramp controller's Sample for ``dc``.

    Raises KeyError naming the DC (and those present) if the text has no series for it.
    """
    values: dict[str, dict[str, float]] = {}
    now: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "revive_sim_time_seconds":
                now = sample.value
            elif set(sample.labels) == {"dc"}:
                values.setdefault(sample.name, {})[sample.labels["dc"]] = sample.value
    if now is None:
        raise KeyError("no revive_sim_time_seconds in the metrics text")
    known = values.get("revive_dc_up", {})
    if dc not in known:
        have = ", ".join(sorted(known)) or "none"
        raise KeyError(f"no metrics for datacenter {dc!r} (have: {have})")

    def get(suffix: str) -> float:
        return values[f"revive_{suffix}"][dc]

    return Sample(
        t=now,
        share=get("traffic_share"),
        db_util=get("db_utilisation_ratio"),
        p99_ms=get("p99_latency_seconds") * 1000.0,
        error_rate=get("error_ratio"),
        retry_ratio=get("retry_ratio"),
        cache_hit_ratio=get("cache_hit_ratio"),
    )
