"""The load model: what user traffic does to each DC's cache and database, tick by tick.

Per DC and tick (docs/simulator.md has the derivation and the sources of the constants):

    reads      = D * share * features * wobble            cacheable reads, req/s
    misses     = reads * (1 - hit ratio of the served user slices)
    first      = misses + W * share * features * wobble + surge
    offered    = first * amplification(p_fail of the previous tick, retry policy)
    goodput    = offered                                   if offered <= capacity
               = capacity * max(floor, 1 - slope * (offered / capacity - 1))   otherwise
    p_fail     = 1 - goodput / offered

``D`` and ``W`` are fixed so that a fully warm DC carrying 100% of the traffic puts exactly
the topology's database ``peak_load`` on its databases. A user moving into a DC costs a
reconnect (login and state sync) worth ``surge_seconds`` of its traffic, spread over the
reconnect window. Cache fills need a successful read, so an overloaded database keeps its
cache cold; and naive clients retry failures, which raises the load again: that feedback
is the metastable failure of a 100% cutover into a cold DC.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from revive.sim.cache import CacheModel
from revive.sim.config import RetryPolicy, SimConfig


def goodput(offered: float, capacity: float, config: SimConfig) -> float:
    """Useful database throughput: past saturation it falls (congestion collapse)."""
    if offered <= capacity or capacity <= 0:
        return max(0.0, min(offered, capacity))
    overload = offered / capacity - 1.0
    return capacity * max(config.collapse_floor, 1.0 - config.collapse_slope * overload)


def amplification(
    p_fail: float, policy: RetryPolicy | None, naive_attempts: int
) -> tuple[float, float]:
    """(offered load per first attempt, share of requests that fail after all retries).

    Naive clients retry every failure up to ``naive_attempts`` in all; clients under a
    retry policy stop retrying once retries would exceed ``budget`` of first attempts.
    """
    p = max(0.0, min(1.0, p_fail))
    if policy is None:
        attempts = naive_attempts
        return sum(p**k for k in range(attempts)), p**attempts
    wanted = sum(p**k for k in range(1, policy.max_attempts))
    allowed = min(wanted, policy.budget)
    done = allowed / wanted if wanted > 0 else 1.0
    final = p * (1.0 - done) + done * p**policy.max_attempts
    return 1.0 + allowed, final


def slice_shares(shares: Mapping[str, float], slices: int) -> dict[str, np.ndarray]:
    """Which user slices each DC serves: DCs take consecutive ranges of [0, 1) by share.

    Growing one DC's share only moves the users at the border, so the users a DC already
    serves keep their warm cache entries, like consistent hashing in a GSLB.
    """
    edges = np.linspace(0.0, 1.0, slices + 1)
    out: dict[str, np.ndarray] = {}
    start = 0.0
    for dc, share in shares.items():
        end = min(1.0, start + max(0.0, share))
        overlap = np.clip(np.minimum(edges[1:], end) - np.maximum(edges[:-1], start), 0, None)
        out[dc] = overlap * slices
        start = end
    return out


@dataclass(frozen=True)
class DcInputs:
    """What the estate tells the load model about one DC for this tick."""

    up: bool
    db_capacity: float
    feature_factor: float = 1.0
    service_error: float = 0.0
    retry_policy: RetryPolicy | None = None


@dataclass
class DcMetrics:
    """One DC's state after a tick, in the units /metrics exposes."""

    share: float = 0.0
    requests_rps: float = 0.0
    cache_hit_ratio: float = 0.0
    db_first_rps: float = 0.0
    db_offered_rps: float = 0.0
    db_goodput_rps: float = 0.0
    db_capacity_rps: float = 0.0
    db_utilisation: float = 0.0
    surge_rps: float = 0.0
    retry_ratio: float = 0.0
    error_rate: float = 0.0
    p99_ms: float = 0.0


@dataclass
class _Surge:
    dc: str
    start: float
    end: float
    rate: float


@dataclass
class LoadModel:
    """Caches, databases and reconnect surges of every DC, advanced by ``step``."""

    dcs: list[str]
    db_peak: float
    config: SimConfig
    seed: int = 0
    shares: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cfg = self.config
        # The key space scales with the read rate, which depends on the steady hit ratio:
        # a few fixed-point rounds make "warm and full = the topology's DB peak" exact.
        self.writes_full = cfg.write_share_at_peak * self.db_peak
        self.reads_full = max(self.db_peak, 1.0)
        for _ in range(8):
            self.steady_hit = CacheModel(self.reads_full, cfg).steady_state_hit_ratio()
            self.reads_full = (1 - cfg.write_share_at_peak) * self.db_peak / (1 - self.steady_hit)
        self.caches = {dc: CacheModel(self.reads_full, cfg) for dc in self.dcs}
        if not self.shares:
            self.shares = {dc: 1.0 / len(self.dcs) for dc in self.dcs}
        self.served = slice_shares(self.shares, cfg.user_slices)
        self.surges: list[_Surge] = []
        self.p_fail = dict.fromkeys(self.dcs, 0.0)
        self.metrics = {dc: DcMetrics() for dc in self.dcs}
        self._rng = random.Random(self.seed)
        self._wobble = 0.0

    def warm_up(self) -> None:
        """Start in normal operation: every cache at steady state for the users it serves."""
        for dc, cache in self.caches.items():
            rate = np.outer(self.served[dc], cache._rate)
            cache.fill = rate / (rate + cache._decay)

    def set_shares(self, shares: Mapping[str, float], now: float) -> None:
        """Route users by new GSLB shares; users arriving in a DC start a reconnect surge."""
        total = sum(max(0.0, v) for v in shares.values())
        new = {dc: (max(0.0, shares.get(dc, 0.0)) / total if total else 0.0) for dc in self.dcs}
        cfg = self.config
        per_user = (self.reads_full + self.writes_full) * cfg.surge_seconds
        new_served = slice_shares(new, cfg.user_slices)
        for dc in self.dcs:
            arriving = float(np.clip(new_served[dc] - self.served[dc], 0, None).sum())
            arriving /= cfg.user_slices
            if arriving > 1e-12 and cfg.surge_seconds > 0:
                rate = arriving * per_user / cfg.reconnect_window_s
                self.surges.append(_Surge(dc, now, now + cfg.reconnect_window_s, rate))
        self.shares = new
        self.served = new_served

    def predict_first_load(
        self, dc: str, share: float, now: float, feature_factor: float = 1.0
    ) -> float:
        """First-attempt DB load in ``dc`` if its share became ``share`` now (true state).

        Only the oracle uses this: it reads the hidden cache state no real controller sees.
        """
        cfg = self.config
        shares = dict(self.shares)
        rest = [d for d in self.dcs if d != dc]
        left = max(0.0, 1.0 - share)
        old_rest = sum(shares[d] for d in rest)
        for d in rest:
            shares[d] = left * (shares[d] / old_rest if old_rest > 0 else 1 / len(rest))
        shares[dc] = share
        served = slice_shares(shares, cfg.user_slices)[dc]
        cache = self.caches[dc]
        per_slice_miss = 1.0 - cache.fill @ cache.bins.mass
        misses = self.reads_full * float(served @ per_slice_miss) / cfg.user_slices
        arriving = float(np.clip(served - self.served[dc], 0, None).sum()) / cfg.user_slices
        per_user = (self.reads_full + self.writes_full) * cfg.surge_seconds
        surge = self.surge_rate(dc, now) + arriving * per_user / cfg.reconnect_window_s
        scale = feature_factor * max(0.0, 1.0 + self._next_wobble())
        return (misses + self.writes_full * share) * scale + surge

    def power_loss(self, dc: str) -> None:
        self.caches[dc].clear()

    def surge_rate(self, dc: str, now: float) -> float:
        return sum(s.rate for s in self.surges if s.dc == dc and s.start <= now < s.end)

    def step(self, now: float, dt: float, inputs: Mapping[str, DcInputs]) -> dict[str, DcMetrics]:
        """Advance every DC by ``dt`` seconds; ``now`` is the start of the tick."""
        cfg = self.config
        self._advance_wobble(dt)
        wobble = max(0.0, 1.0 + self._wobble)
        self.surges = [s for s in self.surges if s.end > now]
        for dc in self.dcs:
            self.metrics[dc] = self._step_dc(dc, now, dt, inputs[dc], wobble, cfg)
        return self.metrics

    def _step_dc(
        self, dc: str, now: float, dt: float, given: DcInputs, wobble: float, cfg: SimConfig
    ) -> DcMetrics:
        share = self.shares.get(dc, 0.0)
        served = self.served[dc]
        cache = self.caches[dc]
        m = DcMetrics(share=share, db_capacity_rps=given.db_capacity)
        load = share * given.feature_factor * wobble
        m.requests_rps = load * (self.reads_full + self.writes_full)
        if not given.up:
            m.error_rate = 1.0 if share > 0 else 0.0
            m.p99_ms = cfg.timeout_ms if share > 0 else 0.0
            self.p_fail[dc] = 1.0
            return m
        hit = cache.hit_ratio(served)
        m.cache_hit_ratio = hit
        m.surge_rps = self.surge_rate(dc, now)
        reads = self.reads_full * load
        first = reads * (1.0 - hit) + self.writes_full * load + m.surge_rps
        multiplier, final_fail = amplification(
            self.p_fail[dc], given.retry_policy, cfg.naive_attempts
        )
        offered = first * multiplier
        served_rps = goodput(offered, given.db_capacity, cfg)
        p_fail = 1.0 - served_rps / offered if offered > 0 else 0.0
        self.p_fail[dc] = p_fail
        cache.step(dt, served * wobble * given.feature_factor, 1.0 - p_fail)
        m.db_first_rps = first
        m.db_offered_rps = offered
        m.db_goodput_rps = served_rps
        m.db_utilisation = offered / given.db_capacity if given.db_capacity > 0 else math.inf
        m.retry_ratio = multiplier - 1.0
        db_bound = first / max(m.requests_rps + m.surge_rps, 1e-9)
        db_errors = min(1.0, db_bound) * final_fail
        m.error_rate = 1.0 - (1.0 - db_errors) * (1.0 - given.service_error)
        m.p99_ms = _p99(hit, m.db_utilisation, cfg)
        return m

    def _next_wobble(self, dt: float = 1.0) -> float:
        """The wobble the next tick will draw, without drawing it (the oracle's look-ahead)."""
        state, wobble = self._rng.getstate(), self._wobble
        self._advance_wobble(dt)
        ahead = self._wobble
        self._rng.setstate(state)
        self._wobble = wobble
        return ahead

    def _advance_wobble(self, dt: float) -> None:
        """AR(1) traffic wobble, so metrics are noisy the way real ones are (seeded)."""
        cfg = self.config
        if cfg.traffic_noise <= 0:
            return
        keep = math.exp(-dt / cfg.traffic_noise_memory_s)
        shock = cfg.traffic_noise * math.sqrt(1 - keep * keep)
        self._wobble = keep * self._wobble + shock * self._rng.gauss(0.0, 1.0)


def _p99(hit: float, utilisation: float, cfg: SimConfig) -> float:
    """p99 grows with the miss share and, like a queue, with 1 / (1 - utilisation)."""
    if utilisation >= 1.0:
        return cfg.timeout_ms
    latency = cfg.base_p99_ms * (1.0 + 3.0 * (1.0 - hit)) / max(0.02, 1.0 - utilisation)
    return min(cfg.timeout_ms, latency)
