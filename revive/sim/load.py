"""The load model: what user traffic does to each DC's cache and database, tick by tick.

Traffic moves per traffic class (a GSLB domain / load-balancer backend). Each class has its
own users and its own keys in a DC's cache, and carries ``load_share`` of the estate's load;
every class a DC serves loads the DC's one database pool. So the cache state, the served
user slices and the reconnect surges are per (class, DC); the database, its failure rate
and the retry policy are per DC. Per (class c, DC) and tick (docs/simulator.md has the
derivation and the sources of the constants):

    x_c        = weight_c * features_c * wobble             share of class c's full traffic
    first_c    = x_c * D_c * (1 - hit_c) + x_c * W_c + surge_c
    offered    = sum_c first_c * amplification(p_fail of the previous tick, retry policy)
    goodput    = offered                                   if offered <= capacity
               = capacity * max(floor, 1 - slope * (offered / capacity - 1))   otherwise
    p_fail     = 1 - goodput / offered

``D`` and ``W`` are fixed so that a fully warm DC carrying 100% of the traffic puts exactly
the topology's database ``peak_load`` on its databases; class c's are ``D_c = load_share_c *
D`` and ``W_c = load_share_c * W``, and its cache holds keys for ``D_c`` only, so its hit
ratio is (within a small tolerance) the one a single-class estate would have. A user moving
into a DC costs a reconnect (login and state sync) worth ``surge_seconds`` of its traffic,
spread over the reconnect window. Cache fills need a successful read, so an overloaded
database keeps its caches cold; and naive clients retry failures, which raises the load
again: that feedback is the metastable failure of a 100% cutover into a cold DC. Moving one
class warms and loads the survivor for that class only.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from revive.sim.cache import CacheBank, CacheModel
from revive.sim.config import SimConfig
from revive.sim.load_terms import (
    ALL_USERS,
    ClassMetrics,
    DcInputs,
    DcMetrics,
    amplification,
    goodput,
    p99_ms,
    slice_shares,
)

__all__ = [
    "ALL_USERS",
    "ClassMetrics",
    "DcInputs",
    "DcMetrics",
    "LoadModel",
    "amplification",
    "goodput",
    "slice_shares",
]

@dataclass
class _Surge:
    cls: int
    dc: int
    start: float
    end: float
    rate: float


@dataclass
class DcCaches:
    """A DC's cache as one view over every class's keys: ``fill`` is (class, slice, bin)."""

    fill: np.ndarray


class LoadModel:
    """Caches, databases and reconnect surges of every DC and traffic class, advanced by
    ``step``. ``classes`` maps each class to its load share (default: one class of all
    users); ``shares`` starts every class at those DC shares, ``class_shares`` one by one."""

    def __init__(
        self,
        dcs: list[str],
        db_peak: float,
        config: SimConfig,
        seed: int = 0,
        shares: Mapping[str, float] | None = None,
        *,
        classes: Mapping[str, float] | None = None,
        class_shares: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self.dcs, self.db_peak, self.config, self.seed = list(dcs), db_peak, config, seed
        cfg = self.config
        given = dict(classes) if classes else {ALL_USERS: 1.0}
        total = sum(max(0.0, v) for v in given.values())
        self.classes = list(given)
        self.load_share = np.array(
            [max(0.0, v) / total if total > 0 else 1.0 / len(given) for v in given.values()]
        )
        self._index = {name: c for c, name in enumerate(self.classes)}
        self._dc_index = {dc: n for n, dc in enumerate(self.dcs)}
        # The key space scales with the read rate, which depends on the steady hit ratio:
        # a few fixed-point rounds make "warm and full = the topology's DB peak" exact.
        self.writes_full = cfg.write_share_at_peak * self.db_peak
        self.reads_full = max(self.db_peak, 1.0)
        for _ in range(8):
            self.steady_hit = CacheModel(self.reads_full, cfg).steady_state_hit_ratio()
            self.reads_full = (1 - cfg.write_share_at_peak) * self.db_peak / (1 - self.steady_hit)
        # A class is ``load_share`` of all of it; its cache is sized for its own reads.
        self.reads = self.reads_full * self.load_share
        self.writes = self.writes_full * self.load_share
        self.bank = CacheBank(list(self.reads), len(self.dcs), cfg)
        self.caches = {dc: DcCaches(self.bank.fill[:, n]) for n, dc in enumerate(self.dcs)}
        even = dict.fromkeys(self.dcs, 1.0 / len(self.dcs))
        start = {c: (class_shares or {}).get(c, shares or even) for c in self.classes}
        self.weights = np.array([self._normalised(start[c]) for c in self.classes])
        self.served = np.array([self._served(w) for w in self.weights])
        self.surges: list[_Surge] = []
        self.p_fail = dict.fromkeys(self.dcs, 0.0)
        self.metrics = {dc: DcMetrics() for dc in self.dcs}
        self.class_metrics = {(c, dc): ClassMetrics() for c in self.classes for dc in self.dcs}
        self._rng = random.Random(self.seed)
        self._wobble = 0.0

    # --- routing -----------------------------------------------------------------------------

    @property
    def shares(self) -> dict[str, float]:
        """Each DC's share of all user load: the class weights weighted by class load."""
        dc_share = self.load_share @ self.weights
        return {dc: float(dc_share[n]) for n, dc in enumerate(self.dcs)}

    def class_shares(self, traffic_class: str) -> dict[str, float]:
        c = self._class(traffic_class)
        return {dc: float(self.weights[c, n]) for n, dc in enumerate(self.dcs)}

    def _class(self, traffic_class: str) -> int:
        if traffic_class not in self._index:
            raise KeyError(f"unknown traffic class {traffic_class!r} (have: "
                           f"{', '.join(self.classes)})")
        return self._index[traffic_class]

    def _normalised(self, shares: Mapping[str, float]) -> np.ndarray:
        vec = np.array([max(0.0, float(shares.get(dc, 0.0))) for dc in self.dcs])
        total = vec.sum()
        return vec / total if total > 0 else vec

    def _served(self, weights: np.ndarray) -> np.ndarray:
        """(DC, slice): how much of each user slice of one class each DC serves."""
        by_dc = slice_shares(dict(zip(self.dcs, weights, strict=True)), self.config.user_slices)
        return np.array([by_dc[dc] for dc in self.dcs])

    def _arrival_rates(self, c: int, served: np.ndarray) -> np.ndarray:
        """(DC,) reconnect load per second of the users of class ``c`` that arrive in each
        DC if it served ``served``; leaving a DC costs nothing."""
        cfg = self.config
        if cfg.surge_seconds <= 0:
            return np.zeros(len(self.dcs))
        arriving = np.clip(served - self.served[c], 0, None).sum(axis=1) / cfg.user_slices
        per_user = (self.reads[c] + self.writes[c]) * cfg.surge_seconds
        rates = arriving * per_user / cfg.reconnect_window_s
        return np.where(arriving > 1e-12, rates, 0.0)

    def warm_up(self) -> None:
        """Start in normal operation: every cache at steady state for the users it serves."""
        self.bank.warm_up(self.served)

    def set_shares(self, shares: Mapping[str, float], now: float) -> None:
        """Route every class's users by the same DC shares (all classes moving together)."""
        for name in self.classes:
            self.set_class_shares(name, shares, now)

    def set_class_shares(self, traffic_class: str, shares: Mapping[str, float], now: float) -> None:
        """Route one class's users by new GSLB shares; arrivals start a reconnect surge."""
        c = self._class(traffic_class)
        weights = self._normalised(shares)
        served = self._served(weights)
        window = self.config.reconnect_window_s
        for n, rate in enumerate(self._arrival_rates(c, served)):
            if rate > 0:
                self.surges.append(_Surge(c, n, now, now + window, float(rate)))
        self.weights[c] = weights
        self.served[c] = served

    def power_loss(self, dc: str) -> None:
        self.bank.clear(self._dc_index[dc])

    def surge_rate(self, dc: str, now: float) -> float:
        """Reconnect load per second in ``dc`` at ``now``, every class together."""
        return float(self._surge_matrix(now)[:, self._dc_index[dc]].sum())

    def _surge_matrix(self, now: float) -> np.ndarray:
        out = np.zeros((len(self.classes), len(self.dcs)))
        for s in self.surges:
            if s.start <= now < s.end:
                out[s.cls, s.dc] += s.rate
        return out

    # --- the oracle's look-ahead -------------------------------------------------------------

    def predict_first_loads(
        self,
        class_weights: Mapping[str, Mapping[str, float]],
        now: float,
        features: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        """First-attempt DB load per DC next tick if the named classes took these weights now
        (the others keep theirs), from the true cache state.

        Only an oracle uses this: it reads the hidden cache state no real controller sees.
        """
        weights, served = self.weights.copy(), self.served.copy()
        surge = self._surge_matrix(now)
        for name, shares in class_weights.items():
            c = self._class(name)
            weights[c] = self._normalised(shares)
            served[c] = self._served(weights[c])
            surge[c] += self._arrival_rates(c, served[c])
        miss = 1.0 - self.bank.per_slice_hit()
        misses = self.reads[:, None] * (served * miss).sum(axis=2) / self.config.user_slices
        factor = np.array([(features or {}).get(name, 1.0) for name in self.classes])
        scale = factor * max(0.0, 1.0 + self._next_wobble())
        first = (misses + self.writes[:, None] * weights) * scale[:, None] + surge
        return {dc: float(first[:, n].sum()) for n, dc in enumerate(self.dcs)}

    def predict_first_load(
        self, dc: str, share: float, now: float, features: Mapping[str, float] | None = None
    ) -> float:
        """First-attempt DB load in ``dc`` if every class's share there became ``share`` now,
        the other DCs keeping their proportions (what ``set_shares`` would do)."""
        shares = self.shares
        rest = [d for d in self.dcs if d != dc]
        left = max(0.0, 1.0 - share)
        old_rest = sum(shares[d] for d in rest)
        for d in rest:
            shares[d] = left * (shares[d] / old_rest if old_rest > 0 else 1 / len(rest))
        shares[dc] = share
        moved = dict.fromkeys(self.classes, shares)
        return self.predict_first_loads(moved, now, features)[dc]

    # --- a tick ------------------------------------------------------------------------------

    def step(self, now: float, dt: float, inputs: Mapping[str, DcInputs]) -> dict[str, DcMetrics]:
        """Advance every DC and class by ``dt`` seconds; ``now`` is the start of the tick."""
        self._advance_wobble(dt)
        wobble = max(0.0, 1.0 + self._wobble)
        self.surges = [s for s in self.surges if s.end > now]
        given = [inputs[dc] for dc in self.dcs]
        features = np.array([[g.feature_of(c) for g in given] for c in self.classes])
        errors = np.array([[g.error_of(c) for g in given] for c in self.classes])
        surge = self._surge_matrix(now)
        hit = self.bank.hit_ratios(self.served)
        x = self.weights * features * wobble
        requests = x * (self.reads + self.writes)[:, None]
        reads = x * self.reads[:, None]
        first = reads * (1.0 - hit) + x * self.writes[:, None] + surge
        up = np.array([g.up for g in given])
        for n, dc in enumerate(self.dcs):
            self._step_dc(n, dc, given[n], requests[:, n], reads[:, n], first[:, n],
                          surge[:, n], hit[:, n], errors[:, n])
        success = np.array([1.0 - self.p_fail[dc] for dc in self.dcs])
        self.bank.step(dt, self.served * (features * wobble)[..., None], success, up)
        return self.metrics

    def _step_dc(
        self, n: int, dc: str, given: DcInputs, requests: np.ndarray, reads: np.ndarray,
        first: np.ndarray, surge: np.ndarray, hit: np.ndarray, service_error: np.ndarray,
    ) -> None:
        """The DC's database under the first attempts of every class, then what each class's
        users see of it; the arrays are per class."""
        cfg, weights = self.config, self.weights[:, n]
        share = float(self.load_share @ weights)
        m = DcMetrics(share=share, db_capacity_rps=given.db_capacity)
        m.requests_rps = float(requests.sum())
        if not given.up:
            self.p_fail[dc] = 1.0
            m.error_rate = 1.0 if share > 0 else 0.0
            m.p99_ms = cfg.timeout_ms if share > 0 else 0.0
            self.metrics[dc] = m
            for c, name in enumerate(self.classes):
                served = weights[c] > 0
                self.class_metrics[name, dc] = ClassMetrics(
                    share=float(weights[c]), requests_rps=float(requests[c]),
                    error_rate=1.0 if served else 0.0, p99_ms=cfg.timeout_ms if served else 0.0,
                )
            return
        m.surge_rps = float(surge.sum())
        m.db_first_rps = float(first.sum())
        multiplier, final_fail = amplification(
            self.p_fail[dc], given.retry_policy, cfg.naive_attempts
        )
        m.db_offered_rps = m.db_first_rps * multiplier
        m.db_goodput_rps = goodput(m.db_offered_rps, given.db_capacity, cfg)
        offered = m.db_offered_rps
        self.p_fail[dc] = 1.0 - m.db_goodput_rps / offered if offered > 0 else 0.0
        util = offered / given.db_capacity if given.db_capacity > 0 else math.inf
        m.db_utilisation, m.retry_ratio = util, multiplier - 1.0
        users = requests + surge
        db_bound = np.minimum(1.0, first / np.maximum(users, 1e-9))
        error = 1.0 - (1.0 - db_bound * final_fail) * (1.0 - service_error)
        m.cache_hit_ratio = _weighted(hit, reads)
        m.error_rate = _weighted(error, requests)
        m.p99_ms = p99_ms(m.cache_hit_ratio, util, cfg)
        self.metrics[dc] = m
        for c, name in enumerate(self.classes):
            self.class_metrics[name, dc] = ClassMetrics(
                share=float(weights[c]), requests_rps=float(requests[c]),
                cache_hit_ratio=float(hit[c]), error_rate=float(error[c]),
                p99_ms=p99_ms(float(hit[c]), util, cfg), db_first_rps=float(first[c]),
                surge_rps=float(surge[c]), db_utilisation=util, retry_ratio=m.retry_ratio,
            )

    # --- wobble ------------------------------------------------------------------------------

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


def _weighted(values: np.ndarray, weights: np.ndarray) -> float:
    """Mean of ``values`` weighted by ``weights``; 0 when nothing carries weight."""
    total = float(weights.sum())
    return float(values @ weights) / total if total > 0 else 0.0
