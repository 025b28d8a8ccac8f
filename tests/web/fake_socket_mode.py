"""Slack's side of Socket Mode, on 127.0.0.1, for testing ``revive slack socket`` end to end.

slack_sdk's builtin ``SocketModeClient`` is part of what is under test (its handshake,
framing, ``hello`` and reconnects), so this is a real WebSocket server (``websockets``, on
its own event loop in a background thread). What it does is what Slack does:

* every connection gets ``{"type": "hello", "num_connections": N, ...}`` first, N being the
  number of connections the app has open (one runner per DC means N > 1);
* the test pushes envelopes (``slash_commands``, ``interactive``) to one connection of its
  choice, as Slack picks one connection per envelope; each has an ``envelope_id``;
* every acknowledgement (``{"envelope_id": ..., "payload": {...}}``) is recorded with the
  connection it came on, and can be waited for;
* a connection can be asked to reconnect (``{"type": "disconnect", ...}``) or closed.

Point ``FakeSlack.socket_url`` at ``url``: ``apps.connections.open`` answers with it.
The builtin client speaks plain ``ws://`` to any port but 443, which is how it reaches this.

Usage::

    with FakeSocketMode() as slack_side:
        fake_slack.socket_url = slack_side.url
        ... runner.start() ...
        (link,) = slack_side.wait_connections(1)
        envelope_id = slack_side.slash_command({...}, to=link)
        ack = slack_side.wait_ack(envelope_id)     # {"envelope_id": ..., "payload": {...}}
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

__all__ = ["Ack", "FakeSocketMode", "Link"]

WAIT_S = 5.0
"""Default bound on every wait, so a broken runner fails a test instead of hanging it."""


@dataclass
class Link:
    """One client connection, as Slack sees it."""

    id: int
    ticket: str
    ws: ServerConnection = field(repr=False)
    opened: float = field(default_factory=time.monotonic)
    closed: bool = False
    messages: list[dict[str, Any]] = field(default_factory=list)
    """Every JSON message received on this connection (acks included)."""


@dataclass(frozen=True)
class Ack:
    """An acknowledgement as received: the envelope, its payload (None if absent), the link."""

    envelope_id: str
    payload: dict[str, Any] | None
    link: int


class FakeSocketMode:
    """The server; ``with FakeSocketMode() as s`` (or ``start``/``stop``)."""

    def __init__(self, *, app_id: str = "A0FAKE") -> None:
        self.app_id = app_id
        self.url = ""
        self.links: list[Link] = []
        """Every connection ever accepted, in order (closed ones included)."""
        self.acks: list[Ack] = []
        self.sent: list[tuple[int, dict[str, Any]]] = []
        """(link id, message) for every message sent, ``hello`` included."""
        self._ids = itertools.count(1)
        self._changed = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> FakeSocketMode:
        loop = asyncio.new_event_loop()
        started: list[Server] = []
        failed: list[BaseException] = []
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                started.append(loop.run_until_complete(self._serve()))
            except BaseException as exc:  # reported to start()
                failed.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, daemon=True, name="fake-socket-mode")
        self._thread.start()
        if not ready.wait(WAIT_S) or failed:
            raise RuntimeError(f"the fake Socket Mode server did not start: {failed}")
        self._server = started[0]
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/link/?ticket=fake-ticket&app_id={self.app_id}"
        return self

    async def _serve(self) -> Server:
        # No keepalive pings from this side: the client pings, and tests stay quiet.
        return await serve(self._handle, "127.0.0.1", 0, ping_interval=None,
                           compression=None, close_timeout=1)

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._server is not None:
            server = self._server

            async def shut() -> None:
                server.close()
                await server.wait_closed()

            with contextlib.suppress(Exception):  # connections may already be gone
                self._call(shut(), timeout=WAIT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(WAIT_S)
        if self._thread.is_alive():
            raise RuntimeError("the fake Socket Mode server did not stop")
        self._loop = self._thread = self._server = None

    def __enter__(self) -> FakeSocketMode:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- connections --------------------------------------------------------------------

    @property
    def open_links(self) -> list[Link]:
        with self._changed:
            return [link for link in self.links if not link.closed]

    def wait_connections(self, count: int, timeout: float = WAIT_S) -> list[Link]:
        """Wait until ``count`` connections are open (each sent its ``hello``); those links."""
        self._wait(lambda: len(self.open_links) >= count, timeout,
                   f"{count} open connection(s)")
        return self.open_links

    def wait_closed(self, link: Link, timeout: float = WAIT_S) -> None:
        self._wait(lambda: link.closed, timeout, f"link {link.id} closed")

    def disconnect(self, link: Link, reason: str = "refresh_requested") -> None:
        """Ask the client to reconnect, as Slack does before recycling a connection."""
        self._send(link, {"type": "disconnect", "reason": reason,
                          "debug_info": {"host": "fake-socket-mode"}})

    def close(self, link: Link, code: int = 1001, reason: str = "going away") -> None:
        """Close ``link`` from Slack's side (with a close frame)."""
        self._call(link.ws.close(code, reason))
        self.wait_closed(link)

    # -- envelopes ----------------------------------------------------------------------

    def slash_command(self, form: dict[str, str], *, to: Link | None = None,
                      retry_attempt: int = 0, envelope_id: str | None = None) -> str:
        """Send a ``slash_commands`` envelope with ``form`` as its payload; its envelope id."""
        return self.envelope("slash_commands", form, to=to, retry_attempt=retry_attempt,
                             envelope_id=envelope_id, accepts_response_payload=True)

    def interactive(self, payload: dict[str, Any], *, to: Link | None = None,
                    retry_attempt: int = 0, envelope_id: str | None = None) -> str:
        """Send an ``interactive`` envelope (a ``block_actions`` payload); its envelope id."""
        return self.envelope("interactive", payload, to=to, retry_attempt=retry_attempt,
                             envelope_id=envelope_id, accepts_response_payload=False)

    def envelope(self, kind: str, payload: dict[str, Any], *, to: Link | None = None,
                 retry_attempt: int = 0, envelope_id: str | None = None,
                 accepts_response_payload: bool = False) -> str:
        """Send an envelope of type ``kind`` to ``to`` (the oldest open link by default)."""
        if to is None:
            links = self.open_links
            if not links:
                raise AssertionError("no client is connected")
            to = links[0]
        envelope_id = envelope_id or str(uuid.uuid4())
        self._send(to, {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
            "retry_attempt": retry_attempt,
            "retry_reason": "timeout" if retry_attempt else "",
        })
        return envelope_id

    def acks_for(self, envelope_id: str) -> list[Ack]:
        with self._changed:
            return [ack for ack in self.acks if ack.envelope_id == envelope_id]

    def wait_ack(self, envelope_id: str, timeout: float = WAIT_S) -> Ack:
        """The first acknowledgement of ``envelope_id``; AssertionError after ``timeout``."""
        self._wait(lambda: bool(self.acks_for(envelope_id)), timeout,
                   f"an acknowledgement of {envelope_id}")
        return self.acks_for(envelope_id)[0]

    # -- internals ----------------------------------------------------------------------

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                self._changed.wait(left)

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = WAIT_S) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the fake Socket Mode server is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _send(self, link: Link, message: dict[str, Any]) -> None:
        with self._changed:
            self.sent.append((link.id, message))
        self._call(link.ws.send(json.dumps(message)))

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        ticket = path.partition("ticket=")[2].partition("&")[0]
        link = Link(id=next(self._ids), ticket=ticket, ws=ws)
        hello = {
            "type": "hello",
            "num_connections": 0,
            "debug_info": {"host": "fake-socket-mode", "build_number": 1,
                           "approximate_connection_time": 18060},
            "connection_info": {"app_id": self.app_id},
        }
        try:
            with self._changed:
                hello["num_connections"] = len([x for x in self.links if not x.closed]) + 1
                self.sent.append((link.id, hello))
            await ws.send(json.dumps(hello))
            with self._changed:  # open (and counted) once its hello is on the way
                self.links.append(link)
                self._changed.notify_all()
            async for raw in ws:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                with self._changed:
                    link.messages.append(message)
                    if "envelope_id" in message:
                        self.acks.append(Ack(str(message["envelope_id"]),
                                             message.get("payload"), link.id))
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            with self._changed:
                link.closed = True
                self._changed.notify_all()
