"""Crash and resume: a failover SIGKILLed at a random point, then resumed with ``--resume``,
ends where an uninterrupted failover ends and starts no non-idempotent action twice.

Why the campaign has this shape:

- The runbook runs as ``revive run failover`` in its own process group, as people on call
  start it, so SIGKILL takes it down with nothing flushed: no ``finally``, no ``atexit``,
  no last heartbeat. ``revive run failover --resume RUN_ID`` must then finish the job.
- The simulator runs in this process (a ``SimServer`` thread), so the kill lands at an exact,
  seeded point: inside the simulator, the moment it has applied its K-th change (an action
  started or ended, a weight or a flag set), before the runbook hears the answer. That is
  the worst window for "at most once": the tool acted and the runbook never learnt it.
  Requests the runbook had already sent still arrive, as they would at a real tool.
- K is drawn by ``random.Random(trial)`` from [1, N), N being the changes made by an
  uninterrupted run of the same failover (lost DC and targets) on the same simulator seed:
  that run, the baseline, is measured once per failover in this test. So kills land in
  every phase (features off, provisions, deploys, restarts, the ramp), and which one each
  kill hit is counted, not assumed.
- The baseline is also the reference end state: a resumed run must leave the estate exactly
  as the uninterrupted run did (instances, health, versions, weights, flags, retry policy).
- Provisions, deploys, restarts, patches, rollbacks and image copies are not idempotent: a
  second request starts a second action. The simulator's ``/actions`` ledger is the judge;
  a resumed run must re-attach to the actions in flight (same request id), never resend.
- Every ``revive run`` talks to the session's one Prefect server (``prefect_harness``); each
  process would otherwise start a temporary one of its own (~7 s). The uninterrupted
  baselines run in this process, on the same server.
- A small three-DC estate, not the example, so the lost DC and the targets can vary: every
  DC is lost in turn, recovered into both survivors or into one (the other keeps its share).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from flows.failover import FailoverParams, failover
from revive.drill.server import SimServer
from revive.sim import Simulator
from revive.sim.estate_parts import ActionBook, LogEntry
from revive.store import db, service
from revive.topology import Topology, parse
from tests.factories import REPO, estate
from tests.factories import service as svc
from tests.reliability.figures import nothing_or, record, trials

DCS = ("ams", "fra", "lon")
#: (lost DC, targets): every DC lost in turn, into both survivors or into one of them.
#: Interleaved so that the two trials of the fast subset differ in both.
FAILOVERS: list[tuple[str, tuple[str, ...]]] = [
    ("fra", ("ams", "lon")),
    ("ams", ("lon",)),
    ("lon", ("ams", "fra")),
    ("fra", ("lon",)),
    ("ams", ("fra", "lon")),
    ("lon", ("fra",)),
]
SIM_SEED = 11
#: Restarts in a DC one after another: a longer restart phase for kills to land in.
MAX_PARALLEL = 1
#: Generous: one ``revive run`` takes ~12 s on an idle machine, most of it Python start-up.
LIMIT_S = 600.0
REVIVE = str(Path(sys.executable).with_name("revive"))
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
#: Kinds of simulator action a second request would do a second time.
NON_IDEMPOTENT = frozenset({"provision", "deploy", "restart", "patch", "rollback",
                            "copy_artifact"})
#: The phase of the failover a change belongs to, by the simulator's name for the change.
PHASES = {
    "set_retry_policy": "retry policy",
    "provision": "provision",
    "deploy": "deploy",
    "copy_artifact": "image copy",
    "restart": "restart",
    "set_class_weights": "ramp",
}
PHASE_ORDER = ["features off", "retry policy", "provision", "deploy", "image copy", "restart",
               "ramp", "features back on"]


def seeds() -> list[int]:
    """Trial i kills at a point drawn with seed i, in failover ``FAILOVERS[i % 6]``."""
    return list(range(trials(2, 20)))


def estate_data() -> dict[str, Any]:
    """A database, a cache and an API in one chain; two services that cache the lost DC's
    IPs (restarts, one after another under ``max_parallel=1``); a single-DC batch service in
    ``fra`` (an emergency deploy when ``fra`` is lost)."""

    def each(n: int) -> dict[str, int]:
        return dict.fromkeys(DCS, n)

    replicas = {dc: f"https://x.{dc}.example" for dc in DCS}
    kinds = ["compute", "registry", "deploy", "traffic", "metrics", "config_store",
             "secret_store", "health_checker"]
    return estate(
        svc("user-db", group="storage", role="database", peak_load=4_000,
            capacity_per_instance=1_000, instances=each(4), restart_seconds=120,
            boot_requires=["secret-store"]),
        svc("cache", group="storage", role="cache", tier=1, depends_on=["user-db"],
            peak_load=8_000, capacity_per_instance=2_000, instances=each(3),
            restart_seconds=30),
        svc("api", group="api", depends_on=["cache"], peak_load=10_000,
            capacity_per_instance=1_000, instances=each(5),
            features=[{"name": "previews", "priority": 1, "cost": 0.1}]),
        svc("edge", group="api", depends_on=["api"], caches_dependency_ips=True,
            peak_load=3_000, capacity_per_instance=1_000, instances=each(2),
            restart_seconds=45),
        svc("caller", group="api", tier=1, caches_dependency_ips=True, peak_load=1_000,
            capacity_per_instance=1_000, instances=each(1)),
        svc("reports", group="batch", tier=3, redundancy="single-dc", peak_load=100,
            capacity_per_instance=100, instances={"fra": 1}),
        datacenters=[{"name": dc} for dc in DCS],
        ops_tools={kind.replace("_", "-"): {"kind": kind, "adapter": "sim",
                                            "replicas": dict(replicas)} for kind in kinds},
    )


# --- the kill: from inside the simulator, right after its K-th change ---------------------


class Tripwire:
    """SIGKILLs the runbook's process group the moment the simulator's log of changes
    reaches ``at`` entries. It runs on the simulator's event loop, inside the request that
    made the change, so the runbook never receives that answer."""

    def __init__(self, log: list[LogEntry], at: int) -> None:
        self.log, self.at = log, at
        self.pgid: int | None = None
        self.armed = threading.Event()
        self.fired: LogEntry | None = None

    def arm(self, pgid: int) -> None:
        self.pgid = pgid
        self.armed.set()

    def check(self, log: list[LogEntry]) -> None:
        if log is not self.log or self.fired is not None or len(log) < self.at:
            return
        # The runbook needs seconds to start; this wait only closes the gap between fork
        # and arm() in principle.
        if not self.armed.wait(60) or self.pgid is None:
            return
        self.fired = log[self.at - 1]
        os.killpg(self.pgid, signal.SIGKILL)


@pytest.fixture
def tripwires(monkeypatch: pytest.MonkeyPatch) -> list[Tripwire]:
    """Every change the in-process simulator records passes the tripwires in this list."""
    wires: list[Tripwire] = []
    original = ActionBook.record

    def record_change(book: ActionBook, kind: str, target: str, detail: str = "") -> None:
        original(book, kind, target, detail)
        for wire in wires:
            wire.check(book.log)

    monkeypatch.setattr(ActionBook, "record", record_change)
    return wires


@pytest.fixture(scope="module")
def prefect_env(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of every ``revive run`` process: the session's Prefect server (its
    records in PostgreSQL, which kept answering on a loaded 2-core machine where SQLite
    said "database is locked"), not a temporary server per process (~7 s each)."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREFECT_") and k not in PROXY_VARIABLES}
    env.update(
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        PREFECT_HOME=str(tmp_path_factory.mktemp("prefect-home")),
        PREFECT_LOGGING_TO_API_ENABLED="false",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    return env


# --- one failover, one trial ---------------------------------------------------------------


@dataclass
class Estate:
    """A simulator served over HTTP for one run, with the power of ``lost`` cut at t=0."""

    sim: Simulator
    url: str
    before: int
    """Entries in the change log before the runbook started (the power loss)."""

    def get(self, path: str) -> Any:
        response = httpx.get(self.url + path, timeout=30)
        response.raise_for_status()
        return response.json()

    def changes(self) -> list[LogEntry]:
        """What the runbooks changed, in order (read in-process: no run is going on)."""
        return list(self.sim.estate.log[self.before:])

    def final(self) -> dict[str, Any]:
        """The estate as the runbook left it, without the clock."""
        state = self.get("/state")
        state.pop("time")
        return state


@contextmanager
def simulate(topology: Topology, lost: str) -> Iterator[Estate]:
    sim = Simulator(topology, seed=SIM_SEED)
    sim.estate.power_loss(lost)
    with SimServer(sim) as server:
        yield Estate(sim, server.url, len(sim.estate.log))


@dataclass
class Ran:
    """How a ``revive run`` process ended (-9: the tripwire killed it)."""

    returncode: int
    output: str
    wall_s: float


def run_failover(args: list[str], env: dict[str, str], out: Path,
                 wire: Tripwire | None = None) -> Ran:
    """``revive run failover ARGS`` in its own process group, to the end or to the kill;
    on any way out, nothing of it is left running."""
    began = time.monotonic()
    with out.open("w") as log:
        process = subprocess.Popen([REVIVE, "run", "failover", *args], cwd=REPO, env=env,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            if wire is not None:
                wire.arm(process.pid)  # its own session: its group id is its pid
            returncode = process.wait(timeout=LIMIT_S)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    return Ran(returncode, out.read_text(errors="replace"), time.monotonic() - began)


def params(topology_path: Path, lost: str, targets: tuple[str, ...], url: str) -> list[str]:
    """The failover's parameters; it runs from the first target, as a drill's does."""
    return [f"topology={topology_path}", f"lost_dc={lost}", f"target_dcs={','.join(targets)}",
            f"run_from_dc={targets[0]}", f"sim_url={url}", f"max_parallel={MAX_PARALLEL}"]


def store_env(prefect: dict[str, str], directory: Path) -> dict[str, str]:
    """The Prefect server's environment and a revive store of this run's own."""
    directory.mkdir(parents=True, exist_ok=True)
    return {**prefect, "REVIVE_DATABASE_URL": f"sqlite:///{directory / 'runs.db'}"}


@dataclass(frozen=True)
class Record:
    """What revive's store says of a trial's run."""

    id: str
    outcome: str
    verdict: str | None
    """The failover's own outcome (recovered, late, degraded, failed) once it ended."""
    rto_s: dict[int, float]
    """Each tier's RTO as the run's headline told people (tiers back within target)."""


def the_run(env: dict[str, str]) -> Record:
    """The one run of a trial's store: a resumed run must continue it, not start another."""
    engine = db.get_engine(env["REVIVE_DATABASE_URL"])
    try:
        with db.session(engine) as s:
            runs = service.get_all_runs(s)
            assert len(runs) == 1, f"{len(runs)} runs in the trial's store"
            run = runs[0]
            summary = run.summary or {}
            told = " ".join(summary.get("highlights", [])[-1:])
            rto = {int(tier): 60.0 * int(m) + int(sec)
                   for tier, m, sec in re.findall(r"tier (\d+) (\d+):(\d\d)", told)}
            return Record(run.id, str(run.outcome), summary.get("outcome"), rto)
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Baseline:
    """An uninterrupted failover: how many changes it makes, and where it leaves the estate."""

    changes: list[LogEntry]
    final: dict[str, Any]
    rto_s: dict[int, float]


@dataclass
class Trial:
    """One kill and resume, and everything the campaign counts about it."""

    seed: int
    lost: str
    targets: tuple[str, ...]
    kill_after: int = 0
    landed: str = ""
    recovered: bool = False
    problems: list[str] = field(default_factory=list)
    twice: dict[str, int] = field(default_factory=dict)
    added_sim_s: float = 0.0
    resume_wall_s: float = 0.0
    repeated_moves: int = 0
    in_flight: int = 0
    """Actions under way when the kill landed."""
    rto_short_s: float = 0.0
    """The most by which a tier's RTO, as the resumed run told it, fell short of the
    uninterrupted run's: a crash cannot make a recovery faster, so any is misreported."""


def phase(change: LogEntry) -> str:
    """The phase of the failover a change belongs to: where a kill after it landed."""
    if change.kind == "set_flag":
        return "features back on" if change.detail == "on" else "features off"
    return PHASES.get(change.kind, change.kind)


def differences(got: Any, want: Any, where: str = "") -> list[str]:
    """Where two JSON values differ, as ``services.api.ams.instances: 5, uninterrupted 6``:
    a failing trial says what it got wrong, not only that it did. Weights are compared to
    1e-9: a resumed ramp reaches the same share by other arithmetic (0.6666666666666667)."""
    if isinstance(got, dict) and isinstance(want, dict):
        return [d for k in sorted(set(got) | set(want), key=str)
                for d in differences(got.get(k), want.get(k), f"{where}.{k}" if where else k)]
    if isinstance(got, float) and isinstance(want, float):
        same = math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    else:
        same = got == want
    return [] if same else [f"{where}: {got!r}, uninterrupted {want!r}"]


def end_state_problems(final: dict[str, Any], lost: str, targets: tuple[str, ...],
                       topology: Topology) -> list[str]:
    """The goal of a failover in its own terms: nobody routed to the lost DC, and every
    service that ran there running in every target."""
    problems = [f"{c} still sends {w[lost]:.2f} to {lost}"
                for c, w in final["class_weights"].items() if w.get(lost, 0.0) > 0.0]
    problems += [f"{s.name} not running in {dc}" for s in topology.services
                 if s.instances_in(lost) > 0 for dc in targets
                 if final["services"][s.name][dc]["healthy"] <= 0]
    return problems


def in_flight(changes: list[LogEntry]) -> int:
    """Actions started and not yet ended after these changes: the ones a resumed run must
    re-attach to (same request id) rather than start again."""
    started, ended = set(), set()
    for c in changes:
        if c.kind in NON_IDEMPOTENT:
            action, _, what = c.detail.partition(" ")
            (started if what.startswith("started") else ended).add(action)
    return len(started - ended)


def repeated_moves(changes: list[LogEntry]) -> int:
    """Weight settings of a class equal to the one before: harmless (a weight is set, not
    added) but a sign that a resumed ramp did a step again."""
    last: dict[str, str] = {}
    count = 0
    for c in changes:
        if c.kind == "set_class_weights":
            count += last.get(c.target) == c.detail
            last[c.target] = c.detail
    return count


@pytest.mark.usefixtures("store_url")  # the baselines' store; each trial has its own
def test_sigkill_at_random_points_then_resume(
    tmp_path: Path, prefect_env: dict[str, str], tripwires: list[Tripwire], record_test: str
) -> None:
    """Each trial: kill a failover after a seeded number of its changes, resume it, judge it
    against an uninterrupted run of the same failover; record the campaign, then assert."""
    data = estate_data()
    topology = parse(data)
    topology_path = tmp_path / "topology.yaml"
    topology_path.write_text(yaml.safe_dump(data, sort_keys=False))
    baselines: dict[tuple[str, tuple[str, ...]], Baseline] = {}

    def baseline(lost: str, targets: tuple[str, ...]) -> Baseline:
        """Run in this process (the same flow, without a process start-up to pay for): the
        trials only need its changes and its end state."""
        if (lost, targets) not in baselines:
            with simulate(topology, lost) as est:
                result = asyncio.run(failover(FailoverParams(
                    topology=str(topology_path), lost_dc=lost, target_dcs=list(targets),
                    run_from_dc=targets[0], sim_url=est.url, max_parallel=MAX_PARALLEL)))
                assert result["outcome"] == "recovered", (lost, targets, result)
                rto = {int(k.removeprefix("tier")): v for k, v in result["rto_s"].items()}
                baselines[lost, targets] = Baseline(est.changes(), est.final(), rto)
        return baselines[lost, targets]

    def trial(seed: int) -> Trial:
        lost, targets = FAILOVERS[seed % len(FAILOVERS)]
        t = Trial(seed, lost, targets)
        base = baseline(lost, targets)
        t.kill_after = random.Random(seed).randrange(1, len(base.changes))
        env = store_env(prefect_env, tmp_path / f"trial-{seed}")
        with simulate(topology, lost) as est:
            wire = Tripwire(est.sim.estate.log, est.before + t.kill_after)
            tripwires.append(wire)
            args = params(topology_path, lost, targets, est.url)
            try:
                first = run_failover(args, env, tmp_path / f"trial-{seed}-killed.log", wire)
            finally:
                tripwires.remove(wire)
            if wire.fired is None or first.returncode != -signal.SIGKILL:
                t.problems.append(f"not killed: exit {first.returncode} before change "
                                  f"{t.kill_after}:\n{first.output[-2000:]}")
                return t
            t.landed = phase(wire.fired)
            t.in_flight = in_flight(est.changes()[:t.kill_after])
            killed = the_run(env)
            if killed.outcome != "running":
                t.problems.append(f"the killed run is {killed.outcome!r}, not running")
            second = run_failover([*args, "--resume", killed.id], env,
                                  tmp_path / f"trial-{seed}-resumed.log")
            t.resume_wall_s = second.wall_s
            resumed = the_run(env)
            t.recovered = (second.returncode == 0 and resumed.outcome == "succeeded"
                           and resumed.verdict == "recovered")
            if not t.recovered:
                t.problems.append(f"resumed run: exit {second.returncode}, {resumed.outcome}, "
                                  f"{resumed.verdict}:\n{second.output[-2000:]}")
            t.rto_short_s = max((base.rto_s[k] - v for k, v in resumed.rto_s.items()
                                 if base.rto_s.get(k) is not None), default=0.0)
            counts = Counter((a["kind"], a["target"]) for a in est.get("/actions")["actions"])
            t.twice = {f"{k}:{target}": n for (k, target), n in counts.items()
                       if n > 1 and k in NON_IDEMPOTENT}
            final = est.final()
            t.problems += end_state_problems(final, lost, targets, topology)
            t.problems += differences(final, base.final)
            changes = est.changes()
            t.added_sim_s = changes[-1].time - base.changes[-1].time
            t.repeated_moves = repeated_moves(changes)
        return t

    runs: list[Trial] = []
    for seed in seeds():
        try:
            runs.append(trial(seed))
        except Exception as exc:  # counted as a failed trial; the campaign goes on
            runs.append(Trial(seed, *FAILOVERS[seed % len(FAILOVERS)],
                              problems=[f"{type(exc).__name__}: {exc}"]))

    n = len(runs)
    recovered = sum(t.recovered for t in runs)
    landed = Counter(t.landed for t in runs if t.landed)
    where = ", ".join(f"{p} {landed[p]}" for p in PHASE_ORDER if landed[p])
    where += "".join(f", {p} {c}" for p, c in landed.items() if p not in PHASE_ORDER)
    same = sum(not t.problems for t in runs)
    twice = sum(sum(c - 1 for c in t.twice.values()) for t in runs)
    repeated = sum(t.repeated_moves for t in runs)
    hit = [t for t in runs if t.landed]
    short = [t.rto_short_s for t in hit if t.rto_short_s > 1.0]
    attached = sum(t.in_flight for t in hit)
    busy = sum(t.in_flight > 0 for t in hit)
    lost = nothing_or(twice, "non-idempotent actions done twice")
    if same < n:  # a run that did not recover, or recovered into another state, lost too
        wrong = f"{n - same} runs not recovered or in another end state"
        lost = wrong if twice == 0 else f"{lost}; {wrong}"
    added = [t.added_sim_s for t in hit]
    walls = [t.resume_wall_s for t in hit if t.resume_wall_s]
    record(
        "crash",
        "SIGKILL of `revive run failover` at a random step, then --resume",
        trials=n,
        held=(f"{recovered}/{n} resumed runs recovered, {same}/{n} ended in the uninterrupted "
              f"run's state; kills landed in: {where}; {busy} kills left {attached} actions in "
              f"flight; {repeated} weight moves repeated; {len(short)}/{n} resumed runs told "
              "an RTO shorter than the uninterrupted run's"
              + (f" (by up to {max(short):.0f} s)" if short else "")),
        lost=lost,
        test=record_test,
        added=(f"recovery ended {round(statistics.mean(added)) + 0:+d} s of sim time later on "
               f"average (max {round(max(added)) + 0:+d} s); a resume took "
               f"{statistics.median(walls):.0f} s wall (median, process start included)"
               if added and walls else ""),
    )

    report = "\n".join(
        f"trial {t.seed} ({t.lost} -> {','.join(t.targets)}, killed after change {t.kill_after}"
        f" in {t.landed or '?'}): twice {t.twice}; " + "; ".join(t.problems)
        for t in runs if t.problems or t.twice)
    assert twice == 0, report
    assert recovered == n and same == n, report
    assert sum(landed.values()) == n, report  # every trial was killed where it was meant to
