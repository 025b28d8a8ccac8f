"""Rendered mrkdwn to Block Kit blocks that Slack will accept.

Slack rejects a whole message (``invalid_blocks``) when one section's text exceeds 3,000
characters or a message has more than 50 blocks; a run with a long highlight list must
still show up. So text is cut here, never by Slack: each paragraph of the rendered text
becomes one section, a paragraph too long for a section is split between lines, a single
line too long for a section is cut with an ellipsis, and when the blocks would exceed the
limit the last one says how many lines were left out.
"""

from __future__ import annotations

import json
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ConfirmObject,
    MarkdownTextObject,
    SectionBlock,
)

from revive.chat.text import render_truncated

__all__ = [
    "APPROVE_ACTION",
    "ELLIPSIS",
    "MAX_BLOCKS",
    "MAX_SECTION_CHARS",
    "MAX_TEXT_CHARS",
    "REJECT_ACTION",
    "approval_buttons",
    "gate_of",
    "text_to_blocks",
    "truncate",
]

MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3_000
MAX_TEXT_CHARS = 3_000
"""Cap for a message's top-level ``text`` (Slack allows more; it is only a notification)."""
ELLIPSIS = "…"
APPROVE_ACTION = "revive_approve"
REJECT_ACTION = "revive_reject"


def truncate(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else its start and an ellipsis."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(ELLIPSIS))] + ELLIPSIS


def _chunks(paragraph: str, limit: int) -> list[list[str]]:
    """Greedily pack a paragraph's lines into groups whose joined text fits ``limit``."""
    groups: list[list[str]] = []
    current: list[str] = []
    size = 0
    for raw in paragraph.split("\n"):
        line = truncate(raw, limit)
        extra = len(line) + (1 if current else 0)
        if current and size + extra > limit:
            groups.append(current)
            current, size = [], 0
            extra = len(line)
        current.append(line)
        size += extra
    if current:
        groups.append(current)
    return groups


def _section(text: str) -> dict[str, Any]:
    return SectionBlock(text=MarkdownTextObject(text=text)).to_dict()


def text_to_blocks(
    mrkdwn: str,
    *,
    max_blocks: int = MAX_BLOCKS,
    max_section_chars: int = MAX_SECTION_CHARS,
) -> list[dict[str, Any]]:
    """Section blocks for ``mrkdwn`` within Slack's limits (one per paragraph when it fits)."""
    groups: list[list[str]] = []
    for paragraph in mrkdwn.split("\n\n"):
        if paragraph.strip():
            groups.extend(_chunks(paragraph.strip("\n"), max_section_chars))
    if len(groups) <= max_blocks:
        return [_section("\n".join(g)) for g in groups]
    kept, dropped = groups[: max_blocks - 1], groups[max_blocks - 1 :]
    hidden = sum(len(g) for g in dropped)
    closing = truncate(render_truncated(hidden), max_section_chars)
    return [*(_section("\n".join(g)) for g in kept), _section(closing)]


def approval_buttons(run_id: str, gate: str) -> dict[str, Any]:
    """Approve / Reject buttons for one gate of one run; each button's value names both, so a
    click can only ever decide the gate it was shown for."""
    value = json.dumps({"run": run_id, "gate": gate}, separators=(",", ":"))
    return ActionsBlock(block_id=f"approval:{gate}"[:255], elements=[
        ButtonElement(text="Approve", action_id=APPROVE_ACTION, value=value, style="primary"),
        ButtonElement(text="Reject", action_id=REJECT_ACTION, value=value, style="danger",
                      confirm=ConfirmObject(title="Reject?", text="The run stops safely "
                                            "without this step.", confirm="Reject",
                                            deny="Back")),
    ]).to_dict()


def gate_of(value: str) -> tuple[str, str]:
    """The (run id, gate) an approval button's value names; ValueError if it names none."""
    try:
        data = json.loads(value)
        run_id, gate = data["run"], data["gate"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not an approval button value: {value[:80]!r}") from exc
    if not (isinstance(run_id, str) and isinstance(gate, str) and run_id and gate):
        raise ValueError(f"not an approval button value: {value[:80]!r}")
    return run_id, gate
