"""``revive slack socket``: the Slack app over Socket Mode, for estates with no public endpoint.

Run one per DC: Slack spreads requests over every connected runner, so chat control
survives the loss of a DC. Configuration comes from the environment: REVIVE_SLACK_APP_TOKEN
(the app-level ``xapp-`` token; required), REVIVE_SLACK_API_URL (Web API base URL),
REVIVE_SLACK_BOT_TOKEN (user-group lookups) and REVIVE_SLACK_CHANNEL (run progress), plus
the REVIVE_* settings ``revive serve`` reads, except the signing secret, which Socket Mode
does not use.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from revive.cli.common import EXIT_INPUT, fail
from revive.errors import ReviveError, StoreError

app = typer.Typer(help="The Slack app: Socket Mode runner.", no_args_is_help=True)

TOPOLOGY_HELP = "Topology file (its environment picks the roles); default: REVIVE_TOPOLOGY."
PING_HELP = "Seconds between keepalive pings; a connection silent for 4 pings is replaced."
NAME_HELP = "Name of this runner in the log, e.g. its DC."


@app.command("socket")
def socket(
    topology: Annotated[Path | None, typer.Option("--topology", "-t", help=TOPOLOGY_HELP)] = None,
    ping_interval: Annotated[float, typer.Option("--ping-interval", min=1.0, max=60.0,
                                                 help=PING_HELP)] = 5.0,
    name: Annotated[str, typer.Option("--name", help=NAME_HELP)] = "",
) -> None:
    """Connect to Slack in Socket Mode and answer /revive and its buttons until stopped."""
    from revive.web.dispatch import build_slack_app
    from revive.web.settings import WebSettings
    from revive.web.socket_mode import (
        SocketModeRefused,
        SocketModeRunner,
        app_token_from_env,
        run_until_stopped,
        web_client_from_env,
    )

    try:
        app_token = app_token_from_env()
        web_client = web_client_from_env()
        settings = WebSettings()
        if topology is not None:
            settings = settings.model_copy(update={"topology": str(topology)})
    except (ValidationError, ValueError) as exc:
        typer.echo(f"cannot start: {exc}", err=True)
        raise typer.Exit(EXIT_INPUT) from None
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        slack_app = build_slack_app(settings)  # migrates the store: it must be reachable
    except StoreError as exc:  # the environment, not the configuration: exit 1, as serve
        fail(f"cannot start: {exc}")
    except ReviveError as exc:
        typer.echo(f"cannot start: {exc}", err=True)
        raise typer.Exit(EXIT_INPUT) from None
    from revive.prefect_server import install

    install()  # runs started here together share one temporary Prefect server
    runner = SocketModeRunner(slack_app, app_token, web_client, name=name,
                              ping_interval=ping_interval)
    stop = threading.Event()
    previous = _on_signals(stop)
    typer.echo(f"revive Slack Socket Mode runner{f' {name}' if name else ''} starting "
               f"(topology {settings.topology}); Ctrl-C to stop")
    try:
        run_until_stopped(runner, stop)
    except SocketModeRefused as exc:
        typer.echo(f"cannot start: {exc}", err=True)
        raise typer.Exit(EXIT_INPUT) from None
    finally:
        _restore(previous)
    typer.echo("revive Slack Socket Mode runner stopped")


def _on_signals(stop: threading.Event) -> dict[int, Any]:
    """SIGINT and SIGTERM set ``stop``; the handlers replaced (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda _signum, _frame: stop.set())
    return previous


def _restore(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
