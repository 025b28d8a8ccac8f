"""``revive sim serve``: run the simulated estate as an HTTP service for drills and tests.

Runbooks and their adapters talk HTTP to ops tools; a drill points them at this server
instead. Faults given on the command line are applied before the first request, so a drill
can start from "dc1 lost power" without a setup script. Bad input (topology, fault spec)
exits 2 before anything listens.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import typer
import uvicorn
from fastapi import FastAPI

from revive.cli.common import DEFAULT_TOPOLOGY, EXIT_INPUT, TopologyOption, load_topology
from revive.sim.app import create_app
from revive.sim.engine import Simulator
from revive.sim.estate import Estate, SimError

app = typer.Typer(
    help="Run the deterministic two-DC simulator.", no_args_is_help=True, add_completion=False
)

# kind -> (argument names after the kind, how to apply them)
FAULTS: dict[str, tuple[list[str], Callable[[Estate, list[str]], None]]] = {
    "power-loss": (["dc"], lambda e, a: e.power_loss(a[0])),
    "tool-down": (["tool", "dc"], lambda e, a: e.tool_down(a[0], a[1])),
    "tool-slow": (["tool", "dc", "seconds"], lambda e, a: e.tool_slow(a[0], a[1], float(a[2]))),
    "fail-restarts": (
        ["dc", "service", "count"],
        lambda e, a: e.fail_next_restarts(a[1], a[0], int(a[2])),
    ),
    "exhaust-quota": (["dc"], lambda e, a: e.exhaust_quota(a[0])),
}


def fault_usage() -> str:
    """Every accepted fault spec, e.g. ``power-loss:DC``."""
    return ", ".join(":".join([k, *(a.upper() for a in args)]) for k, (args, _) in FAULTS.items())


def apply_fault(estate: Estate, spec: str) -> None:
    """Apply one ``kind:arg[:arg...]`` fault; ValueError or SimError says what is wrong."""
    kind, *args = spec.split(":")
    if kind not in FAULTS:
        raise ValueError(f"unknown fault {kind!r} (known: {fault_usage()})")
    names, apply = FAULTS[kind]
    if len(args) != len(names):
        usage = ":".join([kind, *(n.upper() for n in names)])
        raise ValueError(f"fault {kind!r} takes {len(names)} argument(s): {usage}")
    apply(estate, args)


def run_server(api: FastAPI, host: str, port: int) -> None:
    """Serve until interrupted (a separate function so tests can replace it)."""
    uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="warning")).run()


@app.callback()
def main() -> None:
    """Run the deterministic two-DC simulator."""


@app.command("serve")
def serve(
    topology: TopologyOption = DEFAULT_TOPOLOGY,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random draw.")] = 0,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port to listen on.")] = 8700,
    fault: Annotated[
        list[str] | None,
        typer.Option("--fault", help="Fault applied at start, repeatable (e.g. power-loss:dc1)."),
    ] = None,
) -> None:
    """Serve the simulator's HTTP API (metrics, actions, faults, virtual clock)."""
    topo = load_topology(topology)
    try:
        sim = Simulator(topo, seed=seed)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_INPUT) from None
    for spec in fault or []:
        try:
            apply_fault(sim.estate, spec)
        except (ValueError, SimError) as exc:
            typer.echo(f"error: bad --fault {spec!r}: {exc}", err=True)
            raise typer.Exit(EXIT_INPUT) from None
    faults = f", faults: {' '.join(fault)}" if fault else ""
    typer.echo(f"revive sim serving on http://{host}:{port} (seed {seed}{faults})")
    sys.stdout.flush()
    run_server(create_app(sim), host, port)


if __name__ == "__main__":
    app()
