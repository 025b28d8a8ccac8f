"""Signed Slack requests for the web tests, and an app that records what it started.

Requests are signed here (HMAC-SHA256 over ``v0:timestamp:body``) with a fixed clock, so the
signature window is exercised exactly. Starlette's TestClient wants a package this project
does not install, so ``Client`` is a small synchronous face on httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from revive.chat.blocks import APPROVE_ACTION
from revive.store import db, service
from revive.store.models import AuditEvent, TriggerSource
from revive.web.app import create_app
from revive.web.replies import Job
from revive.web.settings import WebSettings

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TS = "1531420618"
SLACK_BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
    "channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
    "command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2F"
    "T1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
    "trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

NOW = 1_700_000_000
TOPOLOGY = str(Path(__file__).resolve().parents[2] / "runbooks" / "topology.yaml")
VIEWER, OPERATOR, GROUPIE = "UVIEWER", "UOPERATOR", "UGROUPIE"
APPROVER, APPROVER2 = "UAPPROVER", "UAPPROVER2"
RESPONSE_URL = "https://hooks.slack.test/resp"
#: Slack gives every request its own trigger_id: two commands are two requests, even when
#: typed alike in the same second (a request sent again is the same request: a replay).
_TRIGGERS = (f"trigger-{n}" for n in itertools.count(1))


class FixedClock:
    def __init__(self, now: int) -> None:
        self.value = now

    def now(self) -> float:
        return float(self.value)


def sign(body: str, timestamp: str, secret: str = SLACK_SECRET) -> str:
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256)
    return "v0=" + digest.hexdigest()


def signed_headers(body: str, timestamp: str, **overrides: str | None) -> dict[str, str]:
    headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": sign(body, timestamp),
               "Content-Type": "application/x-www-form-urlencoded", **overrides}
    return {k: v for k, v in headers.items() if v is not None}


def button_payload(user: str, run_id: str, gate: str, *, action: str = APPROVE_ACTION,
                   trigger: str = "T1", name: str | None = None) -> dict[str, Any]:
    """A ``block_actions`` payload as Slack sends it for a click on an approval button."""
    return {
        "type": "block_actions",
        "user": {"id": user, "username": name if name is not None else user.lower(),
                 "team_id": "T1"},
        "channel": {"id": "C1", "name": "incident"},
        "trigger_id": trigger,
        "response_url": RESPONSE_URL,
        "container": {"type": "message", "message_ts": "1700000000.000100"},
        "actions": [{"type": "button", "action_id": action, "block_id": f"approval:{gate}",
                     "value": json.dumps({"run": run_id, "gate": gate}),
                     "action_ts": "1700000001.000200"}],
    }


class Client:
    """A synchronous face on httpx's ASGI transport."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://revive") as c:
                return await c.request(method, url, **kwargs)

        return asyncio.run(go())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._send("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self._send("POST", url, **kwargs)


class App:
    """A test client plus what the app started, resumed, posted and audited."""

    def __init__(self, settings: WebSettings, clock: FixedClock, store: str, *,
                 start: Any = None, resume: Any = None, run_jobs: bool = False) -> None:
        """``run_jobs`` lets the app's own runner really run what it accepts."""
        self.started: list[Job] = []
        self.resumed: list[tuple[str, dict[str, Any]]] = []
        self.posted: list[dict[str, Any]] = []
        self.clock = clock
        self.store = store

        def record_post(request: httpx.Request) -> httpx.Response:
            self.posted.append(json.loads(request.content))
            return httpx.Response(200)

        self.app = create_app(
            settings, clock=clock,
            start=None if run_jobs else start or self.started.append,
            groups_of=lambda user: ["SOPS"] if user == GROUPIE else [],
            http_client=httpx.Client(transport=httpx.MockTransport(record_post)),
            resume=resume or (lambda run, answer: self.resumed.append((run, answer))))
        self.client = Client(self.app)

    @property
    def slack(self) -> Any:
        return self.app.state.slack

    def command(self, text: str, *, user: str = VIEWER, trigger: str | None = None,
                **overrides: Any) -> httpx.Response:
        """A signed ``/revive`` command; ``trigger`` is a fresh trigger_id unless given
        (``""``: none, as in a request made up by hand)."""
        trigger = next(_TRIGGERS) if trigger is None else trigger
        form = {"command": "/revive", "text": text, "user_id": user, "user_name": user.lower(),
                "channel_id": "C1", "response_url": RESPONSE_URL, "trigger_id": trigger}
        body = urlencode(form)
        return self.client.post("/slack/commands", content=body,
                                headers=signed_headers(body, str(self.clock.value), **overrides))

    def click(self, payload: dict[str, Any], **overrides: Any) -> httpx.Response:
        body = urlencode({"payload": json.dumps(payload)})
        return self.client.post("/slack/interactions", content=body,
                                headers=signed_headers(body, str(self.clock.value), **overrides))

    def wait_posts(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """The answers posted to response_url (they go out on a pool thread)."""
        import time

        deadline = time.monotonic() + timeout
        while len(self.posted) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.posted

    def audit(self) -> list[AuditEvent]:
        engine = db.get_engine(self.store)
        try:
            with db.session(engine) as s:
                return list(reversed(service.get_audit_events(s)))
        finally:
            engine.dispose()

    def create_run(self, runbook: str = "failover", target_dc: str = "dc2", *,
                   triggered_by: str = "ana", prefect_id: str | None = "flow-run-1") -> str:
        return create_run(self.store, runbook=runbook, target_dc=target_dc,
                          triggered_by=triggered_by, prefect_id=prefect_id)


def create_run(store: str, *, runbook: str = "failover", target_dc: str = "dc2",
               triggered_by: str = "ana", prefect_id: str | None = "flow-run-1") -> str:
    """A running run in ``store``, linked to a (pretend) Prefect flow run."""
    engine = db.get_engine(store)
    try:
        with db.session(engine) as s:
            run = service.create_run(s, runbook=runbook, parameters={},
                                     trigger=TriggerSource.CLI, triggered_by=triggered_by,
                                     target_dc=target_dc)
            if prefect_id:
                service.set_prefect_flow_run_id(s, run.id, prefect_flow_run_id=prefect_id)
            return run.id
    finally:
        engine.dispose()


def text_of(response: httpx.Response | dict[str, Any]) -> str:
    payload = response if isinstance(response, dict) else response.json()
    assert len(payload["blocks"]) <= 50
    for block in payload["blocks"]:
        assert len(block["text"]["text"]) <= 3000
    return "\n".join(b["text"]["text"] for b in payload["blocks"])


