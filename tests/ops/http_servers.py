"""Real local HTTP servers for the http-* adapter tests: status-per-path and a forward proxy.

``PathServer`` answers each path with the status a test chose (or hangs, bounded), so one
server can stand for many instances. ``ForwardProxy`` is a minimal HTTP forward proxy (GET
with an absolute URI, relayed with ``http.client``) standing in for a checker in another
DC; ``partition(...)`` makes it answer 502 for URLs "unreachable from this DC". Both are
threaded ``http.server`` instances on 127.0.0.1 that ``down()`` stops (connections are then
refused) and ``up()`` starts again on the same port.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["ForwardProxy", "JsonHandler", "LocalServer", "PathServer", "TrackedServer", "running"]

HOST = "127.0.0.1"
POLL_INTERVAL_S = 0.01
UPSTREAM_TIMEOUT_S = 10.0


class TrackedServer(ThreadingHTTPServer):
    """A threaded server on 127.0.0.1 that knows its open connections, so a test can cut them
    (``cut_connections``) as a dying replica would; ``owner`` is the test's server object."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False  # a handler waiting on a hung upstream must not hold up down()

    def __init__(
        self, owner: Any, port: int, handler: type[BaseHTTPRequestHandler]
    ) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((HOST, port), handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients time out and hang up on purpose here; that is not a test failure."""

    def cut_connections(self) -> None:
        with self.connections_lock:
            for sock in self.connections:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    server: TrackedServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def reply(self, status: int, payload: Any = None) -> None:
        data = json.dumps(payload).encode() if payload is not None else b""
        if status in (204, 304) or status < 200:
            data = b""  # no body allowed: one would corrupt the next answer on the connection
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True


class LocalServer:
    """Up/down on a fixed port, like a DC's server that burns and comes back."""

    handler: type[BaseHTTPRequestHandler] = JsonHandler

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.lock = threading.Lock()
        self.released = threading.Event()
        self._httpd: TrackedServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def up(self) -> None:
        if self._httpd is not None:
            return
        self.released = threading.Event()
        httpd = TrackedServer(self, self.port, self.handler)
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever,
                                        kwargs={"poll_interval": POLL_INTERVAL_S},
                                        name=f"http-{self.name}", daemon=True)
        self._thread.start()

    def down(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._httpd = self._thread = None
        self.released.set()  # wake every hanging handler
        httpd.shutdown()
        httpd.cut_connections()
        httpd.server_close()
        thread.join()


class _PathHandler(JsonHandler):
    def do_GET(self) -> None:
        server: PathServer = self.server.owner  # type: ignore[assignment]
        path = self.path.split("?", 1)[0]
        with server.lock:
            server.hits.append(path)
            answer = server.statuses.get(path, server.default)
        if answer == "hang":
            server.released.wait(server.hang_s)
            self.close_connection = True
            return
        self.reply(int(answer), {"server": server.name, "path": path})


class PathServer(LocalServer):
    """Answers each path with the status set for it (``"hang"``: no answer, bounded)."""

    handler = _PathHandler

    def __init__(self, name: str, default: int | str = 404, hang_s: float = 10.0) -> None:
        super().__init__(name)
        self.default: int | str = default
        self.hang_s = hang_s
        self.statuses: dict[str, int | str] = {}
        self.hits: list[str] = []

    def set(self, path: str, status: int | str) -> None:
        with self.lock:
            self.statuses[path] = status


class _ProxyHandler(JsonHandler):
    def do_GET(self) -> None:
        proxy: ForwardProxy = self.server.owner  # type: ignore[assignment]
        target = self.path
        with proxy.lock:
            proxy.forwarded.append(target)
            blocked = any(target.startswith(prefix) for prefix in proxy.blocked)
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            self.reply(400, {"error": "this proxy forwards absolute http:// URIs only"})
            return
        if blocked or parts.hostname not in {HOST, "localhost"}:
            self.reply(502, {"error": f"{proxy.name}: {parts.netloc} unreachable from here"})
            return
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80,
                                          timeout=UPSTREAM_TIMEOUT_S)
        try:
            path = parts.path or "/"
            conn.request("GET", f"{path}?{parts.query}" if parts.query else path)
            upstream = conn.getresponse()
            body = upstream.read()
            status = upstream.status
        except TimeoutError:
            self.reply(504, {"error": f"{proxy.name}: {parts.netloc} timed out"})
            return
        except OSError:
            self.reply(502, {"error": f"{proxy.name}: {parts.netloc} refused"})
            return
        finally:
            conn.close()
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True


class ForwardProxy(LocalServer):
    """An HTTP forward proxy (absolute-URI GET) on 127.0.0.1: a checker "in another DC".

    It forwards only to 127.0.0.1, never elsewhere; URLs starting with a ``partition``-ed
    prefix get 502, as from a DC that cannot reach them.
    """

    handler = _ProxyHandler

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.blocked: set[str] = set()
        self.forwarded: list[str] = []

    def partition(self, *url_prefixes: str) -> None:
        with self.lock:
            self.blocked.update(url_prefixes)


@contextmanager
def running(*servers: LocalServer) -> Iterator[None]:
    """Start the servers; stop every one of them on exit."""
    try:
        for server in servers:
            server.up()
        yield
    finally:
        for server in servers:
            server.down()
