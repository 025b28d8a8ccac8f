"""Where every Slack client of revive gets its token, Web API URL and SDK logger.

``SlackSink``, the approvers' private messages (``revive.chat.direct``) and the web layer
(``revive.web``: Socket Mode, user groups, bot replies) all talk to the same Web API with the
same bot token. Reading ``REVIVE_SLACK_*`` in one place keeps them pointed at one server
(production Slack, or a fake one in tests and the lab) and keeps slack_sdk's own failure logs
quiet where the caller reports each failure itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from slack_sdk import WebClient

from revive.chat.console import LOGGER_NAME
from revive.chat.retry import retry_handlers

__all__ = [
    "DEFAULT_SLACK_API_URL",
    "ENV_API_URL",
    "ENV_CHANNEL",
    "ENV_TOKEN",
    "QuietSdkFilter",
    "sdk_logger",
    "slack_api_url",
    "web_client_from_env",
]

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
ENV_TOKEN = "REVIVE_SLACK_BOT_TOKEN"
ENV_CHANNEL = "REVIVE_SLACK_CHANNEL"
ENV_API_URL = "REVIVE_SLACK_API_URL"

_diag = logging.getLogger(f"{LOGGER_NAME}.slack")


class QuietSdkFilter(logging.Filter):
    """Drop slack_sdk's own "Failed to send a request" errors: the caller reports each one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to send a request to Slack API server")


sdk_logger = logging.getLogger(f"{LOGGER_NAME}.slack.sdk")
sdk_logger.addFilter(QuietSdkFilter())


def slack_api_url(env: Mapping[str, str] = os.environ) -> str:
    """The Web API base URL every Slack client of revive uses: ``REVIVE_SLACK_API_URL`` or
    Slack's, ending in "/" (added, with a warning, when missing). ValueError when it is not
    http(s): each caller decides whether that means "log only" or "cannot start"."""
    base_url = env.get(ENV_API_URL, "").strip() or DEFAULT_SLACK_API_URL
    if not base_url.startswith(("http://", "https://")):
        raise ValueError(f"{ENV_API_URL}={base_url!r} is not an http(s) URL")
    if not base_url.endswith("/"):
        _diag.warning("chat: %s should end with '/'; using %s/", ENV_API_URL, base_url)
        base_url += "/"
    return base_url


def web_client_from_env(env: Mapping[str, str] = os.environ, *, timeout_s: float = 10.0,
                        logger: logging.Logger | None = None) -> WebClient:
    """A Web API client with the bot token (``REVIVE_SLACK_BOT_TOKEN``, optional: Socket
    Mode connects with the app token instead) at ``slack_api_url``; ValueError as there."""
    return WebClient(token=env.get(ENV_TOKEN, "").strip() or None, base_url=slack_api_url(env),
                     timeout=int(timeout_s), retry_handlers=retry_handlers(),
                     logger=logger or sdk_logger)
