"""Cards and notes to text, through the templates in ``runbooks/templates/chat/``.

Wording is data: every line a person reads comes from a Jinja2 template, so an estate can
change it (see ``revive.render``). This module only prepares the values templates cannot
compute cleanly (durations, the progress bar, Slack escaping) and clamps odd numbers, so
rendering a card never fails because a flow sent, say, more steps done than planned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from revive.chat.models import RunCard, RunStatus, StepNote
from revive.render import render

__all__ = [
    "BAR_WIDTH",
    "format_duration",
    "progress_bar",
    "render_card",
    "render_card_line",
    "render_note",
    "render_truncated",
    "slack_escape",
]

BAR_WIDTH = 20
TEMPLATES = "chat"


def slack_escape(text: str) -> str:
    """Escape the three characters Slack mrkdwn reserves for links and mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str) -> str:
    return text


def _escaper(slack: bool) -> Callable[[str], str]:
    return slack_escape if slack else _plain


def format_duration(seconds: float | None) -> str | None:
    """``42s``, ``12m 05s``, ``3h 02m 05s``, ``2d 03h 04m``; None stays None."""
    if seconds is None:
        return None
    total = max(0, round(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> tuple[str, int | None]:
    """A bar of ``#`` and ``.`` characters and the percentage (None when total is 0)."""
    total = max(0, total)
    done = min(max(0, done), total)
    if total == 0:
        return "." * width, None
    filled = done * width // total
    return "#" * filled + "." * (width - filled), done * 100 // total


def _card_context(card: RunCard, slack: bool) -> dict[str, Any]:
    steps_total = max(0, card.steps_total, card.steps_done)
    steps_done = max(0, card.steps_done)
    bar, percent = progress_bar(steps_done, steps_total)
    status = RunStatus(card.status)
    link = card.link if card.link and card.link.startswith(("http://", "https://")) else None
    return {
        "card": card,
        "slack": slack,
        "esc": _escaper(slack),
        "status_label": status.label,
        "final": status.terminal,
        "steps_done": steps_done,
        "steps_total": steps_total,
        "bar": bar,
        "percent": percent,
        "elapsed_real": format_duration(card.elapsed_real_s),
        "elapsed_sim": format_duration(card.elapsed_sim_s),
        "link": link,
        "approval_wait": format_duration(card.approval.timeout_s) if card.approval else None,
    }


def render_card(card: RunCard, *, slack: bool = False) -> str:
    """The full living message (mrkdwn); paragraphs are separated by blank lines."""
    return render(f"{TEMPLATES}/run_card.md.j2", **_card_context(card, slack)).strip()


def render_card_line(card: RunCard, *, slack: bool = False) -> str:
    """One line summing the card up: Slack's notification text, the console's update line."""
    return render(f"{TEMPLATES}/run_card.txt.j2", **_card_context(card, slack)).strip()


def render_note(note: StepNote, *, slack: bool = False) -> str:
    """A step note (mrkdwn)."""
    return render(f"{TEMPLATES}/step_note.md.j2", note=note, esc=_escaper(slack)).strip()


def render_truncated(hidden_lines: int) -> str:
    """The closing line of a message cut to fit Slack's limits."""
    return render(f"{TEMPLATES}/truncated.md.j2", hidden_lines=hidden_lines).strip()
