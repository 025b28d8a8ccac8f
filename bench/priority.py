"""Benchmark the failover's recovery graph, tier by tier, against phases and a lower bound.

A DC is lost (flows/drill.py's dc-fire: settle 60 s, mark the fault, power loss) and every
policy recovers it into every other DC, in-process on the simulator (bench/recovery_sim.py:
the same survey as ``flows/failover.py::_survey``, the same ``recovery_graph`` steps, the
one ``Scheduler``, each step started on the estate; no Prefect). The RTO of each tier is
measured by ``revive.drill.recorder.Recorder``, the product's rule: the tier's class traffic
all on survivors, healthy capacity for its load there, class error within 1 point.

* ``phased``: the failover before the recovery graph. The same steps plus barrier edges
  (``after_end``, so a failed step does not stop the next phase): every image copy and
  emergency deploy, then every provision (no longer after its own service's restart: the
  restarts now come after every provision), then every restart (plan order under the cap),
  then the gate, then ONE ramp that moves every class together as a single fraction, judged
  by ``decide`` on each target's DC-level scrape (the most constrained target wins);
* ``revive``: ``recovery_graph`` as GraphRun executes it: each step when its own
  pre-conditions hold, each class's ramp by ``ClassRamp``/``next_round`` from scraped
  Samples every 10 s, features back in (tier, priority) order once every class is in;
* ``bound``: a lower bound, one run per tier T, scored by the same Recorder. The same
  graph and durations with no cap on restarts, no approval wait, no health-checker lag (a
  restart counts when its action ends) and no tool latency (none is injected: every action
  takes exactly its boot, restart or copy time as drawn); each step still waits for what it
  physically needs (a deploy for its image, a restart for its hard dependencies, a
  provision for its own service's restart: the estate takes one action per service at a
  time). Every step thus ends no later than under any policy (the spare instances cover
  every deploy and provision the survey asks for here, so no order gets fewer instances).
  Only classes of priority <= T move, each from the moment its ramp step's pre-conditions
  hold (its services and their hard dependencies ready), under an oracle that every second
  sets each moving class (in priority order) to its largest fraction, to 1/4096, whose
  ``predicted_db_utilisation_for`` stays under the policy's DB limit (minus 0.001) in
  every target: it reads the true cache state and never waits for a scrape or a settle.
  Tier T's bound is that run's RTO of T; ``time_to_full_s``, ``peak_db_util`` and
  ``breach_s`` come from the run of the highest tier (every class moving), up to the
  moment that tier is back.

Restart durations are drawn once per seed and shared by every policy (see recovery_sim).
Scenarios: the example (``runbooks/topology.yaml``, dc1 lost), the three-DC example (its
first DC lost) and a login-heavy estate (bench/ramp.py's, split into three classes, with
undersized fronts and long reconnect surges). Seeds 1..N; every number is the worst seed.

``--json`` prints only ``{"scenarios": [{"name", "policies": {"phased": P, "revive": P,
"bound": P}}]}``, each P ``{"rto_s": {"tier0".."tier3"}, "time_to_full_s", "peak_db_util",
"breach_s"}`` (null: the scenario has no such tier, or it was never back); tables and
PASS/FAIL lines go to stderr then (else stdout). ``time_to_full_s``: from the fault to the
first second no class has users left in the lost DC; ``peak_db_util``: the highest target
DB utilisation from the first traffic move on; ``breach_s``: the Recorder's breach seconds.

    .venv/bin/python bench/priority.py [--seeds 5] [--scenario NAME ...] [--json] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
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

from revive.planning.graph import Step
from revive.planning.recovery import FEATURES_OFF, GATE, RETRY_POLICY, recovery_graph
from revive.planning.restart import DEFAULT_MAX_PARALLEL
from revive.planning.shares import moved_weights
from revive.ramp import Change, DecisionKind, RampPolicy, Sample, decide
from revive.topology import Topology, load, parse

REPO = Path(__file__).resolve().parents[1]
POLICIES = ("phased", "revive", "bound")
TIERS = (0, 1, 2, 3)
EXAMPLE = "dc-fire"
POLICY = RampPolicy()
UNCAPPED = 1_000_000
BOUND_GOAL, FULL_GOAL, PEAK_GOAL, WALL_GOAL_S = 1.3, 1.05, 0.90, 150.0
MOVES = (DecisionKind.advance, DecisionKind.back_off)
ALL = "*"


@dataclass(frozen=True)
class Scenario:
    name: str
    topology: Callable[[], Topology]
    lost: str | None = None  # default: the topology's first DC


def _login_heavy() -> Topology:
    """bench/ramp.py's login-heavy estate (long reconnect surges), in three classes by tier,
    with fronts sized under the 1.2x a survivor needs, so capacity must come up first."""
    def svc(name: str, tier: int, peak: float, cap: float, n: int, **extra: Any) -> dict:
        return {"name": name, "tier": tier, "group": name, "redundancy": "active-active",
                "instances": {"dc1": n, "dc2": n}, "capacity_per_instance": cap,
                "peak_load": peak, "restart_seconds": 60, **extra}

    return parse({
        "environment": "drill",
        "datacenters": [{"name": "dc1"}, {"name": "dc2"}],
        "ops_tools": {
            "compute": {"kind": "compute", "replicas": {"dc1": "c1", "dc2": "c2"}},
            "health": {"kind": "health_checker", "replicas": {"dc1": "h1", "dc2": "h2"}},
        },
        "simulation": {"surge_seconds": 60.0, "reconnect_window_s": 180.0},
        "services": [
            svc("user-db", 0, 12_000, 2_000, 9, role="database", boot_seconds=180),
            svc("login", 0, 15_000, 1_000, 10, traffic_class="login", depends_on=["user-db"]),
            svc("api", 1, 12_000, 1_000, 8, traffic_class="api", depends_on=["user-db"],
                features=[{"name": "read-receipts", "priority": 1, "cost": 0.1}]),
            svc("feed", 2, 3_000, 500, 4, traffic_class="feed", depends_on=["api"],
                caches_dependency_ips=True),
        ],
    }, "<login-heavy>")


SCENARIOS = [
    Scenario(EXAMPLE, lambda: load(REPO / "runbooks" / "topology.yaml"), "dc1"),
    Scenario("three-dc", lambda: load(REPO / "runbooks" / "examples" / "three-dc.yaml")),
    Scenario("login-heavy", _login_heavy),
]


# --- the policies ---------------------------------------------------------------------------


PHASE = {"copy": 0, "deploy": 0, "provision": 1, "restart": 2, "approval": 3}


def phased(steps: list[Step]) -> list[Step]:
    """The same steps in phases: each waits for the end of the previous non-empty phase;
    the class ramps become one ramp of every class after the gate."""
    members: dict[int, list[str]] = {}
    for step in steps:
        if step.action in PHASE:
            members.setdefault(PHASE[step.action], []).append(step.key)
    out = []
    for step in steps:
        if step.action == "ramp":
            continue
        if step.action in PHASE:
            earlier = [p for p in members if p < PHASE[step.action]]
            barrier = tuple(members[max(earlier)]) if earlier else ()
            own = () if step.action == "provision" else step.after_end
            step = step.model_copy(update={"after_end": tuple(dict.fromkeys((*own, *barrier)))})
        out.append(step)
    out.append(Step(key="ramp:all", action="ramp", target=ALL, priority=(0, 3, ALL),
                    after=(GATE, RETRY_POLICY, FEATURES_OFF)))
    return out


class ShareMover:
    """The ramp before traffic classes: every class's lost users move together as one
    fraction, judged per target on its DC-level metrics, features back at full."""

    def __init__(self, run: Any, policy: RampPolicy) -> None:
        self.run, self.policy = run, policy
        self.known = run.sim.topology.traffic_classes
        self.before = run.sim.estate.class_weights
        self.to_move = [c for c in self.known if self.before[c].get(run.lost, 0.0) > 0]
        self.moved, self.features, self.stalled = 0.0, [], False
        self.samples: dict[str, list[Sample]] = {dc: [] for dc in run.targets}
        self.changes: dict[str, list] = {dc: [] for dc in run.targets}
        self.base: dict[str, float] = {}
        self.last_change: float | None = None
        self.last_advance: float | None = None

    def activate(self, name: str, now: float) -> bool:
        self.features = rs.features_to_restore(self.run.sim)
        scraped = rs.scrape(self.run.sim, [(None, dc) for dc in self.run.targets])
        self.base = {dc: scraped[None, dc].error_rate for dc in self.run.targets}
        self.last_advance = now
        return bool(self.to_move)

    def load(self, dc: str, fraction: float) -> float:
        """The DC's share of the estate's load with ``fraction`` of every class moved."""
        run = self.run
        return sum(cls.load_share * moved_weights(self.before[c], run.lost, run.targets,
                                                  fraction)[dc] for c, cls in self.known.items())

    def step(self, now: float) -> None:
        run, scraped = self.run, rs.scrape(self.run.sim, [(None, dc) for dc in self.run.targets])
        wanted, kinds = [], []
        for dc in run.targets:
            self.samples[dc].append(scraped[None, dc])
            start, end = self.load(dc, 0.0), self.load(dc, 1.0)
            if end - start <= 1e-12:
                continue
            d = decide(self.samples[dc], share=self.load(dc, self.moved) / end,
                       policy=self.policy, now=now, last_change_t=self.last_change,
                       last_advance_t=self.last_advance, changes=self.changes[dc],
                       features_off=self.features if self.moved >= 1.0 else (),
                       baseline_error_rate=self.base[dc])
            if d.kind == DecisionKind.stall:
                self.stalled = True
                return
            kinds.append(d)
            wanted.append((d.share * end - start) / (end - start) if d.kind in MOVES
                          else self.moved)
        new = round(min(1.0, max(0.0, min(wanted, default=self.moved))), 4)
        if new != self.moved:
            for dc in run.targets:
                end = self.load(dc, 1.0)
                self.changes[dc].append(Change(t=now, share_from=self.load(dc, self.moved)
                                                  / end, share_to=self.load(dc, new) / end))
            for c in self.to_move:
                run.move(c, moved_weights(self.before[c], run.lost, run.targets, new))
            self.last_advance = now if new > self.moved else self.last_advance
            self.moved, self.last_change = new, now
        elif kinds and all(d.kind == DecisionKind.enable_feature for d in kinds):
            f = kinds[0].feature
            run.sim.estate.set_flag(f.service, f.name, True)
            self.features = [x for x in self.features if x != f]
            self.last_change = now

    def complete(self, name: str) -> bool:
        return self.moved >= 1.0

    @property
    def done(self) -> bool:
        return self.moved >= 1.0 and not self.features


def run_one(scenario: Scenario, policy: str, seed: int, tier: int | None = None) -> dict:
    """One seed of one policy (for ``bound``: the run of one tier)."""
    topology = rs.drawn(scenario.topology(), seed)
    lost = scenario.lost or topology.dc_names[0]
    run = rs.Run.after_fault(topology, lost, seed)
    found = rs.survey(run.sim, lost, run.targets)
    steps, pools = recovery_graph(topology, found, max_parallel=DEFAULT_MAX_PARALLEL)
    tiers = sorted({s.tier for s in topology.services})
    if policy == "bound":
        assert tier is not None
        classes = {c for c, cls in topology.traffic_classes.items() if cls.priority <= tier}
        back = lambda: tier in run.recorder.recovered_at  # noqa: E731
        rs.execute(run, steps, dict.fromkeys(pools, UNCAPPED), found,
                   rs.Oracle(run, POLICY.db_util_limit, classes), every_s=1.0,
                   health_gate=False, stop=back)
        rs.judge(run, back)
        return {**rs.summary(run, tiers), "tier": tier}
    if policy == "phased":
        rs.execute(run, phased(steps), pools, found, ShareMover(run, POLICY))
    else:
        rs.execute(run, steps, pools, found, rs.ClassMover(run, POLICY))
    rs.judge(run, lambda: run.recorder.judged)
    return rs.summary(run, tiers)


def _job(job: tuple[int, str, int, int | None]) -> tuple[tuple, dict]:
    index, policy, seed, tier = job
    return job, run_one(SCENARIOS[index], policy, seed, tier)


def _tiers(scenario: Scenario) -> list[int]:
    return sorted({s.tier for s in scenario.topology().services})


def _jobs(chosen: list[int], seeds: int) -> list[tuple[int, str, int, int | None]]:
    """Every run: a policy per seed, and the bound once per tier the scenario has; the
    longest first (the bound of high tiers, then revive), so two workers end together."""
    out: list[tuple[int, str, int, int | None]] = []
    for index in chosen:
        for seed in range(1, seeds + 1):
            out += [(index, p, seed, None) for p in POLICIES[:2]]
            out += [(index, "bound", seed, t) for t in _tiers(SCENARIOS[index])]
    return sorted(out, key=lambda job: -(job[3] if job[3] is not None
                                         else 1.5 if job[1] == "revive" else 0.5))


# --- report -------------------------------------------------------------------------------


def _worst(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else max(values)


def summarise(runs: list[dict]) -> dict:
    """Worst seed of each number; a tier never back on some seed is null."""
    return {
        "rto_s": {f"tier{t}": _worst([r["rto_s"][f"tier{t}"] for r in runs])
                  if any(f"tier{t}" in r["rto_s"] for r in runs) else None for t in TIERS},
        "time_to_full_s": _worst([r["time_to_full_s"] for r in runs]),
        "peak_db_util": max(r["peak_db_util"] for r in runs),
        "breach_s": max(r["breach_s"] for r in runs),
    }


def collect(results: dict[tuple, dict], chosen: list[int], seeds: int) -> tuple[dict, dict]:
    """The JSON report, and per scenario its per-seed runs (for the goals and the table)."""
    report: dict[str, list] = {"scenarios": []}
    per_seed: dict[str, dict[int, dict[str, dict]]] = {}
    for index in chosen:
        name, seeds_of = SCENARIOS[index].name, {}
        for seed in range(1, seeds + 1):
            mine = {k: v for k, v in results.items() if k[0] == index and k[2] == seed}
            bounds = [v for k, v in mine.items() if k[1] == "bound"]
            top = max(bounds, key=lambda r: r["tier"])
            bound = {**{k: top[k] for k in ("time_to_full_s", "peak_db_util", "breach_s")},
                     "rto_s": {f"tier{r['tier']}": r["rto_s"][f"tier{r['tier']}"]
                               for r in bounds}}
            seeds_of[seed] = {"phased": mine[index, "phased", seed, None],
                              "revive": mine[index, "revive", seed, None], "bound": bound}
        per_seed[name] = seeds_of
        report["scenarios"].append({"name": name, "policies": {
            p: summarise([s[p] for s in seeds_of.values()]) for p in POLICIES}})
    return report, per_seed


def _goals(report: dict, per_seed: dict, wall: float) -> list[dict]:
    goals = []
    for scenario in report["scenarios"]:
        name, p = scenario["name"], scenario["policies"]
        revive, phase, bound = p["revive"], p["phased"], p["bound"]
        r0, b0 = revive["rto_s"]["tier0"], bound["rto_s"]["tier0"]
        ratio = r0 / b0 if r0 is not None and b0 else None
        seed_ratio = _worst([_ratio(runs["revive"], runs["bound"])
                             for runs in per_seed[name].values()])
        goals.append({"goal": f"{name}: revive tier 0 within {BOUND_GOAL}x its bound",
                      "ok": ratio is not None and ratio <= BOUND_GOAL,
                      "value": None if ratio is None else
                      f"worst seeds {r0:.0f} s / {b0:.0f} s = {ratio:.2f}x; "
                      f"worst seed's own ratio {seed_ratio or 0:.2f}x"})
        if name == EXAMPLE:
            for tier, target in ((0, 600), (1, 1800)):
                worst = revive["rto_s"][f"tier{tier}"]
                goals.append({"goal": f"{name}: every seed has tier {tier} <= {target} s",
                              "ok": worst is not None and worst <= target,
                              "value": "never" if worst is None else f"worst {worst:.0f} s"})
        full, base = revive["time_to_full_s"], phase["time_to_full_s"]
        goals.append({"goal": f"{name}: time to full traffic <= phased + 5%",
                      "ok": full is not None and (base is None or full <= FULL_GOAL * base),
                      "value": f"{_fmt(full)} s vs {_fmt(base)} s"})
        goals.append({"goal": f"{name}: peak DB utilisation <= {PEAK_GOAL:.2f} from the "
                              "first move on", "ok": revive["peak_db_util"] <= PEAK_GOAL,
                      "value": f"{revive['peak_db_util']:.3f}"})
        beaten = [f"seed {seed} {pol} tier{t}" for seed, runs in per_seed[name].items()
                  for pol in ("phased", "revive") for t in TIERS
                  if (b := runs["bound"]["rto_s"].get(f"tier{t}")) is not None
                  and (r := runs[pol]["rto_s"].get(f"tier{t}")) is not None and r < b]
        goals.append({"goal": f"{name}: the bound holds on every seed and tier",
                      "ok": not beaten, "value": ", ".join(beaten) or "never beaten"})
    goals.append({"goal": f"benchmark under {WALL_GOAL_S:.0f} s", "ok": wall < WALL_GOAL_S,
                  "value": f"{wall:.1f} s"})
    return goals


def _ratio(policy: dict, bound: dict, tier: str = "tier0") -> float | None:
    rto, floor = policy["rto_s"].get(tier), bound["rto_s"].get(tier)
    return rto / floor if rto is not None and floor else None


def _fmt(value: float | None) -> str:
    return "never" if value is None else f"{value:,.0f}"


def _print(report: dict, goals: list[dict], wall: float, seeds: int, console: Console) -> None:
    """One table, a row per policy; "never": not back on some seed, "-": no such tier."""
    table = Table(title=f"Failover of a lost DC, s after the fault (worst of {seeds} seeds)")
    for col in ("scenario", "policy", "tier 0", "tier 1", "tier 2", "tier 3", "x bound t0",
                "full traffic", "peak DB", "breach s"):
        table.add_column(col, justify="left" if col in ("scenario", "policy") else "right")
    has = {s.name: _tiers(s) for s in SCENARIOS}
    for scenario in report["scenarios"]:
        b0 = scenario["policies"]["bound"]["rto_s"]["tier0"]
        for i, (name, p) in enumerate(scenario["policies"].items()):
            t0 = p["rto_s"]["tier0"]
            table.add_row(scenario["name"] if i == 0 else "", name,
                          *(_fmt(p["rto_s"][f"tier{t}"]) if t in has[scenario["name"]]
                            else "-" for t in TIERS),
                          f"{t0 / b0:.2f}" if t0 is not None and b0 else "-",
                          _fmt(p["time_to_full_s"]), f"{p['peak_db_util']:.2f}",
                          f"{p['breach_s']:,}", end_section=i == len(POLICIES) - 1)
    console.print(table)
    for g in goals:
        console.print(f"{'PASS' if g['ok'] else 'FAIL'}  {g['goal']} ({g['value']})")
    console.print(f"wall time {wall:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--scenario", nargs="+", action="extend",
                        choices=[s.name for s in SCENARIOS])
    parser.add_argument("--json", action="store_true", help="JSON on stdout, tables on stderr")
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal fails")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes (1: in this process)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")
    began = time.perf_counter()
    chosen = [i for i, s in enumerate(SCENARIOS) if not args.scenario or s.name in args.scenario]
    jobs = _jobs(chosen, args.seeds)
    if args.jobs == 1:
        results = dict(map(_job, jobs))
    else:
        with ProcessPoolExecutor(args.jobs) as pool:
            results = dict(pool.map(_job, jobs))
    report, per_seed = collect(results, chosen, args.seeds)
    wall = time.perf_counter() - began
    goals = _goals(report, per_seed, wall)
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    _print(report, goals, wall, args.seeds,
           Console(stderr=args.json, width=120, highlight=False))
    return 1 if args.check and not all(g["ok"] for g in goals) else 0


if __name__ == "__main__":
    raise SystemExit(main())
