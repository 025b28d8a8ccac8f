"""Rendered mrkdwn to Block Kit blocks that Slack will accept.

Slack rejects a whole message (``invalid_blocks``) when one section's text exceeds 3,000
characters or a message has more than 50 blocks; a run with a long highlight list must
still show up. So text is cut here, never by Slack: each paragraph of the rendered text
becomes one section, a paragraph too long for a section is split between lines, a single
line too long for a section is cut with an ellipsis, and when the blocks would exceed the
limit the last one says how many lines were left out.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import MarkdownTextObject, SectionBlock

from revive.chat.text import render_truncated

__all__ = [
    "ELLIPSIS",
    "MAX_BLOCKS",
    "MAX_SECTION_CHARS",
    "MAX_TEXT_CHARS",
    "text_to_blocks",
    "truncate",
]

MAX_BLOCKS = 50
MAX_SECTION_CHARS = 3_000
MAX_TEXT_CHARS = 3_000
"""Cap for a message's top-level ``text`` (Slack allows more; it is only a notification)."""
ELLIPSIS = "…"


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
