"""Serve a simulator on a loopback port from a background thread, for one drill.

The runbooks then reach it over real HTTP, exactly as they reach real tools; the drill
keeps the ``Simulator`` object to observe it second by second and to inject faults.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from revive.sim import Simulator
from revive.sim.app import create_app


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimServer:
    """``with SimServer(sim) as server:`` serves ``sim`` at ``server.url`` until the block ends."""

    def __init__(self, sim: Simulator, *, port: int | None = None) -> None:
        self.sim = sim
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(sim),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="revive-sim", daemon=True)

    def __enter__(self) -> SimServer:
        self._thread.start()
        deadline = time.monotonic() + 20.0
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"simulator server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10.0)
