"""Watch a simulated recovery second by second and compute its RTO per tier.

RTO of a tier: from the fault to the first simulated second at which every service of the
tier is healthy in the target DC, the target DC carries all the traffic, and its error
rate is within the limit of what it was before the fault. Measured on the simulator's true
state, not on what the runbook saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from revive.sim import Simulator


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
    target_dc: str
    error_limit: float = 0.01
    db_limit: float = 0.9
    every_s: float = 10.0
    fault_at: float | None = None
    baseline_error: float = 0.0
    points: list[Point] = field(default_factory=list)
    recovered_at: dict[int, float] = field(default_factory=dict)
    peak_db_util: float = 0.0
    breach_seconds: int = 0

    def __post_init__(self) -> None:
        topology = self.sim.topology
        self._tiers: dict[int, list[str]] = {}
        for svc in topology.services:
            self._tiers.setdefault(svc.tier, []).append(svc.name)
        self.sim.clock.add_ticker(self._tick, every=1.0)

    def mark_fault(self) -> None:
        self.fault_at = self.sim.clock.now
        self.baseline_error = self.sim.metrics[self.target_dc].error_rate

    def _tick(self, now: float, dt: float) -> None:
        m = self.sim.metrics[self.target_dc]
        if not self.points or now - self.points[-1].t >= self.every_s:
            self.points.append(
                Point(now, m.share, m.db_utilisation, m.cache_hit_ratio, m.error_rate)
            )
        if self.fault_at is None:
            return
        self.peak_db_util = max(self.peak_db_util, m.db_utilisation)
        healthy_traffic = m.error_rate <= self.baseline_error + self.error_limit
        if m.db_utilisation > self.db_limit or not healthy_traffic:
            self.breach_seconds += 1
        if m.share < 1.0 - 1e-9 or not healthy_traffic:
            return
        estate = self.sim.estate
        for tier, names in self._tiers.items():
            if tier in self.recovered_at:
                continue
            if all(estate.state(n, self.target_dc).healthy > 0 for n in names):
                self.recovered_at[tier] = now

    def rto(self, tier: int) -> float | None:
        if self.fault_at is None or tier not in self.recovered_at:
            return None
        return self.recovered_at[tier] - self.fault_at
