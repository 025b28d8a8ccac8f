"""The status board in a real browser: Debian's Chromium opens ``revive serve``'s board while
a failover is under way and sees its progress move, with no script on the page (it reloads
itself). The run is advanced step by step in the store by the test, as a runbook would.

A screenshot of the board mid-run is saved to ``$REVIVE_TEST_ARTIFACTS/board.png``
(default ``.revive/test-artifacts/board.png`` in the repository).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr

from revive.drill.server import SimServer, free_port
from revive.runs.drills import DrillSummary, record_drill
from revive.sim import Simulator
from revive.store import db, service
from revive.store.models import RunOutcome, StepState, TriggerSource
from revive.topology import load
from revive.web.app import create_app
from revive.web.settings import WebSettings
from tests.ui.browser import artifact, chromium, local_context, require_browser
from tests.web.slack import TOPOLOGY

#: The page reloads every 10 s; a busy machine may take a few reloads more.
CHANGE_TIMEOUT_MS = 90_000
STEPS = ("copy:messaging-app@dc2", "restart:msg-front@dc2", "ramp:tier0")


class Serving:
    """``create_app`` served by uvicorn on a loopback port from a thread, as ``revive serve``."""

    def __init__(self, api: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=self.port,
                                                     log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, name="revive-board",
                                        daemon=True)

    def __enter__(self) -> Serving:
        self._thread.start()
        deadline = time.monotonic() + 60.0
        while not self._server.started:
            assert self._thread.is_alive() and time.monotonic() < deadline, "no board"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10.0)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'revive.db'}"
    monkeypatch.setenv("REVIVE_DATABASE_URL", url)
    yield url


def _drills(engine: Any) -> None:
    """Four weekly drills, so the board has a trend to draw."""
    start = datetime.now(UTC) - timedelta(days=28)
    for n, (t0, t1, t2) in enumerate([(380.0, 1500.0, 5200.0), (420.0, 1650.0, 6100.0),
                                      (560.0, 1900.0, 5900.0), (610.0, 1720.0, None)]):
        record_drill(engine, DrillSummary(
            run_id=f"drill-{n}", started_at=start + timedelta(days=7 * n),
            scenario="dc-power-loss", lost_dc="dc1", trigger="schedule",
            outcome="recovered" if t2 else "degraded",
            rto_s={"tier0": t0, "tier1": t1, "tier2": t2},
            target_s={"tier0": 600.0, "tier1": 1800.0, "tier2": 7200.0},
            report_dir=f".revive/drills/2026010{n}"), step_seconds={})


def test_the_board_shows_a_failover_moving(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sync_api = require_browser()
    sim = Simulator(load(TOPOLOGY), seed=1)
    sim.advance(5)
    api = create_app(WebSettings(slack_signing_secret=SecretStr(""), topology=TOPOLOGY,
                                 roles={}))
    engine = db.get_engine(store)
    _drills(engine)
    with db.session(engine) as s:
        run = service.create_run(s, runbook="failover", parameters={"lost_dc": "dc1"},
                                 trigger=TriggerSource.SLACK, triggered_by="ana",
                                 target_dc="dc2")
        service.start_step(s, run_id=run.id, step_key=STEPS[0], action="copy")
    with SimServer(sim) as sim_server, Serving(api) as board, chromium(sync_api) as browser:
        monkeypatch.setenv("REVIVE_SIM_URL", sim_server.url)
        sim.estate.set_class_weights("tier0", {"dc1": 0.2, "dc2": 0.8})  # users moving
        context = local_context(browser, viewport={"width": 1280, "height": 900},
                                java_script_enabled=False)  # the basics need none
        try:
            page = context.new_page()
            page.goto(board.url)
            expect = sync_api.expect
            run_box = page.locator(f'[data-run="{run.id}"]')
            expect(run_box.locator(".steps")).to_have_text("0/1 steps done")
            expect(run_box.locator("code.current")).to_have_text(STEPS[0])
            expect(page.locator('[data-dc="dc2"] .badge')).to_have_text("up")

            with db.session(engine) as s:  # the copy is done, the restart begins
                service.finish_step(s, run_id=run.id, step_key=STEPS[0], state=StepState.DONE)
                service.start_step(s, run_id=run.id, step_key=STEPS[1], action="restart")
            expect(run_box.locator(".steps")).to_have_text("1/2 steps done",
                                                           timeout=CHANGE_TIMEOUT_MS)
            expect(run_box.locator("code.current")).to_have_text(STEPS[1])

            with db.session(engine) as s:  # restarted; traffic ramps
                service.finish_step(s, run_id=run.id, step_key=STEPS[1], state=StepState.DONE)
                service.start_step(s, run_id=run.id, step_key=STEPS[2], action="ramp")
            expect(run_box.locator("code.current")).to_have_text(STEPS[2],
                                                                 timeout=CHANGE_TIMEOUT_MS)
            expect(run_box.locator("progress")).to_have_attribute("value", "2")
            expect(page.locator('tr[data-tier="tier0"] svg.trend')).to_have_count(1)
            page.screenshot(path=str(artifact("board.png")), full_page=True)

            with db.session(engine) as s:  # the run ends: off the running list
                service.finish_step(s, run_id=run.id, step_key=STEPS[2], state=StepState.DONE)
                service.finish_run(s, run.id, outcome=RunOutcome.SUCCEEDED)
            expect(run_box).to_have_count(0, timeout=CHANGE_TIMEOUT_MS)
            expect(page.locator("#runs + p")).to_have_text("none running.")
        finally:
            context.close()
            engine.dispose()
    assert artifact("board.png").stat().st_size > 10_000
