"""``revive serve``: the web app Slack talks to (commands and buttons), on one host and port."""

from __future__ import annotations

import signal
import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from revive.cli.common import EXIT_INPUT

HOST_HELP = "Interface to listen on (behind your TLS-terminating proxy)."


def serve(
    host: Annotated[str, typer.Option("--host", help=HOST_HELP)] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port.")] = 8800,
) -> None:
    """Serve /slack/commands, /slack/interactions and /healthz; configured by REVIVE_* variables."""
    import uvicorn

    from revive.web.app import create_app
    from revive.web.settings import WebSettings

    try:
        api = create_app(WebSettings())
    except (ValidationError, ValueError) as exc:
        typer.echo(f"cannot start: {exc}", err=True)
        raise typer.Exit(EXIT_INPUT) from None
    typer.echo(f"revive listening on http://{host}:{port} "
               "(POST /slack/commands, POST /slack/interactions)")
    # uvicorn re-raises SIGTERM after its graceful shutdown; by default that kills the
    # process before exit handlers run, orphaning the temporary Prefect server that runs
    # started here use. Exiting normally instead lets Prefect stop it.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(0))
    uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="warning")).run()
