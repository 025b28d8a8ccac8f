"""Real local HTTP replicas of an ops tool, switchable per test: ok, error, hang, down.

Each ``ReplicaServer`` is a threaded ``http.server`` on 127.0.0.1 speaking HTTP/1.1 with
keep-alive, so clients really pool connections to it. ``down()`` stops accepting (the
listening socket is closed, so connecting is refused) and cuts every open connection, as a
burning DC would; ``up()`` starts it again on the same port with a new ``boot`` number, so a
test can tell the restarted server's answers from the old one's. Hangs are bounded and are
released on ``down()``/mode changes, so shutdown never waits for them.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Hit", "ReplicaServer", "replica_servers"]

HOST = "127.0.0.1"
POLL_INTERVAL_S = 0.01


@dataclass(frozen=True)
class Hit:
    """One request a replica received."""

    method: str
    path: str
    body: bytes
    boot: int


@dataclass(frozen=True)
class _Mode:
    kind: str  # ok | error | hang
    status: int = 200
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    release: threading.Event = field(default_factory=threading.Event)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, replica: ReplicaServer, port: int) -> None:
        self.replica = replica
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((HOST, port), _Handler)

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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10  # a safety net: no connection outlives a test by much
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``ReplicaServer.hits`` instead."""

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        replica = self.server.replica
        mode, boot = replica.record(self.command, self.path, body)
        if mode.kind == "hang":
            if mode.release.wait(mode.seconds):  # going down or switched: no answer at all
                self.close_connection = True
                return
            mode = _Mode("ok")
        if mode.kind == "error":
            self._send(mode.status, mode.body, mode.headers)
            return
        echo = {
            "server": replica.name,
            "boot": boot,
            "method": self.command,
            "path": self.path,
            "body": json.loads(body) if body else None,
        }
        self._send(200, echo, ())

    def _send(self, status: int, payload: Any, headers: tuple[tuple[str, str], ...]) -> None:
        data = json.dumps(payload).encode() if payload is not None else b""
        try:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True


class ReplicaServer:
    """One replica: a real HTTP server on a fixed port that a test can break and mend."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.boot = 0
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._mode = _Mode("ok")
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The replica's base URL (with a path prefix, as behind the replica router)."""
        return f"http://{HOST}:{self.port}/r/tool/{self.name}"

    @property
    def is_up(self) -> bool:
        return self._httpd is not None

    def hits_in_boot(self, boot: int | None = None) -> list[Hit]:
        boot = self.boot if boot is None else boot
        with self._lock:
            return [hit for hit in self.hits if hit.boot == boot]

    def record(self, method: str, path: str, body: bytes) -> tuple[_Mode, int]:
        with self._lock:
            self.hits.append(Hit(method, path, body, self.boot))
            return self._mode, self.boot

    def ok(self) -> None:
        self._switch(_Mode("ok"))

    def error(
        self, status: int = 503, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        body = {"error": f"replica {self.name} says {status}"} if body is None else body
        self._switch(_Mode("error", status, body, tuple((headers or {}).items())))

    def hang(self, seconds: float = 2.0) -> None:
        """Answer nothing for ``seconds`` (then 200 as in ok), or until down/switched."""
        self._switch(_Mode("hang", seconds=seconds))

    def up(self) -> None:
        """Start serving (again, on the same port once a port was chosen)."""
        if self._httpd is not None:
            return
        httpd = _Server(self, self.port)
        self.port = int(httpd.server_address[1])
        with self._lock:
            self.boot += 1
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": POLL_INTERVAL_S},
            name=f"replica-{self.name}",
            daemon=True,
        )
        self._thread.start()

    def down(self) -> None:
        """Stop accepting (connections are refused) and cut every open connection."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        self._switch(self._mode)  # release any hanging handler
        httpd.cut_connections()
        httpd.server_close()  # closes the listening socket, joins the handler threads
        thread.join()

    def _switch(self, mode: _Mode) -> None:
        with self._lock:
            old, self._mode = (
                self._mode,
                _Mode(mode.kind, mode.status, mode.body, mode.headers, mode.seconds),
            )
        old.release.set()


@contextmanager
def replica_servers(*names: str) -> Iterator[dict[str, ReplicaServer]]:
    """Start one ``ReplicaServer`` per name; stop them all on exit."""
    servers = {name: ReplicaServer(name) for name in names}
    try:
        for server in servers.values():
            server.up()
        yield servers
    finally:
        for server in servers.values():
            server.down()
