"""SlackSink against a real-HTTP fake Slack: what reaches Slack, and what never blocks a run.

Assertions are on what the fake server recorded (and on the fallback log), never on mocks:
slack_sdk's retry handlers, timeouts and request encoding are part of what is tested.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from revive.chat import SlackSink
from revive.chat.blocks import MAX_BLOCKS, MAX_SECTION_CHARS, MAX_TEXT_CHARS
from tests.chat.cards import TOKEN, card, message_text, note, section_texts, slack_sink
from tests.chat.fake_slack import FakeSlack

POST, UPDATE = "chat.postMessage", "chat.update"


@pytest.fixture
def chat_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="revive.chat")
    return caplog


def fallback_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the fallback ConsoleSink wrote (its logger is exactly ``revive.chat``)."""
    return [r.getMessage() for r in caplog.records if r.name == "revive.chat"]


async def updates_received(fake: FakeSlack, count: int) -> None:
    """Wait (off the event loop) until ``fake`` has answered ``count`` chat.update calls."""
    arrived = await asyncio.to_thread(
        fake.wait_for, lambda: len(fake.ok_calls(UPDATE)) >= count, 3.0
    )
    assert arrived, fake.calls


def test_living_message_is_posted_once_and_updated_in_place(fake_slack: FakeSlack) -> None:
    sink = slack_sink(fake_slack, min_update_interval_s=0.05)

    async def run() -> None:
        await sink.start(card())
        for done in (3, 6):
            await sink.update(card(steps_done=done, current_step=f"step-{done}"))
            await updates_received(fake_slack, done // 3)  # one by one, so none is merged
        await sink.finish(card(status="succeeded", steps_done=10, outcome="dc2 serves all"))
        await sink.aclose()

    asyncio.run(run())
    posts, updates = fake_slack.ok_calls(POST), fake_slack.ok_calls(UPDATE)
    assert len(posts) == 1
    assert posts[0]["channel"] == "#dc-recovery"
    (ts,) = fake_slack.messages
    assert len(updates) == 3
    assert {u["ts"] for u in updates} == {ts}
    assert {u["channel"] for u in updates} == {fake_slack.messages[ts]["channel"]}  # the ID
    assert "3/10 steps" in message_text(updates[0])
    assert "6/10 steps" in message_text(updates[1])
    final = message_text(updates[-1])
    assert final.startswith("*[SUCCEEDED]*") and "10/10 steps" in final
    assert "dc2 serves all" in final
    assert "[SUCCEEDED]" in updates[-1]["text"]
    assert all(c.authorization == f"Bearer {TOKEN}" for c in fake_slack.log)
    assert (sink.sent, sink.failures, sink.fallbacks) == (4, 0, 0)


def test_a_burst_of_updates_is_merged_and_the_newest_card_wins(fake_slack: FakeSlack) -> None:
    sink = slack_sink(fake_slack)  # the production interval: 1 s

    async def run() -> None:
        await sink.start(card())
        begin = time.monotonic()
        for done in range(1, 51):
            await sink.update(card(steps_done=done, steps_total=50))
            await asyncio.sleep(0.002)
        assert time.monotonic() - begin < 0.5
        assert await asyncio.to_thread(
            fake_slack.wait_for,
            lambda: any("50/50 steps" in message_text(u) for u in fake_slack.ok_calls(UPDATE)),
            3.0,
        )
        await asyncio.sleep(0.2)  # nothing else may follow
        await sink.aclose()

    asyncio.run(run())
    updates = fake_slack.requests(UPDATE)
    assert 1 <= len(updates) <= 3
    assert "50/50 steps" in message_text(updates[-1].params)
    assert sink.failures == 0


def test_notes_are_replies_in_the_run_thread(fake_slack: FakeSlack) -> None:
    sink = slack_sink(fake_slack)

    async def run() -> None:
        await sink.start(card())
        await sink.note(note("drained dc1 from the GSLB"))
        await sink.note(note("3 caches cold", step_key="warm", ok=None))
        await sink.aclose()

    asyncio.run(run())
    post, *replies = fake_slack.ok_calls(POST)
    ts = next(ts for ts, m in fake_slack.messages.items() if "thread_ts" not in m)
    assert "thread_ts" not in post
    assert [r["thread_ts"] for r in replies] == [ts, ts]
    assert "[ok] *drain*: drained dc1 from the GSLB" in message_text(replies[0])
    assert "[info] *warm*: 3 caches cold" in replies[1]["text"]


def test_rate_limited_post_is_retried_after_retry_after(fake_slack: FakeSlack) -> None:
    fake_slack.rate_limit(POST, 1, retry_after=1)
    sink = slack_sink(fake_slack)

    async def run() -> None:
        await sink.start(card())
        await sink.aclose()

    asyncio.run(run())
    first, second = fake_slack.requests(POST)
    assert (first.status, second.status) == (429, 200)
    assert second.arrived - first.arrived >= 1.0
    assert second.ok and (sink.sent, sink.failures) == (1, 0)


@pytest.mark.parametrize("status", [500, 502])
def test_server_errors_are_retried(fake_slack: FakeSlack, status: int) -> None:
    fake_slack.server_error(POST, 2, status=status)
    fake_slack.server_error(UPDATE, 1, status=status)
    sink = slack_sink(fake_slack, min_update_interval_s=0.0)

    async def run() -> None:
        await sink.start(card())
        await sink.finish(card(status="succeeded", steps_done=10))
        await sink.aclose()

    asyncio.run(run())
    assert [c.status for c in fake_slack.requests(POST)] == [status, status, 200]
    assert [c.status for c in fake_slack.requests(UPDATE)] == [status, 200]
    assert (sink.sent, sink.failures, sink.fallbacks) == (2, 0, 0)


def test_a_hanging_slack_never_delays_the_caller(
    fake_slack: FakeSlack, chat_log: pytest.LogCaptureFixture
) -> None:
    fake_slack.hang(POST, 3.0)
    sink = slack_sink(fake_slack, timeout_s=0.3, min_update_interval_s=0.05)

    async def run() -> None:
        began = time.perf_counter()
        await sink.start(card())
        assert time.perf_counter() - began < 0.05
        # the worker is now stuck waiting for the answer
        assert await asyncio.to_thread(fake_slack.wait_for, lambda: bool(fake_slack.calls), 2)
        for done in range(1, 4):
            began = time.perf_counter()
            await sink.update(card(steps_done=done))
            await sink.note(note(f"step {done}"))
            assert time.perf_counter() - began < 0.05
        assert await asyncio.to_thread(fake_slack.wait_for, lambda: sink.failures >= 1, 2)
        began = time.perf_counter()
        await sink.finish(card(status="failed", steps_done=3, outcome="dc2 quota exceeded"))
        assert time.perf_counter() - began < 0.05
        await sink.aclose()

    asyncio.run(run())
    assert sink.failures == 1  # the post timed out; the rest never tried a dead message
    assert fake_slack.requests(UPDATE) == []
    lines = fallback_lines(chat_log)
    assert lines[0].startswith("*[RUNNING]* dc-failover → dc2")
    assert sum(line.startswith("[run run-1] [ok] *drain*: step") for line in lines) == 3
    assert lines[-1].startswith("*[FAILED]*") and "dc2 quota exceeded" in lines[-1]
    assert any(
        "Slack chat.postMessage for run run-1 failed (TimeoutError" in r.getMessage()
        for r in chat_log.records
    )


def test_channel_not_found_falls_back_to_the_log(
    fake_slack: FakeSlack, chat_log: pytest.LogCaptureFixture
) -> None:
    fake_slack.slack_error(POST, "channel_not_found")
    sink = slack_sink(fake_slack, min_update_interval_s=0.0)

    async def run() -> None:
        await sink.start(card())
        await sink.update(card(steps_done=5))
        await sink.note(note())
        await sink.finish(card(status="succeeded", steps_done=10))
        await sink.aclose()

    asyncio.run(run())
    assert len(fake_slack.requests(POST)) == 1 and fake_slack.requests(UPDATE) == []
    assert (sink.sent, sink.failures) == (0, 1)
    lines = fallback_lines(chat_log)
    assert lines[0].startswith("*[RUNNING]*")
    assert "[run run-1] [ok] *drain*: drained dc1" in lines
    assert lines[-1].startswith("*[SUCCEEDED]*")
    assert any("error=channel_not_found" in r.getMessage() for r in chat_log.records)


def test_aclose_flushes_finish_without_waiting_for_the_update_interval(
    fake_slack: FakeSlack,
) -> None:
    sink = slack_sink(fake_slack, min_update_interval_s=5.0, close_timeout_s=2.0)

    async def run() -> float:
        await sink.start(card())
        await sink.update(card(steps_done=9))
        await sink.finish(card(status="succeeded", steps_done=10))
        began = time.monotonic()
        await sink.aclose()
        return time.monotonic() - began

    assert asyncio.run(run()) < 1.0
    (update,) = fake_slack.ok_calls(UPDATE)  # the merged update carries the final card
    assert message_text(update).startswith("*[SUCCEEDED]*")
    assert sink.fallbacks == 0


def test_aclose_is_bounded_when_slack_hangs(
    fake_slack: FakeSlack, chat_log: pytest.LogCaptureFixture
) -> None:
    fake_slack.hang(POST, 3.0)
    sink = slack_sink(fake_slack, timeout_s=2.5, close_timeout_s=0.3)

    async def run() -> float:
        await sink.start(card())
        await sink.note(note())
        await sink.finish(card(status="succeeded", steps_done=10))
        began = time.monotonic()
        await sink.aclose()
        return time.monotonic() - began

    assert asyncio.run(run()) < 0.6
    lines = fallback_lines(chat_log)
    assert "[run run-1] [ok] *drain*: drained dc1" in lines
    assert lines[-1].startswith("*[SUCCEEDED]*")
    assert any("still queued for Slack at close" in r.getMessage() for r in chat_log.records)


def test_messages_stay_within_slack_limits(fake_slack: FakeSlack) -> None:
    many = [f"provisioned {i:03d} msg-front replicas in dc2 <ok>" for i in range(250)]
    assert sum(len(h) for h in many) >= 10_000
    huge_line = ["x" * 10_000]
    flood = [f"line {i}: " + "y" * 500 for i in range(400)]  # ~200k chars: over 50 blocks
    sink = slack_sink(fake_slack, min_update_interval_s=0.0)

    async def run() -> None:
        await sink.start(card(highlights=many))
        await sink.update(card(highlights=huge_line))
        await updates_received(fake_slack, 1)  # not merged with finish
        await sink.finish(card(status="succeeded", highlights=flood, outcome="z" * 5_000))
        await sink.aclose()

    asyncio.run(run())
    calls = fake_slack.requests(POST) + fake_slack.requests(UPDATE)
    assert len(calls) == 3 and all(c.ok for c in calls), [c.status for c in calls]
    for call in calls:
        sections = section_texts(call.params)
        assert len(call.params["blocks"]) <= MAX_BLOCKS
        assert all(0 < len(s) <= MAX_SECTION_CHARS for s in sections)
        assert len(call.params["text"]) <= MAX_TEXT_CHARS
    start_text = message_text(calls[0].params)
    assert all(f"provisioned {i:03d} msg-front" in start_text for i in range(250))
    assert "&lt;ok&gt;" in start_text
    assert any(s.endswith("x…") for s in section_texts(calls[1].params))
    last = calls[2].params["blocks"]
    assert len(last) == MAX_BLOCKS
    assert "more lines not shown" in last[-1]["text"]["text"]


def test_consecutive_failures_open_the_breaker(
    fake_slack: FakeSlack, chat_log: pytest.LogCaptureFixture
) -> None:
    fake_slack.server_error(POST, 100, status=503)
    sink = slack_sink(fake_slack, server_error_retries=0, breaker_threshold=2)

    async def run() -> None:
        for i in range(5):
            await sink.start(card(run_id=f"run-{i}"))
        await sink.aclose()

    asyncio.run(run())
    assert len(fake_slack.requests(POST)) == 2
    assert (sink.failures, sink.fallbacks) == (2, 5)
    assert sum(line.startswith("*[RUNNING]*") for line in fallback_lines(chat_log)) == 5


def test_the_token_is_never_logged(fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake_slack.slack_error(POST, "invalid_auth")
    sink = slack_sink(fake_slack)

    async def run() -> None:
        await sink.start(card())
        await sink.aclose()

    asyncio.run(run())
    assert sink.failures == 1
    assert "invalid_auth" in caplog.text
    assert TOKEN not in caplog.text and TOKEN not in repr(sink)


def test_calls_after_aclose_go_to_the_fallback(
    fake_slack: FakeSlack, chat_log: pytest.LogCaptureFixture
) -> None:
    sink: SlackSink = slack_sink(fake_slack)

    async def run() -> None:
        await sink.aclose()
        await sink.start(card())
        await sink.note(note())

    asyncio.run(run())
    assert fake_slack.calls == []
    assert len(fallback_lines(chat_log)) == 2


@pytest.mark.parametrize("buttons", [True, False])
def test_approval_buttons_only_where_slack_can_decide(fake_slack: FakeSlack,
                                                      buttons: bool) -> None:
    """A break-glass (--local) run keeps its decisions in a store Slack cannot reach: its
    message asks for approval without buttons that would decide nothing."""
    from revive.chat.models import ApprovalPrompt

    sink = slack_sink(fake_slack, min_update_interval_s=0.05)
    waiting = card(status="waiting_approval", approval=ApprovalPrompt(
        gate="traffic", question="move dc1's traffic into dc2?", buttons=buttons))

    async def run() -> None:
        await sink.start(card())
        await sink.update(waiting)
        await updates_received(fake_slack, 1)
        await sink.aclose()

    asyncio.run(run())
    (update,) = fake_slack.ok_calls(UPDATE)
    actions = [b for b in update.get("blocks", []) if b.get("type") == "actions"]
    assert bool(actions) is buttons
