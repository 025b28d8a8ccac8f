"""The ``revive`` command line: one Typer sub-app per command group."""

from __future__ import annotations

import os

import typer

from revive.cli import (
    check,
    db,
    deploy,
    docs,
    drills,
    lab,
    plan,
    records,
    runs,
    serve,
    sim,
    slack,
    stack,
)
from revive.prefect_server import STARTUP_TIMEOUT_S

app = typer.Typer(
    name="revive",
    help="Recovery runbooks that execute themselves: check, plan and run DC recoveries.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.command("check")(check.check)
app.command("run")(runs.run)
app.command("status")(runs.status)
app.command("abort")(runs.abort)
app.command("approve")(runs.approve)
app.command("drill")(runs.drill)
app.command("drills")(drills.drills)
app.command("serve")(serve.serve)
app.command("deploy")(deploy.deploy)
app.add_typer(plan.app, name="plan")
app.add_typer(db.app, name="db")
app.add_typer(sim.app, name="sim")
app.add_typer(slack.app, name="slack")
app.add_typer(lab.app, name="lab")
app.add_typer(docs.app, name="docs")
app.add_typer(stack.app, name="stack")
app.add_typer(records.app, name="runs")


#: Seconds a command waits for the temporary Prefect server it starts when no
#: ``PREFECT_API_URL`` is set (see ``revive.prefect_server``, which also passes it to the
#: one shared server it starts).
EPHEMERAL_STARTUP_TIMEOUT_S = str(STARTUP_TIMEOUT_S)


def main() -> None:
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
                          EPHEMERAL_STARTUP_TIMEOUT_S)
    app()
