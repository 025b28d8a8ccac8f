"""Who asked (``Caller``), what they are told (``Reply``) and long work started for them (``Job``).

Shared by slash commands and button presses, over HTTP or Socket Mode alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from revive.chat.blocks import MAX_TEXT_CHARS, text_to_blocks, truncate
from revive.chat.text import slack_escape
from revive.store.models import RunOutcome

__all__ = ["Caller", "Job", "Reply", "run_outcome_text"]


@dataclass(frozen=True)
class Caller:
    """Who sent a command or pressed a button, from where, and where later answers go."""

    user_id: str
    user_name: str = ""
    channel_id: str = ""
    response_url: str | None = None
    request_id: str = ""
    """Slack's ``trigger_id``: the same for a retried delivery of the same request."""
    received_at: float = field(default_factory=time.monotonic, compare=False)
    """When the request arrived (monotonic): its ``response_url`` lasts 30 minutes."""

    @property
    def display(self) -> str:
        return self.user_name or self.user_id

    @property
    def identity(self) -> str:
        """How a run records who started it from Slack: readable, and with the user id that
        the two-person rule compares (names can change, ids cannot)."""
        return f"{self.user_name} ({self.user_id})" if self.user_name else self.user_id

    def started(self, triggered_by: str) -> bool:
        """Whether a run's ``triggered_by`` names this person (by id, or by a bare name that
        matches theirs: when unsure, assume it is the same person)."""
        who = triggered_by.strip()
        return who == self.user_id or who.endswith(f"({self.user_id})") or (
            bool(self.user_name) and who == self.user_name)


@dataclass
class Reply:
    """An answer in Slack mrkdwn; ``ephemeral`` answers are shown to the caller only."""

    text: str
    ephemeral: bool = True

    def to_slack(self) -> dict[str, Any]:
        """The JSON body Slack expects, within its limits (50 blocks, 3,000 chars a section)."""
        first = next((line for line in self.text.splitlines() if line.strip()), "revive")
        return {
            "response_type": "ephemeral" if self.ephemeral else "in_channel",
            "text": truncate(first, MAX_TEXT_CHARS),
            "blocks": text_to_blocks(self.text),
        }


@dataclass(frozen=True)
class Job:
    """Long work accepted from Slack and run after the answer: a runbook or a drill."""

    kind: str
    name: str
    params: BaseModel
    caller: Caller
    key: tuple[str, str]
    flow: Any = field(repr=False)


#: How an outcome is flagged; anything not listed (recovered, patched, succeeded...) is good.
_ICONS = {str(RunOutcome.RUNNING): ":hourglass:", "degraded": ":warning:",
          "late": ":snail:",
          **dict.fromkeys(("failed", "aborted", "error", "not approved", "rolled back"), ":x:")}


def run_outcome_text(job: Job, result: Any) -> tuple[str, str]:
    """The answer posted to ``response_url`` when a job ends: (mrkdwn, outcome)."""
    outcome = (result or {}).get("outcome") if isinstance(result, dict) else None
    outcome = str(outcome or "done")
    run_id = result.get("run_id") if isinstance(result, dict) else None
    icon = _ICONS.get(outcome, ":white_check_mark:")
    tail = f" (run `{run_id}`)" if run_id else ""
    name = job.name if job.kind == "run" else f"{getattr(job.params, 'scenario', '')} drill"
    text = f"{icon} *{slack_escape(name)}*: {slack_escape(outcome)}{tail}"
    said = result.get("headline") if isinstance(result, dict) else None
    if said:
        text += f"\n{slack_escape(str(said))}"
    return text, outcome
