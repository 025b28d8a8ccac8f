"""``revive runs export`` and ``revive runs import``: carry finished runs (with their steps,
gate decisions, audit events and topology) from one store into another, typically from a
break-glass ``revive run --local`` on a laptop into the team's central store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from revive.cli.common import err, store_errors, user_errors, whoami
from revive.errors import InputError
from revive.runs.approvals import os_identity
from revive.runs.transfer import export_runs, import_runs, parse_since
from revive.store import db

app = typer.Typer(help="Carry finished runs between stores (after a break-glass --local run).",
                  no_args_is_help=True)


@app.command("export")
def export(
    out_file: Annotated[Path | None, typer.Option(
        "--out", help="File to write (default: standard output).", show_default=False,
        dir_okay=False)] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only runs started since: an ISO date or time (UTC), or an age "
        "(90m, 12h, 7d).", show_default=False)] = None,
) -> None:
    """Write the finished runs of this store (REVIVE_DATABASE_URL) as JSON lines: one run per
    line with its steps, gate decisions, audit events and topology. Unfinished runs are
    left out and named."""
    with user_errors():
        start = parse_since(since) if since is not None else None
    with store_errors():
        engine = db.get_engine()
        try:
            db.upgrade(engine)
            lines, unfinished = export_runs(engine, since=start)
        finally:
            engine.dispose()
    text = "".join(f"{line}\n" for line in lines)
    if out_file is None:
        sys.stdout.write(text)
        where = "standard output"
    else:
        try:
            out_file.write_text(text, encoding="utf-8")
        except OSError as exc:
            with user_errors():
                raise InputError(f"--out: cannot write {out_file}: {exc.strerror}") from None
        where = str(out_file)
    err.print(f"exported {len(lines)} finished run(s) to {where}", markup=False,
              soft_wrap=True)
    if unfinished:
        err.print(f"left out {len(unfinished)} unfinished run(s) (running or crashed; finish, "
                  f"resume or abort them first): {', '.join(unfinished)}", markup=False,
                  soft_wrap=True)


@app.command("import")
def import_(
    source: Annotated[str, typer.Argument(
        help="JSON lines from `revive runs export` ('-': standard input).")],
) -> None:
    """Add the runs of an export to this store (REVIVE_DATABASE_URL), all or nothing: every
    line is checked first; runs the store already has are skipped; unfinished runs are
    refused."""
    with user_errors():
        lines = _read(source)
    with store_errors():
        engine = db.get_engine()
        try:
            db.upgrade(engine)
            with user_errors():
                report = import_runs(engine, lines, where=source, by=os_identity(whoami()))
        finally:
            engine.dispose()
    typer.echo(f"imported {len(report.imported)} run(s) into {db.mask_url(db.database_url())}"
               + (f"; skipped {len(report.skipped)} already there" if report.skipped else ""))


def _read(source: str) -> list[str]:
    if source == "-":
        return sys.stdin.read().splitlines()
    try:
        return Path(source).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{source}: not UTF-8 text (expected JSON lines from "
                         "`revive runs export`)") from None
    except OSError as exc:
        raise InputError(f"{source}: cannot read it: {exc.strerror}") from None
