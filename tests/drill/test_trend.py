"""A drill against its own past: slow steps by p75, and each tier's RTO trend."""

from __future__ import annotations

import pytest

from revive.drill.models import StepResult
from revive.drill.trend import (
    FASTER,
    MIN_HISTORY,
    NEW,
    SLOWER,
    STEADY_MARK,
    p75,
    slow_steps,
    sparkline,
    step_seconds,
    tier_keys,
    trend,
    trend_note,
)


def test_p75_interpolates_between_ranks_like_numpy() -> None:
    assert p75([10.0]) == 10.0
    assert p75([1.0, 2.0, 3.0, 4.0]) == pytest.approx(3.25)
    assert p75([40.0, 10.0, 30.0, 20.0, 50.0]) == 40.0
    with pytest.raises(ValueError):
        p75([])


def test_a_step_slower_than_the_p75_of_its_history_is_slow_and_others_are_not() -> None:
    history = {"restart:api@dc2": [60.0, 62.0, 58.0, 61.0],
               "deploy:cfg@dc2": [20.0, 20.0, 20.0],
               "provision:db@dc2": [30.0, 31.0]}  # too little history to judge
    seconds = {"restart:api@dc2": 95.0, "deploy:cfg@dc2": 20.0, "provision:db@dc2": 300.0,
               "restart:new@dc2": 999.0}  # never seen before
    slow = slow_steps(seconds, history)
    assert [(s.key, s.seconds, s.p75, s.samples) for s in slow] == [
        ("restart:api@dc2", 95.0, 61.25, 4)]
    assert len(history["provision:db@dc2"]) < MIN_HISTORY


def test_slow_steps_come_slowest_against_their_history_first() -> None:
    history = {"a": [10.0] * 3, "b": [10.0] * 3}
    slow = slow_steps({"a": 12.0, "b": 30.0}, history)
    assert [s.key for s in slow] == ["b", "a"]


def test_only_finished_steps_have_a_duration() -> None:
    steps = [
        StepResult(key="k1", action="restart", target="x", state="done", started_s=10.0,
                   ended_s=70.5),
        StepResult(key="k2", action="restart", target="y", state="failed", started_s=10.0,
                   ended_s=20.0),
        StepResult(key="k3", action="deploy", target="z", state="skipped", started_s=None,
                   ended_s=None),
    ]
    assert step_seconds(steps) == {"k1": 60.5}


def test_the_trend_compares_with_the_median_of_earlier_drills() -> None:
    assert trend(100.0, []) == NEW
    assert trend(200.0, [100.0, 110.0, 90.0]) == SLOWER
    assert trend(50.0, [100.0, 110.0, 90.0]) == FASTER
    assert trend(102.0, [100.0, 110.0, 90.0]) == STEADY_MARK  # within 5 %
    assert trend(None, [100.0]) == SLOWER  # never back is worse than any time
    assert trend(100.0, [None, None]) == FASTER
    assert trend(None, [None]) == STEADY_MARK
    assert trend_note(200.0, [100.0]).startswith(f"{SLOWER} (earlier 1:40")
    assert trend_note(200.0, []).startswith(NEW)


def test_a_sparkline_spans_lowest_to_highest_and_marks_never() -> None:
    assert sparkline([100.0, 200.0, None, 150.0]) == "▁█!▅"
    assert sparkline([5.0, 5.0]) == "▅▅"
    assert sparkline([None]) == "!"


def test_tier_keys_sort_by_tier_number() -> None:
    assert tier_keys([{"tier10": 1, "tier2": 2}, {"tier0": None}]) == ["tier0", "tier2", "tier10"]
