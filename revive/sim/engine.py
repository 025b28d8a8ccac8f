"""The simulator: an estate, its load model and one virtual clock, advanced together.

The estate (``estate.py``) answers what exists, what is healthy and what each action does;
the load model (``load.py``) answers what the traffic does to caches and databases. Every
virtual second the engine reads the estate's views into the load model's inputs, so every
runbook action shows up in the metrics: instances add capacity, the retry policy changes
amplification, feature flags add load to their class, GSLB weights move a class's users,
restarts and patches stop callers from calling a dead DC through cached IPs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from revive.sim.clock import VirtualClock
from revive.sim.config import SimConfig
from revive.sim.estate import Estate
from revive.sim.load import ClassMetrics, DcInputs, DcMetrics, LoadModel
from revive.topology import Topology, require_databases


class Simulator:
    """A whole simulated estate; time moves only through ``clock``."""

    def __init__(
        self, topology: Topology, *, seed: int = 0, config: SimConfig | None = None
    ) -> None:
        self.topology = topology
        self.config = config or topology.simulation
        self.seed = seed
        self.clock = VirtualClock()
        self.estate = Estate(topology, clock=self.clock, config=self.config, seed=seed)
        self.dcs = topology.dc_names
        self.db_services = require_databases(topology, "the simulator")
        self._db_names = {s.name for s in self.db_services}
        self.traffic_classes = list(self.estate.class_load_shares)
        self.load = LoadModel(
            self.dcs,
            sum(s.peak_load for s in self.db_services),
            self.config,
            seed=seed,
            classes=self.estate.class_load_shares,
            class_shares=self.estate.class_weights,
        )
        self.load.warm_up()
        self._others = [s for s in topology.services if s.name not in self._db_names]
        self._peaks = np.array([s.peak_load for s in self._others], dtype=float)
        self._full_cost = np.array([sum(f.cost for f in s.features) for s in self._others])
        # Which row of the routing weights each service's demand follows: its class's, or,
        # for a service of no class (a cache), the DC's share of all users (the last row).
        index = {name: c for c, name in enumerate(self.traffic_classes)}
        n_classes = len(self.traffic_classes)
        self._row = np.array([index.get(s.traffic_class_name or "", n_classes)
                              for s in self._others])
        # Each class's errors weigh its own services by their peak within the class.
        self._in_class = np.zeros((n_classes, len(self._others)))
        for j, row in enumerate(self._row):
            if row < n_classes:
                self._in_class[row, j] = 1.0
        weight = self._in_class * np.where(self._peaks > 0, self._peaks, 1e-12)
        totals = weight.sum(axis=1, keepdims=True)
        self._members = np.divide(weight, totals, out=np.zeros_like(weight), where=totals > 0)
        self._seen_version = -1
        self._inputs: dict[str, DcInputs] = {}
        self._class_features: dict[str, float] = {}
        self._seen_weights = self.estate.class_weights
        self._seen_up = {dc: True for dc in self.dcs}
        self.clock.add_ticker(self._tick, every=self.config.tick_s)

    # --- what the load model sees ------------------------------------------------------------

    @property
    def metrics(self) -> dict[str, DcMetrics]:
        """Per DC, over every class it serves: what the drill report and the ramp bench read."""
        return self.load.metrics

    @property
    def class_metrics(self) -> dict[tuple[str, str], ClassMetrics]:
        """Per (traffic class, DC): what that class's users see."""
        return self.load.class_metrics

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
        weights = estate.class_weights
        for name, per_dc in weights.items():
            if per_dc != self._seen_weights.get(name):
                self.load.set_class_shares(name, per_dc, self.clock.now)
        self._seen_weights = weights
        enabled = np.array([estate.enabled_feature_cost(s.name) for s in self._others])
        self._class_features = self._feature_factors(enabled)
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
        stale_at = {
            dc: np.array([(s.name, dc) in stale for s in self._others]) for dc in self.dcs
        }
        self._routing = (capacity, service_factor, route, stale_at)
        for dc in self.dcs:
            self._inputs[dc] = DcInputs(
                up=estate.dc_up(dc),
                db_capacity=sum(estate.healthy_capacity(dc, s.name) for s in self.db_services),
                retry_policy=estate.retry_policy,
                class_features=self._class_features,
            )

    def _feature_factors(self, enabled: np.ndarray) -> dict[str, float]:
        """Per class, its load with the features now on over its load with every feature on:
        its own services' feature costs, weighted by their peak load (1 when all are on)."""
        on = self._in_class @ (self._peaks * (1.0 + enabled))
        full = self._in_class @ (self._peaks * (1.0 + self._full_cost))
        factors = np.divide(on, full, out=np.ones_like(on), where=full > 0)
        return {name: float(f) for name, f in zip(self.traffic_classes, factors, strict=True)}

    def _service_errors(self) -> np.ndarray:
        """(class, DC): the share of a class's requests in a DC that its services reject:
        too small for the load routed to them, absent from every powered DC, or called
        through an IP cached for a dead DC. Each service counts by its share of its class's
        peak; services of no class (caches) take load but count for no class."""
        capacity, factor, route, stale_at = self._routing
        weights = self.load.weights
        rows = np.vstack([weights, self.load.load_share @ weights])  # classes, then all users
        demand = {dc: self._peaks * rows[self._row, n] * factor for n, dc in enumerate(self.dcs)}
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
        errors = np.zeros_like(weights)
        for n, origin in enumerate(self.dcs):
            rejected = np.ones(len(self._others))
            for j, dc in enumerate(self.dcs):
                rejected = np.where(route[origin] == j, overflow[dc], rejected)
            rejected = np.where(stale_at[origin], 1.0, rejected)
            # A class with no users here has no failed requests here.
            errors[:, n] = np.where(weights[:, n] > 0, self._members @ rejected, 0.0)
        return errors

    def _tick(self, now: float, dt: float) -> None:
        self._sync()
        errors = self._service_errors()
        inputs = {}
        for n, dc in enumerate(self.dcs):
            given = self._inputs[dc]
            inputs[dc] = DcInputs(
                up=given.up,
                db_capacity=given.db_capacity,
                retry_policy=given.retry_policy,
                class_features=given.class_features,
                class_errors=dict(zip(self.traffic_classes, errors[:, n].tolist(), strict=True)),
            )
        self.load.step(now, dt, inputs)

    # --- time --------------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        self.clock.advance_to(self.clock.now + seconds)

    def predicted_db_utilisation(self, dc: str, share: float) -> float:
        """The oracle's look-ahead: utilisation next tick if ``dc`` took ``share`` now, every
        traffic class moving together (what ``Estate.set_weights`` does)."""
        self._sync()
        capacity = self._inputs[dc].db_capacity
        if capacity <= 0:
            return float("inf")
        first = self.load.predict_first_load(
            dc, share, self.clock.now, features=self._class_features
        )
        return first / capacity

    def predicted_db_utilisation_for(
        self, traffic_class: str, weights_by_dc: Mapping[str, float]
    ) -> dict[str, float]:
        """A per-class oracle's look-ahead: every DC's utilisation next tick if only
        ``traffic_class`` took these weights now (normalised; missing DCs get 0)."""
        self._sync()
        first = self.load.predict_first_loads(
            {traffic_class: weights_by_dc}, self.clock.now, features=self._class_features
        )
        out = {}
        for dc in self.dcs:
            capacity = self._inputs[dc].db_capacity
            out[dc] = first[dc] / capacity if capacity > 0 else float("inf")
        return out
