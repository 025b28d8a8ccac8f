"""The Slack app over HTTP: ``/slack/commands`` and ``/healthz``.

Slack gives a slash command 3 seconds to be answered, and a recovery takes minutes, so the
endpoint only parses, authorises, audits and answers; an accepted ``run`` or ``drill`` is
handed to a background thread that calls the same flows ``revive run`` calls and posts the
outcome to the command's ``response_url`` afterwards. Nothing is done for a request whose
signature does not verify. A failure to reach Slack later is logged and never stops a run.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from slack_sdk.signature import Clock

from revive.chat.text import slack_escape
from revive.errors import ReviveError
from revive.store import db
from revive.web.commands import Caller, CommandHandler, Job, Reply, run_outcome_text
from revive.web.settings import WebSettings
from revive.web.verify import make_verifier, verified_body

__all__ = ["BackgroundRunner", "create_app"]

log = logging.getLogger(__name__)

POST_TIMEOUT_S = 10.0


class BackgroundRunner:
    """Runs accepted jobs on their own threads and posts each outcome to ``response_url``.

    ``client`` is the HTTP client used for posting (tests pass one with a mock transport).
    """

    def __init__(self, client: httpx.Client | None = None) -> None:
        self.client = client
        self.handler: CommandHandler | None = None
        self.threads: list[threading.Thread] = []

    def start(self, job: Job) -> None:
        """Start ``job`` without waiting for it."""
        thread = threading.Thread(target=self.execute, args=(job,), daemon=True,
                                  name=f"revive-slack-{job.kind}-{job.name}")
        self.threads = [t for t in self.threads if t.is_alive()]
        self.threads.append(thread)
        thread.start()

    def execute(self, job: Job) -> None:
        """Run ``job`` to its end (in this thread), audit how it ended, post the outcome."""
        from revive.runs import ActiveRunError

        run_id: str | None = None
        try:
            result = asyncio.run(job.flow(job.params))
            text, outcome = run_outcome_text(job, result)
            if isinstance(result, dict) and isinstance(result.get("run_id"), str):
                run_id = result["run_id"]
        except ActiveRunError as exc:
            run_id = exc.run_id
            text = (f":information_source: {slack_escape(str(exc))}; watch it with "
                    f"`/revive status`, or stop it with `/revive abort {exc.run_id}`.")
            outcome = "duplicate"
        except ReviveError as exc:
            text, outcome = f":x: *{slack_escape(job.name)}* failed: {slack_escape(str(exc))}", \
                "failed"
        except Exception as exc:
            log.exception("%s %s started from Slack failed", job.kind, job.name)
            text = (f":x: *{slack_escape(job.name)}* failed: "
                    f"{slack_escape(type(exc).__name__)} (details in the revive server log)")
            outcome = "error"
        finally:
            if self.handler is not None:
                self.handler.release(job.key)
        if self.handler is not None:
            self.handler.audit(job.caller, f"{job.kind} finished", job.name, outcome,
                               run_id=run_id if self._known(run_id) else None,
                               detail={"parameters": job.params.model_dump(mode="json")})
        self.post(job.caller.response_url, Reply(text, ephemeral=False).to_slack())

    def _known(self, run_id: str | None) -> bool:
        """Whether ``run_id`` is in the store (the audit row's foreign key needs it)."""
        if run_id is None or self.handler is None:
            return False
        from revive.store import service

        try:
            with db.session(self.handler.engine) as s:
                return service.get_run(s, run_id) is not None
        except Exception:
            return False

    def post(self, url: str | None, payload: dict[str, Any]) -> bool:
        """POST ``payload`` to a ``response_url``; failures are logged, never raised."""
        if not url:
            log.info("no response_url; outcome not posted: %s", payload.get("text"))
            return False
        try:
            if self.client is not None:
                response = self.client.post(url, json=payload, timeout=POST_TIMEOUT_S)
            else:
                response = httpx.post(url, json=payload, timeout=POST_TIMEOUT_S)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("could not post to Slack's response_url: %s", exc)
            return False
        return True


def create_app(
    settings: WebSettings | None = None,
    *,
    clock: Clock | None = None,
    start: Callable[[Job], None] | None = None,
    groups_of: Callable[[str], Iterable[str]] | None = None,
    http_client: httpx.Client | None = None,
) -> FastAPI:
    """The ASGI app. ``start`` replaces the background runner (tests); ``clock`` the
    signature clock; ``groups_of`` maps a Slack user id to their user-group ids."""
    settings = settings if settings is not None else WebSettings()
    verifier = make_verifier(settings.slack_signing_secret.get_secret_value(), clock=clock)
    engine = db.get_engine()
    db.upgrade(engine)
    runner = BackgroundRunner(http_client)
    handler = CommandHandler(settings, engine, start=start or runner.start,
                             groups_of=groups_of or (lambda _user: ()))
    runner.handler = handler

    app = FastAPI(title="revive", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.handler = handler
    app.state.runner = runner
    app.state.engine = engine
    verified = Depends(verified_body(verifier))

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/slack/commands")
    def slack_commands(body: bytes = verified) -> JSONResponse:
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"),
                                             keep_blank_values=True).items()}
        caller = Caller(user_id=form.get("user_id", ""), user_name=form.get("user_name", ""),
                        channel_id=form.get("channel_id", ""),
                        response_url=form.get("response_url") or None)
        if not caller.user_id:
            return JSONResponse(Reply(":warning: The request names no user.").to_slack())
        reply = handler.handle(caller, form.get("text", ""))
        return JSONResponse(reply.to_slack())

    return app
