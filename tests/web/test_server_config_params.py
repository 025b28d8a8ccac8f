"""``topology=`` and ``sim_url=`` are the server's configuration, never a Slack command's.

An operator who could name the topology could point a run at a staging copy of production
(whose gate approves itself) or make the server read any file; one who could name the
simulator could make the server call any URL. Such commands are refused with a reason,
audited, and start nothing: the file is never read and the URL never called.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

import flows.context
import revive.topology
from revive.web.replies import Job
from revive.web.settings import WebSettings
from tests.web.slack import NOW, OPERATOR, TOPOLOGY, App, FixedClock, text_of


class Listener:
    """A tiny HTTP server that records every request it gets."""

    def __init__(self) -> None:
        hits: list[str] = []
        self.hits = hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ssrf/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every topology file the server loads from here on."""
    paths: list[str] = []
    real = revive.topology.load

    def spy(path: Any = revive.topology.DEFAULT_PATH) -> Any:
        paths.append(str(path))
        return real(path)

    monkeypatch.setattr(revive.topology, "load", spy)
    monkeypatch.setattr(flows.context, "load", spy)
    return paths


def _staging_copy(tmp_path: Path) -> Path:
    path = tmp_path / "staging.yaml"
    text = Path(TOPOLOGY).read_text()
    assert "environment: production" in text
    path.write_text(text.replace("environment: production", "environment: staging", 1))
    return path


def test_a_run_naming_a_topology_is_refused_and_the_file_is_never_read(
    app: App, tmp_path: Path, loaded: list[str]
) -> None:
    staging = _staging_copy(tmp_path)
    answer = text_of(app.command(
        f"run failover target_dc=dc2 lost_dc=dc1 topology={staging}", user=OPERATOR))
    assert "Refused" in answer and "`topology` is the server's configuration" in answer
    assert "REVIVE_TOPOLOGY" in answer and "Nothing was started" in answer
    assert app.started == []
    assert str(staging) not in loaded
    (event,) = app.audit()
    assert (event.action, event.outcome, event.actor) == ("run", "refused", OPERATOR)
    assert event.detail is not None and "server's configuration" in event.detail["reason"]


@pytest.mark.parametrize("text", [
    "run failover target_dc=dc2 topology=/etc/passwd",
    "run failover target_dc=dc2 Topology=/etc/passwd",
    "run restart target_dc=dc2 topology=/etc/passwd --dry-run",
])
def test_any_spelling_of_topology_on_any_runbook_is_refused_without_parse_errors(
    app: App, loaded: list[str], text: str
) -> None:
    answer = text_of(app.command(text, user=OPERATOR))
    assert "Refused" in answer and "/etc/passwd" not in answer and "root" not in answer
    assert "/etc/passwd" not in loaded
    assert app.started == []


def test_a_run_naming_a_simulator_is_refused_and_the_url_never_called(
    settings: WebSettings, store: str, listener: Listener
) -> None:
    started: list[Job] = []

    def start(job: Job) -> None:
        """As a run does first: ask the simulator it was given."""
        sim_url = getattr(job.params, "sim_url", None)
        if sim_url:
            httpx.get(sim_url, timeout=5)
        started.append(job)

    app = App(settings, FixedClock(NOW), store, start=start)
    answer = text_of(app.command(f"run failover target_dc=dc2 sim_url={listener.url}",
                                 user=OPERATOR))
    assert "Refused" in answer and "`sim_url` is the server's configuration" in answer
    assert "REVIVE_SIM_URL" in answer
    assert started == []
    assert app.slack.commands._pending == set()  # nothing is starting either
    assert listener.hits == []
    assert [e.outcome for e in app.audit()] == ["refused"]


def test_a_run_without_them_still_uses_the_servers_topology(app: App) -> None:
    assert "Accepted" in text_of(app.command("run failover target_dc=dc2", user=OPERATOR))
    (job,) = app.started
    params: Any = job.params
    assert params.topology == TOPOLOGY and params.sim_url is None
