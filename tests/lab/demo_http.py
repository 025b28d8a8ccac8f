"""Small HTTP helpers for the lab tests: GET, Prometheus text parsed, polling with a deadline,
a tiny replica server and a replica that never answers (a partition).

Tests wait on states, never on time: ``poll`` retries a check until it holds or a generous
deadline passes (a busy 2-core CI machine), and then fails with the last thing it saw.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")

DEADLINE_S = 45.0


def get(url: str, timeout_s: float = 5.0) -> httpx.Response:
    return httpx.get(url, timeout=timeout_s, trust_env=False)


def samples(base_url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``/metrics`` parsed by prometheus_client's own parser: sample name -> (labels, value)."""
    text = get(f"{base_url}/metrics").text
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def value(base_url: str, name: str, **labels: str) -> float:
    """The one sample ``name`` whose labels include ``labels`` (KeyError if none)."""
    matching = [v for got, v in samples(base_url).get(name, [])
                if all(got.get(k) == want for k, want in labels.items())]
    if len(matching) != 1:
        raise KeyError(f"{name}{labels}: {len(matching)} samples")
    return matching[0]


def poll(check: Callable[[], T | None], what: str, timeout_s: float = DEADLINE_S,
         interval_s: float = 0.1) -> T:
    """``check()`` until it returns something other than None/False; fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            result = check()
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            result, last = None, f"{type(exc).__name__}: {exc}"
        if result is not None and result is not False:
            return result
        if result is not None:
            last = result
        if time.monotonic() >= deadline:
            raise AssertionError(f"still waiting for {what} after {timeout_s:.0f} s "
                                 f"(last: {last})")
        time.sleep(interval_s)


@contextmanager
def tiny_server(dc: str) -> Iterator[str]:
    """A stdlib HTTP server in a thread answering every GET with 200 and ``X-DC: dc``: a
    stand-in for a GSLB replica when no database is needed. Yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("X-DC", dc)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def black_hole() -> Iterator[str]:
    """A URL whose connections hang, as a replica cut off by a partition: a listening socket
    that never accepts, its backlog filled, so the kernel drops further SYNs."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        yield f"http://127.0.0.1:{port}/"
    finally:
        for s in [*fillers, listener]:
            s.close()
