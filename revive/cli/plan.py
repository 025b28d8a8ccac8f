"""``revive plan restart|provision``: the recovery plans for one DC or one DC loss, nothing
executed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from revive.cli.common import (
    DEFAULT_TOPOLOGY,
    JsonOption,
    TopologyOption,
    load_topology,
    out,
    plain,
    print_json,
    user_errors,
)
from revive.errors import InputError
from revive.planning import (
    CapacityPlan,
    FailoverPlan,
    RestartPlan,
    SurvivorPlan,
    plan_capacity,
    plan_failover_capacity,
    plan_restart,
)
from revive.planning.restart import DEFAULT_MAX_PARALLEL

app = typer.Typer(help="Compute recovery plans for a DC without changing anything.")

DcOption = Annotated[str, typer.Option("--dc", help="Datacenter the plan is for.")]
BAR_WIDTH = 32


@app.command("restart")
def restart(
    dc: DcOption,
    groups: Annotated[
        str | None,
        typer.Option("--groups", help="Comma-separated groups (default: all in the DC)."),
    ] = None,
    max_parallel: Annotated[
        int, typer.Option("--max-parallel", help="Restarts in flight at once.")
    ] = DEFAULT_MAX_PARALLEL,
    topology: TopologyOption = DEFAULT_TOPOLOGY,
    as_json: JsonOption = False,
) -> None:
    """Order restarts: dependencies first, then tier, at most --max-parallel at once."""
    topo = load_topology(topology)
    with user_errors():
        plan = plan_restart(
            topo,
            dc,
            groups=groups.split(",") if groups is not None else None,
            max_parallel=max_parallel,
        )
    if as_json:
        print_json(
            plan.model_dump(
                mode="json",
                include={
                    "dc", "max_parallel", "steps", "makespan_s", "critical_path_s",
                    "lower_bound_s", "critical_path", "groups", "assumed_healthy",
                },
            )
        )
    else:
        render_restart(plan)


@app.command("provision")
def provision(
    dc: Annotated[
        str | None, typer.Option("--dc", help="Size this DC to carry a share of global peak.")
    ] = None,
    lost_dc: Annotated[
        str | None,
        typer.Option("--lost-dc", help="Size every survivor for the traffic losing this DC "
                     "sends it."),
    ] = None,
    share: Annotated[
        float | None,
        typer.Option(
            "--share",
            help="Share of global peak to carry, for every tier "
            "(default: 1.2 for tiers 0-1, 1.0 for the rest); with --lost-dc, the margin "
            "on each survivor's new share.",
        ),
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="List services that need nothing added too.")
    ] = False,
    topology: TopologyOption = DEFAULT_TOPOLOGY,
    as_json: JsonOption = False,
) -> None:
    """Size a DC (--dc) or the survivors of a DC loss (--lost-dc): have, need and add."""
    with user_errors():
        _one_target(dc, lost_dc)
    topo = load_topology(topology)
    with user_errors():
        plan = (plan_capacity(topo, dc, share=share) if dc is not None
                else plan_failover_capacity(topo, lost_dc or "", share=share))
    if as_json:
        print_json(plan)
    elif isinstance(plan, FailoverPlan):
        render_failover(plan, share=share, show_all=show_all)
    else:
        render_capacity(plan, show_all=show_all)


def _one_target(dc: str | None, lost_dc: str | None) -> None:
    """A provision plan is for one DC or for the survivors of one loss, never both."""
    if (dc is None) == (lost_dc is None):
        raise InputError(
            "give exactly one of --dc DC (size that DC) and --lost-dc DC "
            "(size the survivors of losing it)"
        )


def _bar(start: float, end: float, makespan: float) -> str:
    if makespan <= 0:
        return ""
    left = round(start / makespan * BAR_WIDTH)
    right = max(left + 1, round(end / makespan * BAR_WIDTH))
    return " " * left + "█" * (right - left)


# Every name printed here (DCs, services, groups) comes from the topology: it goes to Rich as
# ``plain`` text or with ``markup=False``, so "[bold]" or "[/]" in a name prints as written.


def render_restart(plan: RestartPlan) -> None:
    table = Table(title=plain(f"Restart plan for {plan.dc} (max {plan.max_parallel} at once)"))
    for name, justify in [("start", "right"), ("end", "right"), ("tier", "right")]:
        table.add_column(name, justify=justify)
    table.add_column("service")
    table.add_column("group")
    table.add_column("timeline")
    for step in plan.steps:
        table.add_row(
            _clock(step.start_s),
            _clock(step.end_s),
            str(step.tier),
            plain(step.service),
            plain(step.group),
            _bar(step.start_s, step.end_s, plan.makespan_s),
        )
    out.print(table)
    out.print(
        f"{len(plan.steps)} services in {len(plan.groups)} group(s); "
        f"makespan {_clock(plan.makespan_s)}, lower bound {_clock(plan.lower_bound_s)}, "
        f"critical path {_clock(plan.critical_path_s)}: {' -> '.join(plan.critical_path)}",
        markup=False,
    )
    if plan.assumed_healthy:
        out.print("assumed healthy (outside this plan): " + ", ".join(plan.assumed_healthy),
                  markup=False)


def render_capacity(plan: CapacityPlan, *, show_all: bool) -> None:
    share = "tier defaults" if plan.share is None else f"{plan.share:g}x peak"
    table = Table(title=plain(f"Capacity plan for {plan.dc} ({share})"))
    table.add_column("tier", justify="right")
    table.add_column("service")
    table.add_column("share", justify="right")
    for name in ("have", "need", "add"):
        table.add_column(name, justify="right")
    shown = [line for line in plan.services if show_all or line.add > 0]
    for line in shown:
        table.add_row(
            str(line.tier), plain(line.service), f"{line.share:g}", str(line.have),
            str(line.need), _add(line.add),
        )
    if shown:
        out.print(table)
    hidden = len(plan.services) - len(shown)
    out.print(
        f"{plan.total_add} instance(s) to add across "
        f"{sum(1 for s in plan.services if s.add)} service(s)"
        + (f"; {hidden} service(s) already have enough (--all lists them)" if hidden else ""),
        markup=False,
    )


def render_failover(plan: FailoverPlan, *, share: float | None, show_all: bool) -> None:
    """One table per survivor, then what the whole failover adds."""
    margin = "tier defaults" if share is None else f"{share:g}x each survivor's share"
    out.print(f"Failover capacity if {plan.lost_dc} is lost ({margin})", markup=False)
    for survivor in plan.survivors:
        _render_survivor(plan.lost_dc, survivor, show_all=show_all)
    total = sum(s.total_add for s in plan.survivors)
    out.print(f"losing {plan.lost_dc}: {total} instance(s) to add across "
              f"{len(plan.survivors)} surviving DC(s)", markup=False)


def _render_survivor(lost_dc: str, survivor: SurvivorPlan, *, show_all: bool) -> None:
    table = Table(title=plain(f"{survivor.dc} without {lost_dc}: {survivor.share:.0%} of load"))
    table.add_column("tier", justify="right")
    table.add_column("service")
    for name in ("have", "need", "add"):
        table.add_column(name, justify="right")
    shown = [line for line in survivor.services if show_all or line.add > 0]
    for line in shown:
        table.add_row(str(line.tier), plain(line.service), str(line.have), str(line.need),
                      _add(line.add))
    if shown:
        out.print(table)
    hidden = len(survivor.services) - len(shown)
    out.print(
        f"{survivor.dc}: {survivor.total_add} instance(s) to add across "
        f"{sum(1 for s in survivor.services if s.add)} service(s)"
        + (f"; {hidden} service(s) already have enough (--all lists them)" if hidden else ""),
        markup=False,
    )


def _add(count: int) -> Text:
    """Instances to add, in bold when there are any."""
    return Text(str(count), style="bold" if count else "")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"
