"""``revive check``: the readiness findings for a topology."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer
from rich import box
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
)
from revive.ops.toolbox import SIM_URL_ENV
from revive.readiness import Report, Severity, run_check
from revive.readiness.probe import probe_findings

STYLE = {Severity.error: "bold red", Severity.warning: "yellow", Severity.info: "cyan"}


def check(
    topology: TopologyOption = DEFAULT_TOPOLOGY,
    as_json: JsonOption = False,
    probe: Annotated[bool, typer.Option(
        "--probe", help="Also ask every replica of every ops tool whether it answers "
        f"(simulator tools only with ${SIM_URL_ENV}).")] = False,
) -> None:
    """Report readiness findings. Exit 0 without errors, 1 with errors, 2 on invalid input."""
    estate = load_topology(topology)
    extra = []
    if probe:
        extra = asyncio.run(probe_findings(estate, sim_url=os.environ.get(SIM_URL_ENV)))
    report = run_check(estate, extra)
    if as_json:
        print_json(report)
    else:
        render(report, str(topology))
    if report.has_errors:
        raise typer.Exit(1)


def render(report: Report, source: str) -> None:
    """The findings as a table. Subjects and messages name services, DCs and tools from the
    topology, and the source is a path someone typed: all printed as written, never read
    as Rich markup."""
    table = Table(title=plain(f"Readiness of {source}"), box=box.SIMPLE_HEAD, expand=False)
    table.add_column("severity", no_wrap=True)
    table.add_column("rule", no_wrap=True)
    table.add_column("subject", no_wrap=True)
    table.add_column("finding, and how to fix it")
    for f in report.findings:
        table.add_row(
            Text(str(f.severity), style=STYLE[f.severity]),
            plain(f.rule),
            plain(f.subject),
            Text.assemble(f.message, "\n", (f"fix: {f.hint}", "dim")),
        )
    if report.findings:
        out.print(table)
    counts = ", ".join(f"{report.count(s)} {s}(s)" for s in Severity)
    out.print(f"{len(report.findings)} finding(s): {counts}", markup=False)
