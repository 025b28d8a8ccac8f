"""What a Slack request does, whichever way it arrived: HTTP (``revive serve``) or Socket Mode
(``revive slack socket``). Both transports hand over the request's form or payload and send
back the acknowledgement returned here, so commands and buttons behave the same on both.

A request is acted on once. Slack delivers one again when it thinks the first went unanswered
(``X-Slack-Retry-Num`` on HTTP, ``retry_attempt`` in Socket Mode), with one Socket Mode runner
per DC the same request can reach two processes, and a signed HTTP request captured on the
way can be sent again while its signature is fresh (5 minutes), to this server after a
restart or to another one. So every request is remembered in the store, not in this
process's memory, under its keys: the signature and timestamp of a signed HTTP request, and
Slack's ``trigger_id`` when it has one. A copy seen again gets the first answer back, starts
nothing, and is audited as ``replayed``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import Engine

from revive.errors import StoreError
from revive.store import db, service
from revive.web.access import Access
from revive.web.approvals import ApprovalHandler, Resume, prefect_resume
from revive.web.commands import CommandHandler
from revive.web.replies import Caller, Job, Reply
from revive.web.runner import BackgroundRunner
from revive.web.settings import WebSettings

__all__ = ["MalformedRequest", "SlackApp", "build_slack_app", "parse_payload"]

log = logging.getLogger(__name__)

#: How long a request is remembered: Slack's signature window. A signed request is refused
#: after it, so remembering it longer would protect nothing.
WINDOW_S = 5 * 60

IN_PROGRESS = (":hourglass: This request is already being handled; its answer follows here. "
               "Nothing was started a second time.")
NO_STORE = (":x: revive cannot record this request (its store is unavailable), so it did "
            "nothing. Try again shortly, or use the CLI.")


class MalformedRequest(ValueError):
    """A payload that is not shaped as Slack sends it; the HTTP answer is 400."""


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    raise MalformedRequest(f"{where}: expected a string")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedRequest(f"{where}: expected an object")
    return value


def _when(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


class SlackApp:
    """Commands and button presses for one set of settings and one store.

    ``clock`` gives the time in epoch seconds; it must be the signature check's clock, as
    requests are remembered exactly as long as their signature holds.
    """

    def __init__(self, commands: CommandHandler, approvals: ApprovalHandler,
                 runner: BackgroundRunner, *, clock: Callable[[], float] = time.time) -> None:
        self.commands = commands
        self.approvals = approvals
        self.runner = runner
        self.access = commands.access
        self.clock = clock

    def command(self, form: Mapping[str, Any], *, retry: int | None = None,
                signed: tuple[int, str] | None = None) -> dict[str, Any]:
        """The acknowledgement body for a slash command (its form fields; Socket Mode sends
        them as JSON, so values are read as strings). ``signed`` is the verified request's
        (timestamp, signature), the key of a replay."""
        self.runner.saw_request()
        form = {str(k): "" if v is None else str(v) for k, v in form.items()}
        caller = Caller(user_id=form.get("user_id", ""), user_name=form.get("user_name", ""),
                        channel_id=form.get("channel_id", ""),
                        response_url=form.get("response_url") or None,
                        request_id=form.get("trigger_id", ""))
        if not caller.user_id:
            return Reply(":warning: The request names no user.").to_slack()
        text = form.get("text", "")
        keys = [f"command:{caller.request_id}"] if caller.request_id else []
        return self._once(keys, signed, caller, "command", f"/revive {text}"[:200], retry,
                          lambda: self.commands.handle(caller, text).to_slack(),
                          Reply(IN_PROGRESS).to_slack())

    def interaction(self, payload: Mapping[str, Any], *, retry: int | None = None,
                    signed: tuple[int, str] | None = None) -> dict[str, Any]:
        """The acknowledgement of a button press, at once; the decision is taken right after
        on a pool thread and its answer goes to the press's ``response_url``.
        ``MalformedRequest`` when the payload is not shaped as Slack sends it."""
        self.runner.saw_request()
        if payload.get("type") != "block_actions":
            log.info("ignored a Slack interaction of type %r", str(payload.get("type"))[:64])
            return {}
        user = _mapping(payload.get("user"), "user")
        caller = Caller(user_id=_text(user.get("id"), "user.id"),
                        user_name=_text(user.get("username") or user.get("name"), "user.name"),
                        channel_id=_text(_mapping(payload.get("channel"), "channel").get("id"),
                                         "channel.id"),
                        response_url=_text(payload.get("response_url"), "response_url") or None,
                        request_id=_text(payload.get("trigger_id"), "trigger_id"))
        actions = payload.get("actions") or []
        if not isinstance(actions, list):
            raise MalformedRequest("actions: expected a list")
        if not caller.user_id or not actions:
            return {}
        action = _mapping(actions[0], "actions[0]")
        action_id = _text(action.get("action_id"), "actions[0].action_id")
        value = _text(action.get("value"), "actions[0].value")
        action_ts = _text(action.get("action_ts"), "actions[0].action_ts")

        def decide() -> None:  # on the runner's pool: Slack is acknowledged first
            reply = self.approvals.handle(caller, action_id, value)
            self._post_new(caller.response_url, reply)

        def accept() -> dict[str, Any]:
            self.runner.later(decide)
            return {}

        keys = [f"action:{caller.request_id}:{action_ts}"] if caller.request_id else []
        return self._once(keys, signed, caller, "button", f"button {action_id}"[:200], retry,
                          accept, {})

    def tell(self, response_url: str | None, reply: Reply) -> None:
        """Send ``reply`` to a ``response_url`` in the background (a new message, not a
        replacement of the one clicked)."""
        self.runner.later(self._post_new, response_url, reply)

    def _post_new(self, response_url: str | None, reply: Reply) -> None:
        self.runner.post(response_url, {**reply.to_slack(), "replace_original": False})

    def _once(self, keys: list[str], signed: tuple[int, str] | None, caller: Caller, kind: str,
              summary: str, retry: int | None, answer: Callable[[], dict[str, Any]],
              in_progress: dict[str, Any]) -> dict[str, Any]:
        """``answer()``, unless this request was seen before (by any of its keys): then the
        first answer again (``in_progress`` while the first copy is still being handled)."""
        now = self.clock()
        expires = now + WINDOW_S
        if signed is not None:
            keys = [f"signed:{signed[0]}:{signed[1]}", *keys]
            expires = max(expires, signed[0] + WINDOW_S)
        if not keys:  # Socket Mode without a trigger_id: nothing to know it again by
            return answer()
        try:
            with db.session(self.access.engine) as s:
                earlier = service.remember_request(
                    s, keys=keys, actor=caller.user_id, kind=kind, summary=summary,
                    now=_when(now), expires_at=_when(expires))
                first = None if earlier is None else (earlier.answer, earlier.received_at,
                                                      earlier.summary)
        except StoreError:
            log.exception("could not remember a Slack %s; nothing was done", kind)
            return Reply(NO_STORE).to_slack() if kind == "command" else {}
        if first is not None:
            body, seen_at, what = first
            log.info("a Slack %s was seen before (retry %s): answered from the record",
                     kind, retry)
            self.access.audit(caller, kind, what, "replayed", detail={
                "first_seen": seen_at.isoformat(), "retry": retry,
                "answered": body is not None, "signed": signed is not None})
            return body if body is not None else in_progress
        body = answer()
        try:
            with db.session(self.access.engine) as s:
                service.answer_request(s, keys=keys, answer=body)
        except StoreError:
            log.exception("could not record the answer to a Slack %s", kind)
        return body


def build_slack_app(
    settings: WebSettings | None = None,
    *,
    engine: Engine | None = None,
    start: Callable[[Job], None] | None = None,
    groups_of: Callable[[str], Iterable[str]] | None = None,
    http_client: httpx.Client | None = None,
    resume: Resume | None = None,
    clock: Callable[[], float] | None = None,
) -> SlackApp:
    """The app with its store migrated. ``start`` replaces the background runner, ``resume``
    Prefect's resume, ``groups_of`` the Slack user-group lookup and ``clock`` the time (epoch
    seconds) requests are remembered by (all for tests)."""
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
    return SlackApp(commands, ApprovalHandler(access, resume or prefect_resume), runner,
                    clock=clock or time.time)


def parse_payload(form: Mapping[str, str]) -> dict[str, Any]:
    """An interaction's ``payload`` form field as a JSON object; ``MalformedRequest`` when it
    is not one (nesting too deep to decode included)."""
    try:
        data = json.loads(form.get("payload", ""))
    except (ValueError, RecursionError) as exc:
        raise MalformedRequest(f"payload is not JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise MalformedRequest("payload is not a JSON object")
    return data
