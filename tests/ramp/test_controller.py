"""The ramp controller: a pure function of what a real controller can see."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from revive.ramp import Change, DecisionKind, FeatureCandidate, RampPolicy, Sample, decide
from revive.ramp.controller import is_breach

POLICY = RampPolicy()


def sample(t: float, util: float, *, share: float = 0.5, hit: float = 0.7, errors: float = 0.0,
           p99: float = 100.0) -> Sample:
    return Sample(t=t, share=share, db_util=util, p99_ms=p99, error_rate=errors,
                  cache_hit_ratio=hit)


samples_st = st.lists(
    st.builds(
        Sample,
        t=st.floats(0, 10_000),
        share=st.floats(0, 1),
        db_util=st.floats(0, 3),
        p99_ms=st.floats(1, 5_000),
        error_rate=st.floats(0, 1),
        retry_ratio=st.floats(0, 3),
        cache_hit_ratio=st.floats(0, 1),
    ),
    min_size=1,
    max_size=12,
).map(lambda xs: sorted(xs, key=lambda s: s.t))


@settings(max_examples=400, deadline=None)
@given(
    samples=samples_st,
    share=st.floats(0, 1),
    baseline=st.floats(0, 0.2),
    since_change=st.floats(0, 2_000),
    features=st.lists(
        st.builds(FeatureCandidate, service=st.just("s"), name=st.text("abc", min_size=1),
                  priority=st.integers(1, 5), cost=st.floats(0.01, 1)),
        max_size=3,
    ),
)
def test_never_advances_or_adds_load_during_a_breach(
    samples, share, baseline, since_change, features
) -> None:
    now = samples[-1].t
    decision = decide(
        samples, share=share, policy=POLICY, now=now, last_change_t=now - since_change,
        features_off=features, baseline_error_rate=baseline,
    )
    if is_breach(samples[-1], POLICY, baseline):
        assert decision.kind == DecisionKind.back_off
        assert decision.share < share or share == 0.0
    assert 0.0 <= decision.share <= 1.0
    if decision.kind == DecisionKind.advance:
        assert decision.share > share
        assert not is_breach(samples[-1], POLICY, baseline)


@settings(max_examples=200, deadline=None)
@given(samples=samples_st, share=st.floats(0, 1))
def test_the_same_metrics_give_the_same_decision(samples, share) -> None:
    now = samples[-1].t + 30
    first = decide(samples, share=share, policy=POLICY, now=now)
    again = decide(list(samples), share=share, policy=POLICY, now=now)
    assert first == again


def test_no_metrics_no_move() -> None:
    assert decide([], share=0.5, policy=POLICY, now=0).kind == DecisionKind.hold


def test_it_waits_for_the_last_change_to_settle() -> None:
    decision = decide([sample(100, 0.3)], share=0.5, policy=POLICY, now=100, last_change_t=95)
    assert decision.kind == DecisionKind.hold and "settling" in decision.reason


def test_the_first_step_prices_new_traffic_as_cold() -> None:
    decision = decide([sample(100, 0.4, hit=0.6)], share=0.5, policy=POLICY, now=100)
    cold_cost = 0.4 / (0.5 * 0.4) * (1 + POLICY.surge_allowance)
    expected = 0.5 + (POLICY.target_util - 0.4) / cold_cost
    assert decision.kind == DecisionKind.advance
    assert decision.share == pytest.approx(expected, abs=1e-4)


def test_later_steps_use_what_earlier_moves_cost() -> None:
    unsettled = 100 + POLICY.settle_s / 2  # a scrape before the move had settled
    samples = [sample(100, 0.40), sample(unsettled, 0.70, share=0.6),
               sample(140, 0.60, share=0.6)]
    changes = [Change(t=100, share_from=0.5, share_to=0.6)]
    decision = decide(samples, share=0.6, policy=POLICY, now=140, last_change_t=100,
                      changes=changes)
    cost = (0.70 - 0.40) / 0.1  # the highest reading after the move, per unit of share
    utilisation = 0.60  # only samples taken after the move settled are judged
    assert decision.share == pytest.approx(0.6 + (POLICY.target_util - utilisation) / cost,
                                           abs=1e-4)


def test_the_last_few_users_go_with_the_step_before_them_when_they_fit() -> None:
    # Cold traffic at 0.87 on 98.5% costs 0.87 / 0.985 * 1.4 per unit of share: the target
    # leaves room for 0.8% more, and the 0.7% beyond it would cost a settle of its own.
    cost = 0.87 / 0.985 * (1 + POLICY.surge_allowance)
    step = (POLICY.target_util - 0.87) / cost
    assert step < 0.015 <= step + POLICY.finish_within
    decision = decide([sample(100, 0.87, share=0.985, hit=0.0)], share=0.985, policy=POLICY,
                      now=100)
    assert decision.kind == DecisionKind.advance and decision.share == 1.0
    # Unless taking them would pass the limit: then the step stops at the target.
    tight = POLICY.model_copy(update={"db_util_limit": 0.885})
    assert 0.015 * cost > tight.db_util_limit - 0.87
    decision = decide([sample(100, 0.87, share=0.985, hit=0.0)], share=0.985, policy=tight,
                      now=100)
    assert decision.share == pytest.approx(0.985 + step, abs=1e-4)


def test_a_breach_backs_off_in_proportion_to_the_overload() -> None:
    decision = decide([sample(100, 1.32)], share=0.8, policy=POLICY, now=100)
    assert decision.kind == DecisionKind.back_off
    assert decision.share == pytest.approx(0.8 * POLICY.target_util / 1.32, abs=1e-4)
    errors = decide([sample(100, 0.5, errors=0.05)], share=0.8, policy=POLICY, now=100,
                    baseline_error_rate=0.03)
    assert errors.kind == DecisionKind.back_off and errors.share == pytest.approx(0.72)


def test_errors_at_the_pre_ramp_rate_are_not_a_breach() -> None:
    decision = decide([sample(100, 0.5, errors=0.07)], share=0.6, policy=POLICY, now=100,
                      baseline_error_rate=0.07)
    assert decision.kind == DecisionKind.advance


def test_no_advance_while_cooling_down_after_a_back_off() -> None:
    changes = [Change(t=100, share_from=0.8, share_to=0.6)]
    decision = decide([sample(150, 0.3, share=0.6)], share=0.6, policy=POLICY, now=150,
                      last_change_t=100, changes=changes)
    assert decision.kind == DecisionKind.hold and "cooling" in decision.reason


def test_it_stalls_and_asks_a_human_when_nothing_moves_for_too_long() -> None:
    samples = [sample(t, 0.87) for t in range(0, 1_900, 10)]
    decision = decide(samples, share=0.7, policy=POLICY, now=1_890, last_advance_t=0)
    assert decision.kind == DecisionKind.stall


FEATURES = [
    FeatureCandidate(service="chat", name="reactions", priority=2, cost=0.05),
    FeatureCandidate(service="chat", name="typing", priority=1, cost=0.10),
]


def test_features_go_on_in_priority_order_when_headroom_covers_them() -> None:
    decision = decide([sample(100, 0.6, share=1.0)], share=1.0, policy=POLICY, now=100,
                      features_off=FEATURES)
    assert decision.kind == DecisionKind.enable_feature
    assert decision.feature == FEATURES[1]


def test_a_feature_waits_when_its_cost_does_not_fit() -> None:
    decision = decide([sample(100, 0.78, share=1.0)], share=1.0, policy=POLICY, now=100,
                      features_off=FEATURES)
    assert decision.kind == DecisionKind.hold and "typing" in decision.reason
