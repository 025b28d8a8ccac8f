"""Servers for the Prometheus adapter's tests: an exporter to scrape, a replica that hangs.

``Exporter`` is a real ``/metrics`` endpoint (``prometheus_client``'s text exposition over a
registry of its own) in a thread, whose gauge values the test sets, so the real Prometheus
replicas scrape series the test controls. ``silent_server`` accepts TCP connections and never
answers: a replica that is up but stuck, which only a timeout can get past.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

HOST = "127.0.0.1"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        super().__init__((HOST, 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A scraper hanging up early is not a test failure."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: Prometheus scrapes every second."""

    def do_GET(self) -> None:
        body = generate_latest(self.server.registry)
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Exporter:
    """Gauges by name and label names; ``set`` changes what the next scrape sees."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._gauges: dict[str, Gauge] = {}
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def target(self) -> str:
        """``host:port`` for a scrape config."""
        if self._httpd is None:
            raise RuntimeError("exporter not started")
        return f"{HOST}:{self._httpd.server_address[1]}"

    def set(self, name: str, value: float, **labels: str) -> None:
        gauge = self._gauges.get(name)
        if gauge is None:
            gauge = self._gauges[name] = Gauge(name, name, sorted(labels), registry=self.registry)
        if labels:
            gauge.labels(**labels).set(value)
        else:
            gauge.set(value)

    def start(self) -> Exporter:
        self._httpd = _Server(self.registry)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name="prometheus-exporter")
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread, self._httpd, self._thread = self._httpd, self._thread, None, None
        if httpd is not None and thread is not None:
            httpd.shutdown()
            httpd.server_close()
            thread.join()


@contextlib.contextmanager
def exporter() -> Iterator[Exporter]:
    started = Exporter().start()
    try:
        yield started
    finally:
        started.stop()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A base URL whose server accepts connections, reads, and never answers."""
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass
        writer.close()

    server = await asyncio.start_server(swallow, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
        for writer in writers:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
