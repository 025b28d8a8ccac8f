"""VirtualClock: ordering of events and ticks, refusal to go backwards, advance_until."""

from __future__ import annotations

import pytest

from revive.sim.clock import VirtualClock


def test_events_run_in_time_order_and_equal_times_in_scheduling_order() -> None:
    clock = VirtualClock()
    seen: list[tuple[str, float]] = []
    for name, at in [("c", 5.0), ("a", 2.0), ("b1", 3.0), ("b2", 3.0)]:
        clock.schedule(at, lambda name=name: seen.append((name, clock.now)))
    clock.advance_to(10)
    assert seen == [("a", 2.0), ("b1", 3.0), ("b2", 3.0), ("c", 5.0)]
    assert clock.now == 10


def test_events_before_ticks_at_the_same_instant_and_dt_covers_elapsed_time() -> None:
    clock = VirtualClock()
    seen: list[tuple[str, float, float]] = []
    clock.schedule(2.0, lambda: seen.append(("event", clock.now, 0.0)))
    clock.add_ticker(lambda now, dt: seen.append(("tick", now, dt)), every=1.0)
    clock.advance_to(3.5)
    assert seen == [
        ("tick", 1.0, 1.0),
        ("event", 2.0, 0.0),
        ("tick", 2.0, 1.0),
        ("tick", 3.0, 1.0),
    ]


def test_ticker_added_mid_period_first_tick_covers_the_remainder() -> None:
    clock = VirtualClock()
    clock.advance_to(0.25)
    ticks: list[tuple[float, float]] = []
    clock.add_ticker(lambda now, dt: ticks.append((now, dt)), every=1.0)
    clock.advance_to(2.0)
    assert ticks == [(1.0, 0.75), (2.0, 1.0)]


def test_ticks_stay_on_exact_multiples_over_long_runs() -> None:
    clock = VirtualClock()
    ticks: list[float] = []
    clock.add_ticker(lambda now, dt: ticks.append(now), every=0.1)
    clock.advance_to(100.0)
    assert len(ticks) == 1000
    assert ticks[-1] == pytest.approx(100.0)
    assert ticks[99] == 10.0


def test_cancel_and_next_event_time() -> None:
    clock = VirtualClock()
    ran: list[int] = []
    first = clock.schedule(4.0, lambda: ran.append(1))
    clock.schedule(6.0, lambda: ran.append(2))
    assert clock.next_event_time() == 4.0
    assert clock.cancel(first) is True
    assert clock.cancel(first) is False
    assert clock.next_event_time() == 6.0
    clock.advance_to(10)
    assert ran == [2]
    assert clock.next_event_time() is None


def test_callbacks_may_schedule_at_now_which_runs_in_the_same_advance() -> None:
    clock = VirtualClock()
    seen: list[str] = []

    def first() -> None:
        seen.append("first")
        clock.schedule(clock.now, lambda: seen.append("chained"))

    clock.schedule(1.0, first)
    clock.schedule(1.0, lambda: seen.append("second"))
    clock.advance_to(1.0)
    assert seen == ["first", "second", "chained"]


def test_time_never_moves_backwards() -> None:
    clock = VirtualClock()
    clock.advance_to(5)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance_to(4)
    with pytest.raises(ValueError, match="before now"):
        clock.schedule(4.9, lambda: None)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance_until(lambda: False, limit=1)
    clock.advance_to(5)  # staying put is fine
    assert clock.now == 5


def test_a_callback_cannot_advance_the_clock() -> None:
    clock = VirtualClock()
    clock.schedule(1.0, lambda: clock.advance_to(2.0))
    with pytest.raises(RuntimeError, match="not advance"):
        clock.advance_to(3.0)


def test_advance_until_stops_at_the_first_step_where_the_predicate_holds() -> None:
    clock = VirtualClock()
    state = {"done": False}
    clock.add_ticker(lambda now, dt: None, every=1.0)
    clock.schedule(42.5, lambda: state.update(done=True))
    assert clock.advance_until(lambda: state["done"], limit=100) is True
    assert clock.now == 42.5


def test_advance_until_gives_up_at_the_limit() -> None:
    clock = VirtualClock()
    clock.schedule(50.0, lambda: None)
    assert clock.advance_until(lambda: False, limit=30) is False
    assert clock.now == 30
    assert clock.next_event_time() == 50.0


def test_advance_until_true_already_does_not_move() -> None:
    clock = VirtualClock()
    clock.schedule(1.0, lambda: None)
    assert clock.advance_until(lambda: True, limit=10) is True
    assert clock.now == 0


def test_advance_until_sees_tick_driven_state() -> None:
    clock = VirtualClock()
    total = {"x": 0.0}
    clock.add_ticker(lambda now, dt: total.update(x=total["x"] + dt), every=1.0)
    assert clock.advance_until(lambda: total["x"] >= 7, limit=100)
    assert clock.now == 7.0
