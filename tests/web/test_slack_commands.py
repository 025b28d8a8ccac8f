"""``/slack/commands``: signatures, roles, answers and the audit trail, without Prefect.

Requests are signed here (HMAC-SHA256 over ``v0:timestamp:body``) with a fixed clock, so the
window check is exercised exactly; long work is handed to a recording ``start`` so no flow
runs, except one test that drives the background runner with a fake flow.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import BaseModel, SecretStr

from revive.store import db, service
from revive.store.models import AuditEvent, TriggerSource
from revive.web.app import BackgroundRunner, create_app
from revive.web.commands import Caller, Job, parse
from revive.web.settings import Role, WebSettings, role_of
from revive.web.verify import make_verifier

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


class FixedClock:
    def __init__(self, now: int) -> None:
        self.value = now

    def now(self) -> float:
        return float(self.value)


def sign(body: str, timestamp: str, secret: str = SLACK_SECRET) -> str:
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256)
    return "v0=" + digest.hexdigest()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'revive.db'}"
    monkeypatch.setenv("REVIVE_DATABASE_URL", url)
    return url


@pytest.fixture
def settings() -> WebSettings:
    return WebSettings(
        slack_signing_secret=SecretStr(SLACK_SECRET),
        topology=TOPOLOGY,
        roles={"production": {OPERATOR: "operator", "SOPS": "operator"}, "*": {"*": "viewer"}},
    )


class Client:
    """A synchronous face on httpx's ASGI transport (Starlette's TestClient now warns that it
    wants a package we do not install)."""

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
    """A test client plus what the app started and audited."""

    def __init__(self, settings: WebSettings, clock: FixedClock, store: str) -> None:
        self.started: list[Job] = []
        self.clock = clock
        self.store = store
        self.app = create_app(settings, clock=clock, start=self.started.append,
                              groups_of=lambda user: ["SOPS"] if user == GROUPIE else [])
        self.client = Client(self.app)

    def command(self, text: str, *, user: str = VIEWER, **overrides: Any) -> httpx.Response:
        form = {"command": "/revive", "text": text, "user_id": user, "user_name": user.lower(),
                "channel_id": "C1", "response_url": "https://hooks.slack.test/resp"}
        body = urlencode(form)
        timestamp = str(self.clock.value)
        headers = {"X-Slack-Request-Timestamp": timestamp,
                   "X-Slack-Signature": sign(body, timestamp),
                   "Content-Type": "application/x-www-form-urlencoded", **overrides}
        headers = {k: v for k, v in headers.items() if v is not None}
        return self.client.post("/slack/commands", content=body, headers=headers)

    def audit(self) -> list[AuditEvent]:
        engine = db.get_engine(self.store)
        try:
            with db.session(engine) as s:
                return list(reversed(service.get_audit_events(s)))
        finally:
            engine.dispose()

    def create_run(self, runbook: str = "failover", target_dc: str = "dc2") -> str:
        engine = db.get_engine(self.store)
        try:
            with db.session(engine) as s:
                return service.create_run(s, runbook=runbook, parameters={},
                                          trigger=TriggerSource.CLI, triggered_by="ana",
                                          target_dc=target_dc).id
        finally:
            engine.dispose()


@pytest.fixture
def app(settings: WebSettings, store: str) -> App:
    return App(settings, FixedClock(NOW), store)


def text_of(response: httpx.Response) -> str:
    payload = response.json()
    assert len(payload["blocks"]) <= 50
    for block in payload["blocks"]:
        assert len(block["text"]["text"]) <= 3000
    return "\n".join(b["text"]["text"] for b in payload["blocks"])


# --- signatures ------------------------------------------------------------------------------


def test_slacks_published_example_verifies_with_its_own_clock() -> None:
    verifier = make_verifier(SLACK_SECRET, clock=FixedClock(int(SLACK_TS)))
    assert sign(SLACK_BODY, SLACK_TS) == SLACK_SIGNATURE
    assert verifier.is_valid(body=SLACK_BODY, timestamp=SLACK_TS, signature=SLACK_SIGNATURE)
    late = make_verifier(SLACK_SECRET, clock=FixedClock(int(SLACK_TS) + 301))
    assert not late.is_valid(body=SLACK_BODY, timestamp=SLACK_TS, signature=SLACK_SIGNATURE)


def test_slacks_published_example_is_answered_by_the_app(settings: WebSettings,
                                                         store: str) -> None:
    app = App(settings, FixedClock(int(SLACK_TS) + 60), store)
    response = app.client.post("/slack/commands", content=SLACK_BODY, headers={
        "X-Slack-Request-Timestamp": SLACK_TS, "X-Slack-Signature": SLACK_SIGNATURE,
        "Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    assert "/revive status" in text_of(response)  # empty text is help
    (event,) = app.audit()
    assert (event.actor, event.source, event.action, event.outcome) == (
        "U2CERLKJA", "slack", "help", "answered")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Slack-Signature": "v0=" + "0" * 64},
        {"X-Slack-Signature": None},
        {"X-Slack-Request-Timestamp": None},
        {"X-Slack-Request-Timestamp": "not-a-number"},
        {"X-Slack-Request-Timestamp": str(NOW - 301)},  # stale, even if correctly signed
        {"X-Slack-Request-Timestamp": str(NOW + 301)},
    ],
    ids=["bad", "missing-signature", "missing-timestamp", "junk-timestamp", "stale", "future"],
)
def test_bad_missing_or_stale_signatures_get_401_and_nothing_runs(
    app: App, headers: dict[str, str | None]
) -> None:
    form = urlencode({"text": "run failover target_dc=dc2", "user_id": OPERATOR,
                      "command": "/revive"})
    timestamp = headers.get("X-Slack-Request-Timestamp", str(NOW))
    signature = sign(form, timestamp) if timestamp else "v0=x"
    sent = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded", **headers}
    response = app.client.post("/slack/commands", content=form,
                               headers={k: v for k, v in sent.items() if v is not None})
    assert response.status_code == 401
    assert app.started == []
    assert app.audit() == []


def test_a_body_changed_after_signing_is_refused(app: App) -> None:
    body = urlencode({"text": "status", "user_id": VIEWER})
    response = app.client.post("/slack/commands", content=body.replace("status", "run"),
                               headers={"X-Slack-Request-Timestamp": str(NOW),
                                        "X-Slack-Signature": sign(body, str(NOW))})
    assert response.status_code == 401


def test_an_app_without_a_signing_secret_does_not_start(store: str) -> None:
    with pytest.raises(ValueError, match="REVIVE_SLACK_SIGNING_SECRET"):
        create_app(WebSettings(slack_signing_secret=SecretStr("")))


def test_healthz(app: App) -> None:
    assert app.client.get("/healthz").json() == {"status": "ok"}


# --- settings and roles ----------------------------------------------------------------------


def test_roles_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REVIVE_SLACK_SIGNING_SECRET", "s3cret")
    monkeypatch.setenv("REVIVE_ROLES", json.dumps({
        "production": {"U1": "approver", "S0GROUP": "operator"}, "*": {"*": "viewer",
                                                                        "UADMIN": "admin"}}))
    settings = WebSettings()
    assert settings.slack_signing_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert role_of("U1", [], "production", settings=settings) is Role.APPROVER
    assert role_of("U2", ["S0GROUP"], "production", settings=settings) is Role.OPERATOR
    assert role_of("U2", ["S0GROUP"], "staging", settings=settings) is Role.VIEWER
    assert role_of("UADMIN", [], "production", settings=settings) is Role.ADMIN
    assert role_of("U3", [], "production") is Role.VIEWER  # read from the environment


def test_nobody_has_a_role_by_default_and_unknown_roles_are_refused() -> None:
    assert WebSettings().role_of("U1", [], "production") is Role.NONE
    with pytest.raises(ValueError, match="unknown role 'boss'"):
        WebSettings(roles={"*": {"U1": "boss"}})


# --- viewer commands -------------------------------------------------------------------------


def test_help_lists_the_commands_and_the_callers_role(app: App) -> None:
    response = app.command("help")
    payload = response.json()
    assert payload["response_type"] == "ephemeral"
    text = text_of(response)
    assert "/revive run <runbook>" in text and "Your role in production: *viewer*" in text


def test_status_shows_runs_from_the_store(app: App) -> None:
    assert "No runs yet" in text_of(app.command("status"))
    run_id = app.create_run()
    text = text_of(app.command("status"))
    assert run_id in text and "*failover* → dc2" in text and "[running]" in text


def test_check_summarises_the_findings(app: App) -> None:
    text = text_of(app.command("check"))
    assert text.startswith(f"*Readiness of {TOPOLOGY}*")
    assert "finding(s)" in text


def test_plan_restart_and_provision_are_answered_inline(app: App) -> None:
    restart = text_of(app.command("plan restart dc2 max_parallel=2"))
    assert "*Restart plan for dc2* (at most 2 at once)" in restart
    provision = text_of(app.command("plan provision dc=dc2 share=1.5"))
    assert "*Capacity plan for dc2* (1.5x peak)" in provision
    events = app.audit()
    assert [(e.action, e.outcome) for e in events] == [("plan", "answered")] * 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("launch rockets", "unknown command `launch`"),
        ("plan", "`plan` needs `restart` or `provision`"),
        ("plan restart", "needs a DC"),
        ("plan restart dc9", "dc9"),
        ("plan provision dc2 share=-1", "share"),
        ("plan restart dc2 bogus=1", "unknown parameter 'bogus'"),
        ("status now", "`status` takes no arguments"),
        ('run "unbalanced', "cannot read the command"),
    ],
)
def test_bad_input_gets_a_clear_ephemeral_answer(app: App, text: str, message: str) -> None:
    response = app.command(text)
    assert response.status_code == 200
    assert response.json()["response_type"] == "ephemeral"
    answer = text_of(response)
    assert message in answer and "Traceback" not in answer
    (event,) = app.audit()
    assert event.outcome == "invalid" and event.detail is not None
    assert event.detail["text"] == text


# --- roles -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["run failover target_dc=dc2", "drill", "abort 0123"])
def test_a_viewer_is_refused_operator_commands_with_a_reason_and_an_audit_row(
    app: App, text: str
) -> None:
    response = app.command(text, user=VIEWER)
    answer = text_of(response)
    verb = text.split()[0]
    assert f"Refused: `{verb}` needs the operator role in production; you have viewer" in answer
    assert app.started == []
    (event,) = app.audit()
    assert (event.actor, event.action, event.outcome) == (VIEWER, verb, "refused")
    assert event.detail is not None and event.detail["role"] == "viewer"


def test_someone_without_any_role_is_refused_even_help(settings: WebSettings,
                                                       store: str) -> None:
    app = App(settings.model_copy(update={"roles": {}}), FixedClock(NOW), store)
    assert "you have no role" in text_of(app.command("help"))
    assert app.audit()[0].outcome == "refused"


def test_a_role_granted_to_a_user_group_counts(app: App) -> None:
    response = app.command("run failover target_dc=dc2 --dry-run", user=GROUPIE)
    assert "Accepted" in text_of(response)


# --- operator commands -----------------------------------------------------------------------


def test_operator_abort_marks_a_running_run_and_audits_it(app: App) -> None:
    run_id = app.create_run()
    response = app.command(f"abort {run_id[:12]}", user=OPERATOR)
    assert f"Abort requested for *failover* run `{run_id}`" in text_of(response)
    assert response.json()["response_type"] == "in_channel"
    engine = db.get_engine(app.store)
    with db.session(engine) as s:
        run = service.get_run(s, run_id)
        assert run is not None and run.abort_requested_by == OPERATOR
    engine.dispose()
    (event,) = app.audit()
    assert (event.actor, event.source, event.action, event.outcome, event.run_id) == (
        OPERATOR, "slack", "abort", "requested", run_id)
    assert event.target == f"failover:{run_id}"


def test_abort_of_an_unknown_or_finished_run_says_why(app: App) -> None:
    assert "no run 'nope'" in text_of(app.command("abort nope", user=OPERATOR))
    run_id = app.create_run()
    engine = db.get_engine(app.store)
    with db.session(engine) as s:
        service.finish_run(s, run_id, outcome="succeeded")
    engine.dispose()
    assert "only a running run can be aborted" in text_of(
        app.command(f"abort {run_id}", user=OPERATOR))


def test_run_is_accepted_fast_and_started_without_waiting(app: App) -> None:
    began = time.monotonic()
    response = app.command("run failover target_dc=dc2 --dry-run", user=OPERATOR)
    assert time.monotonic() - began < 3.0
    answer = text_of(response)
    assert "Accepted: *failover* → dc2 (dry run)" in answer
    (job,) = app.started
    assert job.kind == "run" and job.name == "failover"
    params: Any = job.params
    assert (params.dry_run, params.target_dc, params.triggered_by, str(params.trigger)) == (
        True, "dc2", OPERATOR.lower(), "slack")
    assert job.caller.response_url == "https://hooks.slack.test/resp"
    (event,) = app.audit()
    assert (event.action, event.outcome) == ("run", "accepted")


def test_run_with_an_alias_and_a_bad_parameter(app: App) -> None:
    assert "unknown parameter 'bogus'" in text_of(
        app.command("run restart bogus=1", user=OPERATOR))
    assert "max_parallel" in text_of(app.command("run restart max_parallel=0", user=OPERATOR))
    assert "is set by revive" in text_of(
        app.command("run failover triggered_by=mallory", user=OPERATOR))
    assert "unknown runbook 'nope'" in text_of(app.command("run nope", user=OPERATOR))
    assert app.started == []


def test_a_second_run_for_an_active_runbook_and_dc_answers_with_that_run(app: App) -> None:
    run_id = app.create_run("failover", "dc2")
    answer = text_of(app.command("run failover target_dc=dc2", user=OPERATOR))
    assert f"already running as run `{run_id}`" in answer
    assert f"/revive abort {run_id}" in answer
    assert app.started == []
    (event,) = app.audit()
    assert (event.outcome, event.run_id) == ("duplicate", run_id)
    # another DC, or a dry run, is not blocked
    assert "Accepted" in text_of(app.command("run failover target_dc=dc1", user=OPERATOR))
    assert "Accepted" in text_of(app.command("run failover target_dc=dc2 --dry-run",
                                             user=OPERATOR))


def test_a_second_run_while_the_first_is_still_starting_is_not_started(app: App) -> None:
    assert "Accepted" in text_of(app.command("run failover target_dc=dc2", user=OPERATOR))
    assert "is starting up" in text_of(app.command("run failover target_dc=dc2",
                                                   user=OPERATOR))
    assert len(app.started) == 1
    app.app.state.handler.release(app.started[0].key)
    assert "Accepted" in text_of(app.command("run failover target_dc=dc2", user=OPERATOR))


def test_drill_is_accepted_and_an_unknown_scenario_is_not(app: App) -> None:
    assert "unknown scenario 'meteor'" in text_of(app.command("drill meteor", user=OPERATOR))
    assert "Accepted: `dc-fire` drill" in text_of(app.command("drill", user=OPERATOR))
    (job,) = app.started
    assert job.kind == "drill" and job.params.scenario == "dc-fire"  # type: ignore[attr-defined]


# --- the background runner -------------------------------------------------------------------


class _Params(BaseModel):
    target_dc: str = "dc2"


def test_the_runner_posts_the_outcome_and_a_failed_post_is_only_logged(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    posted: list[dict[str, Any]] = []

    def slack(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(200 if len(posted) == 1 else 500)

    async def flow(params: _Params) -> dict[str, Any]:
        return {"outcome": "succeeded"}

    runner = BackgroundRunner(httpx.Client(transport=httpx.MockTransport(slack)))
    runner.handler = app.app.state.handler
    caller = Caller(OPERATOR, "op", "C1", "https://hooks.slack.test/resp")
    job = Job("run", "failover", _Params(), caller, ("failover", "dc2"), flow)
    runner.execute(job)
    assert posted[0]["response_type"] == "in_channel"
    assert "*failover*: succeeded" in posted[0]["text"]
    runner.execute(job)  # Slack answers 500: logged, not raised
    assert "could not post" in caplog.text
    events = app.audit()
    assert [(e.action, e.outcome) for e in events] == [("run finished", "succeeded")] * 2


def test_a_failing_flow_is_reported_without_a_traceback(app: App) -> None:
    posted: list[dict[str, Any]] = []

    def slack(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(200)

    async def flow(params: _Params) -> dict[str, Any]:
        raise RuntimeError("boom")

    runner = BackgroundRunner(httpx.Client(transport=httpx.MockTransport(slack)))
    runner.handler = app.app.state.handler
    caller = Caller(OPERATOR, "op", "C1", "https://hooks.slack.test/resp")
    runner.execute(Job("run", "failover", _Params(), caller, ("failover", "dc2"), flow))
    assert "failed: RuntimeError" in posted[0]["text"]
    assert "Traceback" not in posted[0]["text"]
    assert app.audit()[-1].outcome == "error"


def test_parse_defaults_to_help() -> None:
    assert parse("").verb == "help"
    assert parse("run ramp --dry-run").runbook == "warm_up_ramp"
