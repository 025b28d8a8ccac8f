"""``revive check``: the readiness findings for a topology."""

from __future__ import annotations

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from revive.cli.common import (
    DEFAULT_TOPOLOGY,
    JsonOption,
    TopologyOption,
    load_topology,
    out,
    print_json,
)
from revive.readiness import Report, Severity, run_check

STYLE = {Severity.error: "bold red", Severity.warning: "yellow", Severity.info: "cyan"}


def check(
    topology: TopologyOption = DEFAULT_TOPOLOGY,
    as_json: JsonOption = False,
) -> None:
    """Report readiness findings. Exit 0 without errors, 1 with errors, 2 on invalid input."""
    report = run_check(load_topology(topology))
    if as_json:
        print_json(report)
    else:
        render(report, str(topology))
    if report.has_errors:
        raise typer.Exit(1)


def render(report: Report, source: str) -> None:
    table = Table(title=f"Readiness of {source}", box=box.SIMPLE_HEAD, expand=False)
    table.add_column("severity", no_wrap=True)
    table.add_column("rule", no_wrap=True)
    table.add_column("subject", no_wrap=True)
    table.add_column("finding, and how to fix it")
    for f in report.findings:
        style = STYLE[f.severity]
        table.add_row(
            f"[{style}]{f.severity}[/]",
            f.rule,
            f.subject,
            f"{escape(f.message)}\n[dim]fix: {escape(f.hint)}[/]",
        )
    if report.findings:
        out.print(table)
    counts = ", ".join(f"{report.count(s)} {s}(s)" for s in Severity)
    out.print(f"{len(report.findings)} finding(s): {counts}")
