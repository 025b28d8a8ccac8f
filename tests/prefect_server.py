"""A real ``prefect server start`` for the tests that need one (deployments, the UI).

SQLite in a temporary ``PREFECT_HOME``, on a free port of 127.0.0.1, stopped by PID. The
environment it yields points Prefect's CLI and clients at it and at nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from revive.drill.server import free_port
from tests.factories import REPO

PREFECT = str(Path(sys.executable).with_name("prefect"))
HEALTH_TIMEOUT_S = 90.0


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop(process: subprocess.Popen[Any]) -> None:
    """Stop a server the tests started: SIGTERM, then SIGKILL after 15 s; always reaped."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


@contextmanager
def prefect_server(home: Path, *, ui: bool = False,
                   database: str | None = None) -> Iterator[dict[str, str]]:
    """A running server; yields the environment (``PREFECT_API_URL`` and
    ``PREFECT_UI_URL`` included) that points the CLI and clients at it. ``database`` is
    its ``postgresql+asyncpg://`` URL; by default a SQLite file in ``home``, which under
    load sometimes answers a write 503 (a browser does not retry)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_DATABASE_CONNECTION_URL=(
            database or f"sqlite+aiosqlite:///{home / 'prefect.db'}"),
        PREFECT_SERVER_UI_ENABLED="true" if ui else "false",
        PREFECT_UI_API_URL=f"{base}/api",  # what the UI in a browser calls
        PREFECT_LOGGING_TO_API_ENABLED="false",
        PREFECT_CLI_PROMPT="false",
        REVIVE_HOME=str(REPO),
    )
    log = home / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while True:
                assert server.poll() is None, f"server exited {server.returncode}:\n{tail(log)}"
                try:
                    if client.get(f"{base}/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"server not healthy:\n{tail(log)}"
                time.sleep(0.25)
        yield {**env, "PREFECT_API_URL": f"{base}/api", "PREFECT_UI_URL": base}
    finally:
        stop(server)
