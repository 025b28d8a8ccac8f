"""One temporary Prefect server per process, shared by every run in it.

Without ``PREFECT_API_URL`` Prefect starts a temporary ("ephemeral") API server the first
time anything in the process needs one: a flow run, its events and log workers, a resume
from a Slack button. Prefect's ``SubprocessASGIServer`` is a per-process singleton, but not
a thread-safe one: when ``revive serve`` starts several runs at once, each in its own
thread, two threads can both create the singleton or both start it (the loser's server
process is never stopped), and a thread that arrives while another is still starting it is
handed a server that is not up yet ("Server process did not start", "Failed to reach API").

``install`` serialises creating, starting and stopping that singleton behind one lock, so
the first caller starts the server (still lazily: only a run that needs it does), every
other caller waits until it answers and then shares it, and a server whose process died is
started again rather than handed out. Prefect registers ``stop`` with ``atexit``; a
process that exits on a signal must exit through Python for that to run (``revive serve``
turns SIGTERM and SIGHUP into a normal exit).

Prefect is imported only by ``install``: commands that never run a flow stay fast.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["STARTUP_TIMEOUT_S", "install", "installed"]

log = logging.getLogger(__name__)

#: How long a run waits for the temporary server to answer, in Prefect's own units (its
#: start loop counts only its sleeps, so the wall time is longer). Prefect's default is
#: 20 s; a first start (migrations) on a busy machine, exactly when a DC is lost, can take
#: longer, and a recovery must not fail for that.
STARTUP_TIMEOUT_S = 120

_LOCK = threading.RLock()
_installed = False


def installed() -> bool:
    """Whether ``install`` has run in this process."""
    return _installed


def install() -> None:
    """Make Prefect's temporary server safe to share between threads (idempotent).

    Changes nothing when ``PREFECT_API_URL`` is set: Prefect then never starts one."""
    global _installed
    with _LOCK:
        if _installed:
            return
        from prefect.server.api.server import SubprocessASGIServer

        _guard(SubprocessASGIServer)
        _installed = True


def _guard(cls: Any) -> None:
    """Wrap the singleton's construction, start and stop in one re-entrant lock."""
    original_new = cls.__new__
    original_init = cls.__init__
    original_start = cls.start
    original_stop = cls.stop

    def __new__(klass: Any, port: int | None = None, *args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return original_new(klass, port, *args, **kwargs)

    def __init__(self: Any, port: int | None = None) -> None:
        with _LOCK:
            original_init(self, port)

    def start(self: Any, timeout: int | None = None) -> None:
        with _LOCK:
            process = self.server_process
            if self.running and process is not None and process.poll() is None:
                return  # up and answering: Prefect's start returned only once it was
            if self.running:  # its process died: start a new one, on the same instance
                log.warning("Prefect's temporary server (pid %s) exited with %s; starting it "
                            "again", getattr(process, "pid", None),
                            getattr(process, "returncode", None))
                self.running, self.server_process = False, None
            original_start(self, timeout if timeout is not None else STARTUP_TIMEOUT_S)

    def stop(self: Any) -> None:
        with _LOCK:
            original_stop(self)

    cls.__new__ = staticmethod(__new__)
    cls.__init__ = __init__
    cls.start = start
    cls.stop = stop
