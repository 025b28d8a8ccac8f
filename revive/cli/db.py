"""``revive db``: bring revive's own database to the current schema, or say where it is.

Exit status 1 when the database cannot be reached or migrated: that is the environment, not
the command line, so it is not the input-error status 2.
"""

from __future__ import annotations

from typing import Annotated

import typer

from revive.cli.common import fail
from revive.errors import StoreError
from revive.store.db import current_revision, database_url, head_revision, mask_url, upgrade

app = typer.Typer(
    help="Manage revive's own database (runs, steps, audit trail).",
    no_args_is_help=True,
)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Database URL. Default: $REVIVE_DATABASE_URL, else .revive/revive.db under cwd.",
        show_default=False,
    ),
]


@app.command("upgrade")
def upgrade_command(url: UrlOption = None) -> None:
    """Migrate the database to the newest schema (safe to repeat)."""
    target = url or database_url()
    try:
        revision = upgrade(target)
    except StoreError as exc:
        fail(exc)
    typer.echo(f"{mask_url(target)} at revision {revision} (head)")


@app.command("current")
def current_command(url: UrlOption = None) -> None:
    """Print the schema revision the database is at ("none" if never migrated)."""
    target = url or database_url()
    try:
        revision = current_revision(target)
    except StoreError as exc:
        fail(exc)
    head = head_revision()
    if revision is None:
        note = f"not migrated; run 'revive db upgrade' (head is {head})"
    elif revision == head:
        note = "head"
    else:
        note = f"head is {head}"
    typer.echo(f"{mask_url(target)} at revision {revision or 'none'} ({note})")
