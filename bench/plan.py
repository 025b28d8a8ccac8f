"""Benchmark the planners on a large generated topology.

Generates a deterministic random estate (``--services`` services, ``--deps`` distinct hard
dependencies, acyclic, two DCs, ~50 groups), then times, best of ``--repeat`` runs:

* baseline: ``graphlib.TopologicalSorter(graph).static_order()`` on the same hard-dependency
  graph, the least any restart planner has to do;
* ``plan_restart(topology, "dc1")``;
* ``plan_capacity(topology, "dc2")``;
* ``revive.topology.parse`` of the generated data (informative only, not a goal).

Goals: the restart plan takes under a second, and within 10x the baseline. They are reported
as PASS/FAIL; the exit code is 0 unless ``--check`` is given and a goal fails.

    .venv/bin/python bench/plan.py [--services N] [--deps M] [--seed S] [--repeat R] [--check]
"""

from __future__ import annotations

import argparse
import gc
import graphlib
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make `revive` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from revive.planning import plan_capacity, plan_restart
from revive.topology import Topology, parse

DCS = ("dc1", "dc2")
GROUPS = 50
RESTART_GOAL_S = 1.0
RATIO_GOAL = 10.0

# A few boot-time ops tools, so services look like real ones; the planners ignore them.
OPS_TOOLS = {
    "vault": "secret_store",
    "consul": "discovery",
    "etcd": "config_store",
}

# What each tier may use (the default tier policy), most resilient first.
REDUNDANCY_BY_TIER = {
    0: ["active-active"],
    1: ["active-active", "active-standby"],
    2: ["active-active", "active-standby", "cold-standby"],
    3: ["active-active", "active-standby", "cold-standby", "single-dc"],
}


def generate(n_services: int, n_deps: int, seed: int = 1) -> dict[str, Any]:
    """A topology as plain data: ``n_services`` services, ``n_deps`` distinct hard deps.

    Services are numbered 0..n-1 in dependency order: every hard edge goes from ``i`` to some
    ``j < i``, so the graph is acyclic. Most edges reach into a window of recent services
    (which gives long chains, i.e. depth); the rest reach anywhere earlier (shared platform
    services). Names are shuffled so that name order says nothing about dependency order,
    and the service list is shuffled too. A few soft dependencies, in any direction, are
    added on top and are not counted in ``n_deps``.
    """
    if n_services < 1:
        raise ValueError("need at least one service")
    max_edges = n_services * (n_services - 1) // 2
    if not 0 <= n_deps <= max_edges:
        raise ValueError(f"{n_services} services allow 0 to {max_edges} acyclic dependencies")
    rng = random.Random(seed)
    width = len(str(n_services - 1))
    ids = list(range(n_services))
    rng.shuffle(ids)
    names = [f"svc-{k:0{width}d}" for k in ids]

    hard = _hard_edges(rng, n_services, n_deps)
    deps: list[list[int]] = [[] for _ in range(n_services)]
    for i, j in sorted(hard):
        deps[i].append(j)
    for d in deps:
        rng.shuffle(d)

    soft: list[list[int]] = [[] for _ in range(n_services)]
    if n_services > 1:
        for _ in range(max(1, n_services // 50)):
            i, j = rng.randrange(n_services), rng.randrange(n_services)
            if i != j and (i, j) not in hard and j not in soft[i]:
                soft[i].append(j)

    services = []
    for i in range(n_services):
        # Services early in the order are the foundations: they tend to be critical.
        position = i / n_services
        tier = min(3, max(0, int(position * 4 + rng.uniform(-1.0, 1.0))))
        redundancy = rng.choice(REDUNDANCY_BY_TIER[tier])
        in_dc1 = rng.randint(1, 12)
        instances = {"dc1": in_dc1}
        if redundancy != "single-dc":
            # Most services run in dc2 too; a few are scaled to zero there (cold standby).
            instances["dc2"] = 0 if rng.random() < 0.1 else rng.randint(1, 12)
        capacity = float(rng.randint(50, 500))
        service: dict[str, Any] = {
            "name": names[i],
            "tier": tier,
            "group": f"group-{rng.randrange(GROUPS):02d}",
            "redundancy": redundancy,
            "instances": instances,
            "capacity_per_instance": capacity,
            "peak_load": round(capacity * in_dc1 * rng.uniform(0.4, 1.1), 1),
            "restart_seconds": rng.randint(10, 300),
            "depends_on": [names[j] for j in deps[i]]
            + [{"name": names[j], "soft": True} for j in soft[i]],
        }
        if rng.random() < 0.5:
            service["boot_requires"] = rng.sample(sorted(OPS_TOOLS), rng.randint(1, 3))
        services.append(service)
    rng.shuffle(services)

    return {
        "environment": "drill",
        "datacenters": [{"name": dc} for dc in DCS],
        "ops_tools": {
            name: {"kind": kind, "replicas": {dc: f"{name}.{dc}.internal" for dc in DCS}}
            for name, kind in OPS_TOOLS.items()
        },
        "services": services,
    }


def _hard_edges(rng: random.Random, n: int, m: int) -> set[tuple[int, int]]:
    """``m`` distinct pairs ``(i, j)`` with ``j < i < n``."""
    window = max(8, n // 20)
    edges: set[tuple[int, int]] = set()
    attempts = 0
    while len(edges) < m and attempts < 20 * m + 100:
        attempts += 1
        i = rng.randrange(1, n)
        # Mostly a recent service, which builds depth; else anything earlier (platform).
        low = max(0, i - window) if rng.random() < 0.8 else 0
        j = rng.randrange(low, i)
        edges.add((i, j))
    if len(edges) < m:  # nearly complete graph: pick the rest from what is left
        left = [(i, j) for i in range(1, n) for j in range(i) if (i, j) not in edges]
        edges.update(rng.sample(left, m - len(edges)))
    return edges


def hard_graph(topology: Topology) -> dict[str, set[str]]:
    """``{service: {hard dependencies}}``, the baseline's input."""
    return {s.name: set(s.hard_dependencies) for s in topology.services}


def _time(fn: Callable[[], object], repeat: int) -> tuple[list[float], object]:
    times = []
    result: object = None
    for _ in range(repeat):
        # Start each run from a clean heap: otherwise a full collection of the 10k-service
        # topology, left due by the previous run, lands in this one (+0.1 s, at random).
        gc.collect()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10_000, help="number of services")
    parser.add_argument("--deps", type=int, default=50_000, help="distinct hard dependencies")
    parser.add_argument("--seed", type=int, default=1, help="random seed for the topology")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (best of)")
    parser.add_argument("--max-parallel", type=int, default=8, help="restart concurrency cap")
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal fails")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    console = Console(highlight=False, soft_wrap=True)
    t0 = time.perf_counter()
    data = generate(args.services, args.deps, args.seed)
    generated_s = time.perf_counter() - t0

    parse_times, topology = _time(lambda: parse(data, name="<generated>"), args.repeat)
    assert isinstance(topology, Topology)
    graph = hard_graph(topology)

    baseline_times, order = _time(
        lambda: list(graphlib.TopologicalSorter(graph).static_order()), args.repeat
    )
    restart_times, plan = _time(
        lambda: plan_restart(topology, "dc1", max_parallel=args.max_parallel), args.repeat
    )
    capacity_times, capacity = _time(lambda: plan_capacity(topology, "dc2"), args.repeat)

    base = min(baseline_times)
    rows = [
        ("baseline (graphlib topo sort)", baseline_times),
        ("restart plan", restart_times),
        ("capacity plan", capacity_times),
        ("parse+validate", parse_times),
    ]
    table = Table(title=f"revive planners, best of {args.repeat}")
    table.add_column("step")
    table.add_column("best s", justify="right")
    table.add_column("median s", justify="right")
    table.add_column("ratio vs baseline", justify="right")
    for name, times in rows:
        table.add_row(
            name,
            f"{min(times):.4f}",
            f"{statistics.median(times):.4f}",
            f"{min(times) / base:.1f}x" if base > 0 else "n/a",
        )
    console.print(table)

    n_hard = sum(len(v) for v in graph.values())
    n_soft = sum(1 for s in topology.services for d in s.depends_on if d.soft)
    console.print(
        f"{len(topology.services)} services / {n_hard} hard deps ({n_soft} soft) / "
        f"{len(topology.groups)} groups / generated in {generated_s:.3f} s"
    )
    console.print(
        f"restart plan dc1: {len(plan.steps)} steps, max_parallel {plan.max_parallel}, "
        f"makespan {plan.makespan_s:,.0f} s, lower bound {plan.lower_bound_s:,.0f} s, "
        f"critical path {plan.critical_path_s:,.0f} s over {len(plan.critical_path)} services"
    )
    console.print(
        f"capacity plan dc2: {len(capacity.services)} lines, add {capacity.total_add} instances"
        f" / baseline order: {len(order)} services"
    )

    restart = min(restart_times)
    ratio = restart / base if base > 0 else float("inf")
    fast = restart < RESTART_GOAL_S
    close = ratio <= RATIO_GOAL
    console.print(f"restart plan < {RESTART_GOAL_S:g} s: {_verdict(fast)} ({restart:.3f} s)")
    console.print(
        f"restart plan within {RATIO_GOAL:g}x baseline: {_verdict(close)} (ratio {ratio:.1f})"
    )
    if args.check and not (fast and close):
        return 1
    return 0


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


if __name__ == "__main__":
    sys.exit(main())
