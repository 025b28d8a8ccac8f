"""The real-time clock waits on each action's own tool and never on a runbook's sleep."""

from __future__ import annotations

import asyncio

import pytest

from revive.errors import NotFoundError
from revive.ops.models import ActionRef, ActionState, ActionStatus
from revive.ops.wallclock import WallClock


class Tool:
    """An adapter whose actions finish after a given number of status polls."""

    def __init__(self, polls_to_finish: dict[str, int]) -> None:
        self.left = dict(polls_to_finish)
        self.polls = 0

    async def action_status(self, ref: ActionRef) -> ActionStatus:
        self.polls += 1
        self.left[ref.id] -= 1
        state = ActionState.done if self.left[ref.id] <= 0 else ActionState.running
        return ActionStatus(ref=ref, state=state)


class FakeTime:
    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def _ref(i: str, tool: str = "deploy") -> ActionRef:
    return ActionRef(id=i, kind="restart", target=f"svc@{i}", tool=tool)


def test_wait_returns_when_every_action_is_done_backing_off_between_polls() -> None:
    tool, time = Tool({"a": 2, "b": 5}), FakeTime()
    clock = WallClock({"deploy": tool}, sleep=time.sleep, now=time.now)
    asyncio.run(clock.wait(actions=[_ref("a"), _ref("b")]))
    assert tool.left["b"] == 0
    assert time.sleeps == sorted(time.sleeps) and time.sleeps[-1] > time.sleeps[0]
    assert max(time.sleeps) <= 2.0


def test_any_action_returns_at_the_first_one_done() -> None:
    tool, time = Tool({"a": 2, "b": 50}), FakeTime()
    clock = WallClock({"deploy": tool}, sleep=time.sleep, now=time.now)
    asyncio.run(clock.wait(actions=[_ref("a"), _ref("b")], any_action=True))
    assert tool.left["a"] == 0 and tool.left["b"] > 0


def test_for_s_bounds_the_wait_even_when_actions_still_run() -> None:
    tool, time = Tool({"a": 10**6}), FakeTime()
    clock = WallClock({"deploy": tool}, sleep=time.sleep, now=time.now)
    ended = asyncio.run(clock.wait(for_s=30, actions=[_ref("a")]))
    assert ended == pytest.approx(1030.0)


def test_a_plain_wait_sleeps_once_and_an_action_of_an_unknown_tool_is_an_error() -> None:
    time = FakeTime()
    clock = WallClock({}, sleep=time.sleep, now=time.now)
    assert asyncio.run(clock.wait(for_s=10)) == pytest.approx(1010.0)
    assert time.sleeps == [10]
    with pytest.raises(NotFoundError, match="tool ghost is not in this run"):
        asyncio.run(clock.status(_ref("x", tool="ghost")))
