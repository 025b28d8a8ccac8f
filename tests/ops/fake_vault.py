"""A local HTTP server answering Vault's ``/v1/sys/health`` as the Vault API docs describe it.

No Vault or OpenBao is packaged here, so the ``vault`` adapter is tested against this: one
``FakeVault`` per DC, switched between the states a real node can be in. It answers with
Vault's default status codes (200 active, 429 standby, 472 DR secondary, 473 performance
standby, 474 standby without its active node, 501 not initialised, 503 sealed, 530 removed)
and a JSON body with ``initialized``, ``sealed``, ``standby``, ``performance_standby``,
``replication_*_mode``, ``server_time_utc``, ``version``, ``cluster_name``, ``cluster_id``
(none for HEAD), and honours the documented query parameters (``standbyok``,
``perfstandbyok``, ``activecode``, ``standbycode``, ``drsecondarycode``,
``performancestandbycode``, ``sealedcode``, ``uninitcode``). ``hang()`` accepts and answers
nothing until released or stopped; ``rewrite_status`` plays a proxy that changes the code.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

HOST = "127.0.0.1"
HEALTH_PATH = "/v1/sys/health"
HANG_LIMIT_S = 30.0  # a safety net: a hanging request never outlives a test by much


@dataclass(frozen=True)
class Shape:
    """What a node in one state says: its default code, the parameter that overrides it,
    and its body flags."""

    code: int
    code_param: str | None
    initialized: bool = True
    sealed: bool = False
    standby: bool = False
    performance_standby: bool = False
    dr_mode: str = "disabled"


#: The states of a Vault node, by the names the tests use.
STATES: dict[str, Shape] = {
    "active": Shape(200, "activecode"),
    "standby": Shape(429, "standbycode", standby=True),
    "dr_secondary": Shape(472, "drsecondarycode", dr_mode="secondary"),
    "performance_standby": Shape(473, "performancestandbycode", standby=True,
                                 performance_standby=True),
    "standby_no_active": Shape(474, None, standby=True),
    "not_initialized": Shape(501, "uninitcode", initialized=False, sealed=True, standby=True),
    "sealed": Shape(503, "sealedcode", sealed=True, standby=True),
    "removed": Shape(530, None, standby=True),
}


def _flag(query: dict[str, list[str]], name: str) -> bool:
    # Vault reads a bare ?standbyok as true, like ?standbyok=true.
    values = query.get(name)
    return values is not None and values[-1].lower() in ("", "true", "1")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, vault: FakeVault) -> None:
        self.vault = vault
        super().__init__((HOST, 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients time out and hang up on purpose in these tests."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``FakeVault.requests``."""

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _answer(self, *, with_body: bool) -> None:
        vault = self.server.vault
        vault.record(self.command, self.path)
        if vault.hanging.is_set():
            vault.release.wait(HANG_LIMIT_S)
            self.close_connection = True
            return
        url = urlsplit(self.path)
        if url.path != HEALTH_PATH:
            self._send(404, {"errors": []}, with_body)
            return
        status, body = vault.health(parse_qs(url.query, keep_blank_values=True))
        self._send(status, body, with_body)

    def _send(self, status: int, body: dict[str, Any], with_body: bool) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if with_body:
                self.wfile.write(data)
        except OSError:
            self.close_connection = True


class FakeVault:
    """One DC's Vault node on 127.0.0.1, in the state a test puts it in."""

    def __init__(self, name: str, state: str = "active") -> None:
        self.name = name
        self.state = state
        self.rewrite_status: int | None = None
        self.requests: list[tuple[str, str]] = []
        self.hanging = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def set(self, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"unknown Vault state {state!r}; one of {', '.join(STATES)}")
        self.state = state

    def hang(self) -> None:
        """Accept connections and answer nothing (until ``stop``)."""
        self.release.clear()
        self.hanging.set()

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def health(self, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """Status and body for ``GET /v1/sys/health`` with ``query``, as Vault does it."""
        shape = STATES[self.state]
        code, param = shape.code, shape.code_param
        if shape.code == 429 and _flag(query, "standbyok"):
            code, param = STATES["active"].code, "activecode"
        if shape.performance_standby and _flag(query, "perfstandbyok"):
            code, param = STATES["active"].code, "activecode"
        if param and query.get(param):
            code = int(query[param][-1])
        if self.rewrite_status is not None:
            code = self.rewrite_status
        body = {
            "initialized": shape.initialized,
            "sealed": shape.sealed,
            "standby": shape.standby,
            "performance_standby": shape.performance_standby,
            "replication_performance_mode": "disabled",
            "replication_dr_mode": shape.dr_mode,
            "server_time_utc": int(time.time()),
            "version": "1.17.0",
            "cluster_name": f"vault-cluster-{self.name}",
            "cluster_id": f"fake-{self.name}",
        }
        return code, body

    def start(self) -> FakeVault:
        httpd = _Server(self)
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01},
                                        name=f"fake-vault-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering: the port refuses connections afterwards; hanging requests end."""
        httpd, thread, self._httpd, self._thread = self._httpd, self._thread, None, None
        self.release.set()
        self.hanging.clear()
        if httpd is None or thread is None:
            return
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@contextmanager
def fake_vaults(*dcs: str) -> Iterator[dict[str, FakeVault]]:
    """A started ``FakeVault`` per DC, all stopped on exit."""
    started: dict[str, FakeVault] = {}
    try:
        for dc in dcs:
            started[dc] = FakeVault(dc).start()
        yield started
    finally:
        for vault in started.values():
            vault.stop()
