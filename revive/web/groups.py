"""Which Slack user groups a person is in, for roles granted to groups in ``REVIVE_ROLES``.

The command handler asks for a caller's groups on every command, on the web app's
threadpool, and Slack wants an answer to a slash command within three seconds. So:

* one ``usergroups.list`` call with ``include_users`` gives every group with its members;
  the membership map is cached for ``ttl_s`` (groups change rarely, and the method is
  rate-limited to about 20 calls a minute);
* short timeouts and few retries: a slow Slack costs a command at most a couple of
  seconds, and a 429 is not waited out;
* a failure (error, timeout, 429, a malformed answer) never raises: the last good map is
  used (with a warning), or no groups at all when there is none yet. Roles granted to
  users directly still work, so a chat outage cannot lock out the people who fix it.
  After a failure Slack is not asked again for ``retry_after_failure_s`` (or for as long
  as a 429's ``Retry-After`` says, if longer), so an outage does not make every command
  wait for a timeout;
* one fetch at a time: concurrent callers without a map wait for the one fetch in flight;
  callers with a stale map keep using it while another thread refreshes it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from revive.chat.client import DEFAULT_SLACK_API_URL, ENV_TOKEN, QuietSdkFilter, slack_api_url
from revive.chat.retry import describe_error, retry_after, retry_handlers

__all__ = ["GroupsOf", "SlackUserGroups", "groups_from_env", "no_groups"]

GroupsOf = Callable[[str], Iterable[str]]
"""A user id -> the ids of the Slack user groups they belong to (``CommandHandler.groups_of``)."""

log = logging.getLogger("revive.web.groups")
_sdk_logger = logging.getLogger("revive.web.groups.sdk")
_sdk_logger.addFilter(QuietSdkFilter())  # each failure is reported once, by this module

Members = Mapping[str, tuple[str, ...]]
"""User id -> sorted user-group ids."""


def no_groups(user_id: str) -> tuple[str, ...]:
    """``groups_of`` without Slack: nobody is in any group, so only direct grants count."""
    return ()


@dataclass(frozen=True)
class _Snapshot:
    members: Members
    fetched_at: float


class SlackUserGroups:
    """``groups_of`` backed by Slack's ``usergroups.list``, cached and outage-proof.

    Call it with a user id; it returns that user's group ids (a tuple, maybe empty) and
    never raises. ``clock`` (monotonic seconds) is injectable so tests can age the cache.
    ``fetches`` and ``failures`` count Slack calls, for tests and metrics.
    """

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_SLACK_API_URL,
        ttl_s: float = 300.0,
        timeout_s: float = 2.0,
        retry_after_failure_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        client: WebClient | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.retry_after_failure_s = retry_after_failure_s
        self._clock = clock
        self._secret = token.strip()
        self._client = client or WebClient(
            token=self._secret,
            base_url=base_url,
            timeout=timeout_s,  # typed int in slack_sdk; urllib takes float seconds
            logger=_sdk_logger,
            # A command is waiting: one quick retry of a 5xx or a reset connection, and a
            # 429 is not waited out (the cached map, if any, serves meanwhile).
            retry_handlers=retry_handlers(
                rate_limit_retries=0,
                server_error_retries=1,
                connection_retries=1,
                backoff_s=0.1,
            ),
        )
        self.base_url = base_url
        self.fetches = 0
        self.failures = 0
        self._lock = threading.Lock()  # guards the fields below and the counters
        self._fetching = threading.Lock()  # held by the one thread talking to Slack
        self._snapshot: _Snapshot | None = None
        self._next_attempt = float("-inf")

    def __repr__(self) -> str:  # never shows the token
        return f"SlackUserGroups(base_url={self.base_url!r}, ttl_s={self.ttl_s})"

    def __call__(self, user_id: str) -> tuple[str, ...]:
        """The ids of the user groups ``user_id`` is in; () when unknown. Never raises."""
        try:
            return tuple(self.members().get(user_id, ()))
        except Exception:  # a bug here must not cost anyone their direct roles
            log.exception("user groups: looking up %s failed; assuming no groups", user_id)
            return ()

    def members(self) -> Members:
        """The whole membership map (user id -> group ids), fetched or refreshed as needed."""
        snapshot, due = self._cached()
        if not due:
            return snapshot.members if snapshot else {}
        # Only one thread fetches. Without a map, wait for it (bounded); with one, a stale
        # map now beats a fresh one in a few seconds.
        if snapshot is None:
            # bounded: one fetch is at most a timeout plus a retry or two
            got = self._fetching.acquire(timeout=3 * self.timeout_s + 1.0)
        else:
            got = self._fetching.acquire(blocking=False)
        if not got:
            return snapshot.members if snapshot else {}
        try:
            snapshot, due = self._cached()  # another thread may have just fetched
            if due:
                self._refresh()
                snapshot, _ = self._cached()
            return snapshot.members if snapshot else {}
        finally:
            self._fetching.release()

    def invalidate(self) -> None:
        """Forget the map's age so the next call asks Slack (e.g. after a role change)."""
        with self._lock:
            if self._snapshot is not None:
                self._snapshot = _Snapshot(self._snapshot.members, float("-inf"))
            self._next_attempt = float("-inf")

    # -- internals ------------------------------------------------------------------------

    def _cached(self) -> tuple[_Snapshot | None, bool]:
        """The current snapshot and whether Slack should be asked now."""
        now = self._clock()
        with self._lock:
            snapshot = self._snapshot
            fresh = snapshot is not None and now - snapshot.fetched_at < self.ttl_s
            return snapshot, not fresh and now >= self._next_attempt

    def _refresh(self) -> None:
        """Ask Slack once; keep the new map, or note the failure and keep the old one."""
        with self._lock:
            self.fetches += 1
        try:
            answer = self._client.usergroups_list(include_users=True)
            members = _parse(answer.data)
        except Exception as err:  # SlackApiError, timeouts, refused connections, bad JSON
            self._failed(err)
            return
        with self._lock:
            self._snapshot = _Snapshot(members, self._clock())
            self._next_attempt = float("-inf")
        log.debug("user groups: %d member(s) of Slack user groups loaded", len(members))

    def _failed(self, err: Exception) -> None:
        now = self._clock()
        backoff = max(self.retry_after_failure_s, _retry_after_s(err))
        with self._lock:
            self.failures += 1
            self._next_attempt = now + backoff
            snapshot = self._snapshot
        reason = self._describe(err)
        if snapshot is not None:
            log.warning(
                "user groups: Slack usergroups.list failed (%s); using the membership from "
                "%.0f s ago, asking again in %.0f s",
                reason,
                now - snapshot.fetched_at,
                backoff,
            )
        else:
            log.warning(
                "user groups: Slack usergroups.list failed (%s); roles granted to user "
                "groups do not apply until it answers (asking again in %.0f s)",
                reason,
                backoff,
            )

    def _describe(self, err: Exception) -> str:
        return describe_error(err, self._secret)


def _parse(data: Any) -> dict[str, tuple[str, ...]]:
    """``usergroups.list`` data -> user id -> sorted group ids; ValueError when malformed."""
    if not isinstance(data, dict) or not isinstance(data.get("usergroups"), list):
        raise ValueError("usergroups.list answered without a usergroups list")
    groups: dict[str, set[str]] = {}
    for group in data["usergroups"]:
        if not isinstance(group, dict) or not isinstance(group.get("id"), str):
            continue
        users = group.get("users")
        for user in users if isinstance(users, list) else ():
            if isinstance(user, str):
                groups.setdefault(user, set()).add(group["id"])
    return {user: tuple(sorted(ids)) for user, ids in groups.items()}


def _retry_after_s(err: Exception) -> float:
    """Seconds a 429's ``Retry-After`` asks for; 0 for anything else."""
    if not isinstance(err, SlackApiError) or err.response.status_code != 429:
        return 0.0
    return retry_after(err.response.headers or {}) or 0.0


def groups_from_env(env: Mapping[str, str] = os.environ) -> GroupsOf:
    """``SlackUserGroups`` when ``REVIVE_SLACK_BOT_TOKEN`` is set, else ``no_groups``.

    The Web API base URL follows ``chat_from_env``'s rules: ``REVIVE_SLACK_API_URL`` or
    Slack's, http(s) only, "/" added when missing. An unusable URL means no groups (with a
    warning) rather than a web app that does not start.
    """
    token = env.get(ENV_TOKEN, "").strip()
    if not token:
        log.info("user groups: %s is not set; roles apply to user ids only", ENV_TOKEN)
        return no_groups
    try:
        base_url = slack_api_url(env)
    except ValueError as exc:
        log.warning("user groups: %s; roles apply to user ids only", exc)
        return no_groups
    return SlackUserGroups(token, base_url=base_url)
