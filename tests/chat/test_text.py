"""Rendering cards and notes through the templates, and fitting them into Block Kit."""

from __future__ import annotations

import pytest

from revive.chat.blocks import MAX_BLOCKS, MAX_SECTION_CHARS, text_to_blocks, truncate
from revive.chat.text import (
    format_duration,
    progress_bar,
    render_card,
    render_card_line,
    render_note,
)
from tests.chat.cards import card, note


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, None),
        (-3, "0s"),
        (0.4, "0s"),
        (42, "42s"),
        (125, "2m 05s"),
        (7_300, "2h 01m 40s"),
        (183_840, "2d 03h 04m"),
    ],
)
def test_format_duration(seconds: float | None, text: str | None) -> None:
    assert format_duration(seconds) == text


def test_progress_bar_clamps() -> None:
    assert progress_bar(3, 10, width=10) == ("###.......", 30)
    assert progress_bar(12, 10, width=4) == ("####", 100)
    assert progress_bar(-1, 10, width=4) == ("....", 0)
    assert progress_bar(0, 0, width=4) == ("....", None)


def test_run_card_mrkdwn_for_slack() -> None:
    text = render_card(
        card(
            steps_done=3,
            current_step="restart <msg-front>",
            elapsed_real_s=125,
            elapsed_sim_s=7_300,
            highlights=["provisioned 22 msg-front in dc2", "a & b"],
        ),
        slack=True,
    )
    assert text == (
        "*[RUNNING]* dc-failover → dc2 · prod\n"
        "`######..............` 3/10 steps (30%)\n"
        "Current step: `restart &lt;msg-front&gt;`\n"
        "Elapsed: 2m 05s real, 2h 01m 40s simulated\n"
        "Started by alice via cli · run `run-1`\n"
        "\n"
        "*Highlights*\n"
        "• provisioned 22 msg-front in dc2\n"
        "• a &amp; b\n"
        "\n"
        "<http://127.0.0.1:4200/runs/flow-run/run-1|Open the run in Prefect>"
    )


def test_run_card_for_the_console_is_not_escaped() -> None:
    text = render_card(
        card(
            status="waiting_approval",
            target_dc=None,
            elapsed_sim_s=None,
            current_step=None,
            outcome="needs <approval>",
            link="not a url",
        )
    )
    assert text.splitlines()[0] == "*[WAITING APPROVAL]* dc-failover · prod"
    assert "Elapsed: 0s real\n" in text and "simulated" not in text
    assert "*Outcome:* needs <approval>" in text
    assert "not a url" not in text and "Current step" not in text


def test_one_line_summary_and_note() -> None:
    done = card(status="succeeded", steps_done=10, elapsed_real_s=61, outcome="dc2 serves all")
    assert render_card_line(done) == (
        "[SUCCEEDED] dc-failover → dc2 (prod) 10/10 steps, 1m 01s: dc2 serves all [run run-1]"
    )
    assert render_note(note("a <b>", ok=None), slack=True) == "[info] *drain*: a &lt;b&gt;"


def test_truncate() -> None:
    assert truncate("abc", 3) == "abc"
    assert truncate("abcd", 3) == "ab…"


def test_blocks_split_long_paragraphs_between_lines() -> None:
    lines = [f"{i:04d} " + "h" * 95 for i in range(100)]  # 10,000 chars in one paragraph
    blocks = text_to_blocks("title\n\n" + "\n".join(lines))
    texts = [b["text"]["text"] for b in blocks]
    assert texts[0] == "title"
    assert all(len(t) <= MAX_SECTION_CHARS for t in texts)
    assert "\n".join(texts[1:]).splitlines() == lines  # nothing lost, nothing cut


def test_blocks_are_capped_with_a_closing_line() -> None:
    blocks = text_to_blocks("\n\n".join(f"paragraph {i}" for i in range(80)))
    assert len(blocks) == MAX_BLOCKS
    assert blocks[-2]["text"]["text"] == "paragraph 48"
    assert blocks[-1]["text"]["text"] == ("_… 31 more lines not shown (Slack message size limit)._")
