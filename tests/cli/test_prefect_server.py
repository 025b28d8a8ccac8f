"""Runs started together share one temporary Prefect server, which is stopped on exit.

Without ``PREFECT_API_URL`` every run needs Prefect's temporary server. Started from several
threads at once (``revive serve`` answering a burst of Slack commands), Prefect started one
per thread on the same port, handed out servers that were not up yet ("Server process did
not start", "Failed to reach API") and left the extra ones running after the process ended.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from revive import prefect_server
from revive.cli import serve
from tests.factories import REPO

RUNS = 4
CAP_S = 900  # a cap on a hung process, not a measurement


def alive(pid: int) -> bool:
    """Whether ``pid`` is still a running Prefect server (not gone, not a zombie)."""
    proc = Path(f"/proc/{pid}")
    try:
        cmdline = (proc / "cmdline").read_bytes()
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return b"prefect.server.api.server" in cmdline and state != "Z"


def test_runs_started_together_share_one_server_that_stops_with_the_process(
        tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_LOGGING_TO_API_ENABLED="false",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    with (tmp_path / "stderr").open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.cli.prefect_burst", str(RUNS), "--shared",
             "--wait-for-signal"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=stderr, text=True)
    report: dict[str, Any] = {}
    try:
        reader = threading.Thread(target=lambda: report.update(
            json.loads(process.stdout.readline() or "{}")))
        reader.start()
        reader.join(CAP_S)
        assert report, f"no report:\n{(tmp_path / 'stderr').read_text()[-3000:]}"
        assert report["errors"] == []
        assert report["ok"] == list(range(RUNS))
        assert len(report["servers"]) == 1, report["servers"]
        (server,) = report["servers"]
        assert alive(server)  # shared while the process lives...
        process.send_signal(signal.SIGTERM)  # ...stopped as `revive serve` is stopped
        assert process.wait(CAP_S) == 0
        assert not alive(server)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        for pid in report.get("servers", []):  # never leave one behind, even on failure
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


class FakeServer:
    """Prefect's ``SubprocessASGIServer`` in miniature: a singleton per port that marks itself
    running before its process exists, and whose start takes as long as the test says."""

    _instances: ClassVar[dict[int | None, FakeServer]] = {}
    release = threading.Event()
    starts: ClassVar[list[int]] = []

    def __new__(cls, port: int | None = None, *args: Any, **kwargs: Any) -> FakeServer:
        if port not in cls._instances:
            cls._instances[port] = super().__new__(cls)
        return cls._instances[port]

    def __init__(self, port: int | None = None) -> None:
        if not hasattr(self, "_initialized"):
            self.port, self.server_process, self.running = port, None, False
            self._initialized = True

    def start(self, timeout: int | None = None) -> None:
        if not self.running:
            self.running = True
            self.release.wait()
            self.starts.append(timeout or 0)
            self.server_process = FakeProcess()

    def stop(self) -> None:
        self.server_process, self.running = None, False
        self._instances.pop(self.port, None)


class FakeProcess:
    returncode: int | None = None
    pid = 4242

    def poll(self) -> int | None:
        return self.returncode


def test_the_guard_starts_once_and_hands_out_only_a_started_server() -> None:
    prefect_server._guard(FakeServer)
    together = threading.Barrier(9)
    seen: list[Any] = []

    def run() -> None:
        together.wait()
        server = FakeServer()
        server.start()
        seen.append(server.server_process)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    together.wait()
    FakeServer.release.set()
    for thread in threads:
        thread.join()
    assert FakeServer.starts == [prefect_server.STARTUP_TIMEOUT_S]
    assert len(seen) == 8 and all(p is seen[0] and p is not None for p in seen)
    seen[0].returncode = 1  # the server died: the next run gets a new one, not a dead port
    FakeServer().start()
    assert len(FakeServer.starts) == 2 and FakeServer().server_process is not seen[0]
    FakeServer().stop()


def test_stop_signals_end_serve_with_a_normal_exit() -> None:
    saved = {sig: signal.getsignal(sig) for sig in serve.STOP_SIGNALS}
    try:
        serve.exit_on_signals()
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            handler = signal.getsignal(sig)
            assert callable(handler)
            with pytest.raises(SystemExit) as stopped:
                handler(sig, None)
            assert stopped.value.code == 0
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_install_is_idempotent_and_leaves_prefect_usable() -> None:
    prefect_server.install()
    prefect_server.install()
    from prefect.server.api.server import SubprocessASGIServer

    assert prefect_server.installed()
    assert SubprocessASGIServer(port=1) is SubprocessASGIServer(port=1)
    SubprocessASGIServer(port=1).stop()  # never started: stopping it only forgets it
