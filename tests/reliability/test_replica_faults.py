"""Ops-tool replicas: the run's local replica of a tool is down, slow past the timeout,
flapping, or answering 5xx during a failover; every step must complete through another
replica, and the campaign reports the time that costs.

The estate has three DCs of its own names. ``east`` burns (its replicas die with it, as in
every DC fire), the failover runs from ``north`` and recovers into ``north`` and ``south``.
Each tool's ``north`` replica, the one the run tries first, is put behind a
``FaultyProxy`` on its own loopback port that forwards to the simulator served over HTTP;
``south``'s replica is behind a proxy that never breaks (the same hop for every live
replica), ``east``'s is the simulator's own (dead). A no-fault baseline per seed goes
through the same proxies, which count the tools the failover really calls through its
local replica: those are the tool kinds faulted.

A trial is one fault class on the local replica of every tool at once, or (full mode) of
one tool kind alone, for one seed. ``make test`` runs the every-tool trial of one seed for
``down`` and ``5xx``; ``make reliability`` runs every class x every tool at once x three
seeds, and every class x each tool kind alone for the first seed. A trial is judged
against the baseline of its seed:

- the run ends with the baseline's outcome, no step failed, same final weights;
- the simulator received the same actions (kind, target) and none twice;
- the log shows each faulted tool failing over from ``north`` (the fault really bit).

Time added is measured three ways, because no single one tells it all: the run's wall
time minus its class's baseline, taken before its trials and (full mode) after them too
(what an operator waits; it moves with whatever else loads the machine, so the spread of
the baselines is reported as its noise); the time requests
spent on the local replica before it failed them (what the fault cost the calls, load
aside); and the tiers' RTO on the simulator's virtual clock, which does not see wall-clock
delays and is expected to move by nothing.

The adapters' timeout is the toolbox's ``timeout_s`` (30 s by default, not a setting of a
run or a topology); this campaign builds the tools' endpoints with ``TIMEOUT_S`` (as
``revive drill --target lab`` builds real tools with 5 s), so that "slow past the timeout"
costs seconds per request rather than 30 s.
"""

from __future__ import annotations

import asyncio
import logging
import re
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import flows.context
from flows.context import RunbookParams
from flows.failover import FailoverParams, failover
from revive.drill.server import SimServer
from revive.ops.endpoint import ReplicatedEndpoint
from revive.ops.toolbox import Toolbox, build_toolbox
from revive.sim import Simulator
from revive.store import db, service
from revive.topology import Topology
from tests.factories import estate
from tests.factories import service as svc
from tests.flows.estates import write
from tests.reliability.faulty_proxy import FaultyProxy
from tests.reliability.figures import full, nothing_or, record, trials

pytestmark = pytest.mark.usefixtures("prefect_harness", "store_url")

LOCAL, OTHER, LOST = "north", "south", "east"
DCS = (LOCAL, OTHER, LOST)
#: The faulted tools' request timeout (seconds); a slow replica answers after SLOW_S.
TIMEOUT_S = 3.0
SLOW_S = TIMEOUT_S + 3.0
SEEDS = (1, 2, 3)
CLASSES = ("down", "slow", "flapping", "5xx")
#: Fast mode (``make test``) runs every tool at once, one seed, for these classes only.
FAST_CLASSES = ("down", "5xx")
ALL = "every tool"
KINDS = ["compute", "registry", "deploy", "traffic", "metrics", "config_store",
         "secret_store", "health_checker"]


def topology_data() -> dict[str, Any]:
    """Three DCs, each able to carry a share of the lost one's users; a database, a cache,
    an app, a caller that caches its dependencies' IPs, and a batch job that ran only in the
    lost DC (so the failover deploys it elsewhere, copying its image)."""
    three = {LOCAL: 6, OTHER: 6, LOST: 6}
    tools = {kind.replace("_", "-"): {
        "kind": kind, "adapter": "sim",
        "replicas": {dc: f"https://{kind.replace('_', '-')}.{dc}.example" for dc in DCS}}
        for kind in KINDS}
    return estate(
        svc("orders-db", group="storage", role="database", peak_load=3_000,
            capacity_per_instance=1_000, instances=dict(three), restart_seconds=90,
            boot_requires=["secret-store"]),
        svc("orders-cache", group="storage", role="cache", tier=1, depends_on=["orders-db"],
            peak_load=6_000, capacity_per_instance=2_000, instances={LOCAL: 3, OTHER: 3, LOST: 3},
            restart_seconds=30),
        svc("checkout", group="shop", depends_on=["orders-cache"], peak_load=6_000,
            capacity_per_instance=1_000, instances={LOCAL: 4, OTHER: 4, LOST: 4},
            features=[{"name": "recommendations", "priority": 1, "cost": 0.1}]),
        svc("notifier", group="shop", tier=1, caches_dependency_ips=True, peak_load=600,
            capacity_per_instance=300, instances={LOCAL: 1, OTHER: 1, LOST: 1}),
        svc("ledger-export", group="batch", tier=3, redundancy="single-dc", peak_load=50,
            capacity_per_instance=50, instances={LOST: 1}),
        datacenters=[{"name": dc} for dc in DCS],
        ops_tools=tools,
    )


@dataclass
class Outcome:
    """What one failover run did, as the campaign judges it."""

    wall_s: float
    outcome: str
    failed: list[str]
    weights: dict[str, dict[str, float]]
    rto_s: dict[str, float | None]
    actions: Counter[tuple[str, str]]
    steps: dict[str, str]
    requests: dict[str, int] = field(default_factory=dict)
    """Requests each tool's local replica received (through its proxy)."""
    failovers: set[str] = field(default_factory=set)
    """Tools whose requests the log shows failing over away from the local replica."""
    broken_s: float = 0.0
    """Seconds requests spent on the local replicas before they failed (refused, reset,
    timed out, 5xx): what the faults cost the calls, whatever else loads the machine."""


FAILOVER_LOG = re.compile(rf"ops tool (\S+): failing over from {LOCAL} to ")


class TimedTransport(httpx.AsyncBaseTransport):
    """Times each request that fails on a local replica (an error, or a 5xx answer).

    Plugged in through ``ReplicatedEndpoint``'s own ``transport_factory``; the wall time of a
    whole run moves with whatever else loads the machine, this does not."""

    def __init__(self, local_ports: set[int], spent: list[float]) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._local, self._spent = local_ports, spent

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        began = time.monotonic()
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            if request.url.port in self._local:
                self._spent.append(time.monotonic() - began)
            raise
        if response.status_code >= 500 and request.url.port in self._local:
            self._spent.append(time.monotonic() - began)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def rewire(box: Toolbox, name: str, sim_url: str, proxies: dict[str, FaultyProxy],
           spent: list[float]) -> None:
    """Give tool ``name`` an endpoint whose ``north`` and ``south`` replicas are reached
    through ``proxies`` (one per DC, so every live replica costs the same hop and the time
    added is the fault's alone); ``east`` stays the simulator's own, dead with its DC.
    Built as the sim adapter builds it (``/r/{tool}/{dc}``), with this campaign's timeout."""
    replicas = {dc: f"{sim_url}/r/{name}/{dc}" for dc in DCS}
    for dc, proxy in proxies.items():
        replicas[dc] = f"{proxy.url}/r/{name}/{dc}"
    local = {proxies[LOCAL].port}
    endpoint = ReplicatedEndpoint(name, replicas, prefer_dc=LOCAL, timeout=TIMEOUT_S,
                                  transport_factory=lambda: TimedTransport(local, spent))
    assert endpoint.order[0] == LOCAL  # the run tries its own DC's replica first
    box.tools[name].endpoint = endpoint  # type: ignore[attr-defined]


def run_once(topology: Topology, path: str, seed: int, modes: dict[str, str],
             monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Outcome:
    """One failover of a burning ``east`` from ``north``, each tool's local replica behind a
    proxy in the given mode ("ok" where none is given), on a fresh simulator of ``seed``."""
    knobs = topology.simulation.model_copy(update={"cached_ips_point_to": LOST})
    sim = Simulator(topology, seed=seed, config=knobs)
    sim.advance(5)
    with ExitStack() as stack:
        server = stack.enter_context(SimServer(sim))
        sim.estate.power_loss(LOST)
        proxies = {name: {
            LOCAL: stack.enter_context(FaultyProxy(server.url, modes.get(name, "ok"),
                                                   seed=seed, slow_s=SLOW_S)),
            OTHER: stack.enter_context(FaultyProxy(server.url, "ok"))}
            for name in topology.ops_tools}

        spent: list[float] = []

        def tools_for(params: RunbookParams, topo: Topology) -> Toolbox:
            box = build_toolbox(topo, sim_url=params.sim_url, run_dc=params.run_from_dc)
            for name, per_dc in proxies.items():
                rewire(box, name, server.url, per_dc, spent)
            return box

        monkeypatch.setattr(flows.context, "tools_for", tools_for)
        caplog.clear()
        began = time.monotonic()
        result = asyncio.run(failover(FailoverParams(
            topology=path, lost_dc=LOST, sim_url=server.url, run_from_dc=LOCAL)))
        wall = time.monotonic() - began
        failovers = {m.group(1) for r in caplog.records
                     if (m := FAILOVER_LOG.search(r.getMessage()))}
        with db.session(db.get_engine()) as s:
            steps = {st.step_key: str(st.state)
                     for st in service.get_steps(s, run_id=result["run_id"])}
        return Outcome(
            wall_s=wall, outcome=result["outcome"], failed=list(result["failed"]),
            weights=result["final_weights"], rto_s=result["rto_s"],
            actions=Counter((str(a.kind), a.target) for a in sim.estate.actions()),
            steps=steps, requests={n: p[LOCAL].stats.requests for n, p in proxies.items()},
            failovers=failovers, broken_s=sum(spent),
        )


@dataclass
class Baselines:
    """No-fault runs per seed, for the whole module.

    The first run of a process pays for imports and Prefect's first flow and task runs, so
    one run is made and thrown away first. Each fault class then runs its own baseline per
    seed, just before its trials: the machine's load drifts (other work shares the cores),
    and a baseline taken minutes earlier would lend its load to the comparison. The spread
    of one seed's baselines over the module is the noise of a wall-time comparison."""

    runs: dict[int, list[Outcome]] = field(default_factory=dict)
    warm: bool = False

    def run(self, seed: int, topology: Topology, path: str, monkeypatch: pytest.MonkeyPatch,
            caplog: pytest.LogCaptureFixture) -> Outcome:
        if not self.warm:
            run_once(topology, path, seed, {}, monkeypatch, caplog)
            self.warm = True
        base = run_once(topology, path, seed, {}, monkeypatch, caplog)
        first = self.runs.setdefault(seed, [base])[0]
        if base is not first:
            self.runs[seed].append(base)
        # One seed, one recovery: only the wall time may differ between baselines.
        assert (base.outcome, base.actions, base.weights, base.rto_s) == (
            first.outcome, first.actions, first.weights, first.rto_s), seed
        return base

    def noise_s(self) -> float:
        """The widest spread of one seed's baseline wall times (0 with one run each)."""
        return max(max(r.wall_s for r in runs) - min(r.wall_s for r in runs)
                   for runs in self.runs.values())


@pytest.fixture(scope="module")
def baselines() -> Baselines:
    return Baselines()


@dataclass(frozen=True)
class Trial:
    seed: int
    target: str
    """A tool's name, or ``ALL`` (the local replica of every tool the failover uses)."""


def plan(tools_used: list[str], seeds: tuple[int, ...]) -> list[Trial]:
    """Fast: every tool at once, one seed. Full: every tool at once for every seed, and each
    tool alone for the first."""
    if not full():
        return [Trial(seeds[0], ALL)]
    return ([Trial(seed, ALL) for seed in seeds]
            + [Trial(seeds[0], target) for target in tools_used])


def judge(trial: Outcome, base: Outcome, faulted: list[str]) -> list[str]:
    """Why this trial did not recover like its baseline (empty when it did)."""
    why = []
    if trial.outcome != base.outcome:
        why.append(f"outcome {trial.outcome}, baseline {base.outcome}")
    if trial.failed:
        why.append(f"failed steps: {trial.failed}")
    if trial.weights != base.weights:
        why.append(f"final weights {trial.weights}, baseline {base.weights}")
    if set(trial.actions) != set(base.actions):
        why.append(f"actions differ: {set(trial.actions) ^ set(base.actions)}")
    not_done = {k: s for k, s in trial.steps.items() if s != "done"}
    if not_done or set(trial.steps) != set(base.steps):
        why.append(f"steps not done like the baseline's: {not_done}")
    missed = sorted(set(faulted) - trial.failovers)
    if missed:
        why.append(f"no failover away from {LOCAL} seen for {missed}")
    return why


@pytest.fixture
def estate_file(tmp_path: Path) -> Iterator[tuple[Topology, str]]:
    yield write(tmp_path, topology_data())


@pytest.mark.parametrize("fault", [c for c in CLASSES if full() or c in FAST_CLASSES])
def test_every_step_completes_through_another_replica(
    fault: str, estate_file: tuple[Topology, str], baselines: Baselines,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, record_test: str,
) -> None:
    caplog.set_level(logging.INFO, logger="revive.ops")
    topology, path = estate_file
    seeds = SEEDS[:trials(1, len(SEEDS))]
    base_of = {seed: baselines.run(seed, topology, path, monkeypatch, caplog) for seed in seeds}
    for seed, base in base_of.items():
        # Every tier back, nothing failed. (No assertion that nothing failed over: on a
        # loaded box a request may pass the timeout, and failing over is then right.)
        assert base.outcome in ("recovered", "late") and not base.failed, (seed, base)
    # The tools the failover calls through its local replica: the ones a fault can hurt.
    used = sorted(name for name, n in base_of[seeds[0]].requests.items() if n > 0)
    assert {"compute", "deploy", "registry", "traffic", "metrics"} <= set(used), used

    recovered, dupes, walls, broken, later, problems = 0, 0, [], [], [], []
    cases = plan(used, seeds)
    for case in cases:
        faulted = used if case.target == ALL else [case.target]
        got = run_once(topology, path, case.seed, dict.fromkeys(faulted, fault),
                       monkeypatch, caplog)
        base = base_of[case.seed]
        twice = sum(n - 1 for n in got.actions.values() if n > 1)
        dupes += twice
        why = judge(got, base, faulted)
        if twice:
            why.append(f"{twice} actions done twice")
        if why:
            problems.append(f"seed {case.seed}, {case.target}: " + "; ".join(why))
        else:
            recovered += 1
        walls.append((case.seed, got.wall_s))
        broken.append(got.broken_s)
        later.append(max((got.rto_s[t] or 0.0) - (base.rto_s[t] or 0.0) for t in base.rto_s))
        print(f"{fault} seed {case.seed} {case.target}: {got.wall_s:.1f} s "
              f"(baseline {base.wall_s:.1f} s), {got.broken_s:.1f} s in failed local calls, "
              f"virtual RTO {got.rto_s} (baseline {base.rto_s}), local requests {got.requests}")

    # The machine's load drifts over a class's trials (and Prefect's records grow): in full
    # mode a second baseline per seed after the trials brackets them, and the mean of the
    # two is what a trial's wall time is compared with.
    after = {seed: baselines.run(seed, topology, path, monkeypatch, caplog).wall_s
             for seed in seeds} if full() else {}
    base_wall = {seed: statistics.mean([base.wall_s, *([after[seed]] if after else [])])
                 for seed, base in base_of.items()}
    added = [wall - base_wall[seed] for seed, wall in walls]
    print(f"{fault}: baseline wall {base_wall}, time added {[round(a, 1) for a in added]}")
    not_recovered = len(cases) - recovered
    lost = [nothing_or(n, what) for n, what in ((not_recovered, "runs not recovered"),
                                                (dupes, "actions done twice")) if n]
    record(
        "replicas", f"local replica of every tool {fault} during a failover",
        trials=len(cases),
        held=f"{recovered}/{len(cases)} runs recovered through another replica",
        lost=", ".join(lost) or nothing_or(0, ""),
        test=record_test,
        added=f"{statistics.median(added):+.1f} s median, {max(added):+.1f} s max per run "
              f"(baseline noise {baselines.noise_s():.1f} s); in failed local calls "
              f"{statistics.median(broken):.1f} s median, {max(broken):.1f} s max; "
              f"RTO {max(later):+.0f} s (virtual)",
    )
    assert problems == [], problems
    assert dupes == 0
