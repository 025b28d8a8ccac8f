"""Runs started from the CLI: executed here, with Rich live progress (steps, current step,
real and simulated time) on stderr, so stdout stays for results.

A run that reaches an approval gate where a person must answer says once how to answer it
(``GateHint``). A break-glass run (``local_mode``) needs no Prefect server and no central
store: Prefect's temporary server in this process, revive's records in a local SQLite
file, gate decisions from ``revive approve`` in another terminal."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from revive.chat.client import ENV_CHANNEL, ENV_TOKEN
from revive.cli.common import err
from revive.errors import StoreError
from revive.runs import session
from revive.runs.approvals import LOCAL_RUN_ENV, how_to_approve, open_gate
from revive.runs.session import Progress as RunProgress
from revive.store import db, service
from revive.topology import Topology

log = logging.getLogger(__name__)

#: Settings that point Prefect at shared infrastructure (the team's API, its UI, the
#: server's database and messaging): a local run drops them for this process, so its
#: temporary server is a private one on Prefect's own defaults.
SHARED_PREFECT_ENV = (
    "PREFECT_API_URL", "PREFECT_UI_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL",
    "PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_MESSAGING_BROKER",
    "PREFECT_MESSAGING_CACHE", "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING",
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE", "PREFECT_SERVER_DOCKET_URL",
)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


@contextmanager
def live_progress(title: str) -> Iterator[None]:
    """A progress line fed by every run of this process. The current step names services
    and DCs from the topology: no column reads its text as Rich markup."""
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("sim {task.fields[sim]}", markup=False),
        TextColumn("{task.fields[current]}", markup=False),
        console=err,
        refresh_per_second=4,
    )
    task = bar.add_task(title, total=None, current="starting", sim="-")

    def listener(p: RunProgress) -> None:
        bar.update(task, completed=p.done, total=max(p.total, p.done) or None,
                   current=p.current[:70], sim=_clock(p.sim_time))

    session.PROGRESS_LISTENERS.append(listener)
    try:
        with bar:
            yield
    finally:
        session.PROGRESS_LISTENERS.remove(listener)


def local_store_url() -> str:
    """Where a local run records: ``REVIVE_DATABASE_URL`` when it names a SQLite file, else
    ``.revive/revive.db`` here. Never a database server: the run must not need one."""
    url = db.database_url()
    try:
        parsed = make_url(url)
    except ArgumentError:
        parsed = None
    if parsed is not None and parsed.get_backend_name() == "sqlite" and parsed.database \
            and parsed.database != ":memory:":
        return url
    return f"sqlite:///{(Path.cwd() / db.DEFAULT_DB_PATH).as_posix()}"


@contextmanager
def local_mode() -> Iterator[str]:
    """Inside: this process's runs use a temporary Prefect server of its own (whatever
    ``PREFECT_API_URL`` or the Prefect profile say) and record in the local store, whose
    URL is yielded. The environment is restored after."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        PREFECT_UI_URL,
        temporary_settings,
    )

    store = local_store_url()
    saved = {name: os.environ.get(name)
             for name in (*SHARED_PREFECT_ENV, db.DATABASE_URL_ENV, LOCAL_RUN_ENV)}
    for name in SHARED_PREFECT_ENV:
        os.environ.pop(name, None)
    os.environ[db.DATABASE_URL_ENV] = store
    os.environ[LOCAL_RUN_ENV] = "1"  # its gates: no Slack buttons, decided from the terminal
    try:
        with temporary_settings(
            updates={PREFECT_SERVER_EPHEMERAL_ENABLED: True},
            restore_defaults={PREFECT_API_URL, PREFECT_UI_URL,
                              PREFECT_SERVER_DATABASE_CONNECTION_URL},
        ):
            yield store
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@dataclass
class GateHint:
    """A progress listener that, when a run of this process opens an approval gate where a
    person must answer (production), prints once how to answer it. The run is found in the
    store by its Prefect flow run; a store that cannot say is logged and the run goes on."""

    flow_runs: list[str]
    local_store: str | None = None
    told: set[str] = field(default_factory=set)

    def __call__(self, progress: RunProgress) -> None:
        key = progress.current
        if not key.startswith("approval:") or key in self.told or not self.flow_runs:
            return
        self.told.add(key)
        try:
            lines = self.lines(self.flow_runs[0])
        except StoreError as exc:
            log.warning("could not say how to approve %s: %s", key, exc)
            return
        for line in lines:
            err.print(line, markup=False, soft_wrap=True)

    def lines(self, flow_run_id: str) -> list[str]:
        engine = db.get_engine()
        try:
            with db.session(engine) as s:
                run = service.get_run_by_prefect_id(s, flow_run_id)
                run_id = run.id if run is not None else None
            waiting = open_gate(engine, run_id) if run_id else None
        finally:
            engine.dispose()
        if run_id is None or waiting is None or waiting[1] != "production":
            return []  # not this process's run, or a gate that approves itself
        if self.local_store is not None:  # the Slack buttons and the UI cannot reach it
            return [*how_to_approve(run_id, waiting[0], store=self.local_store),
                    "(a local run takes its decision from `revive approve` only)"]
        slack = os.environ.get(ENV_CHANNEL, "").strip() \
            if os.environ.get(ENV_TOKEN, "").strip() else ""
        ui = os.environ.get("PREFECT_UI_URL", "").strip().rstrip("/")
        return how_to_approve(run_id, waiting[0], slack_channel=slack or None,
                              ui_link=f"{ui}/runs/flow-run/{flow_run_id}" if ui else None)


async def tools_answering(topology: Topology, *, sim_url: str | None,
                          timeout_s: float = 3.0) -> int:
    """How many replicas of the tools a run would use answer now (each adapter's own
    probe, as ``revive check --probe`` asks them); tools that cannot be asked count for
    nothing."""
    from revive.readiness.probe import replica_answers

    replicas = logging.getLogger("revive.ops")  # each failover is expected here: one line
    level = replicas.level                      # (the caller's) says what it means
    replicas.setLevel(logging.ERROR)
    try:
        answers = await replica_answers(topology, sim_url=sim_url, timeout_s=timeout_s)
    finally:
        replicas.setLevel(level)
    return sum(sum(1 for ok in got.values() if ok)
               for got in answers.values() if not isinstance(got, str))


@dataclass(frozen=True)
class Finished:
    """How a flow run here ended: its Prefect id, and what it returned or raised."""

    flow_run_id: str | None
    result: Any = None
    error: BaseException | None = None


def execute(title: str, flow: Any, params: Any, *, local_store: str | None = None) -> Finished:
    """Run ``flow(params)`` here, with live progress, to its end.

    What the flow raised is kept, not re-raised, together with the Prefect flow run it
    ran as, so the caller can find revive's run record (an aborted run's outcome, its id)
    even when the flow failed. It is the flow's own exception, not Prefect's summary of
    the run's state: a gate that timed out leaves a Failed state saying only "never
    resumed", while the flow says which gate and why. An error before the flow started
    (Prefect unreachable) raises. ``local_store``: the run is a local one (``local_mode``),
    recording there."""
    started: list[str] = []
    hint = GateHint(started, local_store)

    def note(_flow: Any, flow_run: Any, _state: Any) -> None:
        started.append(str(flow_run.id))

    from prefect import tags

    from revive.cli.common import whoami
    from revive.runs.origin import origin_tags
    from revive.store.models import TriggerSource

    watched = flow.with_options(on_running=[*flow.on_running_hooks, note])
    session.PROGRESS_LISTENERS.append(hint)
    try:
        with live_progress(title), tags(*origin_tags(TriggerSource.CLI, whoami())):
            try:
                result = asyncio.run(watched(params))
            except Exception as exc:
                if not started:
                    raise
                return Finished(started[0], error=exc)
    finally:
        session.PROGRESS_LISTENERS.remove(hint)
    return Finished(started[0] if started else None, result)
