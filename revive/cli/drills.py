"""``revive drills``: the history of drills, with the trend of each tier's RTO."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from revive.cli.common import out, plain, store_errors
from revive.drill.charts import fmt_clock
from revive.drill.trend import FASTER, SLOWER, sparkline, tier_keys, trend
from revive.runs.drills import DrillSummary, recent_drills
from revive.store import db

OUTCOME_STYLES = {"recovered": "green", "late": "yellow", "degraded": "yellow",
                  "failed": "red", "aborted": "red"}
TREND_STYLES = {SLOWER: "red", FASTER: "green"}


def drills(
    limit: Annotated[int, typer.Option("--limit", min=1, max=500,
                                       help="How many drills, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """The drills so far (CLI, Slack, schedule), newest first: outcome and each tier's RTO
    against its target, with its trend against the drills before it (▲ slower, ▼ faster,
    = steady) and a sparkline per tier, oldest to newest."""
    with store_errors():
        engine = db.get_engine()
        try:
            db.upgrade(engine)
            history = recent_drills(engine, limit)
        finally:
            engine.dispose()
    if as_json:
        typer.echo(json.dumps([d.model_dump(mode="json") for d in history], indent=2))
        return
    if not history:
        out.print("no drills yet: run `revive drill`, or `/revive drill` in Slack", markup=False)
        return
    out.print(history_table(history))


def _clock(seconds: float | None) -> str:
    return "never" if seconds is None else fmt_clock(seconds)


def _earlier(history: list[DrillSummary], index: int, tier: str) -> list[float | None]:
    """The tier's RTOs in the drills older than ``history[index]`` of the same scenario and
    target, newest first: a drill is compared with its own kind."""
    this = history[index]
    return [d.rto_s.get(tier) for d in history[index + 1:]
            if d.scenario == this.scenario and d.target == this.target and tier in d.rto_s]


def history_table(history: list[DrillSummary]) -> Table:
    """The history as a table; every value from the store is ``plain`` text, never markup.

    A tier's column names its target (the newest drill's); a cell repeats the target only
    where that drill had another one. A time over its target is red."""
    tiers = tier_keys(d.rto_s for d in history)
    targets = {tier: next((d.target_s[tier] for d in history if tier in d.target_s), None)
               for tier in tiers}
    table = Table(title="drills (newest first)", box=box.SIMPLE_HEAD, show_footer=True,
                  pad_edge=False)
    table.add_column("when (UTC)", footer="trend, old → new", min_width=16)
    table.add_column("scenario", overflow="fold")
    table.add_column("lost DC")
    table.add_column("trigger", min_width=8)
    table.add_column("outcome", min_width=9)
    for tier in tiers:
        target = targets[tier]
        head = f"{tier} RTO" + ("" if target is None else f"\n≤ {_clock(target)}")
        series = [d.rto_s.get(tier) for d in reversed(history) if tier in d.rto_s]
        table.add_column(head, footer=sparkline(series), justify="right", no_wrap=True,
                         min_width=9)
    table.add_column("slow", justify="right", min_width=4)
    for i, d in enumerate(history):
        cells: list[Text | str] = [
            d.started_at.strftime("%Y-%m-%d %H:%M"), plain(d.scenario), plain(d.lost_dc),
            plain(d.trigger), Text(d.outcome, style=OUTCOME_STYLES.get(d.outcome, "")),
        ]
        for tier in tiers:
            if tier not in d.rto_s:
                cells.append("-")
                continue
            cells.append(_rto_cell(d.rto_s[tier], d.target_s.get(tier), targets[tier],
                                   trend(d.rto_s[tier], _earlier(history, i, tier))))
        cells.append(str(len(d.slow_steps)) if d.slow_steps else "")
        table.add_row(*cells)
    return table


def _rto_cell(rto: float | None, target: float | None, column_target: float | None,
              mark: str) -> Text:
    missed = rto is None or (target is not None and rto > target)
    cell = Text(_clock(rto), style="bold red" if missed else "")
    if target is not None and target != column_target:
        cell.append(f" / {_clock(target)}")
    cell.append(f" {mark}", style=TREND_STYLES.get(mark, ""))
    return cell
