"""``/slack/commands``: signatures, roles, answers and the audit trail, without Prefect.

Requests are signed here (HMAC-SHA256 over ``v0:timestamp:body``) with a fixed clock, so the
window check is exercised exactly; long work is handed to a recording ``start`` so no flow
runs, except one test that drives the background runner with a fake flow.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from pydantic import BaseModel, SecretStr

from revive.store import db, service
from revive.web.access import Access
from revive.web.app import create_app
from revive.web.parse import parse
from revive.web.replies import Caller, Job
from revive.web.runner import BackgroundRunner, slack_tags
from revive.web.settings import Role, WebSettings, role_of
from revive.web.verify import make_verifier
from tests.web.slack import (
    GROUPIE,
    NOW,
    OPERATOR,
    SLACK_BODY,
    SLACK_SECRET,
    SLACK_SIGNATURE,
    SLACK_TS,
    TOPOLOGY,
    VIEWER,
    App,
    Client,
    FixedClock,
    sign,
    text_of,
)

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


def test_an_app_without_a_signing_secret_serves_no_slack(store: str) -> None:
    """Slack's endpoints are off (503, saying why); the status board stays on."""
    client = Client(create_app(WebSettings(slack_signing_secret=SecretStr(""),
                                           topology=TOPOLOGY)))
    answer = client.post("/slack/commands", content="text=help")
    assert answer.status_code == 503
    assert "REVIVE_SLACK_SIGNING_SECRET" in answer.json()["error"]
    assert client.get("/").status_code == 200


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


def test_status_shows_runs_from_the_store(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REVIVE_SIM_URL", raising=False)
    first = text_of(app.command("status"))
    assert "No runs yet" in first
    assert "_unknown: no ops tools configured (" in first and "$REVIVE_SIM_URL" in first
    run_id = app.create_run()
    text = text_of(app.command("status"))
    assert run_id in text and "*failover* → dc2" in text and "[running]" in text
    assert "waiting for approval" not in text
    engine = db.get_engine(app.store)
    with db.session(engine) as s:
        service.start_step(s, run_id=run_id, step_key="approval:traffic", action="approval")
    engine.dispose()
    assert ":raised_hand: *waiting for approval* (traffic)" in text_of(app.command("status"))


def test_status_shows_each_dcs_traffic_and_healthy_services(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    from revive.drill.server import SimServer
    from revive.sim import Simulator
    from revive.topology import load

    topology = load(TOPOLOGY)
    sim = Simulator(topology, seed=1)
    sim.advance(5)
    in_dc1 = sum(1 for svc in topology.services if svc.runs_in("dc1"))
    with SimServer(sim) as server:
        monkeypatch.setenv("REVIVE_SIM_URL", server.url)
        before = text_of(app.command("status"))
        sim.estate.power_loss("dc1")
        after = text_of(app.command("status"))
    # a DC's share of all traffic: its class weights, each class by its load (tier 3's
    # class runs in dc1 only, so dc1 serves a little more than half)
    share = f"{sim.estate.weights['dc1']:.0%}"
    assert share != "50%"
    assert f":large_green_circle: *dc1* · {share} of traffic · {in_dc1}/{in_dc1} services" \
        in before
    # the example's health checker lives in dc1 only (a readiness finding): with dc1 gone
    # the traffic shares are still shown, and the health is "unknown", with the reason
    assert f":white_circle: *dc1* · {share} of traffic · _health unknown (" in after
    assert "health-checker" in after
    # the tools gone: the answer still comes, and says why the DCs are unknown
    gone = text_of(app.command("status"))
    assert ":white_circle: *dc2* · _traffic share unknown (" in gone


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
    assert (params.dry_run, params.target_dc) == (True, "dc2")
    assert "triggered_by" not in type(params).model_fields  # who started it: the run's tag
    assert slack_tags(job) == ["revive-trigger:slack",
                               f"revive-by:{OPERATOR.lower()} ({OPERATOR})"]
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
    run_id = app.create_run("failover", "dc1")  # a failover is recorded for its lost DC
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
    app.slack.commands.release(app.started[0].key)
    assert "Accepted" in text_of(app.command("run failover target_dc=dc2", user=OPERATOR))


def test_drill_is_accepted_and_an_unknown_scenario_is_not(app: App) -> None:
    assert "unknown scenario 'meteor'" in text_of(app.command("drill meteor", user=OPERATOR))
    assert "Accepted: `dc-fire` drill" in text_of(app.command("drill", user=OPERATOR))
    (job,) = app.started
    assert job.kind == "drill" and job.params.scenario == "dc-fire"  # type: ignore[attr-defined]


# --- the background runner -------------------------------------------------------------------


class _Params(BaseModel):
    target_dc: str = "dc2"


def _runner(app: App, answer: Any) -> BackgroundRunner:
    settings = app.app.state.settings
    return BackgroundRunner(settings, Access(settings, app.app.state.engine),
                            httpx.Client(transport=httpx.MockTransport(answer)))


def test_the_runner_posts_the_outcome_and_a_failed_post_is_only_logged(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    posted: list[dict[str, Any]] = []

    def slack(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(200 if len(posted) == 1 else 500)

    async def flow(params: _Params) -> dict[str, Any]:
        return {"outcome": "succeeded"}

    runner = _runner(app, slack)
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

    runner = _runner(app, slack)
    caller = Caller(OPERATOR, "op", "C1", "https://hooks.slack.test/resp")
    runner.execute(Job("run", "failover", _Params(), caller, ("failover", "dc2"), flow))
    assert "failed: RuntimeError" in posted[0]["text"]
    assert "Traceback" not in posted[0]["text"]
    assert app.audit()[-1].outcome == "error"


def test_parse_defaults_to_help() -> None:
    assert parse("").verb == "help"
    assert parse("run ramp --dry-run").runbook == "warm_up_ramp"
