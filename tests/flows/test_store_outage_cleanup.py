"""A store outage at the wrong moment of a run: what the store campaign found, unit by unit.

``tests/reliability/test_store_faults.py`` restarts PostgreSQL in the middle of a failover.
It found three ways a store outage left something behind; each test here pins one of them at
the smallest scale that still shows it:

1. **A traffic move stranded ``started``.** The store dies after the simulator applied a
   move and before the move's step was settled; the resumed ramp keys its moves by its own
   rounds' times, so nothing ended that step. A resumed ramp must end it: done if the
   traffic tool has the weights the move meant to set, failed (it did not happen) if not.
   The same holds for a feature switched back on (the campaign's full run found one left
   ``started``: the resumed ramp re-reads which features are off, and it was on already).
2. **Cleanup skipped when the run's end cannot be written.** ``open_run`` wrote the outcome
   first, and when that raised the chat card was never finished and the chat and the tools
   were never closed; the store's error also replaced the one that ended the run.
3. **One connection left open per run.** ``RunSession.start`` made an engine of its own and
   nothing disposed it: on PostgreSQL each finished run kept a pooled connection open.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from prefect import flow
from sqlalchemy import Engine

import flows.context
import flows.warm_up_ramp
from flows.context import RunAborted, RunbookParams, open_run
from flows.warm_up_ramp import (
    RampParams,
    TrafficMover,
    move_applied,
    stranded_change,
    warm_up_ramp,
)
from revive.chat.models import RunCard, RunStatus, StepNote
from revive.errors import InputError, StoreError
from revive.runs import RunSession
from revive.runs import session as run_session
from revive.store import db, service
from revive.store.models import RunOutcome, StepState, TriggerSource
from revive.topology import Topology, parse
from tests.flows.estates import small
from tests.postgres import admin_url, throwaway_database

#: The DCs of the estates here: not the example's names.
DC_NAMES = {"dc1": "north", "dc2": "south"}
#: A deadline for what settles on its own on a loaded machine; never a measurement.
DEADLINE_S = 60.0
OUTAGE = "store: could not finish the run at postgresql://db/revive: server closed the connection"


def renamed(data: dict[str, Any]) -> dict[str, Any]:
    """The small flow-test estate with its DCs renamed."""
    text = json.dumps(data)
    for old, new in DC_NAMES.items():
        text = re.sub(rf"\b{old}\b", new, text)
    return json.loads(text)


def write_estate(tmp_path: Path) -> tuple[Topology, str]:
    data = renamed(small())
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return parse(data), str(path)


class RecordingChat:
    """A chat sink that remembers every call; ``start_error`` makes ``start`` raise, as a
    run that fails before its first step would."""

    def __init__(self, start_error: BaseException | None = None) -> None:
        self.start_error = start_error
        self.calls: list[str] = []
        self.finished: list[RunCard] = []

    async def start(self, card: RunCard) -> None:
        self.calls.append("start")
        if self.start_error is not None:
            raise self.start_error

    async def update(self, card: RunCard) -> None:
        self.calls.append("update")

    async def note(self, note: StepNote) -> None:
        self.calls.append("note")

    async def finish(self, card: RunCard) -> None:
        self.calls.append("finish")
        self.finished.append(card)

    async def aclose(self) -> None:
        self.calls.append("aclose")


class Watch:
    """The run's own chat and tools (made by ``open_run``), and every engine disposed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, chat: RecordingChat) -> None:
        self.chat = chat
        self.tools_closed = 0
        self.disposed: list[int] = []
        build = flows.context.tools_for

        def tools_for(*args: Any, **kwargs: Any) -> Any:
            toolbox = build(*args, **kwargs)
            close = toolbox.aclose

            async def aclose() -> None:
                self.tools_closed += 1
                await close()

            toolbox.aclose = aclose
            return toolbox

        dispose = Engine.dispose

        def spy_dispose(engine: Engine, close: bool = True) -> None:
            self.disposed.append(id(engine))
            dispose(engine, close)

        monkeypatch.setattr(flows.context, "tools_for", tools_for)
        monkeypatch.setattr(flows.context, "chat_from_env", lambda: chat)
        monkeypatch.setattr(Engine, "dispose", spy_dispose)


def store_down_at_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store refuses the write of the run's end, as a restarting PostgreSQL does."""

    def finish_run(*_: Any, **__: Any) -> None:
        raise StoreError(OUTAGE)

    monkeypatch.setattr(run_session.service, "finish_run", finish_run)


# --- 2. cleanup when the run's end cannot be written ---------------------------------------

Body = Callable[[Any], None]


def _succeeds(ctx: Any) -> None:
    ctx.highlight("did its work")


def _fails(ctx: Any) -> None:
    raise RuntimeError("a step failed")


def _aborts(ctx: Any) -> None:
    raise RunAborted("someone asked the run to stop")


#: How the runbook body ends -> what must reach the caller once the store refused the end,
#: and the status on the chat card. The body's own error wins; with none in flight the
#: store's refusal is raised, since the outcome is not recorded.
ENDINGS: dict[str, tuple[Body, type[BaseException], RunStatus]] = {
    "succeeded": (_succeeds, StoreError, RunStatus.SUCCEEDED),
    "failed": (_fails, RuntimeError, RunStatus.FAILED),
    "aborted": (_aborts, StoreError, RunStatus.ABORTED),
}


@pytest.mark.usefixtures("prefect_harness", "store_url")
@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_store_down_at_the_end_still_finishes_chat_and_closes_everything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str) -> None:
    _, path = write_estate(tmp_path)
    watch = Watch(monkeypatch, RecordingChat())
    body, raised, status = ENDINGS[ending]
    store_down_at_finish(monkeypatch)
    engines: list[Engine] = []

    @flow(name="store-down-at-the-end")  # the progress artifact belongs to a flow run
    async def run() -> None:
        async with open_run("provision", RunbookParams(topology=path, target_dc="south",
                                                       sim_url="http://127.0.0.1:9")) as ctx:
            engines.append(ctx.run.engine)
            body(ctx)

    with pytest.raises(raised) as caught:
        asyncio.run(run())

    if raised is RuntimeError:  # the run's own error, not replaced by the store's
        assert str(caught.value) == "a step failed"
    else:
        assert str(caught.value) == OUTAGE
    assert watch.chat.calls.count("finish") == 1
    assert [c.status for c in watch.chat.finished] == [status]
    assert watch.chat.calls[-1] == "aclose"  # the chat is closed, last
    assert watch.tools_closed == 1
    assert watch.disposed.count(id(engines[0])) == 1  # the session's own engine, once


@pytest.mark.usefixtures("prefect_harness", "store_url")
def test_a_run_failing_before_its_first_step_keeps_its_error_when_the_store_is_down(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, path = write_estate(tmp_path)
    watch = Watch(monkeypatch, RecordingChat(start_error=RuntimeError("chat would not start")))
    store_down_at_finish(monkeypatch)

    async def run() -> None:
        async with open_run("provision", RunbookParams(topology=path, target_dc="south",
                                                       sim_url="http://127.0.0.1:9")):
            pytest.fail("the body must not run when the run could not start")

    with pytest.raises(RuntimeError, match="chat would not start"):
        asyncio.run(run())
    assert watch.tools_closed == 1
    assert len(watch.disposed) == 1  # the session's own engine


# --- 3. the session's own engine, and nobody else's ----------------------------------------


def _start(topology: Topology, engine: Engine | None = None,
           resume: str | None = None) -> RunSession:
    return RunSession.start(runbook="provision", parameters={}, trigger=TriggerSource.CLI,
                            triggered_by="test", target_dc="south", topology=topology,
                            topology_source="topology.yaml", engine=engine, resume=resume)


@pytest.mark.usefixtures("store_url")
def test_a_session_disposes_the_engine_it_made_and_never_a_callers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    topology, _ = write_estate(tmp_path)
    watch = Watch(monkeypatch, RecordingChat())

    own = _start(topology)
    own.begin("provision:api@south", "provision")
    own.end("provision:api@south", StepState.DONE)
    own.finish(RunOutcome.SUCCEEDED)
    assert watch.disposed.count(id(own.engine)) == 1

    callers = db.get_engine()
    theirs = _start(topology, engine=callers)
    theirs.finish(RunOutcome.SUCCEEDED)
    assert id(callers) not in watch.disposed
    with db.session(callers) as s:  # still the caller's to use
        assert [r.outcome for r in service.get_all_runs(s)] == [RunOutcome.SUCCEEDED] * 2
    callers.dispose()

    store_down_at_finish(monkeypatch)  # the end refused: the engine is released all the same
    refused = _start(topology)
    with pytest.raises(StoreError):
        refused.finish(RunOutcome.SUCCEEDED)
    assert watch.disposed.count(id(refused.engine)) == 1

    before = len(watch.disposed)  # a run that cannot be opened does not keep its engine
    with pytest.raises(InputError):
        _start(topology, resume="no-such-run")
    assert len(watch.disposed) == before + 1


@pytest.fixture
def postgres_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A throwaway database on the suite's PostgreSQL, as the process's store; its name."""
    with throwaway_database("revive_outage", "the store-outage tests") as url:
        store = url.set(drivername="postgresql+psycopg")
        monkeypatch.setenv(db.DATABASE_URL_ENV, store.render_as_string(hide_password=False))
        yield str(url.database)


def connections(database: str) -> int:
    """Client connections the server has open on ``database`` now."""
    with psycopg.connect(admin_url(), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                           (database,)).fetchone()
    return int(row[0]) if row else 0


def settled_connections(database: str, deadline_s: float = DEADLINE_S) -> int:
    """Connections on ``database`` once closed ones are gone: a backend leaves
    ``pg_stat_activity`` a moment after its client closed it, so 0 is waited for (a
    deadline, never a measurement); what is still open at the deadline is returned."""
    deadline = time.monotonic() + deadline_s
    while (count := connections(database)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def test_finished_runs_leave_no_connection_open_on_postgresql(
        tmp_path: Path, postgres_store: str) -> None:
    topology, _ = write_estate(tmp_path)
    kept = []  # held on purpose: a session the caller still has must not hold a connection
    for i in range(3):
        run = _start(topology)
        run.begin(f"provision:api@south#{i}", "provision")
        run.end(f"provision:api@south#{i}", StepState.DONE)
        run.finish(RunOutcome.SUCCEEDED)
        kept.append(run)
    assert settled_connections(postgres_store) == 0


# --- 1. a traffic move stranded 'started' by a store outage --------------------------------


def test_a_move_counts_as_applied_only_if_the_tool_has_its_weights() -> None:
    assert move_applied({"north": 0.25, "south": 0.75}, {"north": 0.25, "south": 0.75})
    assert move_applied({"south": 3.0, "north": 1.0}, {"north": 0.25, "south": 0.75})  # shares
    assert move_applied({"south": 1.0}, {"north": 0.0, "south": 1.0})  # missing DC: 0
    assert move_applied({"north": 0.25, "south": 0.75}, {"north": 0.252, "south": 0.748})
    assert not move_applied({"north": 0.25, "south": 0.75}, {"north": 0.5, "south": 0.5})
    assert not move_applied({"north": 0.0, "south": 1.0}, {"north": 0.0, "east": 1.0})
    assert not move_applied({"north": 0.0, "south": 0.0}, {"north": 0.0, "south": 0.0})


def test_a_change_left_started_is_judged_by_the_tools_state_now() -> None:
    classes = {"tier0", "tier1"}
    weights = {"tier0": {"north": 0.0, "south": 1.0}, "tier1": {"north": 0.5, "south": 0.5}}
    flags = {("api", "previews"): True, ("api", "search"): False}
    moved = {"weights": {"north": 0.0, "south": 1.0}}

    def judge(key: str, state: str = "started", detail: dict[str, Any] | None = None
              ) -> bool | None:
        step = {"key": key, "state": state, "detail": moved if detail is None else detail}
        return stranded_change(step, classes, weights, flags)

    assert judge("ramp:tier0@99") is True  # the tool has the weights it meant to set
    assert judge("ramp:tier1@99") is False  # the move did not happen
    assert judge("ramp:feature:api/previews") is True  # switched back on
    assert judge("ramp:feature:api/search") is False
    assert judge("feature-off:api/search") is True  # switched off for the emergency
    assert judge("feature-off:api/previews") is False
    assert judge("ramp:feature:api/unknown") is False
    assert judge("ramp:tier0@99", state="done") is None  # only steps left started
    assert judge("ramp:tier0@99", detail={}) is None  # no weights recorded: no judgement
    assert judge("ramp:tier9@99") is None  # not a class of this estate
    assert judge("ramp:retry-policy") is None
    assert judge("restart:api@south") is None


class FirstChangeCut:
    """The first ramp change whose step key starts with ``prefix`` is cut short, as a store
    outage or a dead worker would cut it: ``applied`` after the tool took it (the step's
    settle fails on the store), else before it reached the tool (the process died between
    the step's begin and the move)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, prefix: str, *, applied: bool) -> None:
        self.fired = False
        move = flows.warm_up_ramp.set_class_weights
        settle = flows.context.RunContext.settle

        async def set_class_weights(traffic: Any, traffic_class: str, weights: Any) -> None:
            if not self.fired and not applied and prefix == f"ramp:{traffic_class}@":
                self.fired = True
                raise RuntimeError("the worker died before the move reached the tool")
            await move(traffic, traffic_class, weights)

        async def cut_settle(ctx: Any, key: str, **kwargs: Any) -> None:
            if not self.fired and applied and key.startswith(prefix):
                self.fired = True
                raise StoreError("store: could not finish step: server closed the connection")
            await settle(ctx, key, **kwargs)

        monkeypatch.setattr(flows.warm_up_ramp, "set_class_weights", set_class_weights)
        monkeypatch.setattr(flows.context.RunContext, "settle", cut_settle)


#: Which change is cut, and whether the tool had taken it: a move of the most important
#: class, taken or not, and the feature switched back on at the end, taken.
CUTS = {"move-applied": ("ramp:tier0@", True), "move-not-applied": ("ramp:tier0@", False),
        "feature-on-applied": ("ramp:feature:", True)}


@pytest.mark.usefixtures("prefect_harness", "store_url")
@pytest.mark.parametrize("cut", list(CUTS))
def test_a_resumed_ramp_settles_the_change_a_store_outage_stranded(
        tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch, cut: str) -> None:
    prefix, applied = CUTS[cut]
    topology, path = write_estate(tmp_path)
    sim, url = serve(topology, seed=5)
    sim.estate.power_loss("north")
    sim.estate.provision("api", "south", 6)  # south carries the API's peak
    sim.estate.set_flag("api", "previews", False)  # to come back once traffic is in
    FirstChangeCut(monkeypatch, prefix, applied=applied)
    params = RampParams(topology=path, target_dc="south", lost_dc="north", sim_url=url)

    with pytest.raises((StoreError, RuntimeError)):
        asyncio.run(warm_up_ramp(params))
    engine = db.get_engine()
    with db.session(engine) as s:
        (run,) = service.get_all_runs(s)
        stranded = [st for st in service.get_steps(s, run_id=run.id)
                    if st.state == StepState.STARTED]
    assert [st.step_key[:len(prefix)] for st in stranded] == [prefix]
    (step,) = stranded

    result = asyncio.run(warm_up_ramp(params.model_copy(update={"resume": run.id})))

    with db.session(engine) as s:
        (run,) = service.get_all_runs(s)
        steps = {st.step_key: st for st in service.get_steps(s, run_id=run.id)}
    engine.dispose()
    assert result["result"] == "full"
    assert run.outcome == RunOutcome.SUCCEEDED
    assert [k for k, st in steps.items() if st.state == StepState.STARTED] == []
    assert steps[step.step_key].state == (StepState.DONE if applied else StepState.FAILED)
    assert sim.estate.flag("api", "previews")
    moves = {k: st for k, st in steps.items() if re.match(r"ramp:tier\d+@", k)}
    assert all("weights" in st.detail for st in moves.values())  # what each meant to set
    changes = [(e.target, e.detail) for e in sim.estate.log if e.kind == "set_class_weights"]
    assert all(a != b for a, b in itertools.pairwise(changes))  # none twice
    # every move the tool took is recorded done, once
    assert sum(st.state == StepState.DONE for st in moves.values()) == len(changes)
    switched_on = [e for e in sim.estate.log if e.kind == "set_flag" and e.detail == "on"]
    assert len(switched_on) == 1  # the feature came back on once, whatever was cut


@flow(name="resumed-with-nothing-left-to-ramp")
async def summary_only(params: RampParams) -> dict:
    """A resumed run whose ramp never prepares, as a resumed failover with every class
    already moved builds no ramp step: only the mover's summary runs."""
    async with open_run("warm_up_ramp", params) as ctx:
        mover = TrafficMover(ctx, lost_dc="north", target_dcs=["south"],
                             policy=params.policy, retry_policy=params.retry_policy)
        return await mover.summary(0.0)


@pytest.mark.usefixtures("prefect_harness", "store_url")
def test_a_resume_with_nothing_left_to_ramp_still_settles_the_stranded_change(
        tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    topology, path = write_estate(tmp_path)
    sim, url = serve(topology, seed=5)
    sim.estate.power_loss("north")
    sim.estate.provision("api", "south", 6)
    sim.estate.set_flag("api", "previews", False)
    FirstChangeCut(monkeypatch, "ramp:feature:", applied=True)  # the run's very last change
    params = RampParams(topology=path, target_dc="south", lost_dc="north", sim_url=url)
    with pytest.raises(StoreError):
        asyncio.run(warm_up_ramp(params))
    engine = db.get_engine()
    with db.session(engine) as s:
        (run,) = service.get_all_runs(s)

    asyncio.run(summary_only(params.model_copy(update={"resume": run.id})))

    with db.session(engine) as s:
        (run,) = service.get_all_runs(s)
        steps = {st.step_key: st.state for st in service.get_steps(s, run_id=run.id)}
    engine.dispose()
    assert run.outcome == RunOutcome.SUCCEEDED
    assert [k for k, state in steps.items() if state == StepState.STARTED] == []
    assert steps["ramp:feature:api/previews"] == StepState.DONE
    assert [e.detail for e in sim.estate.log if e.kind == "set_flag"] == ["off", "on"]
