"""Benchmark the warm-up ramp controller against three baselines on the simulator.

After a DC is lost, each policy raises the surviving DC's traffic share from where it was
to 100%:

* ``revive``: the runbook's per-class controller (below), fed only what /metrics shows;
* ``instant``: all traffic at once, the reflex of a tired human;
* ``fixed``: +10% every 5 minutes, like common progressive-delivery defaults;
* ``oracle``: reads the simulator's true state and, every tick, sets the largest share whose
  database load stays under the limit. It is the bound, not a controller.

``revive`` now moves each traffic class on its own under the per-class controller, exactly
as ``flows/warm_up_ramp.py::TrafficMover`` does: a ``ClassRamp`` for every class with users
in the lost DC, all started at t = 0 with baselines from one scrape, then one ``next_round``
per scrape interval (priority order, shared database headroom) on each class's Samples in
each DC (``read_sample`` of the rendered /metrics), its moves applied per class with
``set_class_weights``. It is bench/recovery_sim.py's ``ClassMover`` (the runbook on the
in-process estate), reused here; ``instant``, ``fixed`` and ``oracle`` still move every
class together as one share (``set_weights``).

Every policy starts after the same failover steps (retry policy pushed, emergency capacity
provisioned, IP-caching callers restarted). t = 0 is the first traffic move. A breach
second has DB utilisation above the limit or an error rate more than the limit above the
rate measured just before t = 0 (components that did not survive fail at a constant
rate the ramp cannot change). ``time_to_full_s`` is the first time every class is fully
moved (no weight left on the lost DC) and stays so 600 s without a breach (the hold is not
counted); null if never. Users still routed to the lost DC count as failing.

Runs are independent and deterministic per seed; ``--jobs`` (default 2) spreads them over
processes, the oracle's first (they take the longest), with the same results as one.

    .venv/bin/python bench/ramp.py [--seeds 5] [--json] [--scenario NAME ...] [--check]
                                   [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make `revive` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The simulated failover the benchmarks share, by its own name (``bench`` is also the name
# of the test package, so it is not imported as ``bench.recovery_sim``).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import recovery_sim as rs
from rich.console import Console
from rich.table import Table

from revive.planning import plan_capacity
from revive.ramp import RampPolicy
from revive.sim import RetryPolicy, SimConfig, Simulator
from revive.sim.estate import ActionState, SimError
from revive.topology import Topology, load, parse

REPO = Path(__file__).resolve().parents[1]
POLICIES = ("revive", "instant", "fixed", "oracle")
HOLD_S = 600
HORIZON_S = 7200
ERROR_WINDOW_S = 3600
RATIO_GOAL = 1.25
WALL_GOAL_S = 60.0
LOST, TARGET = "dc1", "dc2"


@dataclass(frozen=True)
class Scenario:
    name: str
    topology: Callable[[], Topology]
    config: SimConfig = field(default_factory=SimConfig)


def _estate(front_peak: float, db_peak: float, db_headroom: float) -> Topology:
    """A compact estate: a database tier, a cache-fronted API and a login service."""
    per_db = 2_000.0
    db_instances = round(db_peak * db_headroom / per_db)

    def svc(name: str, tier: int, group: str, peak: float, cap: float, n: int,
            role: str = "service") -> dict:
        return {
            "name": name, "tier": tier, "group": group, "redundancy": "active-active", "role": role,
            "instances": {"dc1": n, "dc2": n}, "capacity_per_instance": cap,
            "peak_load": peak, "restart_seconds": 60,
        }

    return parse({
        "environment": "drill",
        "datacenters": [{"name": "dc1"}, {"name": "dc2"}],
        "ops_tools": {
            "compute": {"kind": "compute", "replicas": {"dc1": "c1", "dc2": "c2"}},
            "health": {"kind": "health_checker", "replicas": {"dc1": "h1", "dc2": "h2"}},
        },
        "services": [
            svc("user-db", 0, "storage", db_peak, per_db, db_instances, "database"),
            svc("login", 0, "auth", front_peak * 0.2, 1_000, round(front_peak * 0.3 / 1_000)),
            svc("api", 0, "api", front_peak, 1_000, round(front_peak * 1.3 / 1_000)),
        ],
    }, "bench")


SCENARIOS = [
    Scenario("small", lambda: _estate(front_peak=20_000, db_peak=8_000, db_headroom=1.4)),
    Scenario("messenger-dc1-loss", lambda: load(REPO / "runbooks" / "topology.yaml")),
    Scenario(
        "login-heavy",
        lambda: _estate(front_peak=30_000, db_peak=12_000, db_headroom=1.5),
        SimConfig(surge_seconds=60.0, reconnect_window_s=180.0),
    ),
]


def prepare(scenario: Scenario, seed: int) -> tuple[Simulator, float]:
    """Lose dc1, then do what a failover does before its ramp; return (sim, base errors)."""
    topology = scenario.topology()
    sim = Simulator(topology, seed=seed, config=scenario.config)
    sim.advance(30)
    sim.estate.set_retry_policy(RetryPolicy())
    sim.estate.power_loss(LOST)
    sim.advance(30)
    started = [_try(lambda line=line: _provision(sim, line)) for line in
               plan_capacity(topology, TARGET).services if line.add > 0]
    _wait(sim, [a for a in started if a])
    restarted = [_try(lambda s=s: sim.estate.restart(s.name, TARGET))
                 for s in topology.services if s.caches_dependency_ips and s.runs_in(TARGET)]
    _wait(sim, [a for a in restarted if a])
    sim.advance(scenario.config.scrape_interval_s)
    return sim, sim.metrics[TARGET].error_rate


def _provision(sim: Simulator, line: Any) -> str:
    if sim.estate.state(line.service, TARGET).exists:
        return sim.estate.provision(line.service, TARGET, line.add)
    return sim.estate.deploy(line.service, TARGET, line.need)


def _try(start: Callable[[], str]) -> str | None:
    try:
        return start()
    except SimError:
        return None  # e.g. no registry replica survived: the component stays missing


def _wait(sim: Simulator, actions: list[str]) -> None:
    sim.clock.advance_until(
        lambda: all(sim.estate.action(a).state in (ActionState.done, ActionState.failed)
                    for a in actions),
        limit=sim.clock.now + 1_800,
    )


class _Lost:
    """What ``ClassMover`` needs of recovery_sim's ``Run`` (the simulator, the lost and
    target DCs, a ``move`` per class) without its drill recorder: moves go to the estate."""

    def __init__(self, sim: Simulator) -> None:
        self.sim, self.lost, self.targets = sim, LOST, [TARGET]

    def move(self, traffic_class: str, weights: dict[str, float]) -> None:
        self.sim.estate.set_class_weights(traffic_class, weights)


def run(scenario: Scenario, policy: str, seed: int, ramp: RampPolicy | None = None) -> dict:
    """One ramp from the failover's end to full traffic (or the horizon)."""
    ramp = ramp or RampPolicy()
    sim, base_errors = prepare(scenario, seed)
    cfg = sim.config
    start = sim.clock.now
    share = sim.estate.weights[TARGET]
    mover = None
    if policy == "revive":  # as run_ramp: every class's ramp starts at once, then a round
        mover = rs.ClassMover(_Lost(sim), ramp)  # per scrape
        for name in mover.to_move:
            mover.activate(name, start)
    breaches = 0
    peak_util = 0.0
    error_share = 0.0
    full_since: float | None = None
    time_to_full: float | None = None
    scrape_every = int(cfg.scrape_interval_s)
    for second in range(HORIZON_S):
        now = start + second
        new = share
        if policy == "instant":
            new = 1.0
        elif policy == "fixed":
            new = min(1.0, share if second % 300 else share + 0.1)
        elif policy == "oracle":
            new = _oracle_share(sim, ramp.db_util_limit)
        elif (mover is not None and second and second % scrape_every == 0
              and not mover.done and not mover.stalled):
            mover.step(now)  # moves each class with set_class_weights
        if abs(new - share) > 1e-9:
            share = new
            sim.estate.set_weights({LOST: 1.0 - share, TARGET: share})
        routed = share if mover is None else sim.estate.weights[TARGET]
        sim.advance(1)
        m = sim.metrics[TARGET]
        breach = (m.db_utilisation > ramp.db_util_limit
                  or m.error_rate > base_errors + ramp.error_rate_limit)
        breaches += breach
        peak_util = max(peak_util, m.db_utilisation)
        if second < ERROR_WINDOW_S:
            error_share += (1.0 - routed) + routed * m.error_rate  # users on the lost DC fail
        full = all(w.get(LOST, 0.0) <= 1e-9 for w in sim.estate.class_weights.values())
        if full and not breach:
            full_since = second if full_since is None else full_since
            if second - full_since >= HOLD_S and time_to_full is None:
                time_to_full = full_since
        else:
            full_since = None
        if time_to_full is not None and second >= ERROR_WINDOW_S:
            break
    return {
        "time_to_full_s": time_to_full,
        "peak_db_util": round(peak_util, 3),
        "breach_seconds": breaches,
        "error_share_seconds": round(error_share, 1),
    }


def _oracle_share(sim: Simulator, limit: float) -> float:
    """Largest share whose next-tick DB utilisation stays under ``limit`` (true state)."""
    aim = limit - 1e-3
    if sim.predicted_db_utilisation(TARGET, 1.0) <= aim:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(14):
        mid = (lo + hi) / 2
        if sim.predicted_db_utilisation(TARGET, mid) <= aim:
            lo = mid
        else:
            hi = mid
    return lo


def summarise(runs: list[dict]) -> dict:
    times = [r["time_to_full_s"] for r in runs]
    reached = [t for t in times if t is not None]
    return {
        "time_to_full_s": statistics.median(times) if len(reached) == len(times) else None,
        "worst_time_to_full_s": max(reached) if len(reached) == len(times) else None,
        "peak_db_util": statistics.median(r["peak_db_util"] for r in runs),
        "breach_seconds": statistics.median(r["breach_seconds"] for r in runs),
        "max_breach_seconds": max(r["breach_seconds"] for r in runs),
        "error_share_seconds": statistics.median(r["error_share_seconds"] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal fails")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes (1: run in this process)")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    chosen = [i for i, s in enumerate(SCENARIOS) if not args.scenario or s.name in args.scenario]
    jobs = sorted(((i, name, seed) for i in chosen for name in POLICIES
                   for seed in range(1, args.seeds + 1)),
                  key=lambda job: job[1] != "oracle")  # the longest first: workers end together
    if args.jobs <= 1:
        results = dict(zip(jobs, map(_job, jobs), strict=True))
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = dict(zip(jobs, pool.map(_job, jobs), strict=True))
    report = {"scenarios": [
        {"name": SCENARIOS[i].name, "policies": {
            name: summarise([results[i, name, seed] for seed in range(1, args.seeds + 1)])
            for name in POLICIES}}
        for i in chosen]}
    wall = time.perf_counter() - began
    goals = _goals(report, wall)
    if args.json:
        sys.stdout.write(json.dumps({**report, "wall_s": round(wall, 1), "goals": goals}) + "\n")
    else:
        _print(report, goals, wall)
    return 1 if args.check and not all(g["ok"] for g in goals) else 0


def _job(job: tuple[int, str, int]) -> dict:
    """One run, by scenario index (a Scenario holds lambdas, which do not pickle)."""
    index, policy, seed = job
    return run(SCENARIOS[index], policy, seed)


def _goals(report: dict, wall: float) -> list[dict]:
    goals = []
    for scenario in report["scenarios"]:
        p = scenario["policies"]
        revive, oracle = p["revive"]["time_to_full_s"], p["oracle"]["time_to_full_s"]
        ratio = revive / oracle if revive is not None and oracle else None
        goals.append({"goal": f"{scenario['name']}: revive within {RATIO_GOAL}x oracle",
                      "ok": ratio is not None and ratio <= RATIO_GOAL,
                      "value": None if ratio is None else round(ratio, 2)})
        goals.append({"goal": f"{scenario['name']}: revive never breaches",
                      "ok": p["revive"]["max_breach_seconds"] == 0,
                      "value": p["revive"]["max_breach_seconds"]})
        goals.append({"goal": f"{scenario['name']}: instant cutover breaches",
                      "ok": p["instant"]["breach_seconds"] > 0,
                      "value": p["instant"]["breach_seconds"]})
    goals.append({"goal": f"benchmark under {WALL_GOAL_S:.0f} s", "ok": wall < WALL_GOAL_S,
                  "value": round(wall, 1)})
    return goals


def _print(report: dict, goals: list[dict], wall: float) -> None:
    console = Console(width=120)
    table = Table(title="Warm-up ramp after a DC loss (medians over seeds)")
    for col in ("scenario", "policy", "time to full s", "worst s", "x oracle",
                "peak DB util", "breach s", "error-share s"):
        table.add_column(col, justify="left" if col in ("scenario", "policy") else "right")
    for scenario in report["scenarios"]:
        oracle = scenario["policies"]["oracle"]["time_to_full_s"]
        for name, s in scenario["policies"].items():
            ttf = s["time_to_full_s"]
            ratio = f"{ttf / oracle:.2f}" if ttf is not None and oracle else "-"
            table.add_row(scenario["name"], name, _fmt(ttf), _fmt(s["worst_time_to_full_s"]),
                          ratio, f"{s['peak_db_util']:.2f}", f"{s['breach_seconds']:g}",
                          f"{s['error_share_seconds']:.0f}")
    console.print(table)
    for g in goals:
        console.print(f"{'PASS' if g['ok'] else 'FAIL'}  {g['goal']} ({g['value']})")
    console.print(f"wall time {wall:.1f} s")


def _fmt(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f}"


if __name__ == "__main__":
    raise SystemExit(main())
