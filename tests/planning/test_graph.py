"""The one scheduler (revive.planning.graph) on graphs small enough to check by hand, and a
property test on random ones."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from revive.errors import PlanningError
from revive.planning.graph import (
    Scheduler,
    Step,
    StepState,
    longest_tail,
    rehearse,
    topological_order,
    upstream,
)

EPS = 1e-9


def step(key: str, *after: str, **fields: object) -> Step:
    return Step(key=key, action="test", after=after, **fields)


def keys(steps: list[Step]) -> list[str]:
    return [s.key for s in steps]


def test_each_pool_holds_to_its_own_cap_and_steps_without_a_pool_are_not_capped() -> None:
    steps = [step(f"a{i}", pool="a") for i in range(4)] + [
        step(f"b{i}", pool="b") for i in range(3)
    ] + [step(f"free{i}") for i in range(5)]
    scheduler = Scheduler(steps, {"a": 2, "b": 1})
    ready = keys(scheduler.ready())
    assert sum(k.startswith("a") for k in ready) == 2
    assert sum(k.startswith("b") for k in ready) == 1
    assert sum(k.startswith("free") for k in ready) == 5
    for key in ready:
        scheduler.start(key)
    assert scheduler.ready() == []  # both pools are full, the free steps all started
    with pytest.raises(PlanningError, match="pool 'a' is full"):
        scheduler.start("a2")
    scheduler.finish("a0", ok=True)
    assert keys(scheduler.ready()) == ["a2"]  # one slot back, one step in it


def test_ready_steps_come_in_priority_order_and_the_cap_takes_the_first() -> None:
    steps = [
        step("late", priority=(2, "x"), pool="p"),
        step("first", priority=(0, "z"), pool="p"),
        step("second", priority=(1, "a"), pool="p"),
        step("tie-b", priority=(1, "b"), pool="p"),
    ]
    assert keys(Scheduler(steps, {"p": 2}).ready()) == ["first", "second"]
    assert keys(Scheduler(steps, {"p": 9}).ready()) == ["first", "second", "tie-b", "late"]
    timings = rehearse([s.model_copy(update={"estimate_s": 10.0}) for s in steps], {"p": 1})
    assert sorted(timings, key=lambda k: timings[k].start_s) == [
        "first", "second", "tie-b", "late"]


def test_a_failure_blocks_exactly_its_transitive_dependents() -> None:
    #   a -> b -> c       e (independent)
    #   a -> d            f after b and e;   g waits for the end of d, however it ends
    steps = [
        step("a"), step("b", "a"), step("c", "b"), step("d", "a"), step("e"),
        step("f", "b", "e"), Step(key="g", action="test", after_end=("d",)),
    ]
    scheduler = Scheduler(steps)
    assert keys(scheduler.ready()) == ["a", "e"]
    scheduler.start("a")
    scheduler.start("e")
    blocked = scheduler.finish("a", ok=False, why="boom")
    assert sorted(blocked) == ["b", "c", "d", "f"]
    assert scheduler.state["a"] == StepState.failed and scheduler.why["a"] == "boom"
    assert all(scheduler.state[k] == StepState.blocked for k in blocked)
    assert scheduler.why["c"] == "waits on b"  # names what it waited for
    assert scheduler.why["b"] == "waits on a"
    # e goes on; g only waited for d to end, and d will never run: g may start
    assert keys(scheduler.ready()) == ["g"]
    scheduler.finish("e", ok=True)
    scheduler.start("g")
    scheduler.finish("g", ok=True)
    assert scheduler.finished
    assert scheduler.of(StepState.done) == ["e", "g"]
    assert scheduler.of(StepState.blocked) == sorted(blocked, key=scheduler.order.index)


def test_skip_marks_a_step_done_without_a_slot_and_releases_its_dependents() -> None:
    steps = [step("busy", pool="p"), step("done", pool="p"), step("next", "done", pool="p")]
    scheduler = Scheduler(steps, {"p": 1})
    scheduler.start("busy")  # the pool is full
    scheduler.skip("done")  # found done by an earlier attempt: takes no slot
    assert scheduler.state["done"] == StepState.done
    assert scheduler.ready() == []  # next may start, but the pool is still full
    scheduler.finish("busy", ok=True)
    assert keys(scheduler.ready()) == ["next"]
    with pytest.raises(PlanningError, match="is done, not pending"):
        scheduler.skip("done")


def test_a_step_cannot_be_skipped_or_started_before_what_it_waits_for() -> None:
    scheduler = Scheduler([step("a"), step("b", "a")])
    with pytest.raises(PlanningError, match="cannot be skipped: it waits for a"):
        scheduler.skip("b")
    with pytest.raises(PlanningError, match="cannot start: it waits for a"):
        scheduler.start("b")
    with pytest.raises(PlanningError, match="unknown step 'zz'"):
        scheduler.start("zz")
    with pytest.raises(PlanningError, match="is pending, not running"):
        scheduler.finish("a", ok=True)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([step("a", "ghost")], "step 'a' waits for unknown ghost"),
        ([step("a", "b"), step("b", "c"), step("c", "a"), step("d")],
         "steps wait for each other in a cycle: a, b, c"),
        ([step("a", "a")], "cycle: a"),
        ([step("a"), step("a")], "step 'a' appears twice"),
        ([step("a", pool="p")], "pool 'p' must allow at least one step"),
    ],
)
def test_bad_graphs_are_planning_errors(steps: list[Step], message: str) -> None:
    with pytest.raises(PlanningError, match=message):
        Scheduler(steps, {"p": 0})
    if "appears twice" not in message and "pool" not in message:
        by_key = {s.key: s for s in steps}
        for helper in (topological_order, longest_tail):
            with pytest.raises(PlanningError, match=message):
                helper(by_key)
        with pytest.raises(PlanningError):
            rehearse(steps)


def test_rehearse_matches_a_schedule_worked_out_by_hand() -> None:
    # Cap 2 on pool r. db (100) and cache-db (40) start at 0; cache (20) after cache-db at
    # 40; app (30) after db and cache at 100; batch (50, lowest priority) waits for a slot:
    # the first free one is cache's, at 60. A step outside the pool (dns) is not held back.
    steps = [
        step("db", estimate_s=100, pool="r", priority=(0,)),
        step("cache-db", estimate_s=40, pool="r", priority=(0,)),
        step("cache", "cache-db", estimate_s=20, pool="r", priority=(0,)),
        step("app", "db", "cache", estimate_s=30, pool="r", priority=(0,)),
        step("batch", estimate_s=50, pool="r", priority=(1,)),
        step("dns", estimate_s=5, priority=(9,)),
    ]
    timings = rehearse(steps, {"r": 2})
    assert {k: (t.start_s, t.end_s) for k, t in timings.items()} == {
        "db": (0, 100),
        "cache-db": (0, 40),
        "dns": (0, 5),
        "cache": (40, 60),
        "batch": (60, 110),
        "app": (100, 130),
    }
    # durations other than the estimates (what actually happened)
    again = rehearse(steps, {"r": 2}, durations={"db": 10})
    assert again["app"].start_s == 60 and again["batch"].start_s == 10


def test_longest_tail_and_upstream() -> None:
    steps = {s.key: s for s in [
        step("a", estimate_s=10), step("b", "a", estimate_s=5), step("c", "a", estimate_s=1),
        step("d", "b", "c", estimate_s=2), step("x", estimate_s=50),
    ]}
    assert longest_tail(steps) == {"a": 17, "b": 7, "c": 3, "d": 2, "x": 50}
    assert upstream(steps, ["d"]) == {"a", "b", "c", "d"}
    assert upstream(steps, ["c", "x"]) == {"a", "c", "x"}
    order = topological_order(steps)
    for s in steps.values():
        assert all(order.index(d) < order.index(s.key) for d in s.after)


# --- random graphs ----------------------------------------------------------------------


@st.composite
def graphs(draw: st.DrawFn) -> tuple[list[Step], dict[str, int]]:
    n = draw(st.integers(1, 30))
    pools = {p: draw(st.integers(1, 4)) for p in ("p", "q")}
    steps = []
    for i in range(n):
        after = draw(st.lists(st.integers(0, i - 1), max_size=4, unique=True)) if i else []
        steps.append(Step(
            key=f"s{i}",
            action="test",
            after=tuple(f"s{j}" for j in after),
            priority=(draw(st.integers(0, 3)), draw(st.integers(-5, 5))),
            estimate_s=draw(st.integers(0, 100)),
            pool=draw(st.sampled_from(["p", "q", None])),
        ))
    order = draw(st.permutations(steps))  # the order steps are given in must not matter
    return list(order), pools


@settings(max_examples=300, deadline=None)
@given(graph=graphs())
def test_rehearsals_respect_dependencies_and_caps_and_run_every_step_once(
    graph: tuple[list[Step], dict[str, int]],
) -> None:
    steps, pools = graph
    timings = rehearse(steps, pools)
    by_key = {s.key: s for s in steps}
    assert set(timings) == set(by_key)  # every step scheduled, each exactly once
    for key, t in timings.items():
        assert t.start_s >= 0 and abs(t.end_s - t.start_s - by_key[key].estimate_s) < EPS
        for dep in by_key[key].after:  # never before what it waits for has ended
            assert timings[dep].end_s <= t.start_s + EPS, (dep, key)
    for pool, cap in pools.items():
        members = [timings[k] for k, s in by_key.items() if s.pool == pool]
        for moment in {t.start_s for t in members}:
            busy = sum(1 for t in members if t.start_s <= moment < t.end_s)
            assert busy <= cap, (pool, moment, busy)
    # never idle: a step that did not start once what it waits for had ended found its
    # pool full at that moment (steps without a pool never wait)
    for key, t in timings.items():
        s = by_key[key]
        ready_at = max((timings[d].end_s for d in s.after), default=0.0)
        if t.start_s > ready_at + EPS:
            assert s.pool is not None, key
            members = [timings[k] for k, o in by_key.items() if o.pool == s.pool]
            busy = sum(1 for m in members if m.start_s <= ready_at + EPS < m.end_s - EPS)
            assert busy == pools[s.pool], (key, ready_at, busy)
