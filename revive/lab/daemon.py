"""Start a real program detached, know when it is ready, stop it and everything it started.

The lab and the adapter tests run HAProxy, Prometheus, registries, supervisord and ZooKeeper
as plain processes: never the packages' own services, always our own configuration on
127.0.0.1, logs in a file, each in its own process group so stopping it stops its children.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from revive.errors import ReviveError


class DaemonError(ReviveError):
    """A program could not be found, started, or did not become ready."""


class ProgramMissing(DaemonError):
    """The program is not installed; ``package`` names the Debian package that has it."""

    def __init__(self, program: str, package: str) -> None:
        super().__init__(f"{program} is not installed (apt-get install {package})")
        self.program, self.package = program, package


def program(name: str, package: str | None = None, *, paths: Sequence[str] = ()) -> str:
    """The path of ``name`` (also looked for in ``paths``); ``ProgramMissing`` otherwise."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in paths:
        if Path(candidate).exists():
            return candidate
    raise ProgramMissing(name, package or name)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


@dataclass
class Daemon:
    """One detached program: its command line, its log file, its process (group)."""

    name: str
    argv: list[str]
    log: Path
    cwd: Path | None = None
    env: Mapping[str, str] | None = None
    pid: int | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Daemon:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
            )
        self.pid = self._proc.pid
        return self

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.pid is not None and pid_alive(self.pid)

    def wait_ready(self, ready: Callable[[], bool], *, timeout_s: float = 30.0,
                   what: str = "ready") -> Daemon:
        """Poll ``ready`` until true; ``DaemonError`` with the log tail if it dies or is late."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise DaemonError(f"{self.name} exited before it was {what}:\n{self.tail()}")
            with contextlib.suppress(Exception):
                if ready():
                    return self
            time.sleep(0.1)
        raise DaemonError(f"{self.name} was not {what} after {timeout_s:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``timeout_s``."""
        if self.pid is None:
            return
        stop_group(self.pid, timeout_s)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as gone: it runs nothing and only waits for its parent.
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return status != "Z"
    return True


def stop_group(pid: int, timeout_s: float = 10.0) -> None:
    """Stop the process group led by ``pid`` (started with ``start_new_session``)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + (timeout_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.05)
        if not pid_alive(pid):
            return
