"""Benchmark revive's restart order against priority groups and a serial runbook.

A DC's power came back and every service in it must restart (``plan_restart``'s scope: every
group with instances there). Three topologies: the example (``runbooks/topology.yaml``,
dc1) and two generated ones (bench/plan.py's generator, ``--sizes`` services with
``--deps-per-service`` hard dependencies each, dc1). Four strategies, all at most
``--max-parallel`` restarts in flight and never starting a service before its hard
dependencies inside the plan are done:

* ``revive``: the order of ``plan_restart`` run as a list scheduler, as the
  restart_service_groups runbook does: whenever a slot is free, start the first ready
  service in plan step order;
* ``strict priority``: how VMware SRM's priority groups behave: group N starts only when
  every service of group N-1 is done; inside a group, the same list scheduler. A service's
  group is its tier, raised to the group of its latest hard dependency when that is
  higher (SRM only allows dependencies inside a group or on earlier groups, so an
  operator has to move such a service down the order; otherwise the schedule deadlocks);
* ``serial``: one at a time in plan step order, as a wiki runbook does;
* ``lower bound``: ``max(critical path, total work / max_parallel)``, which no schedule
  can beat; it is not executed.

Durations. The estate's restart jitter is drawn per ``restart`` call in call order, so
different orders would draw different durations. Instead each service's duration is drawn
once, before any schedule runs, from ``random.Random(seed)`` with the estate's own formula
``restart_seconds * (1 +- restart_jitter)`` (default jitter, services in name order), and
written into a copy of the topology; every schedule then runs on a fresh simulator
``Estate`` over that copy with ``restart_jitter=0``, so each service takes the same time
under every strategy. The planner sees the nominal ``restart_seconds`` (it cannot know the
jitter, as in a real restart); the lower bound uses the drawn durations. Every strategy,
including the 1,000-service one, is executed on the ``Estate`` (``VirtualClock`` events, no
separate event simulation): each restart is ``Estate.restart`` and ends when its action is
done.

Orchestration overhead. The example plan's restarts are run as trivial async Prefect tasks
(revive's ops-task options, a body that awaits a no-op) inside one async flow, one at a
time and under an ``asyncio.Semaphore(max_parallel)``, against a local test server
(``prefect_test_harness``, API logging off, console log level WARNING unless
``PREFECT_LOGGING_LEVEL`` says otherwise); the same coroutines run with plain asyncio in
the same process for comparison. Each is timed inside the flow, median of ``--repeat`` runs
after a warm-up. Per flow run, not per task, it also reports the time to create and finish
the flow run and how long after the flow returned the server had recorded all its task
runs (task runs are reported to the server in the background); the next run starts only
then, so one run's backlog does not slow the next.

Goals, reported as PASS/FAIL (exit code 0 unless ``--check`` is given and a goal fails):
revive's makespan within 1.05x the lower bound and below strict priority groups on every
topology; Prefect adds under 10 ms per task, one at a time and ``max_parallel`` at a time.

    .venv/bin/python bench/restart.py [--sizes 200 1000] [--seed S] [--max-parallel 8]
        [--repeat R] [--no-prefect] [--json] [--check]
"""

from __future__ import annotations

import argparse
import graphlib
import heapq
import importlib.util
import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make `revive` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from revive.planning import plan_restart
from revive.sim.clock import VirtualClock
from revive.sim.config import SimConfig
from revive.sim.estate import ActionState, Estate
from revive.topology import Topology, load, parse

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "runbooks" / "topology.yaml"
DC = "dc1"
MAX_PARALLEL = 8
SIZES = (200, 1000)
DEPS_PER_SERVICE = 3
STRATEGIES = ("revive", "strict priority", "serial", "lower bound")
BOUND_GOAL = 1.05
OVERHEAD_GOAL_MS = 10.0
HORIZON_S = 30 * 86400.0  # a restart never takes longer (restart_seconds <= 86400)

Schedule = dict[str, tuple[float, float]]


@cache
def _generator() -> Callable[..., dict[str, Any]]:
    """bench/plan.py's ``generate``, loaded by path (``bench`` is also the test package)."""
    path = Path(__file__).resolve().parent / "plan.py"
    spec = importlib.util.spec_from_file_location("revive_bench_plan_generator", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate


def generated(n_services: int, deps_per_service: int = DEPS_PER_SERVICE, seed: int = 1) -> Topology:
    data = _generator()(n_services, n_services * deps_per_service, seed)
    return parse(data, name=f"<generated {n_services}>")


# --- the instance every strategy restarts --------------------------------------------------


def draw_durations(topology: Topology, names: list[str], seed: int, jitter: float) -> dict:
    """Each service's restart time, drawn once with the estate's formula."""
    rng = random.Random(seed)
    return {
        name: topology.service(name).restart_seconds * (1 + rng.uniform(-jitter, jitter))
        for name in sorted(names)
    }


def with_durations(topology: Topology, durations: dict[str, float]) -> Topology:
    """A copy of ``topology`` whose services take exactly ``durations`` to restart."""
    data = topology.model_dump(mode="json")
    for service in data["services"]:
        if service["name"] in durations:
            service["restart_seconds"] = durations[service["name"]]
    return parse(data, name="<drawn durations>")


def priority_groups(order: list[str], deps: dict[str, list[str]], tier: dict[str, int]) -> dict:
    """SRM-style group per service: its tier, or its latest dependency's group if later."""
    group: dict[str, int] = {}
    for name in graphlib.TopologicalSorter(deps).static_order():
        group[name] = max([tier[name], *(group[d] for d in deps[name])])
    return {name: group[name] for name in order}


# --- executing a schedule on the simulator ----------------------------------------------


def execute(
    actual: Topology,
    dc: str,
    order: list[str],
    deps: dict[str, list[str]],
    max_parallel: int,
    *,
    group: dict[str, int] | None = None,
    seed: int = 1,
) -> Schedule:
    """Restart ``order`` in ``dc`` on a fresh estate whose power just came back.

    List scheduling: whenever fewer than ``max_parallel`` restarts run, start the first
    service in ``order`` whose dependencies are done and, if ``group`` is given, whose
    group is the lowest one with services not done yet. Returns ``{service: (start, end)}``
    in simulated seconds from the power's return.
    """
    clock = VirtualClock()
    estate = Estate(actual, clock=clock, config=SimConfig(restart_jitter=0.0), seed=seed)
    estate.power_loss(dc)
    estate.power_restore(dc)
    t0 = clock.now
    groups = group if group is not None else dict.fromkeys(order, 0)
    rank = {name: i for i, name in enumerate(order)}
    waiting = {name: len(deps[name]) for name in order}
    dependents: dict[str, list[str]] = {name: [] for name in order}
    for name in order:
        for d in deps[name]:
            dependents[d].append(name)
    left = Counter(groups.values())
    open_groups = sorted(left)
    ready = [(groups[n], rank[n], n) for n in order if waiting[n] == 0]
    heapq.heapify(ready)
    running: dict[str, str] = {}
    schedule: Schedule = {}

    def finished() -> bool:
        return any(estate.action(a).state != ActionState.running for a in running.values())

    while ready or running:
        while ready and len(running) < max_parallel and ready[0][0] <= open_groups[0]:
            _, _, name = heapq.heappop(ready)
            running[name] = estate.restart(name, dc)
        if not running:
            raise RuntimeError(f"nothing can start; {len(ready)} ready services wait")
        if not clock.advance_until(finished, limit=clock.now + HORIZON_S):
            raise RuntimeError("no restart finished within the horizon")
        clock.advance_to(clock.now)  # other restarts ending at this same instant
        for name, action_id in list(running.items()):
            view = estate.action(action_id)
            if view.state == ActionState.running:
                continue
            if view.state != ActionState.done:
                raise RuntimeError(f"restart of {name} failed: {view.error}")
            del running[name]
            schedule[name] = (view.started_at - t0, view.ends_at - t0)
            left[groups[name]] -= 1
            for k in dependents[name]:
                waiting[k] -= 1
                if waiting[k] == 0:
                    heapq.heappush(ready, (groups[k], rank[k], k))
        while open_groups and left[open_groups[0]] == 0:
            open_groups.pop(0)
    if len(schedule) != len(order):
        raise RuntimeError(f"restarted {len(schedule)} of {len(order)} services")
    return schedule


def compare(
    topology: Topology,
    dc: str = DC,
    max_parallel: int = MAX_PARALLEL,
    *,
    seed: int = 1,
    jitter: float | None = None,
) -> dict[str, Any]:
    """Every strategy's schedule and makespan for restarting ``dc``.

    Returns ``strategies`` (name -> ``makespan_s``, and ``schedule`` {service: (start,
    end)} for the executed ones; ``strict priority`` also has ``group``), the instance
    (``order``, ``deps`` inside the plan, drawn ``durations``) and the bound's parts.
    """
    jitter = SimConfig().restart_jitter if jitter is None else jitter
    plan = plan_restart(topology, dc, max_parallel=max_parallel)
    order = [step.service for step in plan.steps]
    chosen = set(order)
    deps = {
        name: [d for d in dict.fromkeys(topology.service(name).hard_dependencies) if d in chosen]
        for name in order
    }
    durations = draw_durations(topology, order, seed, jitter)
    actual = with_durations(topology, durations)
    # The planner's own bound, computed on the drawn durations; its schedule is what revive
    # would have planned had it known them (reported, not a strategy).
    exact = plan_restart(actual, dc, max_parallel=max_parallel)
    tier = {step.service: step.tier for step in plan.steps}
    group = priority_groups(order, deps, tier)

    revive = execute(actual, dc, order, deps, max_parallel, seed=seed)
    strict = execute(actual, dc, order, deps, max_parallel, group=group, seed=seed)
    serial = execute(actual, dc, order, deps, 1, seed=seed)
    strategies: dict[str, dict[str, Any]] = {
        "revive": {"makespan_s": _makespan(revive), "schedule": revive},
        "strict priority": {"makespan_s": _makespan(strict), "schedule": strict, "group": group},
        "serial": {"makespan_s": _makespan(serial), "schedule": serial},
        "lower bound": {"makespan_s": exact.lower_bound_s},
    }
    return {
        "dc": dc,
        "max_parallel": max_parallel,
        "services": len(order),
        "hard_deps": sum(len(v) for v in deps.values()),
        "order": order,
        "deps": deps,
        "durations": durations,
        "total_work_s": sum(durations.values()),
        "critical_path_s": exact.critical_path_s,
        "lower_bound_s": exact.lower_bound_s,
        "planned_makespan_s": plan.makespan_s,
        "exact_plan_makespan_s": exact.makespan_s,
        "promoted": sum(group[n] != tier[n] for n in order),
        "strategies": strategies,
    }


def _makespan(schedule: Schedule) -> float:
    return max((end for _, end in schedule.values()), default=0.0)


# --- Prefect's overhead per task -----------------------------------------------------------


def prefect_overhead(names: list[str], max_parallel: int, repeat: int) -> dict[str, Any]:
    """ms per task of trivial async Prefect tasks versus plain coroutines, same process.

    After each flow run, waits until the test server has recorded every task run of it as
    completed (so one run's backlog does not slow the next run's start) and reports how
    long that took after the flow returned.
    """
    for key, value in (
        ("PREFECT_LOGGING_TO_API_ENABLED", "false"),
        ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
        ("PREFECT_LOGGING_LEVEL", "WARNING"),
    ):
        os.environ.setdefault(key, value)
    import asyncio

    from prefect import flow, get_client, task
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterFlowRunId,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.context import FlowRunContext
    from prefect.testing.utilities import prefect_test_harness

    from tasks.options import OPS

    async def restart(service: str, dc: str) -> str:
        await asyncio.sleep(0)
        return service

    restart_task = task(name="restart_service", task_run_name="restart {service}@{dc}", **OPS)(
        restart
    )

    async def one_at_a_time(fn: Callable[..., Any]) -> float:
        t0 = time.perf_counter()
        for name in names:
            await fn(name, DC)
        return time.perf_counter() - t0

    async def capped(fn: Callable[..., Any]) -> float:
        gate = asyncio.Semaphore(max_parallel)

        async def guarded(name: str) -> None:
            async with gate:
                await fn(name, DC)

        t0 = time.perf_counter()
        await asyncio.gather(*(guarded(name) for name in names))
        return time.perf_counter() - t0

    def run_id() -> Any:
        context = FlowRunContext.get()
        assert context is not None and context.flow_run is not None
        return context.flow_run.id

    @flow(name="bench_restart_one_at_a_time")
    async def serial_flow() -> tuple[float, Any]:
        return await one_at_a_time(restart_task), run_id()

    @flow(name="bench_restart_capped")
    async def capped_flow() -> tuple[float, Any]:
        return await capped(restart_task), run_id()

    async def recorded(flow_run_id: Any) -> float:
        """Seconds until the server shows every task run of the flow run as completed."""
        t0 = time.perf_counter()
        done = TaskRunFilter(
            flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]),
            state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.COMPLETED])),
        )
        async with get_client() as client:
            while len(await client.read_task_runs(task_run_filter=done)) < len(names):
                if time.perf_counter() - t0 > 120:
                    raise RuntimeError("the test server did not record the task runs in 120 s")
                await asyncio.sleep(0.05)
        return time.perf_counter() - t0

    async def measure() -> dict[str, Any]:
        modes = {
            "one at a time": (serial_flow, one_at_a_time),
            f"{max_parallel} at a time": (capped_flow, capped),
        }
        out: dict[str, Any] = {}
        flow_calls: list[float] = []
        lags: list[float] = []
        for mode, (prefect_flow, plain) in modes.items():
            await recorded((await prefect_flow())[1])  # warm-up: registers flow and task
            await plain(restart)
            inside, bare = [], []
            for _ in range(repeat):
                t0 = time.perf_counter()
                elapsed, flow_run_id = await prefect_flow()
                flow_calls.append(time.perf_counter() - t0 - elapsed)
                inside.append(elapsed)
                lags.append(await recorded(flow_run_id))
                bare.append(await plain(restart))
            prefect_ms = statistics.median(inside) / len(names) * 1000
            plain_ms = statistics.median(bare) / len(names) * 1000
            out[mode] = {
                "prefect_ms_per_task": prefect_ms,
                "asyncio_ms_per_task": plain_ms,
                "overhead_ms_per_task": prefect_ms - plain_ms,
            }
        out["flow_run_ms"] = statistics.median(flow_calls) * 1000
        out["recorded_after_ms"] = statistics.median(lags) * 1000
        return out

    with prefect_test_harness():
        result = asyncio.run(measure())
    return {"tasks": len(names), "repeat": repeat, "modes": list(result)[:2], **result}


# --- report ------------------------------------------------------------------------------


def _numbers(name: str, result: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "services",
        "hard_deps",
        "total_work_s",
        "critical_path_s",
        "lower_bound_s",
        "planned_makespan_s",
        "exact_plan_makespan_s",
        "promoted",
    )
    return {
        "topology": name,
        **{k: result[k] for k in keys},
        "makespan_s": {s: result["strategies"][s]["makespan_s"] for s in STRATEGIES},
    }


def _goals(rows: list[dict[str, Any]], overhead: dict[str, Any] | None) -> list[dict]:
    goals = []
    for row in rows:
        m = row["makespan_s"]
        ratio = m["revive"] / m["lower bound"]
        goals.append(
            {
                "goal": f"{row['topology']}: revive within {BOUND_GOAL}x lower bound",
                "ok": ratio <= BOUND_GOAL,
                "value": f"{ratio:.3f}x",
            }
        )
        speedup = m["strict priority"] / m["revive"]
        goals.append(
            {
                "goal": f"{row['topology']}: revive faster than strict priority groups",
                "ok": m["revive"] < m["strict priority"],
                "value": f"{speedup:.3f}x",
            }
        )
    if overhead is not None:
        worst = max(overhead[mode]["overhead_ms_per_task"] for mode in overhead["modes"])
        goals.append(
            {
                "goal": f"Prefect overhead under {OVERHEAD_GOAL_MS:g} ms per task",
                "ok": worst < OVERHEAD_GOAL_MS,
                "value": f"worst {worst:.2f} ms",
            }
        )
    return goals


def _print(
    rows: list[dict], overhead: dict | None, goals: list[dict], wall: float, max_parallel: int
) -> None:
    console = Console(highlight=False, soft_wrap=True)
    title = f"Restart makespan in simulated time after {DC}'s power returns (max {max_parallel})"
    table = Table(title=title)
    for col in ("topology", "strategy", "makespan s", "x lower bound", "x revive"):
        table.add_column(col, justify="left" if col in ("topology", "strategy") else "right")
    for row in rows:
        m = row["makespan_s"]
        for i, strategy in enumerate(STRATEGIES):
            table.add_row(
                row["topology"] if i == 0 else "",
                strategy,
                f"{m[strategy]:,.0f}",
                f"{m[strategy] / m['lower bound']:.2f}",
                f"{m[strategy] / m['revive']:.2f}",
                end_section=i == len(STRATEGIES) - 1,
            )
    console.print(table)
    for row in rows:
        console.print(
            f"{row['topology']}: {row['services']} services / {row['hard_deps']} hard deps in "
            f"the plan; work {row['total_work_s']:,.0f} s, critical path "
            f"{row['critical_path_s']:,.0f} s; planned {row['planned_makespan_s']:,.0f} s "
            f"(nominal), {row['exact_plan_makespan_s']:,.0f} s knowing the drawn durations; "
            f"{row['promoted']} services moved to a later priority group"
        )
    if overhead is not None:
        table = Table(
            title=f"Orchestration overhead, {overhead['tasks']} no-op restart tasks, "
            f"median of {overhead['repeat']}"
        )
        for col in ("mode", "Prefect ms/task", "asyncio ms/task", "overhead ms/task"):
            table.add_column(col, justify="left" if col == "mode" else "right")
        for mode in overhead["modes"]:
            o = overhead[mode]
            table.add_row(
                mode,
                f"{o['prefect_ms_per_task']:.3f}",
                f"{o['asyncio_ms_per_task']:.4f}",
                f"{o['overhead_ms_per_task']:.3f}",
            )
        console.print(table)
        per_task = overhead["recorded_after_ms"] / overhead["tasks"]
        console.print(
            f"per flow run, not per task: {overhead['flow_run_ms']:.0f} ms to create and finish "
            f"the flow run; the test server had recorded all its task runs "
            f"{overhead['recorded_after_ms']:.0f} ms after the flow returned "
            f"({per_task:.1f} ms per task, in the background)"
        )
    for g in goals:
        console.print(f"{'PASS' if g['ok'] else 'FAIL'}  {g['goal']} ({g['value']})")
    console.print(f"wall time {wall:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=list(SIZES),
        help="generated topologies, in services",
    )
    parser.add_argument("--deps-per-service", type=int, default=DEPS_PER_SERVICE)
    parser.add_argument("--seed", type=int, default=1, help="topology and duration seed")
    parser.add_argument("--max-parallel", type=int, default=MAX_PARALLEL, help="restart cap")
    parser.add_argument("--repeat", type=int, default=5, help="Prefect runs per mode (median)")
    parser.add_argument("--no-prefect", action="store_true", help="skip the overhead part")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal fails")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.max_parallel < 1:
        parser.error("--repeat and --max-parallel must be at least 1")
    began = time.perf_counter()

    example = load(EXAMPLE)
    topologies = [("example", example)] + [
        (f"generated {n}", generated(n, args.deps_per_service, args.seed)) for n in args.sizes
    ]
    rows = [
        _numbers(name, compare(t, DC, args.max_parallel, seed=args.seed)) for name, t in topologies
    ]
    overhead = None
    if not args.no_prefect:
        names = [step.service for step in plan_restart(example, DC).steps]
        overhead = prefect_overhead(names, args.max_parallel, args.repeat)
    wall = time.perf_counter() - began
    goals = _goals(rows, overhead)
    if args.json:
        report = {"topologies": rows, "prefect": overhead, "goals": goals, "wall_s": wall}
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        _print(rows, overhead, goals, wall, args.max_parallel)
    return 1 if args.check and not all(g["ok"] for g in goals) else 0


if __name__ == "__main__":
    sys.exit(main())
