"""``revive docs``: runbook documents that outlive revive and the wiki."""

from __future__ import annotations

import typer

app = typer.Typer(help="Runbook documents: a static site to copy to every DC.",
                  no_args_is_help=True)
