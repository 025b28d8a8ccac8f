"""What every CLI command shares: the topology option, JSON output, error exits, and text that
Rich prints exactly as given."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.text import Text

from revive.errors import InputError, StoreError
from revive.topology import DEFAULT_PATH, Topology, load

EXIT_FAILED = 1
"""A run failed or was aborted, or the environment (revive's database) failed the command."""
EXIT_INPUT = 2

WIDTH_WHEN_PIPED = 120


def _console(*, stderr: bool = False) -> Console:
    """A console that keeps tables readable in CI logs and pipes, where Rich assumes 80."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else WIDTH_WHEN_PIPED
    # emoji=False: a name like "db:fire:" is printed as written, never as a picture.
    # soft_wrap on stderr: an error is one line however long, for people and for scripts.
    return Console(stderr=stderr, highlight=False, emoji=False, width=width, soft_wrap=stderr)


out = _console()
err = _console(stderr=True)

TopologyOption = Annotated[
    Path,
    typer.Option(
        "--topology",
        "-t",
        envvar="REVIVE_TOPOLOGY",
        help="Topology file describing DCs, ops tools and services.",
        show_default=True,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

DEFAULT_TOPOLOGY = DEFAULT_PATH


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a mistake in the input into its located message and exit status 2."""
    try:
        yield
    except InputError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(EXIT_INPUT) from None


def one_line(text: object) -> str:
    """``text`` with every run of whitespace, newlines included, as one space."""
    return " ".join(str(text).split())


def fail(message: object, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``message`` as one line on stderr and exit with ``code``: no traceback."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


@contextmanager
def store_errors() -> Iterator[None]:
    """revive's database unreachable or failing to migrate: the environment, not the input,
    so one line and exit status 1, never a traceback."""
    try:
        yield
    except StoreError as exc:
        fail(exc)


def plain(value: object) -> Text:
    """``value`` as text Rich prints exactly as given.

    Names from the topology, from people (who started a run) and from tools (error
    messages) can contain what Rich reads as markup: "[bold]" would restyle the output,
    "[/]" would make Rich raise. Table cells and titles built from them use this."""
    return Text(str(value))


def load_topology(path: Path) -> Topology:
    with user_errors():
        return load(path)


def print_json(payload: BaseModel | dict[str, Any]) -> None:
    data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def whoami() -> str:
    """The operating-system user running the command: who the CLI says started a run."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER", "unknown")
