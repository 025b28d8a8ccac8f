"""The web app: the Slack app over HTTP (``/slack/commands``, ``/slack/interactions``), the
status board (``/``, ``/board.json``: revive/web/board.py) and ``/healthz``.

Without a signing secret the Slack endpoints are off, answering 503 with the reason before
reading anything, and the board still serves: an estate can watch before it wires Slack.
With one, nothing is done for a request whose signature does not verify (401), and no body
is read past ``MAX_BODY_BYTES`` (413). Everything else is the transport-independent ``SlackApp``: it
answers within Slack's 3 seconds and starts long work in the background, so the HTTP layer
only verifies, decodes and returns the acknowledgement. Input that cannot be Slack's is a 4xx
with a one-line reason, never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from slack_sdk.signature import Clock

from revive.store import db
from revive.web.access import Access
from revive.web.approvals import Resume
from revive.web.board import board_router
from revive.web.board_data import BoardSource
from revive.web.dispatch import MalformedRequest, SlackApp, build_slack_app, parse_payload
from revive.web.replies import Job
from revive.web.settings import WebSettings
from revive.web.verify import SignedBody, make_verifier, verified_body

__all__ = ["create_app"]

log = logging.getLogger(__name__)

RETRY_HEADER = "X-Slack-Retry-Num"
#: A form has a dozen fields; more is not Slack's.
MAX_FORM_FIELDS = 100


def _form(body: bytes) -> dict[str, str]:
    """The form fields; ``MalformedRequest`` for a form that cannot be Slack's."""
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True,
                          max_num_fields=MAX_FORM_FIELDS)
    except ValueError as exc:
        raise MalformedRequest(f"the form cannot be read ({exc})") from None
    return {k: v[0] for k, v in fields.items()}


def _retry(request: Request) -> int | None:
    """Slack's delivery attempt, for the log; the header is not signed, so anything else
    (non-ASCII digits included) is ignored."""
    value = request.headers.get(RETRY_HEADER, "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 6 else None


def _bad_request(exc: MalformedRequest) -> JSONResponse:
    log.warning("refused a signed Slack request: %s", exc)
    return JSONResponse({"error": str(exc)}, status_code=400)


SLACK_OFF = ("the Slack endpoints are off: REVIVE_SLACK_SIGNING_SECRET is not set, so Slack "
             "requests cannot be verified")


def _slack_off() -> JSONResponse:
    return JSONResponse({"error": SLACK_OFF}, status_code=503)


def create_app(
    settings: WebSettings | None = None,
    *,
    clock: Clock | None = None,
    start: Callable[[Job], None] | None = None,
    groups_of: Callable[[str], Iterable[str]] | None = None,
    http_client: httpx.Client | None = None,
    resume: Resume | None = None,
) -> FastAPI:
    """The ASGI app. ``clock`` is the signature clock; the rest go to ``build_slack_app``.

    The store is migrated here; without a signing secret no Slack app is built."""
    settings = settings if settings is not None else WebSettings()
    slack: SlackApp | None = None
    if settings.slack_enabled:
        verifier = make_verifier(settings.slack_signing_secret.get_secret_value(), clock=clock)
        slack = build_slack_app(settings, start=start, groups_of=groups_of,
                                http_client=http_client, resume=resume,
                                clock=clock.now if clock is not None else None)
        access = slack.access
    else:
        engine = db.get_engine()
        db.upgrade(engine)
        access = Access(settings, engine)

    app = FastAPI(title="revive", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.slack = slack
    app.state.engine = access.engine
    app.state.board = BoardSource(access.engine, access.topology, settings.topology)
    app.include_router(board_router(app.state.board,
                                    settings.board_token.get_secret_value().strip()))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if slack is None:
        @app.post("/slack/commands")
        def slack_commands_off() -> JSONResponse:
            return _slack_off()

        @app.post("/slack/interactions")
        def slack_interactions_off() -> JSONResponse:
            return _slack_off()

        return app
    on: SlackApp = slack
    verified = Depends(verified_body(verifier))

    @app.post("/slack/commands")
    def slack_commands(request: Request, signed: SignedBody = verified) -> JSONResponse:
        try:
            form = _form(signed.body)
        except MalformedRequest as exc:
            return _bad_request(exc)
        return JSONResponse(on.command(form, retry=_retry(request), signed=signed.signed))

    @app.post("/slack/interactions")
    def slack_interactions(request: Request, signed: SignedBody = verified) -> Response:
        try:
            payload = parse_payload(_form(signed.body))
            answer = on.interaction(payload, retry=_retry(request), signed=signed.signed)
        except MalformedRequest as exc:
            return _bad_request(exc)
        return JSONResponse(answer) if answer else Response(status_code=200)

    return app
