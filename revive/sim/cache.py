"""A DC's cache, warming with the traffic it serves: a mean-field model over Zipf popularity.

Keys are ranked by popularity, p(rank i) ∝ i^-alpha (Zipf), and grouped into log-spaced
popularity bins. Users are split into slices; a DC serves some slices (the GSLB decides
which), and only the slices it serves bring it requests. For every (slice, bin) the model
tracks ``c``, the fraction of keys present, with

    dc/dt = r * s * (1 - c) - c * (1/ttl + churn)

where ``r`` is the request rate per key, ``s`` the probability that the database read that
fills a miss succeeds (a failed read fills nothing), ``ttl`` the entry lifetime and
``churn`` evictions and invalidations. Between ticks the equation is linear, so it is
integrated exactly, which keeps the model stable at any tick length. The hit ratio of a
DC is the popularity-weighted share of cached keys over the slices it serves.

docs/simulator.md shows the derivation and the calibration against the warm-up reported
for an empty memcache pool (Nishtala et al., NSDI 2013).
"""

from __future__ import annotations

import numpy as np

from revive.sim.config import SimConfig


class ZipfBins:
    """Popularity mass and key count of each log-spaced rank bin for ``n_keys`` keys."""

    def __init__(self, n_keys: float, alpha: float, bins: int) -> None:
        edges = np.unique(np.geomspace(1.0, n_keys + 1.0, bins + 1))
        self.keys = np.diff(edges)
        mass = _zipf_integral(edges[1:], alpha) - _zipf_integral(edges[:-1], alpha)
        self.mass = mass / mass.sum()

    def per_key_rate(self, request_rate: float) -> np.ndarray:
        """Requests per second that one key of each bin receives at ``request_rate``."""
        return request_rate * self.mass / self.keys


def _zipf_integral(x: np.ndarray, alpha: float) -> np.ndarray:
    if abs(alpha - 1.0) < 1e-9:
        return np.log(x)
    return x ** (1.0 - alpha) / (1.0 - alpha)


class CacheModel:
    """The cache of one DC: fill state per (user slice, popularity bin)."""

    def __init__(self, read_rate_full: float, config: SimConfig) -> None:
        self.config = config
        self.read_rate_full = read_rate_full
        n_keys = max(config.key_space_s * read_rate_full, float(config.cache_bins))
        self.bins = ZipfBins(n_keys, config.zipf_alpha, config.cache_bins)
        self.slices = config.user_slices
        self.fill = np.zeros((self.slices, len(self.bins.mass)))
        self._rate = self.bins.per_key_rate(read_rate_full)
        self._decay = 1.0 / config.ttl_s + config.churn_per_s

    def clear(self) -> None:
        """Power loss: memory is gone."""
        self.fill[:] = 0.0

    def hit_ratio(self, served: np.ndarray) -> float:
        """Hit ratio of the traffic of the slices this DC serves (``served`` in [0, 1])."""
        total = served.sum()
        if total <= 0:
            return 0.0
        per_slice = self.fill @ self.bins.mass
        return float(served @ per_slice / total)

    def step(self, dt: float, served: np.ndarray, fill_success: float) -> None:
        """Advance ``dt`` seconds with ``served`` slice fractions and read success ``s``."""
        a = np.outer(served, self._rate) * max(0.0, min(1.0, fill_success))
        k = a + self._decay
        steady = np.divide(a, k, out=np.zeros_like(a), where=k > 0)
        self.fill = steady + (self.fill - steady) * np.exp(-k * dt)

    def steady_state_hit_ratio(self) -> float:
        """Hit ratio once fully warm under full traffic and no failures."""
        a = self._rate
        return float(self.bins.mass @ (a / (a + self._decay)))
