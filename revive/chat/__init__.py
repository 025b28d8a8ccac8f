"""Run progress in chat: a living Slack message per run, with the log as the fallback.

Chat is never on the critical path of a recovery: see ``revive.chat.slack_sink`` for how slow,
rate-limited or failing Slack calls are kept off the flows' event loop.
"""

from revive.chat.console import ConsoleSink
from revive.chat.models import RunCard, RunStatus, StepNote, Trigger
from revive.chat.sink import ChatSink, chat_from_env
from revive.chat.slack_sink import SlackSettings, SlackSink

__all__ = [
    "ChatSink",
    "ConsoleSink",
    "RunCard",
    "RunStatus",
    "SlackSettings",
    "SlackSink",
    "StepNote",
    "Trigger",
    "chat_from_env",
]
