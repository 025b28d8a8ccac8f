"""Test data and helpers shared by the chat tests."""

from __future__ import annotations

from typing import Any

from revive.chat import ConsoleSink, RunCard, SlackSettings, SlackSink, StepNote
from tests.chat.fake_slack import FakeSlack

TOKEN = "xoxb-1234-test-token-never-logged"
CHANNEL = "#dc-recovery"


def card(**changes: Any) -> RunCard:
    """A running dc-failover card; keyword arguments override fields."""
    base: dict[str, Any] = {
        "run_id": "run-1",
        "runbook": "dc-failover",
        "target_dc": "dc2",
        "environment": "prod",
        "status": "running",
        "steps_done": 0,
        "steps_total": 10,
        "current_step": "provision",
        "started_by": "alice",
        "trigger": "cli",
        "elapsed_real_s": 0.0,
        "elapsed_sim_s": 0.0,
        "highlights": [],
        "link": "http://127.0.0.1:4200/runs/flow-run/run-1",
    }
    return RunCard(**{**base, **changes})


def note(text: str = "drained dc1", **changes: Any) -> StepNote:
    return StepNote(**{"run_id": "run-1", "step_key": "drain", "text": text, "ok": True, **changes})


def slack_sink(fake: FakeSlack, **settings: Any) -> SlackSink:
    """A SlackSink pointed at ``fake``, with test-friendly timeouts unless overridden."""
    defaults: dict[str, Any] = {
        "base_url": fake.url,
        "timeout_s": 2.0,
        "close_timeout_s": 5.0,
        "backoff_s": 0.05,
    }
    return SlackSink(
        TOKEN, CHANNEL, settings=SlackSettings(**{**defaults, **settings}), fallback=ConsoleSink()
    )


def section_texts(params: dict[str, Any]) -> list[str]:
    """The mrkdwn text of each section block a call carried."""
    return [b["text"]["text"] for b in params.get("blocks", []) if b["type"] == "section"]


def message_text(params: dict[str, Any]) -> str:
    """All the visible text of a call (its sections joined)."""
    return "\n".join(section_texts(params))
