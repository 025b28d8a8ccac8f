"""What a runbook tells chat: one living "run card" per run, and short notes per step.

A run's progress is shown as a single message that is edited in place (the *run card*)
rather than a stream of messages, so a channel stays readable during an incident. Step
details that people may want to scroll back to are replies in that message's thread.

The models are deliberately lenient (no range checks, the link is a plain string): they are
built on the recovery's critical path, and a chat detail must never make a flow fail. Odd
values are clamped when rendered instead.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ApprovalPrompt", "RunCard", "RunStatus", "StepNote", "Trigger"]


class RunStatus(StrEnum):
    """Where a run stands; the last three are terminal."""

    RUNNING = "running"
    WAITING_APPROVAL = "waiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def label(self) -> str:
        """Emoji-free title text, e.g. ``RUNNING`` or ``WAITING APPROVAL``."""
        return self.value.replace("_", " ").upper()

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.ABORTED)


class Trigger(StrEnum):
    """Who or what started the run."""

    CLI = "cli"
    UI = "ui"
    SLACK = "slack"
    SCHEDULE = "schedule"
    AUTOMATION = "automation"


class ApprovalPrompt(BaseModel):
    """A gate waiting for a person: what they are asked, and how long they have.

    In Slack the living message then carries Approve / Reject buttons whose value names the
    run and the gate, so a click is tied to exactly one decision.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    gate: str
    question: str
    timeout_s: float | None = None
    buttons: bool = True
    """False for a break-glass (``--local``) run: its decisions are in a store Slack's
    buttons cannot reach, so the message says how to approve from the terminal instead."""


class RunCard(BaseModel):
    """The whole state of one run's living message; every update sends a complete card.

    Cards are immutable: build the next one with ``card.model_copy(update={...})``. Sinks
    keep a private deep copy, so a caller may reuse its highlight list freely.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    runbook: str
    target_dc: str | None = None
    environment: str
    status: RunStatus = RunStatus.RUNNING
    steps_done: int = 0
    steps_total: int = 0
    current_step: str | None = None
    started_by: str
    trigger: Trigger
    elapsed_real_s: float = 0.0
    elapsed_sim_s: float | None = None
    outcome: str | None = None
    highlights: list[str] = Field(default_factory=list)
    link: str | None = None
    """URL of the run in the Prefect UI; shown as a link when it is http(s)."""
    approval: ApprovalPrompt | None = None
    """Set while the run waits at an approval gate (status ``waiting_approval``)."""

    @property
    def final(self) -> bool:
        """True when the status is terminal (succeeded, failed or aborted)."""
        return self.status.terminal


class StepNote(BaseModel):
    """A short line about one step, posted as a reply in the run message's thread.

    ``ok`` is True for success, False for failure and None for plain information.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    step_key: str
    text: str
    ok: bool | None = None
