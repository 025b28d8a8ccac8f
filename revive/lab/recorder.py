"""Watch a lab recovery second by second, from the users' side and the tools' side.

RTO of a tier in the lab: from the fire until, for every traffic class of the tier's services,

- the GSLB sends none of the class's users to the lost DC (HAProxy's weights, read through
  the traffic adapter), and
- the users of the class succeed again as often as before the fire, within ``tolerance``,
  and keep doing so for ``hold_s`` seconds (the load generator's per-second lines).

The second condition is what users feel; the first is what the issue's rule asks of
traffic. Measured on real processes, not on what the runbook believed. The ramp series is
the targets' worst database utilisation and hit ratio, the moved share and the users'
error ratio, one point a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from revive.drill.recorder import Point
from revive.errors import OpsError
from revive.lab.estate import LabState, read_lines
from revive.lab.loadgen import recovered_at, success_ratio
from revive.topology import Topology


@dataclass
class LabRecorder:
    """Samples the lab every ``every_s`` while a drill runs; judges each tier's RTO."""

    state: LabState
    topology: Topology
    tools: Any
    lost_dc: str
    target_dcs: list[str]
    t0: float = field(default_factory=time.time)
    every_s: float = 1.0
    tolerance: float = 0.01
    hold_s: int = 5
    db_limit: float = 0.9
    fault_at: float | None = None
    baseline: dict[str, float] = field(default_factory=dict)
    points: list[Point] = field(default_factory=list)
    drained_at: dict[str, float] = field(default_factory=dict)
    weights: dict[str, dict[str, float]] = field(default_factory=dict)
    peak_db_util: float = 0.0
    breach_seconds: int = 0
    _task: asyncio.Task[None] | None = None

    @property
    def classes(self) -> dict[str, int]:
        """Traffic class -> its priority (the lowest tier among its services)."""
        return {c.name: c.priority for c in self.topology.traffic_classes.values()}

    @property
    def tiers(self) -> list[int]:
        return sorted({s.tier for s in self.topology.services})

    def mark_baseline(self, seconds: int = 5) -> None:
        """Each class's success ratio over the last ``seconds`` before the fire."""
        lines = read_lines(self.state)
        now = max((line["t"] for line in lines), default=time.time())
        for name in self.classes:
            ratio = success_ratio(lines, name, since=now - seconds + 1, until=now + 1)
            self.baseline[name] = 1.0 if ratio is None else ratio

    def mark_fault(self) -> None:
        self.fault_at = time.time()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.every_s)

    async def sample(self) -> None:
        """One point: weights, the targets' database and cache, the users' errors."""
        now = time.time()
        with contextlib.suppress(OpsError, OSError):
            self.weights = await self.tools.traffic.class_weights()
            for name, per_dc in self.weights.items():
                if per_dc.get(self.lost_dc, 0.0) <= 1e-9:
                    self.drained_at.setdefault(name, now)
                else:
                    self.drained_at.pop(name, None)
        utils, hits = [], []
        for dc in self.target_dcs:
            with contextlib.suppress(OpsError, OSError):
                sample = await self.tools.metrics.sample(dc)
                utils.append(sample.db_util)
            for name in self.classes:
                with contextlib.suppress(OpsError, OSError):
                    hits.append((await self.tools.metrics.class_sample(name, dc)).cache_hit_ratio)
        util = max(utils, default=0.0)
        if self.fault_at is not None:
            self.peak_db_util = max(self.peak_db_util, util)
            if util > self.db_limit:
                self.breach_seconds += round(self.every_s)
        lines = read_lines(self.state)
        ratios = [success_ratio(lines, c, since=now - 4, until=now) for c in self.classes]
        seen = [r for r in ratios if r is not None]
        moved = [w.get(dc, 0.0) for w in self.weights.values() for dc in self.target_dcs]
        self.points.append(Point(
            t=round(now - self.t0, 1),
            share=round(sum(moved) / max(1, len(self.weights)), 4),
            db_util=round(util, 4),
            hit_ratio=round(min(hits, default=0.0), 4),
            error_rate=round(1.0 - min(seen, default=1.0), 4),
        ))

    def class_back_at(self, name: str) -> float | None:
        """When ``name``'s users were served again and the lost DC had none of them."""
        if self.fault_at is None:
            return None
        users = recovered_at(read_lines(self.state), name, self.baseline.get(name, 1.0),
                             self.tolerance, self.hold_s, since=self.fault_at)
        drained = self.drained_at.get(name)
        if users is None or drained is None:
            return None
        return max(users, drained)

    def rto(self, tier: int) -> float | None:
        """Seconds from the fire until every class of the tier was back (None: not yet)."""
        if self.fault_at is None:
            return None
        names = {s.traffic_class_name for s in self.topology.services
                 if s.tier == tier and s.traffic_class_name}
        backs = [self.class_back_at(n) for n in names]
        if not backs:  # a tier of back ends only: back with the first class that depends on it
            backs = [self.class_back_at(n) for n in self.classes] or [None]
        if any(b is None for b in backs):
            return None
        return round(max(b for b in backs if b is not None) - self.fault_at, 1)

    @property
    def judged(self) -> bool:
        return all(self.rto(tier) is not None for tier in self.tiers)

    @property
    def serving(self) -> bool:
        """Some users are served in the survivors now."""
        lines = read_lines(self.state)
        now = time.time()
        ratios = [success_ratio(lines, c, since=now - 4, until=now) for c in self.classes]
        return any(r for r in ratios if r)
