"""ClockBarrier: virtual time moves only when every participant waits, and deterministically."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from revive.sim import SimConfig, Simulator
from revive.sim.barrier import ClockBarrier
from revive.sim.clock import VirtualClock
from revive.sim.estate import ActionState, BadRequest, Conflict, UnknownTarget
from tests.factories import build, service

T = TypeVar("T")


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(main())


def sim_and_barrier(**config: Any) -> tuple[Simulator, ClockBarrier]:
    sim = Simulator(
        build(service("app", restart_seconds=60), service("db", group="storage", role="database")),
        seed=5,
        config=SimConfig(**config),
    )

    def finished(action_id: str) -> bool:
        return sim.estate.action(action_id).state in (ActionState.done, ActionState.failed)

    return sim, ClockBarrier(sim.clock, finished=finished)


def test_time_moves_only_when_both_participants_wait() -> None:
    clock = VirtualClock()
    barrier = ClockBarrier(clock)
    ends: dict[str, float] = {}

    async def worker(name: str, pid: str, waits: list[float]) -> None:
        for seconds in waits:
            start = clock.now
            ends[f"{name}@{start:g}"] = await barrier.wait(pid, until=start + seconds)
        barrier.leave(pid)

    async def main() -> None:
        a, b = barrier.join(), barrier.join()
        await asyncio.gather(worker("a", a, [10, 10, 10]), worker("b", b, [25, 1]))

    run(main)
    assert ends == {"a@0": 10, "a@10": 20, "a@20": 30, "b@0": 25, "b@25": 26}
    assert clock.now == 30


def test_a_participant_doing_work_holds_the_clock() -> None:
    clock = VirtualClock()
    barrier = ClockBarrier(clock)
    seen: list[float] = []

    async def main() -> None:
        a, b = barrier.join(), barrier.join()
        waiting = asyncio.ensure_future(barrier.wait(b, until=100))
        for _ in range(20):  # a is "working": many loop turns, no virtual time passes
            await asyncio.sleep(0)
            seen.append(clock.now)
        assert not waiting.done()
        assert await barrier.wait(a, until=40) == 40  # now both wait: a is first due
        assert not waiting.done()
        barrier.leave(a)  # b alone now: the clock runs to its deadline
        assert await waiting == 100

    run(main)
    assert seen == [0.0] * 20


def test_a_wait_that_already_holds_returns_without_moving_the_clock() -> None:
    clock = VirtualClock()
    barrier = ClockBarrier(clock)

    async def main() -> None:
        clock.advance_to(50)
        a = barrier.join()
        barrier.join()  # never waits: would block any advance
        assert await barrier.wait(a, until=20) == 50
        assert await barrier.wait(a, done=lambda: True) == 50

    run(main)


def test_waiting_on_a_restart_returns_at_its_end() -> None:
    sim, barrier = sim_and_barrier(restart_jitter=0.0)

    async def main() -> float:
        action = sim.estate.restart("app", "dc1")
        return await barrier.wait(None, actions=[action])

    assert run(main) == 60.0
    assert sim.estate.state("app", "dc1").healthy == 2


def test_until_ends_a_wait_before_its_actions_finish() -> None:
    sim, barrier = sim_and_barrier(restart_jitter=0.0)

    async def main() -> tuple[float, float]:
        action = sim.estate.restart("app", "dc1")
        early = await barrier.wait(None, until=15, actions=[action])
        return early, await barrier.wait(None, until=1000, actions=[action])

    assert run(main) == (15.0, 60.0)


def test_a_wait_on_an_action_that_never_finishes_is_capped() -> None:
    clock = VirtualClock()
    barrier = ClockBarrier(clock, finished=lambda action_id: False, max_wait_s=300)

    async def main() -> float:
        return await barrier.wait(None, actions=["a0001"])

    assert run(main) == 300.0


def test_waiters_released_together_resume_in_join_order() -> None:
    clock = VirtualClock()
    barrier = ClockBarrier(clock)
    order: list[str] = []

    async def one(name: str, pid: str, delay_turns: int) -> None:
        for _ in range(delay_turns):
            await asyncio.sleep(0)
        await barrier.wait(pid, until=30)
        order.append(name)
        barrier.leave(pid)

    async def main() -> None:
        pids = [barrier.join() for _ in range(3)]
        await asyncio.gather(one("c", pids[2], 0), one("a", pids[0], 3), one("b", pids[1], 1))

    run(main)
    assert order == ["a", "b", "c"]


def test_the_same_script_gives_the_same_times_twice() -> None:
    def script() -> list[tuple[str, float]]:
        sim, barrier = sim_and_barrier()  # default jitter: restart durations are seeded
        log: list[tuple[str, float]] = []

        async def runbook(name: str, service_name: str, dc: str) -> None:
            pid = barrier.join()
            await barrier.wait(pid, until=sim.clock.now + len(name))
            action = sim.estate.restart(service_name, dc)
            log.append((f"{name} restarted", await barrier.wait(pid, actions=[action])))
            log.append((f"{name} slept", await barrier.wait(pid, until=sim.clock.now + 7.5)))
            barrier.leave(pid)

        async def main() -> None:
            await asyncio.gather(
                runbook("first", "app", "dc1"),
                runbook("second", "db", "dc2"),
                runbook("third-one", "app", "dc2"),
            )

        run(main)
        return log

    first = script()
    assert first == script()
    assert len({t for _, t in first}) > 3


def test_bad_waits_are_refused() -> None:
    sim, barrier = sim_and_barrier()
    bare = ClockBarrier(VirtualClock())

    async def main() -> None:
        with pytest.raises(BadRequest, match="until, actions or done"):
            await barrier.wait(None)
        with pytest.raises(BadRequest, match="NaN"):
            await barrier.wait(None, until=math.nan)
        with pytest.raises(UnknownTarget, match="a0042"):
            await barrier.wait(None, actions=["a0042"])
        with pytest.raises(UnknownTarget, match="p9"):
            await barrier.wait("p9", until=10)
        with pytest.raises(BadRequest, match="actions"):
            await bare.wait(None, actions=["a0001"])
        pid = barrier.join()
        barrier.join()  # holds the clock so pid stays waiting
        pending = asyncio.ensure_future(barrier.wait(pid, until=10))
        await asyncio.sleep(0)
        with pytest.raises(Conflict, match="already waiting"):
            await barrier.wait(pid, until=20)
        barrier.leave(pid)  # leaving ends its wait at the current time
        assert await pending == 0.0
        with pytest.raises(UnknownTarget):
            barrier.leave(pid)

    run(main)
    assert sim.clock.now == 0.0
