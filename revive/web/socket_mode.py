"""The Slack app over Socket Mode (``revive slack socket``), for estates with no public endpoint.

The runner opens an outbound WebSocket to Slack (slack_sdk's builtin ``SocketModeClient``:
``apps.connections.open`` with the app-level ``xapp-`` token, then the ``wss://`` URL it
returns) and Slack pushes each slash command and button press down one of the app's open
connections. Slack allows several connections per app and spreads envelopes among them, so
one runner per DC can be connected at once: when a DC is lost, its runner's connection goes
with it and Slack delivers to the runners left, so chat control survives the loss of a DC.

What a request does is the transport-independent ``SlackApp`` (as over HTTP); this module
only turns envelopes into calls and the answers into acknowledgements:

* ``slash_commands``: the acknowledgement's payload IS the answer (``SlackApp.command``
  returns at once; long work is started in the background);
* ``interactive`` (``block_actions``): acknowledged with ``SlackApp.interaction``'s answer;
  the decision itself is posted to the press's ``response_url``;
* anything else is acknowledged empty, so Slack does not deliver it again.

A handler that fails never takes the runner down: it is logged and the envelope is still
acknowledged, with an ephemeral error for the person who asked. Slack redelivers an envelope
that went unacknowledged (``retry_attempt``), possibly to another runner; ``SlackApp``
answers a redelivery from the store by its ``trigger_id`` (so runners sharing a store know
it too), and the store's rules (one active run per runbook and DC, one decision per gate)
hold.

Socket Mode needs no signing secret: the app-level token authenticates the connection.
Connecting, reconnecting (Slack recycles connections every few hours, with a ``disconnect``
message first) and keepalive pings are the client's; this module logs each of them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from revive.chat.client import DEFAULT_SLACK_API_URL
from revive.chat.client import web_client_from_env as bot_client_from_env
from revive.chat.retry import retry_handlers
from revive.web.dispatch import MalformedRequest, SlackApp
from revive.web.replies import Reply

__all__ = [
    "ENV_APP_TOKEN",
    "SocketModeRefused",
    "SocketModeRunner",
    "app_token_from_env",
    "run_until_stopped",
]

log = logging.getLogger("revive.web.socket_mode")
_sdk_log = logging.getLogger("revive.web.socket_mode.sdk")

ENV_APP_TOKEN = "REVIVE_SLACK_APP_TOKEN"
APP_TOKEN_PREFIX = "xapp-"
DEFAULT_PING_INTERVAL_S = 5.0
API_TIMEOUT_S = 10.0
#: How long the client's reader blocks in one ``recv``. slack_sdk uses 3 s and holds a lock
#: meanwhile, so replacing a connection (Slack recycles them every few hours) waits that
#: long before the new one is read; 3 s is also Slack's deadline for an acknowledgement.
RECEIVE_TIMEOUT_S = 0.25
#: Slack errors from ``apps.connections.open`` that are worth retrying; any other is a refusal
#: (a wrong, revoked or non-app-level token, Socket Mode off for the app) that retrying
#: cannot fix.
TRANSIENT_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error",
                              "service_unavailable", "request_timeout"})

COMMAND_FAILED = (":x: revive could not handle that command (an internal error, logged on "
                  "the Socket Mode runner). Try again, or use the CLI.")
BUTTON_FAILED = (":x: revive could not handle that button press (an internal error, logged "
                 "on the Socket Mode runner). Try again, or use the CLI.")


class SocketModeRefused(Exception):
    """Slack refused the connection for a reason retrying will not fix (a bad token)."""


def app_token_from_env(env: Mapping[str, str] = os.environ) -> str:
    """``REVIVE_SLACK_APP_TOKEN``; ValueError saying what is wrong when it is unusable."""
    token = env.get(ENV_APP_TOKEN, "").strip()
    if not token:
        raise ValueError(f"{ENV_APP_TOKEN} is not set: Socket Mode needs the app-level token "
                         f"({APP_TOKEN_PREFIX}..., with the connections:write scope)")
    if not token.startswith(APP_TOKEN_PREFIX):
        kind = "a bot token" if token.startswith("xoxb-") else "not an app-level token"
        raise ValueError(f"{ENV_APP_TOKEN} is {kind}: Socket Mode needs the app-level token "
                         f"({APP_TOKEN_PREFIX}...)")
    return token


def web_client_from_env(env: Mapping[str, str] = os.environ) -> WebClient:
    """The Web API client the runner opens connections with (the bot token is optional)."""
    return bot_client_from_env(env, timeout_s=API_TIMEOUT_S, logger=_sdk_log)


def _refusal(exc: BaseException) -> str | None:
    """Why Slack refused for good (``SlackApiError`` with a non-transient error), or None."""
    if not isinstance(exc, SlackApiError):
        return None
    response = exc.response
    if getattr(response, "status_code", 200) != 200:
        return None
    data = getattr(response, "data", None)
    error = data.get("error") if isinstance(data, dict) else None
    if not error or error in TRANSIENT_ERRORS:
        return None
    return str(error)


class SocketModeRunner:
    """One Socket Mode connection for ``slack_app``; ``start`` it, ``close`` it when done.

    ``web_client`` calls ``apps.connections.open`` (its ``base_url`` is the Web API's; its
    token is not used for that call). ``name`` tells runners apart in the log (the DC).
    """

    def __init__(self, slack_app: SlackApp, app_token: str, web_client: WebClient | None = None,
                 *, name: str = "", ping_interval: float = DEFAULT_PING_INTERVAL_S,
                 concurrency: int = 10) -> None:
        if not app_token.startswith(APP_TOKEN_PREFIX):
            raise ValueError(f"Socket Mode needs an app-level token ({APP_TOKEN_PREFIX}...)")
        self.slack = slack_app
        self.name = name
        self.hellos = 0
        """``hello`` messages received: 1 after connecting, +1 per reconnection."""
        self.handled = 0
        """Envelopes acknowledged."""
        self._lock = threading.Lock()
        self._closed = False
        self.client = SocketModeClient(
            app_token=app_token,
            web_client=web_client or WebClient(base_url=DEFAULT_SLACK_API_URL,
                                               retry_handlers=retry_handlers()),
            logger=_sdk_log,
            ping_interval=ping_interval,
            concurrency=concurrency,
            on_message_listeners=[self._on_raw_message],
            on_close_listeners=[self._on_close],
        )
        self.client.socket_mode_request_listeners.append(self._on_request)

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the WebSocket is open and Slack has said ``hello`` on it at least once."""
        return self.client.is_connected() and self.hellos > 0

    def start(self) -> None:
        """Connect to Slack; from then on the client reconnects by itself.

        Raises ``SocketModeRefused`` when Slack refuses the token (retrying cannot help), and
        ``ConnectionError`` (or slack_sdk's errors) when Slack cannot be reached: the caller
        may retry, as ``run_until_stopped`` does.
        """
        if self._closed:
            raise RuntimeError("this runner is closed")
        try:
            self.client.connect_to_new_endpoint()
        except Exception as exc:
            reason = _refusal(exc)
            if reason is not None:
                raise SocketModeRefused(
                    f"Slack refused the Socket Mode connection: {reason} (check "
                    f"{ENV_APP_TOKEN}: an app-level token of this app, with "
                    "connections:write, and Socket Mode enabled)") from exc
            raise
        if not self.client.is_connected():
            raise ConnectionError("could not open the Socket Mode WebSocket (see the log)")

    def wait_connected(self, timeout: float = 10.0) -> bool:
        """Wait until ``connected``; whether it is."""
        deadline = time.monotonic() + timeout
        while not self.connected:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Stop taking envelopes, let those being handled finish and be acknowledged, then
        disconnect. Envelopes received but not yet handled go unacknowledged, so Slack
        delivers them again, to a runner still connected."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        log.info("%sclosing the Socket Mode connection", self._prefix)
        client = self.client
        # The order matters, and the builtin client's close() alone would do it slowly (its
        # reader holds a lock through a 3 s receive timeout, its queue is polled every 1 s).
        client.auto_reconnect_enabled = False
        client.closed = True  # the message processor takes nothing more...
        client.message_queue.put(None)  # ...and wakes up now to notice
        client.message_processor.shutdown()
        client.message_workers.shutdown(wait=True)  # in-flight handlers answer and ack
        client.current_app_monitor.shutdown()  # no more pings (or reconnects) from here on
        client.current_session_state.terminated = True
        session = client.current_session
        sock = session.sock if session is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # the reader's recv returns at once
        client.close()

    def __enter__(self) -> SocketModeRunner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _prefix(self) -> str:
        return f"[{self.name}] " if self.name else ""

    # --- connection events -------------------------------------------------------------

    def _on_raw_message(self, raw: str) -> None:
        """Log ``hello`` (connected) and ``disconnect`` (Slack recycles the connection)."""
        if '"hello"' not in raw and '"disconnect"' not in raw:
            return
        try:
            message = json.loads(raw)
        except ValueError:
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "hello":
            self._shorten_receive_timeout()
            with self._lock:
                self.hellos += 1
                again = self.hellos > 1
            log.info("%s%s to Slack in Socket Mode (%s connection(s) open for this app)",
                     self._prefix, "reconnected" if again else "connected",
                     message.get("num_connections", "?"))
        elif kind == "disconnect":
            log.info("%sSlack asked for a new connection (%s); reconnecting", self._prefix,
                     message.get("reason", "no reason given"))

    def _shorten_receive_timeout(self) -> None:
        """Make the reader of the connection that just said hello wake up every
        ``RECEIVE_TIMEOUT_S`` (called on that reader's thread, so no recv is in progress)."""
        session = self.client.current_session
        sock = session.sock if session is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.settimeout(RECEIVE_TIMEOUT_S)

    def _on_close(self, code: int, reason: str | None) -> None:
        if not self._closed:
            log.warning("%sthe Socket Mode connection was closed (%s %s); reconnecting",
                        self._prefix, code, reason or "")

    # --- envelopes ---------------------------------------------------------------------

    def _on_request(self, client: Any, request: SocketModeRequest) -> None:
        """Answer one envelope and acknowledge it; never raises."""
        retry = request.retry_attempt or None
        if retry:
            log.info("%sSlack delivered envelope %s again (attempt %s, %s)", self._prefix,
                     request.envelope_id, retry, request.retry_reason or "no reason given")
        body: dict[str, Any] | None
        try:
            if request.type == "slash_commands":
                body = self._command(request, retry)
            elif request.type == "interactive":
                body = self._interaction(request, retry)
            else:
                log.info("%signored a Socket Mode envelope of type %r", self._prefix,
                         request.type)
                body = None
        except Exception:
            log.exception("%shandling a %s envelope failed", self._prefix, request.type)
            body = None
        self._ack(request.envelope_id, body)

    def _command(self, request: SocketModeRequest, retry: int | None) -> dict[str, Any]:
        try:
            return self.slack.command(request.payload, retry=retry)
        except Exception:
            log.exception("%s/revive %r failed", self._prefix,
                          str(request.payload.get("text", ""))[:64])
            return Reply(COMMAND_FAILED).to_slack()

    def _interaction(self, request: SocketModeRequest, retry: int | None) -> dict[str, Any]:
        try:
            return self.slack.interaction(request.payload, retry=retry)
        except MalformedRequest as exc:  # not Slack's shape: nothing to do, nobody to tell
            log.warning("%signored a malformed button press: %s", self._prefix, exc)
            return {}
        except Exception:
            log.exception("%sa button press failed", self._prefix)
            url = request.payload.get("response_url")
            if url:
                self.slack.tell(str(url), Reply(BUTTON_FAILED))
            return {}

    def _ack(self, envelope_id: str, body: dict[str, Any] | None) -> None:
        try:
            self.client.send_socket_mode_response(
                SocketModeResponse(envelope_id=envelope_id, payload=body or None))
        except Exception as exc:
            log.warning("%scould not acknowledge envelope %s (%s); Slack will deliver it "
                        "again", self._prefix, envelope_id, exc)
            return
        with self._lock:
            self.handled += 1


def run_until_stopped(runner: SocketModeRunner, stop: threading.Event, *,
                      first_retry_s: float = 1.0, max_retry_s: float = 60.0) -> None:
    """Connect ``runner`` (retrying with backoff while Slack cannot be reached), then keep it
    connected until ``stop`` is set; close it either way.

    ``SocketModeRefused`` is raised at once: a refused token will not get better.
    """
    delay = first_retry_s
    try:
        while not stop.is_set():
            try:
                runner.start()
                break
            except SocketModeRefused:
                raise
            except Exception as exc:
                log.warning("%scannot connect to Slack yet (%s: %s); retrying in %.0fs",
                            runner._prefix, type(exc).__name__, exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, max_retry_s)
        while not stop.wait(1.0):
            pass
    finally:
        runner.close()
