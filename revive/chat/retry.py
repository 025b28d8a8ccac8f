"""Retry policy for Slack calls: short, bounded, and only on the chat worker thread.

slack_sdk retries inside the (blocking) call, so every second spent here is a second the
chat worker is busy; the recovery itself never waits on it. The policy is therefore
generous with transient errors and stingy with waiting:

* 429: retried after ``Retry-After`` (slack_sdk's ``RateLimitErrorRetryHandler``), unless
  Slack asks for more than ``max_wait_s``; then the message goes to the console at once.
* 5xx: retried with a short exponential backoff. slack_sdk's own ``ServerErrorRetryHandler``
  only covers 500 and 503, while a proxy or load balancer in front of Slack answers 502 and
  504 just as often, so this handler takes the whole 5xx range.
* connection resets: slack_sdk's ``ConnectionErrorRetryHandler``. Timeouts are not retried:
  a Slack that does not answer within the timeout is treated as down.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.interval_calculator import RetryIntervalCalculator
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

__all__ = [
    "BoundedRateLimitRetryHandler",
    "HttpServerErrorRetryHandler",
    "ShortBackoff",
    "describe_error",
    "retry_after",
    "retry_handlers",
]


class ShortBackoff(RetryIntervalCalculator):
    """``base_s * 2**attempt`` plus up to 25% jitter, never more than ``max_s``.

    slack_sdk's default calculator adds up to a full second of jitter, which is most of a
    chat worker's patience.
    """

    def __init__(self, base_s: float = 0.25, max_s: float = 5.0) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self._rng = random.Random()  # its own: chat retries never perturb anyone's sequence

    def calculate_sleep_duration(self, current_attempt: int) -> float:
        interval = self.base_s * (2**current_attempt)
        return min(self.max_s, interval * (1 + self._rng.random() / 4))


def retry_after(headers: Mapping[str, str | Sequence[str]]) -> float | None:
    """The ``Retry-After`` value in seconds, or None when absent or not a whole number."""
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value if isinstance(value, str) else (value[0] if value else "")
            try:
                return float(int(raw))
            except ValueError:
                return None
    return None


class BoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler, but it gives up when Slack asks to wait too long.

    The built-in handler sleeps ``int(Retry-After)`` plus up to a second; it also fails on a
    non-integer header, so such a header is not retried either.
    """

    def __init__(self, max_retry_count: int = 2, max_wait_s: float = 10.0) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait_s = max_wait_s

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or not super()._can_retry(
            state=state, request=request, response=response, error=error
        ):
            return False
        wait = retry_after(response.headers)
        return wait is not None and wait <= self.max_wait_s


class HttpServerErrorRetryHandler(RetryHandler):
    """Retries any HTTP 5xx answer (slack_sdk's built-in handler knows only 500 and 503)."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and 500 <= response.status_code <= 599


def retry_handlers(
    *,
    rate_limit_retries: int = 2,
    max_retry_after_s: float = 10.0,
    server_error_retries: int = 2,
    connection_retries: int = 1,
    backoff_s: float = 0.25,
) -> list[RetryHandler]:
    """The handlers a ``WebClient`` for chat gets, in the order slack_sdk consults them."""
    backoff = ShortBackoff(base_s=backoff_s)
    return [
        BoundedRateLimitRetryHandler(
            max_retry_count=rate_limit_retries, max_wait_s=max_retry_after_s
        ),
        HttpServerErrorRetryHandler(
            max_retry_count=server_error_retries, interval_calculator=backoff
        ),
        ConnectionErrorRetryHandler(
            max_retry_count=connection_retries, interval_calculator=backoff
        ),
    ]


def describe_error(err: Exception, token: str = "") -> str:
    """A short description of a failed Slack call that never shows ``token``."""
    from slack_sdk.errors import SlackApiError

    if isinstance(err, SlackApiError):
        response = err.response
        code = response.get("error") if isinstance(response.data, dict) else None
        text = f"HTTP {response.status_code}, error={code or 'unknown'}"
    else:
        text = f"{type(err).__name__}: {err}"
    return text.replace(token, "xox?-<redacted>") if token else text
