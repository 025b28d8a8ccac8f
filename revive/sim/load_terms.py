"""The load model's equations and records: retries, congestion collapse, user placement, p99,
and what goes in and out of a tick.

Split out of ``load.py`` so that file holds only the state that evolves tick by tick; these
are pure functions and plain records, each testable on its own (tests/sim/test_load_model.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from revive.sim.config import RetryPolicy, SimConfig

__all__ = [
    "ALL_USERS",
    "ClassMetrics",
    "DcInputs",
    "DcMetrics",
    "amplification",
    "goodput",
    "p99_ms",
    "slice_shares",
]

#: The one traffic class of an estate that declares none (and of a bare ``LoadModel``).
ALL_USERS = "users"


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


def p99_ms(hit: float, utilisation: float, cfg: SimConfig) -> float:
    """p99 grows with the miss share and, like a queue, with 1 / (1 - utilisation)."""
    if utilisation >= 1.0:
        return cfg.timeout_ms
    latency = cfg.base_p99_ms * (1.0 + 3.0 * (1.0 - hit)) / max(0.02, 1.0 - utilisation)
    return min(cfg.timeout_ms, latency)


@dataclass(frozen=True)
class DcInputs:
    """What the estate tells the load model about one DC for this tick.

    ``feature_factor`` and ``service_error`` apply to every traffic class that
    ``class_features`` / ``class_errors`` do not name: feature flags belong to a class's own
    services, and so do the services that reject its requests.
    """

    up: bool
    db_capacity: float
    feature_factor: float = 1.0
    service_error: float = 0.0
    retry_policy: RetryPolicy | None = None
    class_features: Mapping[str, float] | None = None
    class_errors: Mapping[str, float] | None = None

    def feature_of(self, traffic_class: str) -> float:
        given, default = self.class_features, self.feature_factor
        return default if given is None else given.get(traffic_class, default)

    def error_of(self, traffic_class: str) -> float:
        given, default = self.class_errors, self.service_error
        return default if given is None else given.get(traffic_class, default)


@dataclass
class DcMetrics:
    """One DC's state after a tick, in the units /metrics exposes.

    Over the traffic classes it serves: ``share`` is the load-weighted sum of their
    weights, ``cache_hit_ratio`` is weighted by their cacheable reads and ``error_rate``
    by their user requests (``requests_rps``, reconnects not included); the database
    numbers are the DC's own (one shared pool).
    """

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
class ClassMetrics:
    """One traffic class in one DC after a tick: what its own users see.

    ``share`` is the class's GSLB weight in the DC (a class's weights sum to 1);
    ``db_first_rps`` is its part of the DC's first-attempt database load. The DC's
    ``db_utilisation`` and ``retry_ratio`` are repeated here because a ramp for one class
    gates on the database every class shares.
    """

    share: float = 0.0
    requests_rps: float = 0.0
    cache_hit_ratio: float = 0.0
    error_rate: float = 0.0
    p99_ms: float = 0.0
    db_first_rps: float = 0.0
    surge_rps: float = 0.0
    db_utilisation: float = 0.0
    retry_ratio: float = 0.0
