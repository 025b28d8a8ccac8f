"""Watch a simulated recovery second by second and compute its RTO per tier.

RTO of a tier: from the fault to the first simulated second at which every service of the
tier is served in full, that is, for each of them:

- all of its traffic class's users are on the survivors (none left in the lost DC);
- its healthy instances in the target DCs carry the load they now send it (for a database
  or a cache: their share of every class's load); a DC that does not run a service sends
  its requests to one that does, so capacity counts over the targets together;
- its class's error rate in every target is within ``error_limit`` of what the class saw
  there just before the fault.

Measured on the simulator's true state, not on what the runbook saw. A tier that comes back
and falls out again keeps its first time; ``lapses`` counts such falls. The ramp series
sums what the targets serve and shows the worst of their database utilisation, hit ratio
and error rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from revive.planning.shares import dc_load_share
from revive.sim import Simulator
from revive.topology import Service


@dataclass
class Point:
    t: float
    share: float
    db_util: float
    hit_ratio: float
    error_rate: float


@dataclass
class Recorder:
    sim: Simulator
    lost_dc: str
    target_dcs: list[str]
    error_limit: float = 0.01
    db_limit: float = 0.9
    every_s: float = 10.0
    fault_at: float | None = None
    baseline_error: dict[tuple[str, str], float] = field(default_factory=dict)
    points: list[Point] = field(default_factory=list)
    recovered_at: dict[int, float] = field(default_factory=dict)
    lapses: dict[int, int] = field(default_factory=dict)
    peak_db_util: float = 0.0
    breach_seconds: int = 0

    def __post_init__(self) -> None:
        topology = self.sim.topology
        self._tiers: dict[int, list[Service]] = {}
        for svc in topology.services:
            self._tiers.setdefault(svc.tier, []).append(svc)
        self._back: dict[int, bool] = {}
        self.sim.clock.add_ticker(self._tick, every=1.0)

    @property
    def tiers(self) -> list[int]:
        return sorted(self._tiers)

    @property
    def judged(self) -> bool:
        """Every tier is back (its RTO is known)."""
        return all(tier in self.recovered_at for tier in self._tiers)

    def mark_fault(self) -> None:
        self.fault_at = self.sim.clock.now
        self.baseline_error = {key: m.error_rate for key, m in self.sim.class_metrics.items()}

    def _tick(self, now: float, dt: float) -> None:
        metrics = [self.sim.metrics[dc] for dc in self.target_dcs]
        util = max(m.db_utilisation for m in metrics)
        if not self.points or now - self.points[-1].t >= self.every_s:
            self.points.append(Point(
                now, sum(m.share for m in metrics), util,
                min(m.cache_hit_ratio for m in metrics), max(m.error_rate for m in metrics)))
        if self.fault_at is None:
            return
        self.peak_db_util = max(self.peak_db_util, util)
        healthy_traffic = all(self._class_ok(c) for c in self.sim.topology.traffic_classes)
        if util > self.db_limit or not healthy_traffic:
            self.breach_seconds += 1
        weights = self.sim.estate.class_weights
        loads = {dc: dc_load_share(self.sim.topology, weights, dc) for dc in self.target_dcs}
        for tier, services in self._tiers.items():
            back = all(self._served(svc, weights, loads) for svc in services)
            if back and tier not in self.recovered_at:
                self.recovered_at[tier] = now
            elif not back and self._back.get(tier):
                self.lapses[tier] = self.lapses.get(tier, 0) + 1
            self._back[tier] = back

    def _class_ok(self, traffic_class: str) -> bool:
        """The class's error rate in every target within the limit of its pre-fault rate."""
        return all(
            self.sim.class_metrics[traffic_class, dc].error_rate
            <= self.baseline_error.get((traffic_class, dc), 0.0) + self.error_limit
            for dc in self.target_dcs)

    def _served(self, svc: Service, weights: dict[str, dict[str, float]],
                loads: dict[str, float]) -> bool:
        cls = svc.traffic_class_name
        if cls is not None and (weights[cls].get(self.lost_dc, 0.0) > 1e-9
                                or not self._class_ok(cls)):
            return False
        # Requests for a service a DC does not run go to a DC that does: capacity counts
        # over the targets together.
        load = sum(weights[cls].get(dc, 0.0) if cls is not None else loads[dc]
                   for dc in self.target_dcs) * svc.peak_load
        capacity = sum(self.sim.estate.healthy_capacity(dc, svc.name) for dc in self.target_dcs)
        return capacity >= load - 1e-6

    @property
    def serving(self) -> bool:
        """Some users are served in the survivors (the opposite of a failed recovery)."""
        return any(m.share * (1.0 - m.error_rate) > 1e-6
                   for dc in self.target_dcs if (m := self.sim.metrics[dc]))

    def rto(self, tier: int) -> float | None:
        if self.fault_at is None or tier not in self.recovered_at:
            return None
        return self.recovered_at[tier] - self.fault_at
