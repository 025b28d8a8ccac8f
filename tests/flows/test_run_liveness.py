"""Runs beat a heartbeat while their flow runs; a run whose heartbeat stopped is crashed and
blocks nothing; a drill's runs live in the drill's own store, handed over explicitly, so a
real run started meanwhile in the same process stays in the default store."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from prefect import flow
from pydantic import SecretStr
from sqlalchemy import Engine, text

from flows.context import open_run
from flows.drill import DrillParams, drill
from flows.provision import ProvisionParams, provision
from revive.runs import RunSession
from revive.runs import session as run_session
from revive.store import db, service
from revive.store.models import RunOutcome, RunRecord, TriggerSource
from revive.topology import load
from revive.web.settings import WebSettings
from tests.flows.estates import small, write
from tests.web.slack import NOW, OPERATOR, SLACK_SECRET, TOPOLOGY, App, FixedClock, text_of
from tests.web.slack import create_run as create_slack_run

#: A safety net for a broken build only: every wait below ends on a state, long before this.
DEADLINE_S = 120.0


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.01)


def record(engine: Engine, run_id: str) -> RunRecord:
    with db.session(engine) as s:
        return service.get_run_or_raise(s, run_id)


def all_runs(url: str) -> list[RunRecord]:
    engine = db.get_engine(url)
    try:
        db.upgrade(engine)
        with db.session(engine) as s:
            return service.get_all_runs(s)
    finally:
        engine.dispose()


def stranded_run(url: str, **run: str | None) -> str:
    """A run recorded by a process that died ten minutes ago (``revive serve`` restarted)."""
    db.upgrade(url)
    run_id = create_slack_run(url, **run)  # type: ignore[arg-type]
    strand(url, run_id)
    return run_id


def strand(url: str, run_id: str, *, minutes: float = 10) -> None:
    """Make ``run_id`` look like the run of a process that died ``minutes`` ago."""
    then = (datetime.now(UTC) - timedelta(minutes=minutes)).replace(tzinfo=None)
    engine = db.get_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE run_record SET heartbeat_at = :t, started_at = :t "
                              "WHERE id = :id"), {"t": then, "id": run_id})
    finally:
        engine.dispose()


@pytest.mark.usefixtures("prefect_harness")
def test_a_running_flow_beats_and_stops_once_its_run_is_given_up(
    tmp_path, serve, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_session, "HEARTBEAT_EVERY_S", 0.05)
    topology, path = write(tmp_path, small())
    _, url = serve(topology)
    reached: list[str] = []

    @flow(name="beating")
    async def beating(params: ProvisionParams) -> None:
        async with open_run("provision", params) as ctx:
            engine, run_id = ctx.run.engine, ctx.run.run_id
            first = record(engine, run_id).heartbeat_at
            assert first is not None
            await until(lambda: record(engine, run_id).heartbeat_at > first,
                        "a heartbeat while the flow runs")
            reached.append("beating")
            # it was shown crashed (a store outage outlasted the threshold) and the DC was
            # given to another run: this process must not go on acting for it
            with db.session(engine) as s:
                service.finish_run(s, run_id, outcome=RunOutcome.CRASHED)
            await until(lambda: ctx.run.lost, "the heartbeat finds its run given up")
            ctx.check_abort()
            reached.append("went on")

    asyncio.run(beating(ProvisionParams(topology=path, target_dc="dc2", sim_url=url)))
    assert reached == ["beating"]
    (run,) = all_runs(store_url)
    assert run.outcome is RunOutcome.ABORTED
    assert not [t for t in threading.enumerate() if t.name.startswith("revive-heartbeat")]


@pytest.mark.usefixtures("prefect_harness")
def test_a_crashed_run_is_resumed_by_the_id_status_shows(
    tmp_path, serve, store_url: str
) -> None:
    topology, path = write(tmp_path, small())
    _, url = serve(topology)
    stranded = stranded_run(store_url, runbook="provision", target_dc="dc2", prefect_id=None)
    asyncio.run(provision(ProvisionParams(
        topology=path, target_dc="dc2", sim_url=url, resume=stranded[:12])))
    (run,) = all_runs(store_url)  # the same run, continued: not a second one
    assert (run.id, run.outcome) == (stranded, RunOutcome.SUCCEEDED)


@pytest.mark.usefixtures("prefect_harness")
def test_a_drill_keeps_its_runs_in_its_own_store_while_other_runs_keep_the_default(
    tmp_path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``revive serve`` runs a drill and a real run side by side, in threads of one process:
    the real run, opened while the drill's failover is recording its steps, must land in the
    default store, and the drill's failover in the drill's."""
    _, path = write(tmp_path, small())
    estate = load(path)
    others: list[str] = []
    lock = threading.Lock()

    def open_real_run() -> None:
        run = RunSession.start(runbook="provision", parameters={}, trigger=TriggerSource.CLI,
                               triggered_by="ana", target_dc="dc2", topology=estate,
                               topology_source=path)
        run.finish(RunOutcome.SUCCEEDED)
        others.append(run.run_id)

    def meanwhile(_progress: run_session.Progress) -> None:
        with lock:
            if others:
                return
            other = threading.Thread(target=open_real_run)  # a fresh thread: no context
            other.start()
            other.join()

    monkeypatch.setattr(run_session, "PROGRESS_LISTENERS", [meanwhile])
    out = tmp_path / "drill"
    asyncio.run(drill(DrillParams(topology=path, lost_dc="dc1", out=str(out),
                                  judge_for_s=600)))
    assert len(others) == 1, "the drill's failover never recorded a step"
    default = all_runs(store_url)
    assert [(r.id, r.runbook) for r in default] == [(others[0], "provision")]
    drills = all_runs(f"sqlite:///{out / 'runs.db'}")
    assert [r.runbook for r in drills] == ["failover"]


# --- Slack ---------------------------------------------------------------------------------


@pytest.fixture
def slack(store_url: str) -> App:
    settings = WebSettings(slack_signing_secret=SecretStr(SLACK_SECRET), topology=TOPOLOGY,
                           roles={"*": {OPERATOR: "operator"}})
    return App(settings, FixedClock(NOW), store_url)


def test_slack_a_crashed_run_blocks_no_new_run_and_can_be_abandoned(
    slack: App, store_url: str
) -> None:
    db.upgrade(store_url)
    stranded = create_slack_run(store_url, target_dc="dc1")  # the failover of dc1
    assert "already running" in text_of(slack.command("run failover target_dc=dc2",
                                                      user=OPERATOR))
    strand(store_url, stranded)  # revive serve was restarted: nobody runs it any more
    status = text_of(slack.command("status", user=OPERATOR))
    assert "[crashed] *failover* → dc1" in status and stranded in status
    answer = text_of(slack.command("run failover target_dc=dc2", user=OPERATOR))
    assert "Accepted: *failover* → dc2" in answer
    assert len(slack.started) == 1

    text_of(slack.command(f"abort {stranded}", user=OPERATOR))
    (run,) = [r for r in all_runs(store_url) if r.id == stranded]
    assert run.outcome is RunOutcome.ABORTED and run.ended_at is not None
