"""A fault-injecting HTTP proxy that stands for one ops-tool replica in front of the simulator.

Why it exists: the simulator can only switch a replica off (a clean 503 "unreachable", which
proves the request never reached the tool). Real replicas fail in nastier ways while a
failover runs: the address refuses connections, the replica takes the request and answers
after the client gave up, it crash-loops and drops every other connection, or its load
balancer answers 5xx. ``FaultyProxy`` listens on its own loopback port, so it can really be
down (connection refused), and otherwise forwards each request verbatim to the simulator,
breaking it on the way as its mode says:

- ``ok``: forward and answer (the no-fault baseline, and a request counter);
- ``down``: nothing listens on the port: every connection is refused;
- ``slow``: the request is forwarded (the tool acts on it) but the answer is held for
  ``slow_s``, longer than the client's timeout, so the outcome is unknown to the client;
- ``flapping``: per request, a seeded coin says up (forward and answer) or down (the
  connection is reset without an answer, a crash-looping replica behind a live listener);
- ``5xx``: per request, seeded: 502/503/504 from the replica's load balancer without
  forwarding, or 500 after forwarding (the replica failed while answering).

Each proxy runs a threaded ``http.server`` (HTTP/1.1 keep-alive, so clients really pool
connections to it) and forwards with one ``httpx.Client``. Held answers are released on
``stop()``, so shutdown never waits for them.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
from contextlib import suppress
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx

from revive.drill.server import free_port
from tests.ops.http_servers import TrackedServer

__all__ = ["MODES", "FaultyProxy", "ProxyStats"]

HOST = "127.0.0.1"
MODES = ("ok", "down", "slow", "flapping", "5xx")
#: Statuses a load balancer answers for a broken replica without reaching it.
_LB_STATUSES = (502, 503, 504)
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                         "content-encoding", "host"})


@dataclass
class ProxyStats:
    """What the proxy saw and did, counted per request (read after the run)."""

    requests: int = 0
    forwarded: int = 0
    broken: int = 0
    """Requests answered with a fault: reset, 5xx, or held past the timeout."""


class _Server(TrackedServer):
    owner: FaultyProxy
    block_on_close = True  # server_close waits for the answers it holds

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hang up on held answers and reset connections on purpose here."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60  # a safety net: no idle connection outlives a test by much
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the campaign reads ``FaultyProxy.stats`` instead."""

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        proxy = self.server.owner
        verdict = proxy.decide()
        if verdict == "reset":
            self._reset()
            return
        if verdict in _LB_STATUSES:
            self._send(int(verdict), b"<html><body>no healthy upstream</body></html>",
                       "text/html")
            return
        upstream = proxy.forward(self.command, self.path, dict(self.headers), body)
        if verdict == "hold":
            proxy.hold()  # the tool acted; the client gives up before the answer
            self.close_connection = True
            return
        if verdict == 500:
            self._send(500, b'{"error": "internal error while answering"}', "application/json")
            return
        self._send(upstream.status_code, upstream.content,
                   upstream.headers.get("content-type", "application/json"),
                   [(k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP
                    and k.lower() != "content-type"])

    def _reset(self) -> None:
        """Drop the connection with a TCP reset: no answer, as a crashing process leaves it."""
        with suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        self.close_connection = True

    def _send(self, status: int, data: bytes, content_type: str,
              headers: list[tuple[str, str]] | None = None) -> None:
        try:
            self.send_response(status)
            for name, value in headers or []:
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True


class FaultyProxy:
    """One replica's address: forwards to ``upstream`` (the simulator), breaking as told.

    ``mode`` is fixed for the proxy's life (one fault class per trial); ``seed`` drives the
    per-request choices of ``flapping`` and ``5xx``, so the nth request to a replica meets
    the same fault in every run with that seed.
    """

    def __init__(self, upstream: str, mode: str, *, seed: int = 0, slow_s: float = 3.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.upstream, self.mode, self.slow_s = upstream.rstrip("/"), mode, slow_s
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._client = httpx.Client(base_url=self.upstream, timeout=60.0)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        # A port chosen now, and nothing listening on it while down: connections are refused.
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> FaultyProxy:
        """Listen (except in ``down``, where the address must refuse connections)."""
        if self.mode == "down" or self._httpd is not None:
            return self
        self._httpd = _Server(self, self.port, _Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.01},
                                        name=f"faulty-proxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release held answers, stop listening, cut open connections, close the client."""
        self._released.set()
        httpd, thread, self._httpd, self._thread = self._httpd, self._thread, None, None
        if httpd is not None and thread is not None:
            httpd.shutdown()
            httpd.cut_connections()
            httpd.server_close()
            thread.join()
        self._client.close()

    def __enter__(self) -> FaultyProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def decide(self) -> str | int:
        """This request's fate: "pass", "reset", "hold", or a status to answer with."""
        with self._lock:
            self.stats.requests += 1
            if self.mode == "ok":
                return "pass"
            self.stats.broken += 1  # undone below for a flapping replica's "up" requests
            if self.mode == "slow":
                return "hold"
            if self.mode == "flapping":
                if self._rng.random() < 0.5:
                    self.stats.broken -= 1
                    return "pass"
                return "reset"
            return self._rng.choice((500, *_LB_STATUSES))  # 5xx

    def forward(self, method: str, path: str, headers: dict[str, str],
                body: bytes) -> httpx.Response:
        """The request as the simulator answers it (the proxy adds nothing)."""
        sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}
        response = self._client.request(method, path, headers=sent, content=body)
        with self._lock:
            self.stats.forwarded += 1
        return response

    def hold(self) -> None:
        """Hold the answer ``slow_s`` (past the client's timeout), or until ``stop()``."""
        self._released.wait(self.slow_s)
