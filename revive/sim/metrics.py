"""The simulator's ``/metrics``: real Prometheus text exposition, and the way back to a Sample.

A ramp controller must decide from what a real one could scrape, so the simulator speaks the
same format a Prometheus exporter does. The text is built by ``prometheus_client`` (a
collector over a fresh registry, nothing global) and read back with its own parser, so the
format (escaping, ``+Inf`` for a DC without database capacity) is the real one, not a lookalike.
Like a real exporter, ``/metrics?name[]=...`` returns only the series asked for: a ramp scrapes
every few simulated seconds and needs a handful of per-DC gauges, not every service's.

Traffic moves per traffic class, so next to each DC's series there are per-(class, DC) ones
(labels ``class`` and ``dc``): what a class's own users see, which is what a ramp that moves
one class at a time must watch. The database series stay per DC: every class shares it.
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

# Per-(class, DC) gauges: (name suffix, help, value of ClassMetrics, scale to the unit).
_CLASS_GAUGES: list[tuple[str, str, str, float]] = [
    ("class_traffic_share", "GSLB weight of the class in the DC (a class's sum to 1).",
     "share", 1.0),
    ("class_requests_per_second", "User requests per second of the class arriving at the DC.",
     "requests_rps", 1.0),
    ("class_cache_hit_ratio", "Cache hit ratio of the class's users in the DC.",
     "cache_hit_ratio", 1.0),
    ("class_error_ratio", "Share of the class's user requests in the DC that fail.",
     "error_rate", 1.0),
    ("class_p99_latency_seconds", "p99 latency of the class's user requests in the DC.",
     "p99_ms", 0.001),
]


class _SimCollector(Collector):
    """Yields every gauge of one simulator as it stands at ``collect`` time."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    def collect(self) -> Iterator[Metric]:
        yield from self._time_and_dcs()
        yield from self._classes()
        yield from self._services()
        yield from self._tools_and_config()

    def _time_and_dcs(self) -> Iterable[Metric]:
        sim, estate = self.sim, self.sim.estate
        t = GaugeMetricFamily("revive_sim_time_seconds", "Virtual seconds since start.")
        t.add_metric([], sim.clock.now)
        up = _gauge("dc_up", "1 if the DC has power.", ["dc"])
        quota = _gauge(
            "quota_remaining", "Spare instances the compute API grants (+Inf: no limit).", ["dc"]
        )
        weight = _gauge("gslb_weight", "GSLB weight of the DC (weights sum to 1).", ["dc"])
        p99 = _gauge("p99_latency_seconds", "p99 latency of user requests.", ["dc"])
        per_dc = {name: _gauge(name, doc, ["dc"]) for name, doc, _ in _DC_GAUGES}
        weights = estate.weights
        for dc in sim.dcs:
            up.add_metric([dc], 1.0 if estate.dc_up(dc) else 0.0)
            left = estate.quota(dc)
            quota.add_metric([dc], float("inf") if left is None else left)
            weight.add_metric([dc], weights[dc])
            m: DcMetrics = sim.metrics[dc]
            p99.add_metric([dc], m.p99_ms / 1000.0)
            for name, _, field in _DC_GAUGES:
                per_dc[name].add_metric([dc], float(getattr(m, field)))
        return [t, up, *per_dc.values(), p99, quota, weight]

    def _classes(self) -> Iterable[Metric]:
        sim = self.sim
        labels = ["class", "dc"]
        gauges = [(_gauge(name, doc, labels), field, scale)
                  for name, doc, field, scale in _CLASS_GAUGES]
        for (traffic_class, dc), m in sim.class_metrics.items():
            for gauge, field, scale in gauges:
                gauge.add_metric([traffic_class, dc], float(getattr(m, field)) * scale)
        return [gauge for gauge, _, _ in gauges]

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
    *(f"revive_{name}" for name, _, _, _ in _CLASS_GAUGES),
)


def render(sim: Simulator, names: Iterable[str] = ()) -> str:
    """The simulator's current state as Prometheus text exposition (format 0.0.4); only
    the series in ``names`` when it is given (an exporter's ``name[]`` filter)."""
    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    registry.register(_SimCollector(sim))
    names = list(names)
    return generate_latest(registry.restricted_registry(names) if names else registry).decode(
        "utf-8")


def read_sample(text: str, dc: str, traffic_class: str | None = None) -> Sample:
    """Parse exposition text into the ramp controller's Sample for ``dc``.

    With ``traffic_class``, the share, error rate, p99 and hit ratio are that class's in
    ``dc`` (what its users see) and the database utilisation and retry ratio the DC's (the
    pool every class shares). Raises KeyError naming the DC or class and those present if
    the text has no series for it.
    """
    values: dict[str, dict[str, float]] = {}
    per_class: dict[str, dict[tuple[str, str], float]] = {}
    now: float | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "revive_sim_time_seconds":
                now = sample.value
            elif set(labels) == {"dc"}:
                values.setdefault(sample.name, {})[labels["dc"]] = sample.value
            elif set(labels) == {"class", "dc"}:
                key = (labels["class"], labels["dc"])
                per_class.setdefault(sample.name, {})[key] = sample.value
    if now is None:
        raise KeyError("no revive_sim_time_seconds in the metrics text")
    known = values.get("revive_dc_up", {})
    if dc not in known:
        have = ", ".join(sorted(known)) or "none"
        raise KeyError(f"no metrics for datacenter {dc!r} (have: {have})")

    def get(suffix: str) -> float:
        return values[f"revive_{suffix}"][dc]

    if traffic_class is None:
        share, p99_s = get("traffic_share"), get("p99_latency_seconds")
        errors, hits = get("error_ratio"), get("cache_hit_ratio")
    else:
        shares = per_class.get("revive_class_traffic_share", {})
        if (traffic_class, dc) not in shares:
            have = ", ".join(sorted({c for c, _ in shares})) or "none"
            raise KeyError(f"no metrics for traffic class {traffic_class!r} in {dc!r} "
                           f"(have classes: {have})")

        def of(suffix: str) -> float:
            return per_class[f"revive_class_{suffix}"][traffic_class, dc]

        share, p99_s = of("traffic_share"), of("p99_latency_seconds")
        errors, hits = of("error_ratio"), of("cache_hit_ratio")
    return Sample(
        t=now,
        share=share,
        db_util=get("db_utilisation_ratio"),
        p99_ms=p99_s * 1000.0,
        error_rate=errors,
        retry_ratio=get("retry_ratio"),
        cache_hit_ratio=hits,
    )
