"""The simulator: an estate, its load model and one virtual clock, advanced together.

The estate (``estate.py``) answers what exists, what is healthy and what each action does;
the load model (``load.py``) answers what the traffic does to caches and databases. Every
virtual second the engine reads the estate's views into the load model's inputs, so every
runbook action shows up in the metrics: instances add capacity, the retry policy changes
amplification, feature flags add load, GSLB weights move users, restarts and patches stop
callers from calling a dead DC through cached IPs.
"""

from __future__ import annotations

import numpy as np

from revive.sim.clock import VirtualClock
from revive.sim.config import SimConfig
from revive.sim.estate import Estate
from revive.sim.load import DcInputs, DcMetrics, LoadModel
from revive.topology import Service, Topology


def database_services(topology: Topology, config: SimConfig) -> list[Service]:
    """The DB bottleneck: configured names, else storage-group services named like a DB."""
    if config.database_services is not None:
        return [topology.service(name) for name in config.database_services]
    found = [s for s in topology.services if s.group == "storage" and "db" in s.name]
    found = found or [s for s in topology.services if "db" in s.name]
    if not found:
        raise ValueError("no database services: name them in SimConfig.database_services")
    return found


class Simulator:
    """A whole simulated estate; time moves only through ``clock``."""

    def __init__(
        self, topology: Topology, *, seed: int = 0, config: SimConfig | None = None
    ) -> None:
        self.topology = topology
        self.config = config or SimConfig()
        self.seed = seed
        self.clock = VirtualClock()
        self.estate = Estate(topology, clock=self.clock, config=self.config, seed=seed)
        self.dcs = topology.dc_names
        self.db_services = database_services(topology, self.config)
        self._db_names = {s.name for s in self.db_services}
        self.load = LoadModel(
            self.dcs,
            sum(s.peak_load for s in self.db_services),
            self.config,
            seed=seed,
            shares=self.estate.weights,
        )
        self.load.warm_up()
        self._others = [s for s in topology.services if s.name not in self._db_names]
        peaks = np.array([s.peak_load for s in self._others], dtype=float)
        self._peak_share = peaks / peaks.sum() if peaks.sum() > 0 else peaks
        self._peaks = peaks
        self._full_cost = np.array([sum(f.cost for f in s.features) for s in self._others])
        all_peak = sum(s.peak_load for s in topology.services)
        self._full_factor = 1.0 + sum(
            s.peak_load * sum(f.cost for f in s.features) for s in topology.services
        ) / max(all_peak, 1e-9)
        self._seen_version = -1
        self._inputs: dict[str, DcInputs] = {}
        self._seen_weights = self.estate.weights
        self._seen_up = {dc: True for dc in self.dcs}
        self.clock.add_ticker(self._tick, every=self.config.tick_s)

    # --- what the load model sees ------------------------------------------------------------

    @property
    def metrics(self) -> dict[str, DcMetrics]:
        return self.load.metrics

    def _sync(self) -> None:
        """Re-read the estate after any change (its log grows with every change)."""
        version = len(self.estate.log)
        if version == self._seen_version:
            return
        self._seen_version = version
        estate = self.estate
        for dc in self.dcs:
            up = estate.dc_up(dc)
            if self._seen_up[dc] and not up:
                self.load.power_loss(dc)
            self._seen_up[dc] = up
        weights = estate.weights
        if weights != self._seen_weights:
            self.load.set_shares(weights, self.clock.now)
            self._seen_weights = weights
        cost = {s.name: estate.enabled_feature_cost(s.name) for s in self.topology.services}
        enabled = np.array([cost[s.name] for s in self._others])
        all_peak = max(sum(s.peak_load for s in self.topology.services), 1e-9)
        extra = sum(s.peak_load * cost[s.name] for s in self.topology.services) / all_peak
        feature_factor = (1.0 + extra) / self._full_factor
        service_factor = (1.0 + enabled) / (1.0 + self._full_cost)
        stale = {
            (svc, dc) for svc, dc, target in estate.stale_ip_services() if not estate.dc_up(target)
        }
        n = len(self._others)
        capacity = {
            dc: np.array([estate.healthy_capacity(dc, s.name) for s in self._others])
            for dc in self.dcs
        }
        exists = {
            dc: np.array([estate.state(s.name, dc).exists for s in self._others]) for dc in self.dcs
        }
        # Where a DC's requests for each service are served: locally if the service exists
        # there, else in the first powered DC that has it (a cross-DC call), else nowhere (-1).
        route = {}
        for dc in self.dcs:
            target = np.full(n, -1)
            for j, other in enumerate(self.dcs):
                if other == dc or not estate.dc_up(other):
                    continue
                target = np.where((target < 0) & exists[other], j, target)
            here = self.dcs.index(dc)
            route[dc] = np.where(exists[dc] & estate.dc_up(dc), here, target)
        self._routing = (capacity, service_factor, route, stale)
        for dc in self.dcs:
            self._inputs[dc] = DcInputs(
                up=estate.dc_up(dc),
                db_capacity=sum(estate.healthy_capacity(dc, s.name) for s in self.db_services),
                feature_factor=feature_factor,
                retry_policy=estate.retry_policy,
            )

    def _service_errors(self) -> dict[str, float]:
        """Per DC, the share of its requests that services reject: too small for the load
        routed to them, absent from every powered DC, or called through an IP cached for a
        dead DC. Each service counts by its share of the load."""
        capacity, factor, route, stale = self._routing
        shares = self.load.shares
        demand = {dc: self._peaks * shares.get(dc, 0.0) * factor for dc in self.dcs}
        load_at = {dc: np.zeros(len(self._others)) for dc in self.dcs}
        for origin in self.dcs:
            for j, dc in enumerate(self.dcs):
                load_at[dc] += np.where(route[origin] == j, demand[origin], 0.0)
        overflow = {}
        for dc in self.dcs:
            total = load_at[dc]
            overflow[dc] = np.divide(
                np.clip(total - capacity[dc], 0.0, None), total,
                out=np.zeros_like(total), where=total > 0,
            )
        errors = {}
        for origin in self.dcs:
            if shares.get(origin, 0.0) <= 0:
                errors[origin] = 0.0  # no users, no failed requests
                continue
            rejected = np.ones(len(self._others))
            for j, dc in enumerate(self.dcs):
                rejected = np.where(route[origin] == j, overflow[dc], rejected)
            stale_here = np.array([(s.name, origin) in stale for s in self._others])
            rejected = np.where(stale_here, 1.0, rejected)
            errors[origin] = float(self._peak_share @ rejected)
        return errors

    def _tick(self, now: float, dt: float) -> None:
        self._sync()
        inputs = {}
        errors = self._service_errors()
        for dc in self.dcs:
            given = self._inputs[dc]
            error = errors[dc]
            inputs[dc] = DcInputs(
                up=given.up,
                db_capacity=given.db_capacity,
                feature_factor=given.feature_factor,
                service_error=error,
                retry_policy=given.retry_policy,
            )
        self.load.step(now, dt, inputs)

    # --- time --------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.clock.advance_to(self.clock.now + seconds)

    def predicted_db_utilisation(self, dc: str, share: float) -> float:
        """The oracle's look-ahead: utilisation next tick if ``dc`` took ``share`` now."""
        self._sync()
        given = self._inputs[dc]
        if given.db_capacity <= 0:
            return float("inf")
        first = self.load.predict_first_load(
            dc, share, self.clock.now, feature_factor=given.feature_factor
        )
        return first / given.db_capacity
