"""ConsoleSink: the sink without Slack, and every SlackSink's fallback."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest
from rich.console import Console

from revive.chat import ChatSink, ConsoleSink
from tests.chat.cards import card, note


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "revive.chat"]


def test_console_sink_writes_cards_and_merges_updates(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="revive.chat")
    out = io.StringIO()
    sink = ConsoleSink(console=Console(file=out, width=200, color_system=None))
    assert isinstance(sink, ChatSink)

    async def run() -> None:
        await sink.start(card())
        for done in range(1, 6):  # within one interval: held back, the newest wins
            await sink.update(card(steps_done=done, current_step=f"step-{done}"))
        await sink.note(note("breaker open on dc1", ok=False))
        await sink.aclose()
        await sink.finish(card(status="aborted", steps_done=5, outcome="stopped by bob"))

    asyncio.run(run())
    written = lines(caplog)
    assert written[0].startswith("*[RUNNING]* dc-failover → dc2 · prod")
    assert written[1] == "[run run-1] [FAILED] *drain*: breaker open on dc1"
    assert written[2] == (
        "[RUNNING] dc-failover → dc2 (prod) 5/10 steps, now step-5, 0s [run run-1]"
    )
    assert written[3].startswith("*[ABORTED]*") and "stopped by bob" in written[3]
    assert len(written) == 4
    assert [r.levelno for r in caplog.records if r.name == "revive.chat"] == [
        logging.INFO,
        logging.WARNING,
        logging.INFO,
        logging.WARNING,
    ]
    shown = out.getvalue()
    assert "[RUNNING]" in shown and "[ABORTED]" in shown  # brackets are text, not Rich markup
    assert sink.lines_written == 4 and sink.errors == 0


def test_console_sink_writes_an_update_once_the_interval_passed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="revive.chat")
    sink = ConsoleSink(min_update_interval_s=0.05)

    async def run() -> None:
        await sink.start(card())
        await asyncio.sleep(0.06)
        await sink.update(card(steps_done=2))
        await sink.update(card(steps_done=3))  # held back, then superseded by finish
        await sink.finish(card(status="succeeded", steps_done=10))
        await sink.aclose()

    asyncio.run(run())
    written = lines(caplog)
    assert len(written) == 3
    assert written[1].startswith("[RUNNING] dc-failover → dc2 (prod) 2/10 steps")
    assert written[2].startswith("*[SUCCEEDED]*")


def test_a_broken_console_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="revive.chat")
    out = io.StringIO()
    out.close()
    sink = ConsoleSink(console=Console(file=out))

    asyncio.run(sink.start(card()))
    assert sink.errors == 1
    assert lines(caplog)[0].startswith("*[RUNNING]*")
    assert "console output failed" in lines(caplog)[1]
