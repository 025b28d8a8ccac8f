"""Campaign: the same failover started at once from Slack, Prefect and the CLI runs once.

The rule is the store's (``service.create_run`` and a partial unique index): one active real
run per (runbook, DC), and ``ActiveRunError`` names the run that holds it. Every trigger
applies it when its run opens its record, so the claim worth a figure is the end-to-end one:
released together by a barrier (then each after a seeded jitter of up to 3 s, so which
trigger wins varies), a signed ``/revive run failover`` into the Slack app, a
flow run created through Prefect's API (the flow called in a thread under the session's
Prefect server, as a worker's run is) and ``revive run failover`` in its own process leave
exactly one run in the store, and the two others are told which run that is: Slack in its
answer (at once, or posted to ``response_url`` once its job found the run), the CLI with
exit status 3 and the run id on stderr, the flow run with ``ActiveRunError`` and a Failed
state in Prefect whose message names the run.

To keep the race a race on a loaded machine, whatever the timing, the estate is a
production one: the winner waits at its approval gate until every contender has been
answered, so a slow loser can never arrive after the winner ended (and then rightly start
a second run). The gate is then approved through the store, as ``revive approve`` does, and
the winner must recover. Below the triggers, the rule itself is raced by separate processes
calling ``service.create_run`` on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from revive.store import db, service
from revive.store.models import AuditSource, RunOutcome, RunRecord, TriggerSource
from tests.factories import REPO
from tests.reliability.figures import nothing_or, record, trials

LOST, TARGET = "ams", "fra"
"""The estate's DCs, renamed from the flow-test estate's dc1 and dc2."""
RUNBOOK = "failover"
DEADLINE_S = 300.0
"""How long a contender may take to be answered, or a run to end: generous, a loaded
2-core machine runs three flows and a Prefect server at once here."""
GATE = "traffic"
APPROVAL_TIMEOUT_S = 1800
"""The winner's gate wait: far longer than any trial, it is always decided by the test."""
RUN_ID = re.compile(r"run `?([0-9a-f]{32})`?")
JITTER_S = 3.0
"""Each trigger goes up to this long after the barrier (seeded per trial), as people who
saw the same alert type within seconds of each other: the triggers still overlap (opening
a run takes longer on a busy machine), but the in-process ones need not win every trial,
so each trigger's winning path is exercised too."""


def now() -> float:
    return time.monotonic()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout``."""
    deadline = now() + timeout
    while not condition():
        if now() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


# --- the three triggers --------------------------------------------------------------------


@dataclass
class Contender:
    """One way of starting the failover, and what it was told."""

    name: str
    trigger: TriggerSource
    done: threading.Event = field(default_factory=threading.Event)
    refused_for: str | None = None
    """The run id the refusal named (None: not refused, or the refusal named none)."""
    said: str = ""
    """What it was told, for the failure message."""
    ok: bool | None = None
    """For the winner: whether it ended as a successful recovery."""
    via: str = ""
    """How Slack told a loser: in its answer ("answer") or posted once its job found the
    run ("post")."""


CLI_SCRIPT = textwrap.dedent("""
    # `revive run failover ...`, warmed up first: the imports a cold start pays for (Prefect,
    # the flows) would otherwise make the CLI the last to arrive in every trial.
    import sys

    import flows.failover  # noqa: F401
    import revive.cli.live  # noqa: F401
    from revive.cli import main

    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":  # the barrier; EOF: the test went away
        sys.exit("not released")
    sys.argv = ["revive", *sys.argv[1:]]
    main()
""")


def cli_process(path: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``revive run failover`` in its own process, started and warmed up, waiting for a
    line on stdin to go."""
    args = [sys.executable, "-c", CLI_SCRIPT, "run", RUNBOOK, f"target_dc={TARGET}",
            f"topology={path}", f"approval_timeout_s={APPROVAL_TIMEOUT_S}"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready = proc.stdout.readline()  # blocks until the imports are done (or it died)
    if ready.strip() != "ready":
        proc.kill()
        _, stderr = proc.communicate(timeout=60)
        pytest.fail(f"the CLI process did not start: {ready!r} {stderr[-2000:]}")
    return proc


def real_runs(store: str) -> list[RunRecord]:
    engine = db.get_engine(store)
    try:
        with db.session(engine) as s:
            return [r for r in service.get_all_runs(s, limit=500) if not r.dry_run]
    finally:
        engine.dispose()


def decide(store: str, run_id: str, decision: str) -> None:
    """Store the gate's decision, as ``revive approve`` does; the waiting flow finds it."""
    engine = db.get_engine(store)
    try:
        with db.session(engine) as s:
            service.decide_gate(s, run_id=run_id, gate=GATE, decision=decision,
                                by="race-campaign", source=AuditSource.CLI,
                                reason="released by the race campaign")
    finally:
        engine.dispose()


@dataclass
class Trial:
    runs: list[RunRecord]
    contenders: list[Contender]

    @property
    def winner(self) -> RunRecord | None:
        return self.runs[0] if len(self.runs) == 1 else None

    def told(self) -> list[Contender]:
        """The losers that were told the winner's run id."""
        winner = self.winner
        return [c for c in self.contenders
                if winner is not None and c.trigger != winner.trigger
                and c.refused_for == winner.id]


@pytest.fixture
def estate(tmp_path: Path) -> tuple[Any, str]:
    """The small flow-test estate in production (so runs wait at the gate), in DCs named
    ``LOST`` and ``TARGET``."""
    import json

    from revive.topology import parse
    from tests.flows.estates import small

    text = json.dumps(small(environment="production"))
    data = json.loads(text.replace("dc1", LOST).replace("dc2", TARGET))
    path = tmp_path / "topology.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return parse(data), str(path)


def race_once(seed: int, estate: tuple[Any, str], serve: Any, store: str,
              monkeypatch: pytest.MonkeyPatch) -> Trial:
    """Release the three triggers together against a fresh simulator; judge once every
    loser was answered; approve the winner's gate; wait for everything to end."""
    from prefect.settings import PREFECT_API_URL
    from pydantic import SecretStr

    from flows.failover import FailoverParams, failover
    from revive.runs import ActiveRunError
    from revive.web.settings import WebSettings
    from tests.web.slack import NOW, OPERATOR, SLACK_SECRET, App, FixedClock, text_of

    topology, path = estate
    sim, url = serve(topology, seed=seed)
    sim.estate.power_loss(LOST)
    monkeypatch.setenv("REVIVE_SIM_URL", url)  # the server's configuration, not a command's
    before = {r.id for r in real_runs(store)}
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "REVIVE_DATABASE_URL": store, "REVIVE_SIM_URL": url, "PYTHONUNBUFFERED": "1"}
    cli = cli_process(path, env)
    app = App(WebSettings(slack_signing_secret=SecretStr(SLACK_SECRET), topology=path,
                          start_mode="process", roles={"production": {OPERATOR: "operator"}}),
              FixedClock(NOW), store, run_jobs=True)
    slack = Contender("Slack", TriggerSource.SLACK)
    prefect = Contender("Prefect", TriggerSource.UI)
    shell = Contender("CLI", TriggerSource.CLI)
    contenders = [slack, prefect, shell]
    barrier = threading.Barrier(len(contenders))
    jitter = random.Random(seed)
    delays = {c.name: jitter.uniform(0, JITTER_S) for c in contenders}

    def released(contender: Contender) -> None:
        barrier.wait()
        time.sleep(delays[contender.name])

    def by_slack() -> None:
        released(slack)
        answer = text_of(app.command(f"run {RUNBOOK} target_dc={TARGET}", user=OPERATOR))
        slack.said = answer
        if "already running" in answer:
            slack.refused_for, slack.via = _named(answer), "answer"
            slack.done.set()
            return
        if "Accepted" not in answer:  # neither started nor told which run: a finding
            slack.done.set()
            return
        # The job runs in the app's own thread; how it ended is posted to response_url.
        wait_until(lambda: bool(app.posted), "Slack's posted answer", timeout=DEADLINE_S * 2)
        posted = text_of(app.posted[-1])
        slack.said += "\n" + posted
        if "already running" in posted:
            slack.refused_for, slack.via = _named(posted), "post"
        slack.ok = "*failover*: recovered" in posted
        slack.done.set()

    failed_states: list[str] = []

    def on_failure(_flow: Any, _flow_run: Any, state: Any) -> None:
        failed_states.append(str(state.message or ""))

    watched = failover.with_options(on_failure=[*failover.on_failure_hooks, on_failure])

    def by_prefect() -> None:
        released(prefect)
        try:
            result = asyncio.run(watched(FailoverParams(
                topology=path, target_dc=TARGET,  # untagged: as from the UI or the API
                approval_timeout_s=APPROVAL_TIMEOUT_S)))
        except ActiveRunError as exc:
            # Told twice: the caller gets the error, and the flow run Prefect shows (UI, API)
            # failed with a message naming the run.
            prefect.said = f"{exc} | Prefect state: {failed_states}"
            if any(exc.run_id in message for message in failed_states):
                prefect.refused_for = exc.run_id
        except Exception as exc:
            prefect.said = f"{type(exc).__name__}: {exc}"
        else:
            prefect.said, prefect.ok = str(result.get("outcome")), result.get(
                "outcome") == "recovered"
        finally:
            prefect.done.set()

    def by_cli() -> None:
        released(shell)
        assert cli.stdin is not None
        cli.stdin.write("go\n")
        cli.stdin.flush()
        stdout, stderr = cli.communicate(timeout=DEADLINE_S * 2)
        said = " ".join(stderr.split())  # Rich wraps long lines at 120 columns in a pipe
        shell.said = f"exit {cli.returncode}: {' '.join(stdout.split())} {said}"[-1500:]
        if cli.returncode == 3 and "already running" in said:
            shell.refused_for = _named(said)
        shell.ok = cli.returncode == 0
        shell.done.set()

    threads = [threading.Thread(target=t, daemon=True, name=f"race-{t.__name__}")
               for t in (by_slack, by_prefect, by_cli)]
    for thread in threads:
        thread.start()
    try:
        def answered() -> bool:
            started = {r.trigger for r in real_runs(store) if r.id not in before}
            return all(c.done.is_set() or c.trigger in started for c in contenders)

        wait_until(answered, "every trigger to be answered or to hold a run")
        runs = [r for r in real_runs(store) if r.id not in before]
        trial = Trial(runs, contenders)
    except BaseException:
        if cli.poll() is None:  # never leave our CLI process behind a failed trial
            cli.kill()
        raise
    finally:
        for run in real_runs(store):  # release every gate, whatever happened
            if run.id not in before and run.outcome == RunOutcome.RUNNING:
                decide(store, run.id, "approved")
    for contender in contenders:
        if not contender.done.wait(DEADLINE_S * 2):
            if cli.poll() is None:
                cli.kill()
            pytest.fail(f"{contender.name} never ended: {contender.said}")
    for thread in threads:
        thread.join(DEADLINE_S)
    trial.runs = [r for r in real_runs(store) if r.id not in before]  # as they ended
    return trial


def _named(text: str) -> str | None:
    match = RUN_ID.search(text)
    return match.group(1) if match else None


@pytest.mark.usefixtures("prefect_harness")
def test_slack_prefect_and_the_cli_starting_the_same_failover_run_it_once(
        estate: tuple[Any, str], serve: Any, store_url: str,
        monkeypatch: pytest.MonkeyPatch, record_test: str) -> None:
    db.upgrade(store_url)  # as `revive db upgrade` did before anyone raced
    count = trials(2, 20)
    results: list[Trial] = []
    for seed in range(1, count + 1):
        results.append(race_once(seed, estate, serve, store_url, monkeypatch))
    once = sum(1 for t in results if t.winner is not None)
    extra = sum(max(0, len(t.runs) - 1) for t in results)
    told = sum(len(t.told()) for t in results)
    untold = 2 * count - told
    recovered = sum(1 for t in results if t.winner is not None and _won_and_recovered(t))
    wins = {c.name: 0 for c in results[0].contenders}
    for t in results:
        for c in t.contenders:
            if t.winner is not None and c.trigger == t.winner.trigger:
                wins[c.name] += 1
    slack_told = [c.via for t in results for c in t.told() if c.trigger == TriggerSource.SLACK]
    record("races", "Slack, Prefect and the CLI start the same failover at once",
           trials=count,
           held=f"{once}/{count} trials ran exactly one failover ({recovered} recovered); "
                f"{told}/{2 * count} others told which run (won: "
                + ", ".join(f"{name} {n}" for name, n in wins.items())
                + f"; Slack told in its answer {slack_told.count('answer')}, "
                  f"in a later post {slack_told.count('post')})",
           lost=_joined(nothing_or(extra, "failovers started twice"),
                        nothing_or(untold, "triggers not told the run id")),
           test=record_test)
    details = [[(c.name, c.refused_for, c.ok, c.said[-300:]) for c in t.contenders]
               for t in results]
    assert extra == 0 and once == count, details
    assert untold == 0, details
    assert recovered == count, details


def _won_and_recovered(trial: Trial) -> bool:
    """The winning trigger said its run recovered, and the store agrees."""
    winner = trial.winner
    assert winner is not None
    (mine,) = [c for c in trial.contenders if c.trigger == winner.trigger]
    return bool(mine.ok) and winner.outcome == RunOutcome.SUCCEEDED


def _joined(*parts: str) -> str:
    lost = [p for p in parts if p != "nothing"]
    return "; ".join(lost) or "nothing"


# --- the rule itself, raced by processes ---------------------------------------------------

PROCESSES = trials(3, 6)
"""Racing processes per trial: more than the cores, so they really interleave (fewer in the
fast subset: each costs a Python start-up that imports the store)."""


def _store_racer(url: str, barrier: Any, conn: Connection) -> None:
    """A separate process: for each (runbook, DC) it is sent, wait for the others at the
    barrier, then try to create that run; answer what happened."""
    engine = db.get_engine(url)
    try:
        while (job := conn.recv()) is not None:
            runbook, dc, who = job
            barrier.wait(timeout=DEADLINE_S)
            try:
                with db.session(engine) as s:
                    run = service.create_run(s, runbook=runbook, parameters={},
                                             trigger=TriggerSource.CLI, triggered_by=who,
                                             target_dc=dc)
                    conn.send(("won", run.id))
            except service.ActiveRunError as exc:
                conn.send(("refused", exc.run_id))
            except Exception as exc:  # any other answer is a finding, reported as such
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        engine.dispose()


@dataclass
class Racers:
    """``PROCESSES`` long-lived processes on one store, so a trial costs no start-up."""

    url: str
    procs: list[Any] = field(default_factory=list)
    conns: list[Connection] = field(default_factory=list)
    barrier: Any = None
    """Held here: a child unpickles it after ``start`` returns, and a barrier the parent
    dropped is gone by then."""

    def start(self) -> Racers:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self.barrier = barrier = ctx.Barrier(PROCESSES)
        for n in range(PROCESSES):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_store_racer, args=(self.url, barrier, theirs),
                               name=f"store-racer-{n}", daemon=True)
            proc.start()
            self.procs.append(proc)
            self.conns.append(mine)
        return self

    def race(self, runbook: str, dc: str) -> list[tuple[str, str]]:
        for n, conn in enumerate(self.conns):
            conn.send((runbook, dc, f"racer-{n}"))
        answers = []
        for conn in self.conns:
            if not conn.poll(DEADLINE_S):
                pytest.fail("a racing process did not answer")
            answers.append(conn.recv())
        return answers

    def stop(self) -> None:
        for conn in self.conns:
            conn.send(None)
        for proc in self.procs:
            proc.join(60)
            if proc.is_alive():
                proc.kill()


@pytest.fixture(params=["sqlite", "postgresql"])
def race_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated store on each backend revive supports."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'revive.db'}"
        db.upgrade(url)
        yield url
        return
    from tests.postgres import throwaway_database

    with throwaway_database("revive_races", "the store race campaign") as pg:
        url = pg.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        db.upgrade(url)
        yield url


def test_processes_creating_the_same_run_at_once_leave_exactly_one(
        race_store: str, record_test: str) -> None:
    backend = race_store.split(":", 1)[0].split("+", 1)[0]
    count = trials(5, 50)
    racers = Racers(race_store).start()
    once, told, errors, extra = 0, 0, [], 0
    disagreed: list[tuple[int, list[tuple[str, str]]]] = []
    try:
        for trial in range(count):
            answers = racers.race(RUNBOOK, LOST)
            won = [run_id for what, run_id in answers if what == "won"]
            errors += [detail for what, detail in answers if what == "error"]
            extra += max(0, len(won) - 1)
            if len(won) == 1:
                once += 1
                told += sum(1 for what, run_id in answers
                            if what == "refused" and run_id == won[0])
            engine = db.get_engine(race_store)
            try:
                with db.session(engine) as s:  # the next trial races for a free (runbook, DC)
                    active = service.get_active_run(s, runbook=RUNBOOK, target_dc=LOST)
                    if active is None or [active.id] != won:  # the store disagrees
                        disagreed.append((trial, answers))
                    for run_id in won:
                        service.finish_run(s, run_id, outcome=RunOutcome.SUCCEEDED)
                    stored = len(service.get_all_runs(s, limit=10 * count))
            finally:
                engine.dispose()
    finally:
        racers.stop()
    losers = (PROCESSES - 1) * count
    record("races", f"{PROCESSES} processes create the same run at once ({backend})",
           trials=count,
           held=f"{once}/{count} trials left exactly one run; {told}/{losers} losers told "
                "which run won",
           lost=_joined(nothing_or(extra, "runs created twice"),
                        nothing_or(losers - told, "losers not told the run id"),
                        nothing_or(len(errors), "other errors"),
                        nothing_or(len(disagreed), "trials the store disagreed with")),
           test=record_test)
    assert errors == []
    assert disagreed == []
    assert extra == 0 and once == count
    assert told == losers
    assert stored == count  # no loser left a row behind
