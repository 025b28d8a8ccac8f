"""Helpers for the registry tests: a server that never answers, a transport that counts.

``SilentServer`` accepts TCP connections and never writes a byte, like a registry stuck
behind a dead storage backend: only the client's timeout gets a caller out.
``RecordingTransport`` records every request an adapter sends (method, path, headers) so a
test can say "the second copy pushed nothing" from what was really on the wire.
"""

from __future__ import annotations

import socket
import threading
from contextlib import suppress
from dataclasses import dataclass

import httpx

__all__ = ["RecordingTransport", "Sent", "SilentServer"]


class SilentServer:
    """Listens on 127.0.0.1, accepts, answers nothing; ``close()`` drops everything."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.05)
        self.port = int(self._sock.getsockname()[1])
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._held:
            with suppress(OSError):
                conn.close()
        self._sock.close()


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    headers: dict[str, str]


class RecordingTransport(httpx.AsyncBaseTransport):
    """An ``AsyncHTTPTransport`` that appends every request to a shared list first."""

    def __init__(self, log: list[Sent]) -> None:
        self._log = log
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._log.append(Sent(request.method, request.url.path, dict(request.headers)))
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
