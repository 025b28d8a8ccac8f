"""``revive lab up | status | down``: DCs of real processes on this machine.

``up`` detaches every daemon (logs under the lab directory, nothing on this terminal) and
prints where the lab is and which topology describes it; ``down`` stops all of it, also
after an ``up`` that crashed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from revive.cli.common import JsonOption, err, out, print_json

app = typer.Typer(help="A lab of real processes, one set per DC.", no_args_is_help=True,
                  add_completion=False)

DirOption = Annotated[Path | None, typer.Option(
    "--dir", help="The lab's directory (default: the last one `up` used, or .revive/lab).")]


@app.command("up")
def lab_up(
    dir: DirOption = None,
    dcs: Annotated[str, typer.Option("--dcs", help="Comma-separated DC names.")] = "dc1,dc2",
    loopback: Annotated[bool, typer.Option(
        "--loopback", help="Loopback addresses instead of network namespaces.")] = False,
) -> None:
    """Start the lab; print its directory and topology."""
    from revive.lab.daemon import DaemonError
    from revive.lab.estate import up

    names = tuple(d.strip() for d in dcs.split(",") if d.strip())
    if len(names) < 2 or len(set(names)) != len(names):
        err.print("--dcs: give two or more distinct DC names", markup=False)
        raise typer.Exit(2)
    try:
        with out.status("lab: starting") as spinner:
            state = up(dir, dcs=names, prefer_netns=not loopback,
                       progress=lambda msg: spinner.update(f"lab: {msg}"))
    except DaemonError as exc:
        err.print(f"lab up failed (everything it started was stopped): {exc}", markup=False)
        raise typer.Exit(1) from None
    out.print(f"lab up in {state.dir} ({state.isolation}"
              + (f": {state.isolation_note}" if state.isolation_note else "") + ")")
    out.print(f"topology: {state.topology}")
    out.print("drill it: revive drill --target lab --lost-dc " + state.dcs[0].name)


@app.command("status")
def lab_status(dir: DirOption = None, as_json: JsonOption = False) -> None:
    """Each DC's components (running, answering) and the users' success per class."""
    from revive.lab.estate import LabError, status

    try:
        report = status(dir)
    except LabError as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(1) from None
    if as_json:
        print_json(report)
        return
    table = Table(title=f"lab in {report['dir']} ({report['isolation']})", box=box.SIMPLE_HEAD)
    for column in ("dc", "component", "pid", "running", "answering"):
        table.add_column(column)
    for dc in report["dcs"]:
        for name, part in dc["components"].items():
            table.add_row(dc["name"] + (" (fired)" if dc["fired"] else ""), name,
                          str(part["pid"]), "yes" if part["running"] else "no",
                          {True: "yes", False: "no", None: "-"}[part["answering"]])
    out.print(table)
    users = ", ".join(f"{c} {'-' if v is None else f'{v:.0%}'}"
                      for c, v in report["users_success"].items())
    out.print(f"users served (last 5 s): {users}")


@app.command("down")
def lab_down(dir: DirOption = None) -> None:
    """Stop everything the lab started."""
    from revive.lab.estate import down, lab_dir

    stopped = down(dir)
    out.print(f"lab in {lab_dir(dir)} is down ({len(stopped)} processes stopped)")
