"""A fake Slack Web API that speaks real HTTP, for testing chat sinks end to end.

slack_sdk's ``WebClient`` is part of what is under test (its retry handlers, timeouts,
JSON bodies and headers), so mocks would prove little. This serves the few Web API methods
revive uses from uvicorn on 127.0.0.1 in a background thread, records every request, and
can be told per method to misbehave the ways Slack does: 429 with ``Retry-After``, 5xx,
answers that never come, and ``ok: false`` errors. Like Slack, it rejects messages over the
block limits, so a test that passes here would not be refused there for size.

Usage::

    with FakeSlack() as fake:          # or the ``fake_slack`` pytest fixture
        fake.rate_limit("chat.postMessage", 2, retry_after=1)
        ... WebClient(token, base_url=fake.url) ...
        fake.calls                     # [(method, params), ...] in arrival order
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

__all__ = ["Call", "FakeSlack"]

MAX_HANG_S = 10.0
"""No answer is delayed longer than this, so a forgotten ``hang`` cannot stall a test run."""
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3_000
MAX_TEXT = 40_000

FaultKind = Literal["rate_limit", "server_error", "hang", "slack_error"]


@dataclass
class _Fault:
    kind: FaultKind
    remaining: int | None  # None: until ``normal()``
    retry_after: int = 1
    status: int = 500
    seconds: float = 0.0
    error: str = ""


@dataclass
class Call:
    """One request as the fake saw it; ``status`` and ``ok`` are set once it is answered."""

    method: str
    params: dict[str, Any]
    authorization: str
    arrived: float = field(default_factory=time.monotonic)
    status: int | None = None
    ok: bool | None = None


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class FakeSlack:
    """The fake server; start it with ``with FakeSlack() as fake`` (or ``start``/``stop``)."""

    def __init__(self) -> None:
        self.url = ""
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.log: list[Call] = []
        self.messages: dict[str, dict[str, Any]] = {}
        self._channels: dict[str, str] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._ts = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.socket_url = ""
        """What ``apps.connections.open`` answers: a Socket Mode WebSocket URL (tests set it)."""
        self.usergroups: dict[str, list[str]] = {}
        """User-group id -> member user ids, served by ``usergroups.list``/``users.list``."""
        self.app = Starlette(routes=[Route("/api/{method}", self._handle, methods=["GET", "POST"])])

    # -- modes, per method --------------------------------------------------------------

    def normal(self, method: str | None = None) -> None:
        """Drop the faults of ``method`` (of every method when None)."""
        with self._lock:
            if method is None:
                self._faults.clear()
            else:
                self._faults.pop(method, None)

    def rate_limit(self, method: str, n: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``n`` calls with 429 and ``Retry-After: retry_after``."""
        self._add(method, _Fault("rate_limit", n, retry_after=retry_after))

    def server_error(self, method: str, n: int = 1, status: int = 500) -> None:
        """Answer the next ``n`` calls with an HTTP 5xx and a non-JSON body, like a proxy."""
        self._add(method, _Fault("server_error", n, status=status))

    def hang(self, method: str, seconds: float, n: int | None = None) -> None:
        """Delay the answer of the next ``n`` calls (all, when None) by ``seconds``."""
        self._add(method, _Fault("hang", n, seconds=min(seconds, MAX_HANG_S)))

    def slack_error(
        self, method: str, error: str = "channel_not_found", n: int | None = None
    ) -> None:
        """Answer 200 ``{"ok": false, "error": error}`` to the next ``n`` calls (all: None)."""
        self._add(method, _Fault("slack_error", n, error=error))

    def _add(self, method: str, fault: _Fault) -> None:
        with self._lock:
            self._faults.setdefault(method, deque()).append(fault)

    def _take(self, method: str) -> _Fault | None:
        with self._lock:
            queue = self._faults.get(method)
            if not queue:
                return None
            fault = queue[0]
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    queue.popleft()
            return fault

    # -- what was recorded --------------------------------------------------------------

    def requests(self, method: str) -> list[Call]:
        """Every request for ``method`` so far, answered or not."""
        with self._lock:
            return [c for c in self.log if c.method == method]

    def ok_calls(self, method: str) -> list[dict[str, Any]]:
        """The params of the ``method`` calls answered ``ok: true``."""
        return [c.params for c in self.requests(method) if c.ok]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Poll ``condition`` until it holds or ``timeout`` passes; its last value."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> FakeSlack:
        self._sock = _free_socket()
        port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            http="h11",
            ws="none",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            daemon=True,
            name="fake-slack",
        )
        self._thread.start()
        if not self.wait_for(lambda: self._server is not None and self._server.started, 10):
            self.stop()
            raise RuntimeError("the fake Slack server did not start")
        self.url = f"http://127.0.0.1:{port}/api/"
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
            if self._thread.is_alive():
                raise RuntimeError("the fake Slack server did not stop")
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- HTTP ---------------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        method = request.path_params["method"]
        params = await _params(request)
        call = Call(method, params, request.headers.get("authorization", ""))
        with self._lock:
            self.calls.append((method, params))
            self.log.append(call)
        response = await self._answer(method, params, call.authorization, request)
        call.status = response.status_code
        call.ok = response.status_code == 200 and json.loads(bytes(response.body)).get("ok")
        return response

    async def _answer(self, method: str, params: dict[str, Any], auth: str,
                      request: Request | None = None) -> Response:
        fault = self._take(method)
        if fault is not None and fault.kind == "hang":
            await self._sleep(fault.seconds)
            if request is not None and await request.is_disconnected():
                # The client gave up waiting: like Slack behind a dead link, nothing posted.
                return PlainTextResponse("client gone", status_code=499)
            fault = None
        if fault is not None and fault.kind == "rate_limit":
            return JSONResponse(
                {"ok": False, "error": "ratelimited"},
                status_code=429,
                headers={"Retry-After": str(fault.retry_after)},
            )
        if fault is not None and fault.kind == "server_error":
            return PlainTextResponse("upstream failure", status_code=fault.status)
        if fault is not None:
            return _error(fault.error)
        if not auth.startswith("Bearer ") or len(auth) <= len("Bearer "):
            return _error("not_authed")
        app_level = method == "apps.connections.open"  # the one method taking an xapp- token
        if not auth.startswith("Bearer xapp-" if app_level else "Bearer xox"):
            return _error("not_allowed_token_type" if auth.startswith("Bearer xo")
                          else "invalid_auth")
        handler = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "apps.connections.open": self._connections_open,
            "usergroups.list": self._usergroups_list,
            "usergroups.users.list": self._usergroups_users,
        }.get(method)
        return handler(params) if handler else _error("unknown_method")

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but stop early when the server is stopping."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stopping.is_set():
            await asyncio.sleep(0.02)

    def _auth_test(self, params: dict[str, Any]) -> Response:
        return JSONResponse(
            {
                "ok": True,
                "url": "https://revive-test.slack.com/",
                "team": "revive-test",
                "user": "revive",
                "team_id": "T0FAKE",
                "user_id": "U0FAKE",
                "bot_id": "B0FAKE",
            }
        )

    def _post_message(self, params: dict[str, Any]) -> Response:
        channel = params.get("channel")
        if not channel:
            return _error("channel_not_found")
        if problem := _content_problem(params):
            return _error(problem)
        thread_ts = params.get("thread_ts")
        with self._lock:
            channel_id = self._channel_id(str(channel))
            if thread_ts is not None and thread_ts not in self.messages:
                return _error("thread_not_found")
            self._ts += 1
            ts = f"1700000000.{self._ts * 100:06d}"
            message = {
                "type": "message",
                "user": "U0FAKE",
                "bot_id": "B0FAKE",
                "ts": ts,
                "text": params.get("text", ""),
                "blocks": params.get("blocks", []),
            }
            if thread_ts is not None:
                message["thread_ts"] = thread_ts
            self.messages[ts] = {**message, "channel": channel_id}
        return JSONResponse({"ok": True, "channel": channel_id, "ts": ts, "message": message})

    def _update(self, params: dict[str, Any]) -> Response:
        channel, ts = params.get("channel"), params.get("ts")
        if problem := _content_problem(params):
            return _error(problem)
        with self._lock:
            stored = self.messages.get(str(ts))
            if stored is None:
                return _error("message_not_found")
            if stored["channel"] != channel:
                return _error("channel_not_found")
            stored["text"] = params.get("text", "")
            stored["blocks"] = params.get("blocks", [])
            message = {k: v for k, v in stored.items() if k != "channel"}
        return JSONResponse(
            {"ok": True, "channel": channel, "ts": ts, "text": message["text"], "message": message}
        )

    def _connections_open(self, params: dict[str, Any]) -> Response:
        if not self.socket_url:
            return _error("internal_error")
        return JSONResponse({"ok": True, "url": self.socket_url})

    def _usergroups_list(self, params: dict[str, Any]) -> Response:
        with_users = str(params.get("include_users", "")).lower() in ("1", "true")
        with self._lock:
            groups = [
                {"id": gid, "handle": gid.lower(), **({"users": list(u)} if with_users else {})}
                for gid, u in self.usergroups.items()
            ]
        return JSONResponse({"ok": True, "usergroups": groups})

    def _usergroups_users(self, params: dict[str, Any]) -> Response:
        with self._lock:
            users = self.usergroups.get(str(params.get("usergroup", "")))
        if users is None:
            return _error("no_such_subteam")
        return JSONResponse({"ok": True, "users": list(users)})

    def _channel_id(self, channel: str) -> str:
        """Slack answers with channel IDs, whatever name was posted to."""
        if channel.startswith(("C", "G", "D")) and channel[1:].isalnum():
            return channel
        return self._channels.setdefault(channel, f"C0FAKE{len(self._channels) + 1:04d}")


def _error(error: str) -> Response:
    return JSONResponse({"ok": False, "error": error})


def _content_problem(params: dict[str, Any]) -> str | None:
    """What Slack would refuse in a message's text and blocks, if anything."""
    text = params.get("text")
    blocks = params.get("blocks")
    if not text and not blocks:
        return "no_text"
    if text is not None and len(str(text)) > MAX_TEXT:
        return "msg_too_long"
    if blocks is None:
        return None
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        return "invalid_blocks"
    for block in blocks:
        if not isinstance(block, dict):
            return "invalid_blocks"
        section_text = block.get("text", {})
        if block.get("type") == "section" and not (
            isinstance(section_text, dict)
            and 0 < len(section_text.get("text", "")) <= MAX_SECTION_TEXT
        ):
            return "invalid_blocks"
    return None


async def _params(request: Request) -> dict[str, Any]:
    """The call's arguments, however slack_sdk sent them (query, form or JSON body)."""
    params: dict[str, Any] = dict(request.query_params)
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    if body and content_type.startswith("application/json"):
        params.update(json.loads(body))
    elif body:
        params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        for key in ("blocks", "attachments"):
            if isinstance(params.get(key), str):
                params[key] = json.loads(params[key])
    return params


def running() -> Iterator[FakeSlack]:
    """Generator form for fixtures: start, yield, always stop."""
    with FakeSlack() as fake:
        yield fake
