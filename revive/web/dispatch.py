"""What a Slack request does, whichever way it arrived: HTTP (``revive serve``) or Socket Mode
(``revive slack socket``). Both transports hand over the request's form or payload and send
back the acknowledgement returned here, so commands and buttons behave the same on both.

Slack delivers a request again when it thinks the first went unanswered (``X-Slack-Retry-Num``
on HTTP, ``retry_attempt`` in Socket Mode), and with one Socket Mode runner per DC the same
request can reach two processes. Requests carry a ``trigger_id``: an answer is remembered by
it, so a redelivery gets the first answer back and starts nothing; across processes, the
store's "one active run" and "one decision per gate" rules hold the line.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
from sqlalchemy import Engine

from revive.store import db
from revive.web.access import Access
from revive.web.approvals import ApprovalHandler, Resume, prefect_resume
from revive.web.commands import CommandHandler
from revive.web.replies import Caller, Job, Reply
from revive.web.runner import BackgroundRunner
from revive.web.settings import WebSettings

__all__ = ["SlackApp", "build_slack_app"]

log = logging.getLogger(__name__)

#: How many answers are remembered for redeliveries (Slack retries within minutes).
REMEMBERED = 2_048


class SlackApp:
    """Commands and button presses for one set of settings and one store."""

    def __init__(self, commands: CommandHandler, approvals: ApprovalHandler,
                 runner: BackgroundRunner) -> None:
        self.commands = commands
        self.approvals = approvals
        self.runner = runner
        self.access = commands.access
        self._answers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def command(self, form: Mapping[str, Any], *, retry: int | None = None) -> dict[str, Any]:
        """The acknowledgement body for a slash command (its form fields; Socket Mode sends
        them as JSON, so values are read as strings)."""
        self.runner.saw_request()
        form = {k: "" if v is None else str(v) for k, v in form.items()}
        caller = Caller(user_id=form.get("user_id", ""), user_name=form.get("user_name", ""),
                        channel_id=form.get("channel_id", ""),
                        response_url=form.get("response_url") or None,
                        request_id=form.get("trigger_id", ""))
        if not caller.user_id:
            return Reply(":warning: The request names no user.").to_slack()
        return self._once(caller.request_id and f"command:{caller.request_id}", retry,
                          lambda: self.commands.handle(caller, form.get("text", "")).to_slack())

    def interaction(self, payload: Mapping[str, Any], *, retry: int | None = None
                    ) -> dict[str, Any]:
        """The acknowledgement of a button press, at once; the decision is taken right after
        on a pool thread and its answer goes to the press's ``response_url``."""
        self.runner.saw_request()
        if payload.get("type") != "block_actions":
            log.info("ignored a Slack interaction of type %r", payload.get("type"))
            return {}
        user = payload.get("user") or {}
        caller = Caller(user_id=str(user.get("id", "")),
                        user_name=str(user.get("username") or user.get("name") or ""),
                        channel_id=str((payload.get("channel") or {}).get("id", "")),
                        response_url=payload.get("response_url") or None,
                        request_id=str(payload.get("trigger_id", "")))
        actions = payload.get("actions") or []
        if not caller.user_id or not actions:
            return {}
        action = actions[0]

        def decide() -> None:  # on the runner's pool: Slack is acknowledged first
            reply = self.approvals.handle(caller, str(action.get("action_id", "")),
                                          str(action.get("value", "")))
            self._post_new(caller.response_url, reply)

        def accept() -> dict[str, Any]:
            self.runner.later(decide)
            return {}

        key = caller.request_id and f"action:{caller.request_id}:{action.get('action_ts', '')}"
        return self._once(key, retry, accept)

    def tell(self, response_url: str | None, reply: Reply) -> None:
        """Send ``reply`` to a ``response_url`` in the background (a new message, not a
        replacement of the one clicked)."""
        self.runner.later(self._post_new, response_url, reply)

    def _post_new(self, response_url: str | None, reply: Reply) -> None:
        self.runner.post(response_url, {**reply.to_slack(), "replace_original": False})

    def _once(self, key: str | None, retry: int | None,
              answer: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """``answer()``, unless request ``key`` was answered before: then that answer again."""
        if key:
            with self._lock:
                if key in self._answers:
                    log.info("Slack redelivered %s (retry %s): answered from the first time",
                             key, retry)
                    return self._answers[key]
        body = answer()
        if key:
            with self._lock:
                self._answers[key] = body
                while len(self._answers) > REMEMBERED:
                    self._answers.popitem(last=False)
        return body


def build_slack_app(
    settings: WebSettings | None = None,
    *,
    engine: Engine | None = None,
    start: Callable[[Job], None] | None = None,
    groups_of: Callable[[str], Iterable[str]] | None = None,
    http_client: httpx.Client | None = None,
    resume: Resume | None = None,
) -> SlackApp:
    """The app with its store migrated. ``start`` replaces the background runner, ``resume``
    Prefect's resume, and ``groups_of`` the Slack user-group lookup (all for tests)."""
    settings = settings if settings is not None else WebSettings()
    if engine is None:
        engine = db.get_engine()
        db.upgrade(engine)
    if groups_of is None:
        from revive.web.groups import groups_from_env

        groups_of = groups_from_env()
    access = Access(settings, engine, groups_of)
    runner = BackgroundRunner(settings, access, http_client)
    commands = CommandHandler(access, start=start or runner.start)
    runner.release = commands.release
    return SlackApp(commands, ApprovalHandler(access, resume or prefect_resume), runner)


def parse_payload(form: Mapping[str, str]) -> dict[str, Any]:
    """An interaction's ``payload`` form field as JSON; ValueError when it is not."""
    data = json.loads(form.get("payload", ""))
    if not isinstance(data, dict):
        raise ValueError("payload is not a JSON object")
    return data
