"""What every CLI command shares: the topology option, JSON output and user-error exits."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console

from revive.errors import InputError
from revive.topology import DEFAULT_PATH, Topology, load

EXIT_INPUT = 2

WIDTH_WHEN_PIPED = 120


def _console(*, stderr: bool = False) -> Console:
    """A console that keeps tables readable in CI logs and pipes, where Rich assumes 80."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else WIDTH_WHEN_PIPED
    return Console(stderr=stderr, highlight=False, width=width)


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


def load_topology(path: Path) -> Topology:
    with user_errors():
        return load(path)


def print_json(payload: BaseModel | dict[str, Any]) -> None:
    data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
