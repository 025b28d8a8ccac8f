"""The Slack app over HTTP: ``/slack/commands``, ``/slack/interactions`` and ``/healthz``.

Nothing is done for a request whose signature does not verify (401). Everything else is the
transport-independent ``SlackApp``: it answers within Slack's 3 seconds and starts long work
in the background, so the HTTP layer only verifies, decodes and returns the acknowledgement.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from slack_sdk.signature import Clock

from revive.web.approvals import Resume
from revive.web.dispatch import build_slack_app, parse_payload
from revive.web.replies import Job
from revive.web.settings import WebSettings
from revive.web.verify import make_verifier, verified_body

__all__ = ["create_app"]

log = logging.getLogger(__name__)

RETRY_HEADER = "X-Slack-Retry-Num"


def _form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"),
                                         keep_blank_values=True).items()}


def _retry(request: Request) -> int | None:
    value = request.headers.get(RETRY_HEADER, "")
    return int(value) if value.isdigit() else None


def create_app(
    settings: WebSettings | None = None,
    *,
    clock: Clock | None = None,
    start: Callable[[Job], None] | None = None,
    groups_of: Callable[[str], Iterable[str]] | None = None,
    http_client: httpx.Client | None = None,
    resume: Resume | None = None,
) -> FastAPI:
    """The ASGI app. ``clock`` is the signature clock; the rest go to ``build_slack_app``."""
    settings = settings if settings is not None else WebSettings()
    verifier = make_verifier(settings.slack_signing_secret.get_secret_value(), clock=clock)
    slack = build_slack_app(settings, start=start, groups_of=groups_of,
                            http_client=http_client, resume=resume)

    app = FastAPI(title="revive", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.slack = slack
    app.state.engine = slack.access.engine
    verified = Depends(verified_body(verifier))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/slack/commands")
    def slack_commands(request: Request, body: bytes = verified) -> JSONResponse:
        return JSONResponse(slack.command(_form(body), retry=_retry(request)))

    @app.post("/slack/interactions")
    def slack_interactions(request: Request, body: bytes = verified) -> Response:
        try:
            payload = parse_payload(_form(body))
        except ValueError:
            return JSONResponse({"error": "the body has no JSON payload"}, status_code=400)
        answer = slack.interaction(payload, retry=_retry(request))
        return JSONResponse(answer) if answer else Response(status_code=200)

    return app
