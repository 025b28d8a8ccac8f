"""``revive docs``: runbook documents that outlive revive and the wiki."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from revive.cli.common import (
    DEFAULT_TOPOLOGY,
    EXIT_INPUT,
    TopologyOption,
    fail,
    load_topology,
    out,
)

app = typer.Typer(help="Runbook documents: a static site to copy to every DC.",
                  no_args_is_help=True)

DEFAULT_OUT = Path(".revive") / "docs"


@app.command("build")
def build(
    topology: TopologyOption = DEFAULT_TOPOLOGY,
    out_dir: Annotated[Path, typer.Option(
        "--out", "-o", help="Directory to write the site into (created if needed; other "
        "files in it are left alone).")] = DEFAULT_OUT,
) -> None:
    """Render the runbook documents: every runbook's steps with the manual fallback of each,
    services with tier, owner and dependencies, restart orders. Open index.html."""
    from revive.docs import build_site
    from revive.runs.catalog import ALIASES, RUNBOOKS

    estate = load_topology(topology)
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out {out_dir}: exists and is not a directory", EXIT_INPUT)
    try:
        written = build_site(estate, out_dir, source=str(topology), catalog=RUNBOOKS,
                             aliases=ALIASES)
    except OSError as exc:
        fail(f"--out {out_dir}: cannot write the site: {exc.strerror or exc}", EXIT_INPUT)
    out.print(f"{len(written)} page(s) written; open {out_dir / 'index.html'}", markup=False)
