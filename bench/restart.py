"""Benchmark revive's restart order, tier by tier, against priority groups and a serial runbook.

A DC's power came back and every service in it must restart (``plan_restart``'s scope: every
group with instances there). Three topologies: the example (``runbooks/topology.yaml``,
dc1) and two generated ones (bench/plan.py's generator, ``--sizes`` services with
``--deps-per-service`` hard dependencies each, dc1). Every executed strategy runs the same
restart steps (``revive.planning.restart.restart_steps``) on the one scheduler,
``revive.planning.graph.Scheduler``: at most ``--max-parallel`` restarts in flight, never a
service before its hard dependencies inside the plan are done. They differ only in the
graph they hand it:

* ``revive``: the steps as planned, as the restart_service_groups runbook runs them
  (effective tier first, then the longest chain of work behind, then the name);
* ``strict priority``: how VMware SRM's priority groups behave: the same steps, plus an
  ``after`` edge from every step of group N to every step of the previous group, so group
  N starts only when all of group N-1 is done. A service's group is its tier, raised to the
  group of its latest hard dependency when that is higher (SRM only allows dependencies
  inside a group or on earlier groups, so an operator has to move such a service down the
  order; otherwise the schedule deadlocks);
* ``serial``: the same steps with the pool's cap at 1, as a wiki runbook does;
* ``lower bound``: ``max(critical path, total work / max_parallel)``, which no schedule
  can beat; it is not executed.

The objective is each tier's completion in turn. Tier T is complete when every service of
(own) tier <= T has restarted; its own bound is ``max(critical path, work / max_parallel)``
of its closure (those services and everything they hard-depend on inside the plan), on the
drawn durations: no schedule completes the tier sooner. The whole-plan makespan and its
ratio to the whole-plan bound are reported too, as information, not as a goal.

Durations. The estate's restart jitter is drawn per ``restart`` call in call order, so
different orders would draw different durations. Instead each service's duration is drawn
once, before any schedule runs, from ``random.Random(seed)`` with the estate's own formula
``restart_seconds * (1 +- restart_jitter)`` (default jitter, services in name order), and
written into a copy of the topology; every schedule then runs on a fresh simulator
``Estate`` over that copy with ``restart_jitter=0``, so each service takes the same time
under every strategy. The planner sees the nominal ``restart_seconds`` (it cannot know the
jitter, as in a real restart); the bounds use the drawn durations. Every strategy,
including the 1,000-service one, is executed on the ``Estate`` (``VirtualClock`` events, no
separate event simulation): the scheduler says what starts, each restart is
``Estate.restart`` and ends when its action is done.

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
under revive, each critical tier (0 and 1) completes within 1.3x its own bound on every
topology (the others are reported: tier first means the last tier waits for the others'
slots); Prefect adds under 10 ms per task, one at a time and ``max_parallel`` at a time.

``--json`` prints ``{"topologies": [...], "prefect": ..., "goals": [...], "wall_s": ...}``.
Each topology row has ``tier_rto_s`` (tier -> when that tier is complete under revive),
``tier_bound_s`` (tier -> its own bound), ``tier_rto_by_strategy_s`` (strategy -> tier ->
completion, for every executed strategy), ``makespan_s`` (strategy -> whole-plan makespan,
information) and the instance's sizes; tiers are JSON object keys, so strings. Each goal is
``{"goal", "ok", "value"}``.

    .venv/bin/python bench/restart.py [--sizes 200 1000] [--seed S] [--max-parallel 8]
        [--repeat R] [--no-prefect] [--json] [--check]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make `revive` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console
from rich.table import Table

from revive.planning import plan_restart
from revive.planning.graph import Scheduler, Step, StepState, topological_order
from revive.planning.restart import (
    POOL,
    restart_steps,
    service_of,
    tier_bounds,
    tier_completion,
)
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
EXECUTED = STRATEGIES[:3]
TIER_GOAL = 1.3
GOAL_TIERS = (0, 1)
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


def priority_groups(steps: list[Step], tier: dict[str, int]) -> dict[str, int]:
    """SRM-style group per service: its tier, or its latest dependency's group if later."""
    by_key = {s.key: s for s in steps}
    group: dict[str, int] = {}
    for key in topological_order(by_key):
        name = service_of(by_key[key])
        group[name] = max([tier[name], *(group[service_of(by_key[d])] for d in by_key[key].after)])
    return {service_of(s): group[service_of(s)] for s in steps}


def strict_steps(steps: list[Step], group: dict[str, int]) -> list[Step]:
    """The same steps, each also waiting for every step of the previous (non-empty) group:
    group N starts only when group N-1 is done. Priorities are left as planned."""
    members: dict[int, list[str]] = {}
    for step in steps:
        members.setdefault(group[service_of(step)], []).append(step.key)
    levels = sorted(members)
    previous = {later: tuple(members[earlier]) for earlier, later in pairwise(levels)}
    return [
        step.model_copy(update={"after": tuple(dict.fromkeys(
            (*step.after, *previous.get(group[service_of(step)], ()))))})
        for step in steps
    ]


# --- executing a schedule on the simulator ----------------------------------------------


def execute(
    actual: Topology,
    dc: str,
    steps: list[Step],
    pools: dict[str, int],
    *,
    seed: int = 1,
) -> Schedule:
    """Restart ``steps`` in ``dc`` on a fresh estate whose power just came back.

    The one scheduler decides: whenever it says a step may start, it is started with
    ``Estate.restart``; the clock then runs to the next end, and every restart that ended
    at that instant is reported back before anything else starts (as ``rehearse`` does).
    Returns ``{service: (start, end)}`` in simulated seconds from the power's return.
    """
    clock = VirtualClock()
    estate = Estate(actual, clock=clock, config=SimConfig(restart_jitter=0.0), seed=seed)
    estate.power_loss(dc)
    estate.power_restore(dc)
    t0 = clock.now
    scheduler = Scheduler(steps, pools)
    running: dict[str, str] = {}  # step key -> action id
    schedule: Schedule = {}

    def finished() -> bool:
        return any(estate.action(a).state != ActionState.running for a in running.values())

    while not scheduler.finished:
        for step in scheduler.ready():
            scheduler.start(step.key)
            running[step.key] = estate.restart(service_of(step), dc)
        if not running:
            raise RuntimeError(f"nothing can start; {len(scheduler.of(StepState.pending))} wait")
        if not clock.advance_until(finished, limit=clock.now + HORIZON_S):
            raise RuntimeError("no restart finished within the horizon")
        clock.advance_to(clock.now)  # other restarts ending at this same instant
        for key, action_id in list(running.items()):
            view = estate.action(action_id)
            if view.state == ActionState.running:
                continue
            if view.state != ActionState.done:
                raise RuntimeError(f"restart of {key} failed: {view.error}")
            del running[key]
            schedule[service_of(scheduler.steps[key])] = (view.started_at - t0, view.ends_at - t0)
            scheduler.finish(key, ok=True)
    return schedule


def compare(
    topology: Topology,
    dc: str = DC,
    max_parallel: int = MAX_PARALLEL,
    *,
    seed: int = 1,
    jitter: float | None = None,
) -> dict[str, Any]:
    """Every strategy's schedule, per-tier completion and makespan for restarting ``dc``.

    Returns ``strategies`` (name -> ``makespan_s``, and for the executed ones ``schedule``
    {service: (start, end)} and ``tier_rto_s`` {tier: completion}; ``strict priority``
    also has ``group``), the instance (``order``, ``deps`` inside the plan, drawn
    ``durations``, own ``tier`` per service), ``tier_bound_s`` {tier: bound} and the
    whole-plan bound's parts.
    """
    jitter = SimConfig().restart_jitter if jitter is None else jitter
    plan = plan_restart(topology, dc, max_parallel=max_parallel)
    order = [step.service for step in plan.steps]
    steps, pools = restart_steps(topology, dc, max_parallel=max_parallel)
    by_key = {s.key: s for s in steps}
    deps = {service_of(s): [service_of(by_key[k]) for k in s.after] for s in steps}
    durations = draw_durations(topology, order, seed, jitter)
    actual = with_durations(topology, durations)
    # The planner's own bound, computed on the drawn durations; its schedule is what revive
    # would have planned had it known them (reported, not a strategy).
    exact = plan_restart(actual, dc, max_parallel=max_parallel)
    tier = {step.service: step.tier for step in plan.steps}
    group = priority_groups(steps, tier)

    runs = {
        "revive": execute(actual, dc, steps, pools, seed=seed),
        "strict priority": execute(actual, dc, strict_steps(steps, group), pools, seed=seed),
        "serial": execute(actual, dc, steps, {POOL: 1}, seed=seed),
    }
    strategies: dict[str, dict[str, Any]] = {
        name: {"makespan_s": _makespan(schedule), "schedule": schedule,
               "tier_rto_s": tier_completion(schedule, tier)}
        for name, schedule in runs.items()
    }
    strategies["strict priority"]["group"] = group
    strategies["lower bound"] = {"makespan_s": exact.lower_bound_s}
    return {
        "dc": dc,
        "max_parallel": max_parallel,
        "services": len(order),
        "hard_deps": sum(len(v) for v in deps.values()),
        "order": order,
        "deps": deps,
        "tier": tier,
        "durations": durations,
        "total_work_s": sum(durations.values()),
        "critical_path_s": exact.critical_path_s,
        "lower_bound_s": exact.lower_bound_s,
        "tier_bound_s": tier_bounds(durations, tier, deps, max_parallel),
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
        "tier_bound_s",
    )
    strategies = result["strategies"]
    tiers = sorted(result["tier_bound_s"])
    return {
        "topology": name,
        **{k: result[k] for k in keys},
        "tier_services": {t: sum(1 for v in result["tier"].values() if v == t) for t in tiers},
        "tier_rto_s": strategies["revive"]["tier_rto_s"],
        "tier_rto_by_strategy_s": {s: strategies[s]["tier_rto_s"] for s in EXECUTED},
        "makespan_s": {s: strategies[s]["makespan_s"] for s in STRATEGIES},
    }


def _goals(rows: list[dict[str, Any]], overhead: dict[str, Any] | None) -> list[dict]:
    goals = []
    for row in rows:
        for tier, bound in row["tier_bound_s"].items():
            if int(tier) not in GOAL_TIERS:
                continue
            ratio = row["tier_rto_s"][tier] / bound if bound else 1.0
            goals.append(
                {
                    "goal": f"{row['topology']}: tier {tier} within {TIER_GOAL}x its own bound",
                    "ok": ratio <= TIER_GOAL,
                    "value": f"{ratio:.3f}x",
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
    console.width = max(console.width, 100)  # the tier table is wider than a pipe's 80
    title = (f"Tier T complete (every service of tier <= T restarted), simulated s after "
             f"{DC}'s power returns, against T's own bound (max {max_parallel})")
    table = Table(title=title)
    columns = ("topology", "tier", "services", "bound s", "revive s", "x bound", "strict s",
               "serial s")
    for col in columns:
        table.add_column(col, justify="left" if col == "topology" else "right")
    for row in rows:
        by = row["tier_rto_by_strategy_s"]
        tiers = sorted(row["tier_bound_s"])
        for i, tier in enumerate(tiers):
            bound = row["tier_bound_s"][tier]
            table.add_row(
                row["topology"] if i == 0 else "",
                str(tier),
                str(row["tier_services"][tier]),
                f"{bound:,.0f}",
                f"{row['tier_rto_s'][tier]:,.0f}",
                f"{row['tier_rto_s'][tier] / bound if bound else 1.0:.2f}",
                f"{by['strict priority'][tier]:,.0f}",
                f"{by['serial'][tier]:,.0f}",
                end_section=i == len(tiers) - 1,
            )
    console.print(table)
    title = f"For information: whole-plan makespan (max {max_parallel})"
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
