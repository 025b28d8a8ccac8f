"""The load model's equations and its calibration targets (docs/simulator.md)."""

from __future__ import annotations

import numpy as np
import pytest

from revive.sim.cache import CacheModel, ZipfBins
from revive.sim.config import RetryPolicy, SimConfig
from revive.sim.load import DcInputs, LoadModel, amplification, goodput, slice_shares

CFG = SimConfig()


def test_zipf_bins_cover_every_key_and_all_the_popularity() -> None:
    bins = ZipfBins(1e6, 0.65, 24)
    assert bins.keys.sum() == pytest.approx(1e6)
    assert bins.mass.sum() == pytest.approx(1.0)
    per_key = bins.mass / bins.keys
    assert np.all(np.diff(per_key) < 0)  # more popular bins have hotter keys


def test_a_cold_cache_passes_35_percent_within_about_4_minutes() -> None:
    """Calibration (a): Nishtala et al. (NSDI 2013) for an empty memcache pool."""
    cache = CacheModel(100_000, CFG)
    served = np.ones(CFG.user_slices)
    hits = {}
    for t in range(1, 601):
        cache.step(1.0, served, 1.0)
        hits[t] = cache.hit_ratio(served)
    assert hits[60] < 0.25  # cold for minutes, not seconds
    assert 0.30 <= hits[240] <= 0.40
    assert hits[600] < cache.steady_state_hit_ratio()
    assert all(hits[t] < hits[t + 1] for t in range(1, 600))


def test_the_calibration_does_not_depend_on_the_traffic_volume() -> None:
    small, large = CacheModel(1_000, CFG), CacheModel(1_000_000, CFG)
    served = np.ones(CFG.user_slices)
    for _ in range(240):
        small.step(1.0, served, 1.0)
        large.step(1.0, served, 1.0)
    assert small.hit_ratio(served) == pytest.approx(large.hit_ratio(served), abs=0.03)


def test_failed_reads_fill_nothing_and_entries_expire() -> None:
    cache = CacheModel(100_000, CFG)
    served = np.ones(CFG.user_slices)
    cache.step(60.0, served, 0.0)
    assert cache.hit_ratio(served) == 0.0
    cache.step(600.0, served, 1.0)
    warm = cache.hit_ratio(served)
    cache.step(3600.0, np.zeros(CFG.user_slices), 1.0)  # no traffic: TTL and churn only
    assert cache.hit_ratio(served) < warm * np.exp(-3600 * (1 / CFG.ttl_s)) + 1e-9


@pytest.mark.parametrize(
    ("offered", "expected"),
    [(50.0, 50.0), (100.0, 100.0), (150.0, 100.0 * (1 - 0.6 * 0.5)), (1000.0, 20.0)],
)
def test_goodput_collapses_past_saturation(offered: float, expected: float) -> None:
    assert goodput(offered, 100.0, CFG) == pytest.approx(expected)


def test_naive_retries_multiply_load_and_a_budget_caps_it() -> None:
    naive, naive_fail = amplification(0.5, None, 4)
    assert naive == pytest.approx(1 + 0.5 + 0.25 + 0.125)
    assert naive_fail == pytest.approx(0.5**4)
    budgeted, budget_fail = amplification(0.5, RetryPolicy(budget=0.1, max_attempts=3), 4)
    assert budgeted == pytest.approx(1.1)
    assert budget_fail > naive_fail  # the budget trades some errors for no self-DDoS
    assert amplification(0.0, None, 4) == (1.0, 0.0)


def test_slices_follow_shares_and_only_border_users_move() -> None:
    before = slice_shares({"dc1": 0.5, "dc2": 0.5}, 10)
    after = slice_shares({"dc1": 0.3, "dc2": 0.7}, 10)
    assert before["dc2"].sum() == pytest.approx(5) and after["dc2"].sum() == pytest.approx(7)
    assert np.all(after["dc2"] >= before["dc2"])  # dc2 keeps every user it had


def _failover(policy: RetryPolicy | None, *, paced: bool) -> list[float]:
    """dc1 is lost; its users move into dc2 at once, or paced: +5% a minute while the
    database is below 70% utilisation."""
    model = LoadModel(["dc1", "dc2"], 100_000.0, CFG, seed=3)
    model.warm_up()
    model.power_loss("dc1")
    inputs = {
        "dc1": DcInputs(up=False, db_capacity=0.0),
        "dc2": DcInputs(up=True, db_capacity=120_000.0, retry_policy=policy),
    }
    share = 0.5 if paced else 1.0
    model.set_shares({"dc1": 1 - share, "dc2": share}, 0.0)
    util = []
    for t in range(3600):
        if paced and t and t % 60 == 0 and share < 1.0 and util[-1] < 0.7:
            share = min(1.0, share + 0.05)
            model.set_shares({"dc1": 1 - share, "dc2": share}, float(t))
        util.append(model.step(float(t), 1.0, inputs)["dc2"].db_utilisation)
    return util


def test_full_cutover_into_a_cold_dc_with_naive_retries_stays_overloaded() -> None:
    """Calibration (b): the metastable failure. It never recovers by itself."""
    util = _failover(None, paced=False)
    assert min(util[60:]) > 1.0
    assert np.mean(util[-600:]) > 2.0


def test_a_paced_ramp_of_the_same_move_stays_below_capacity() -> None:
    util = _failover(None, paced=True)
    assert max(util) < 0.9


def test_a_retry_budget_keeps_amplification_bounded_under_the_same_overload() -> None:
    naive = _failover(None, paced=False)
    budget = _failover(RetryPolicy(), paced=False)
    assert np.mean(budget[60:600]) < np.mean(naive[60:600]) * 0.5


def test_moving_users_costs_a_reconnect_surge_over_the_window() -> None:
    model = LoadModel(["dc1", "dc2"], 100_000.0, CFG.model_copy(update={"traffic_noise": 0}))
    model.warm_up()
    model.set_shares({"dc1": 0.3, "dc2": 0.7}, 100.0)
    per_user = (model.reads_full + model.writes_full) * CFG.surge_seconds
    expected = 0.2 * per_user / CFG.reconnect_window_s
    assert model.surge_rate("dc2", 100.0) == pytest.approx(expected)
    assert model.surge_rate("dc2", 100.0 + CFG.reconnect_window_s) == 0.0
    assert model.surge_rate("dc1", 150.0) == 0.0  # leaving costs nothing


def test_a_warm_dc_at_full_share_puts_exactly_its_peak_on_the_database() -> None:
    cfg = CFG.model_copy(update={"traffic_noise": 0})
    model = LoadModel(["dc1"], 50_000.0, cfg)
    model.warm_up()
    m = model.step(0.0, 1.0, {"dc1": DcInputs(up=True, db_capacity=100_000.0)})["dc1"]
    assert m.db_first_rps == pytest.approx(50_000.0, rel=1e-6)
    assert m.db_utilisation == pytest.approx(0.5, rel=1e-6)
