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


class CacheBank:
    """The caches of every (traffic class, DC) in one array, so that a tick is a few numpy
    operations whatever the number of classes and DCs.

    Each class has its own keys and users in a DC's cache: class ``c`` is a ``CacheModel``
    sized for its own full read rate. Its key space is ``key_space_s`` seconds of that rate,
    so a class's hit ratio does not depend on how big the class is; that is what makes an
    estate split into classes that move together behave like one class. ``fill`` has shape
    (class, DC, slice, bin); bins a class lacks (tiny key spaces) carry no mass and no rate.
    """

    def __init__(self, read_rates: list[float], n_dcs: int, config: SimConfig) -> None:
        models = [CacheModel(rate, config) for rate in read_rates]
        width = max(len(m.bins.mass) for m in models)
        self.mass = np.zeros((len(models), width))
        self.rate = np.zeros((len(models), width))
        for c, model in enumerate(models):
            self.mass[c, : len(model.bins.mass)] = model.bins.mass
            self.rate[c, : len(model._rate)] = model._rate
        self.steady_hit = np.array([m.steady_state_hit_ratio() for m in models])
        self.decay = 1.0 / config.ttl_s + config.churn_per_s
        self.fill = np.zeros((len(models), n_dcs, config.user_slices, width))

    def clear(self, dc: int) -> None:
        """Power loss in DC ``dc``: the memory of every class is gone."""
        self.fill[:, dc] = 0.0

    def per_slice_hit(self) -> np.ndarray:
        """(class, DC, slice): hit ratio of each user slice's requests."""
        return np.einsum("cnsb,cb->cns", self.fill, self.mass)

    def hit_ratios(self, served: np.ndarray) -> np.ndarray:
        """(class, DC) hit ratio of the slices each serves; ``served`` is (class, DC, slice)."""
        total = served.sum(axis=2)
        hits = (served * self.per_slice_hit()).sum(axis=2)
        return np.divide(hits, total, out=np.zeros_like(hits), where=total > 0)

    def warm_up(self, served: np.ndarray) -> None:
        """Steady state under no failures for the slices each (class, DC) serves."""
        a = served[..., None] * self.rate[:, None, None, :]
        self.fill[...] = a / (a + self.decay)

    def step(
        self, dt: float, served: np.ndarray, fill_success: np.ndarray, active: np.ndarray
    ) -> None:
        """Advance ``dt`` seconds: ``served`` (class, DC, slice) is each slice's traffic
        relative to full, ``fill_success`` (DC,) the chance a miss's database read succeeds;
        only ``active`` DCs (powered) move, as a dark DC serves and expires nothing."""
        success = np.clip(fill_success, 0.0, 1.0)[None, :, None, None]
        a = served[..., None] * self.rate[:, None, None, :] * success
        k = a + self.decay
        steady = a / k
        new = steady + (self.fill - steady) * np.exp(-k * dt)
        np.copyto(self.fill, new, where=active[None, :, None, None])
