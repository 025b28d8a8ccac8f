"""Private Slack messages to one person: how approvers get their one-time approval codes.

The run's living message is public; a code that lets its holder approve a production gate
must not be. ``chat.postMessage`` with a user id as the channel posts in the bot's direct
conversation with that person (the bot needs only ``chat:write``).

Unlike ``SlackSink``, a send here is a blocking call: the caller (a gate that is about to
wait minutes for a person anyway) runs it on a worker thread. It never raises, and the
message text is never logged, because it holds a secret.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from slack_sdk import WebClient

from revive.chat.client import ENV_TOKEN, QuietSdkFilter, slack_api_url
from revive.chat.retry import describe_error, retry_handlers

__all__ = ["DirectMessages", "direct_from_env"]

log = logging.getLogger("revive.chat.direct")
_sdk_logger = logging.getLogger("revive.chat.direct.sdk")
_sdk_logger.addFilter(QuietSdkFilter())  # each failure is reported once, by this module
_sdk_logger.setLevel(logging.INFO)  # slack_sdk logs request bodies at DEBUG: the codes


class DirectMessages:
    """Send a private message to a Slack user; ``sent`` and ``failures`` count the calls."""

    def __init__(self, token: str, *, base_url: str, timeout_s: float = 5.0,
                 client: WebClient | None = None) -> None:
        self._secret = token.strip()
        self.base_url = base_url
        self._client = client or WebClient(
            token=self._secret, base_url=base_url, timeout=int(timeout_s), logger=_sdk_logger,
            retry_handlers=retry_handlers(rate_limit_retries=1, server_error_retries=1,
                                          connection_retries=1, backoff_s=0.2))
        self.sent = 0
        self.failures = 0

    def __repr__(self) -> str:  # never shows the token
        return f"DirectMessages(base_url={self.base_url!r})"

    def send(self, user_id: str, text: str) -> bool:
        """Post ``text`` to ``user_id`` privately; whether Slack took it. Never raises."""
        try:
            self._client.chat_postMessage(channel=user_id, text=text, unfurl_links=False,
                                          unfurl_media=False)
        except Exception as err:  # SlackApiError, timeouts, refused connections
            self.failures += 1
            log.warning("could not send a direct message to %s: %s", user_id,
                        describe_error(err, self._secret))
            return False
        self.sent += 1
        return True


def direct_from_env(env: Mapping[str, str] = os.environ) -> DirectMessages | None:
    """``DirectMessages`` with ``REVIVE_SLACK_BOT_TOKEN`` at ``REVIVE_SLACK_API_URL`` (or
    Slack's); None when no token is set or the URL is unusable: Slack is not configured."""
    token = env.get(ENV_TOKEN, "").strip()
    if not token:
        return None
    try:
        base_url = slack_api_url(env)
    except ValueError as exc:
        log.warning("direct messages: %s; none will be sent", exc)
        return None
    return DirectMessages(token, base_url=base_url)
