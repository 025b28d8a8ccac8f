"""``revive deploy``: Prefect work pools and deployments made from the topology."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from revive.cli.common import (
    DEFAULT_TOPOLOGY,
    EXIT_INPUT,
    JsonOption,
    TopologyOption,
    fail,
    load_topology,
    out,
    print_json,
)

if TYPE_CHECKING:
    from revive.orchestrator.deploy import DeployPlan

HOME_HELP = ("The checkout the workers run flows from, the same path on every worker host "
             "(default: $REVIVE_HOME, else this directory).")
YAML_HELP = "Write the deployments as a prefect.yaml at this path instead of applying them."


def deploy(
    topology: TopologyOption = DEFAULT_TOPOLOGY,
    home: Annotated[str | None, typer.Option("--home", help=HOME_HELP)] = None,
    write_prefect_yaml: Annotated[Path | None, typer.Option(
        "--write-prefect-yaml", help=YAML_HELP)] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print what would be deployed; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Create (or update) a process work pool per DC and every runbook on every pool
    (<flow>/<flow>-from-<dc>), with the daily readiness check, the weekly drill and the
    zombie-run automation, on the Prefect server at $PREFECT_API_URL."""
    from revive.orchestrator.deploy import plan, prefect_yaml

    estate = load_topology(topology)
    home = home or os.environ.get("REVIVE_HOME") or str(Path.cwd())
    made = plan(estate, topology_path=str(topology), home=home)
    if write_prefect_yaml is not None:
        if write_prefect_yaml.is_dir():
            fail(f"--write-prefect-yaml: {write_prefect_yaml} is a directory", EXIT_INPUT)
        write_prefect_yaml.write_text(prefect_yaml(made))
        out.print(f"wrote {len(made.deployments)} deployments on {len(made.pools)} pools "
                  f"to {write_prefect_yaml}", markup=False)
        return
    if dry_run:
        if as_json:
            print_json(made)
            return
        for spec in made.deployments:
            when = ", ".join(s.cron for s in spec.schedules) or "unscheduled"
            out.print(f"{spec.full_name}  pool {spec.pool}  {when}", markup=False)
        return
    api = os.environ.get("PREFECT_API_URL", "").strip()
    if not api:
        fail("PREFECT_API_URL is not set: revive deploy applies to a running Prefect server "
             "(or use --write-prefect-yaml, or --dry-run)", EXIT_INPUT)
    try:
        lines = asyncio.run(_apply(made))
    except Exception as exc:  # the server's answer, in one line
        fail(f"cannot deploy to {api}: {exc}")
    if as_json:
        print_json({"api": api, "changes": lines})
        return
    for line in lines:
        out.print(line, markup=False)
    out.print(f"{len(made.deployments)} deployments on pools {', '.join(made.pools)} at {api}",
              markup=False)


async def _apply(made: DeployPlan) -> list[str]:
    from prefect.client.orchestration import get_client

    from revive.orchestrator.deploy import apply

    async with get_client() as client:
        return await apply(made, client)
