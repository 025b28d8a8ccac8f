"""``revive serve``: the web app Slack talks to (commands and buttons) and the status board,
on one host and port."""

from __future__ import annotations

import signal
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from revive.cli.common import EXIT_INPUT, fail
from revive.errors import InputError, StoreError

HOST_HELP = "Interface to listen on (behind your TLS-terminating proxy)."
#: Signals that stop the server through a normal exit.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def serve(
    host: Annotated[str, typer.Option("--host", help=HOST_HELP)] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port.")] = 8800,
) -> None:
    """Serve the status board (/), /slack/commands, /slack/interactions and /healthz;
    configured by REVIVE_* variables.

    Without REVIVE_SLACK_SIGNING_SECRET the Slack endpoints answer 503 and the board serves.
    What is missing for Slack is said at start, one line each on stderr. Exit status 2 when
    the configuration is invalid, 1 when revive's database cannot be reached or migrated,
    0 after a stop (SIGTERM, SIGHUP, Ctrl-C)."""
    import uvicorn

    from revive.prefect_server import install
    from revive.web.app import create_app
    from revive.web.settings import WebSettings, startup_warnings

    install()  # runs started here together share one temporary Prefect server
    try:
        settings = WebSettings()
        api = create_app(settings)
    except (ValidationError, ValueError, InputError) as exc:
        fail(f"cannot start: {exc}", EXIT_INPUT)
    except StoreError as exc:
        fail(f"cannot start: {exc}")
    for warning in startup_warnings(settings, host=host):
        typer.echo(warning, err=True)
    slack = ("POST /slack/commands, POST /slack/interactions" if settings.slack_enabled
             else "Slack endpoints off")
    typer.echo(f"revive listening on http://{host}:{port} (status board GET /, {slack})")
    exit_on_signals()
    uvicorn.Server(uvicorn.Config(api, host=host, port=port, log_level="warning")).run()


def exit_on_signals() -> None:
    """Make SIGTERM, SIGHUP and SIGINT end this process with a normal exit (status 0).

    Exit handlers then run, and Prefect's stops the temporary server that runs started
    here share. uvicorn handles SIGTERM and SIGINT while it serves, then re-raises them
    after its graceful shutdown; left at their defaults, SIGTERM and SIGHUP kill the
    process before exit handlers run, orphaning that server."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _exit_normally)


def _exit_normally(_signum: int, _frame: Any) -> None:
    sys.exit(0)
