"""Where runbooks report progress: Slack when it is configured and healthy, else the log.

The rule this package exists for: chat is never on the critical path. A DC failover must
run at full speed while Slack is slow, rate-limited, erroring or down, so every
``ChatSink`` method is ``async``, never raises, and returns within milliseconds. How each
sink keeps that promise is its module's business: ``revive.chat.console`` (the log, also
Slack's fallback) and ``revive.chat.slack_sink`` (a worker thread, merged updates, a
circuit breaker).

``chat_from_env`` picks the sink from ``REVIVE_SLACK_*`` variables: no token or no channel
means ``ConsoleSink``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from revive.chat.client import ENV_CHANNEL, ENV_TOKEN, slack_api_url
from revive.chat.console import LOGGER_NAME, ConsoleSink
from revive.chat.models import RunCard, StepNote
from revive.chat.slack_sink import SlackSettings, SlackSink

__all__ = ["ChatSink", "chat_from_env"]

_diag = logging.getLogger(f"{LOGGER_NAME}.slack")


@runtime_checkable
class ChatSink(Protocol):
    """Progress reporting for one process; safe to share between runs.

    No method raises and none blocks its caller for more than a few milliseconds.
    """

    async def start(self, card: RunCard) -> None:
        """Post the run's living message."""
        ...

    async def update(self, card: RunCard) -> None:
        """Replace the living message's content; merged, at most ~1 per second per run."""
        ...

    async def note(self, note: StepNote) -> None:
        """Add a line in the living message's thread."""
        ...

    async def finish(self, card: RunCard) -> None:
        """The final content of the living message; never dropped."""
        ...

    async def aclose(self) -> None:
        """Flush what is pending (bounded by a timeout), then stop."""
        ...


def chat_from_env(env: Mapping[str, str] = os.environ) -> ChatSink:
    """``SlackSink`` when ``REVIVE_SLACK_BOT_TOKEN`` and ``REVIVE_SLACK_CHANNEL`` are set.

    ``REVIVE_SLACK_API_URL`` overrides the Web API base URL (it must end with "/"; one is
    added when missing). Anything missing or unusable gives a ``ConsoleSink``: chat is
    never a reason for a runbook not to start.
    """
    token = env.get(ENV_TOKEN, "").strip()
    channel = env.get(ENV_CHANNEL, "").strip()
    if not token or not channel:
        missing = ENV_TOKEN if not token else ENV_CHANNEL
        _diag.info("chat: %s is not set; progress goes to the log only", missing)
        return ConsoleSink()
    try:
        base_url = slack_api_url(env)
    except ValueError as exc:
        _diag.warning("chat: %s; progress goes to the log only", exc)
        return ConsoleSink()
    _diag.info("chat: posting progress to Slack channel %s via %s", channel, base_url)
    return SlackSink(token, channel, settings=SlackSettings(base_url=base_url))
