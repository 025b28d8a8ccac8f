"""``revive stack up|down|status``: the local, redundant orchestrator (``make serve``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from revive.cli.common import DEFAULT_TOPOLOGY, EXIT_INPUT, TopologyOption, fail, one_line, out
from revive.errors import InputError
from revive.orchestrator.stack_config import (
    DEFAULT_BOARD_PORT,
    DEFAULT_DATABASE_URL,
    DEFAULT_DIR,
    DEFAULT_PORT_BASE,
    DEFAULT_REDIS_URL,
    StackConfig,
)

app = typer.Typer(help="The local orchestrator: Prefect API replicas behind HAProxy on "
                  "PostgreSQL and Redis, one worker per DC, and the board.",
                  no_args_is_help=True)

DirOption = Annotated[Path, typer.Option(
    "--dir", envvar="REVIVE_STACK_DIR", help="Where the stack keeps its configs and logs.")]


def _dir(path: Path) -> Path:
    return path.expanduser().absolute()


@app.command("up")
def up_command(
    topology: TopologyOption = DEFAULT_TOPOLOGY,
    port_base: Annotated[int, typer.Option(
        "--port-base", min=1024, max=65532,
        help="Load balancer (the API and UI) on N, API replicas on N+1 and N+2, "
             "supervisord on N+3.")] = DEFAULT_PORT_BASE,
    board_port: Annotated[int, typer.Option(
        "--board-port", min=1, max=65535, help="revive serve (Slack app, board).")
    ] = DEFAULT_BOARD_PORT,
    database_url: Annotated[str, typer.Option(
        "--database-url", envvar="REVIVE_STACK_DATABASE_URL",
        help="Prefect's PostgreSQL database (created if missing).")] = DEFAULT_DATABASE_URL,
    redis_url: Annotated[str, typer.Option(
        "--redis-url", envvar="REVIVE_STACK_REDIS_URL",
        help="Redis for events, leases and the docket (its own db number).")
    ] = DEFAULT_REDIS_URL,
    dir: DirOption = DEFAULT_DIR,
) -> None:
    """Start everything and return once the API answers and every DC's worker registered."""
    from revive.orchestrator.stack import StackError, up
    from revive.topology import load

    try:
        estate = load(topology)
        config = StackConfig(
            dir=_dir(dir), repo=Path.cwd().absolute(), topology=topology.absolute(),
            pools=list(estate.dc_names), port_base=port_base, board_port=board_port,
            database_url=database_url, redis_url=redis_url)
    except InputError as exc:
        fail(exc, EXIT_INPUT)
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"{'.'.join(map(str, first['loc']))}: {first['msg']}", EXIT_INPUT)
    try:
        running, already = up(config, echo=lambda line: out.print(line, markup=False))
    except StackError as exc:
        fail(f"stack not started: {exc}")
    if already:
        out.print(f"the stack in {running.dir} is already up", markup=False)
    _urls(running)


def _urls(config: StackConfig) -> None:
    out.print(f"Prefect UI   {config.ui_url}", markup=False)
    out.print(f"Prefect API  {config.api_url}   (PREFECT_API_URL)", markup=False)
    out.print(f"board        {config.board_url}", markup=False)
    out.print(f"workers      {', '.join(config.pools)}   logs: {config.logs}", markup=False)


@app.command("down")
def down_command(dir: DirOption = DEFAULT_DIR) -> None:
    """Stop every process of the stack (flow runs its workers started included)."""
    from revive.orchestrator.stack import StackError, down, stack_pids

    try:
        recorded, ended = down(_dir(dir))
    except StackError as exc:
        fail(exc)
    left = stack_pids(_dir(dir))
    if left:
        fail(f"processes still running after down: {', '.join(map(str, left))}")
    if recorded:
        out.print(f"stack in {_dir(dir)} stopped ({ended} process(es) ended)", markup=False)
    else:
        out.print(f"no stack in {_dir(dir)}"
                  + (f"; ended {ended} stray process(es)" if ended else ""), markup=False)


@app.command("status")
def status_command(dir: DirOption = DEFAULT_DIR) -> None:
    """What runs; exit 1 when the stack is not (fully) up."""
    from rich.table import Table

    from revive.orchestrator.stack import StackError, status

    try:
        found = status(_dir(dir))
    except StackError as exc:
        fail(exc)
    if found is None:
        fail(f"no stack in {_dir(dir)} (revive stack up)")
    table = Table("program", "state")
    for name, state in found.programs.items():
        table.add_row(name, state)
    out.print(table)
    _urls(found.config)
    missing = [p for p in found.config.pools if not found.workers.get(p)]
    problems = []
    if not found.supervisord:
        problems.append("supervisord does not answer")
    if not found.api_healthy:
        problems.append("the API does not answer /api/health")
    if found.api_healthy and missing:
        problems.append(f"no worker online for {', '.join(missing)}")
    if problems:
        fail(one_line("; ".join(problems)))
