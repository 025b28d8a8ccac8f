"""``revive slack socket`` against a local WebSocket server playing Slack's side of Socket Mode.

The real slack_sdk client connects (``apps.connections.open`` on the fake Web API returns the
fake Socket Mode server's URL), receives envelopes and acknowledges them; what the
acknowledgements carry, what was started and what was resumed is checked here.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from slack_sdk import WebClient
from typer.testing import CliRunner

from revive.cli import app as cli
from revive.web.dispatch import SlackApp, build_slack_app
from revive.web.replies import Job
from revive.web.settings import WebSettings
from revive.web.socket_mode import (
    COMMAND_FAILED,
    ENV_APP_TOKEN,
    SocketModeRefused,
    SocketModeRunner,
)
from tests.chat.fake_slack import FakeSlack, running
from tests.web.fake_socket_mode import FakeSocketMode, Link
from tests.web.slack import (
    APPROVER,
    OPERATOR,
    RESPONSE_URL,
    TOPOLOGY,
    VIEWER,
    button_payload,
    create_run,
    text_of,
)

APP_TOKEN = "xapp-1-A0FAKE-1-secret"


@dataclass
class Side:
    """One runner (one DC, one process in production) and what its app did."""

    slack: SlackApp
    runner: SocketModeRunner
    started: list[Job] = field(default_factory=list)
    resumed: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    posted: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    yield from running()


@pytest.fixture
def slack_side(fake_slack: FakeSlack) -> Iterator[FakeSocketMode]:
    with FakeSocketMode() as server:
        fake_slack.socket_url = server.url
        yield server


@pytest.fixture
def connect(settings: WebSettings, store: str, fake_slack: FakeSlack,
            slack_side: FakeSocketMode) -> Iterator[Callable[[str], Side]]:
    """Start a runner named after its DC, with its own SlackApp, and wait for its hello."""
    sides: list[Side] = []

    def make(name: str) -> Side:
        started: list[Job] = []
        resumed: list[tuple[str, dict[str, Any]]] = []
        posted: list[dict[str, Any]] = []

        def record_post(request: httpx.Request) -> httpx.Response:
            posted.append(json.loads(request.content))
            return httpx.Response(200)

        slack = build_slack_app(
            settings, start=started.append, groups_of=lambda _user: [],
            http_client=httpx.Client(transport=httpx.MockTransport(record_post)),
            resume=lambda run, answer: resumed.append((run, answer)))
        runner = SocketModeRunner(slack, APP_TOKEN, WebClient(base_url=fake_slack.url),
                                  name=name, ping_interval=1)
        side = Side(slack, runner, started, resumed, posted)
        sides.append(side)
        before = len(slack_side.open_links)
        runner.start()
        slack_side.wait_connections(before + 1)
        assert runner.wait_connected(5), f"{name} did not get its hello"
        return side

    yield make
    for side in sides:
        side.runner.close()


def form(text: str, *, user: str = OPERATOR, trigger: str = "") -> dict[str, str]:
    """A slash command's payload as Socket Mode delivers it."""
    return {"token": "legacy", "team_id": "T1", "team_domain": "revive-test",
            "channel_id": "C1", "channel_name": "incident", "user_id": user,
            "user_name": user.lower(), "command": "/revive", "text": text,
            "api_app_id": "A0FAKE", "is_enterprise_install": "false",
            "response_url": RESPONSE_URL, "trigger_id": trigger}


def ask(server: FakeSocketMode, text: str, *, to: Link | None = None,
        **kwargs: Any) -> dict[str, Any]:
    """Send a slash command and return its acknowledgement's payload (the answer)."""
    retry = kwargs.pop("retry_attempt", 0)
    envelope_id = server.slash_command(form(text, **kwargs), to=to, retry_attempt=retry)
    ack = server.wait_ack(envelope_id)
    if to is not None:
        assert ack.link == to.id
    assert ack.payload is not None, "a slash command's ack carries the answer"
    return ack.payload


# --- slash commands ------------------------------------------------------------------------


def test_slash_commands_are_acknowledged_with_their_answer(
        connect: Callable[[str], Side], slack_side: FakeSocketMode, fake_slack: FakeSlack
) -> None:
    dc1 = connect("dc1")
    (opened,) = fake_slack.requests("apps.connections.open")
    assert opened.authorization == f"Bearer {APP_TOKEN}"

    assert "No runs yet" in text_of(ask(slack_side, "status"))

    answer = ask(slack_side, "run failover target_dc=dc2 --dry-run", trigger="T-run")
    assert answer["response_type"] == "in_channel"
    assert "Accepted: *failover* → dc2 (dry run)" in text_of(answer)
    (job,) = dc1.started
    assert (job.kind, job.name, job.params.dry_run) == ("run", "failover", True)
    assert job.caller.user_id == OPERATOR and job.caller.response_url == RESPONSE_URL

    refused = ask(slack_side, "run failover target_dc=dc2", user=VIEWER)
    assert refused["response_type"] == "ephemeral"
    assert ":no_entry: Refused" in text_of(refused)
    assert len(dc1.started) == 1
    _wait(lambda: dc1.runner.handled == 3)


def test_a_redelivered_command_is_answered_again_and_starts_nothing(
        connect: Callable[[str], Side], slack_side: FakeSocketMode) -> None:
    dc1 = connect("dc1")
    first = ask(slack_side, "run failover target_dc=dc2", trigger="T-1")
    again = ask(slack_side, "run failover target_dc=dc2", trigger="T-1", retry_attempt=1)
    assert again == first
    assert len(dc1.started) == 1


def test_a_failing_handler_is_acknowledged_with_an_error_and_the_runner_lives_on(
        connect: Callable[[str], Side], slack_side: FakeSocketMode,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    dc1 = connect("dc1")

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("the store is on fire")

    monkeypatch.setattr(dc1.slack.commands, "handle", broken)
    with caplog.at_level(logging.ERROR, logger="revive.web.socket_mode"):
        answer = ask(slack_side, "status")
    assert answer["response_type"] == "ephemeral"
    assert text_of(answer) == COMMAND_FAILED
    assert "the store is on fire" in caplog.text
    monkeypatch.undo()
    assert "No runs yet" in text_of(ask(slack_side, "status"))


# --- buttons -------------------------------------------------------------------------------


def test_a_button_press_is_acknowledged_and_resumes_the_run(
        connect: Callable[[str], Side], slack_side: FakeSocketMode, store: str) -> None:
    dc1 = connect("dc1")
    run_id = create_run(store, triggered_by="ana")

    envelope_id = slack_side.interactive(button_payload(APPROVER, run_id, "traffic"))
    ack = slack_side.wait_ack(envelope_id)
    assert ack.payload is None  # block_actions: an empty acknowledgement

    (posted,) = _wait(lambda: dc1.posted)  # the decision goes to the press's response_url
    assert [(flow_run, answer["decision"]) for flow_run, answer in dc1.resumed] == \
        [("flow-run-1", "approve")]
    assert "approved" in posted["text"] and posted["replace_original"] is False

    # Slack delivers the press again: the same answer, no second resume.
    again = slack_side.interactive(button_payload(APPROVER, run_id, "traffic"), retry_attempt=1)
    assert slack_side.wait_ack(again).payload is None
    assert len(dc1.resumed) == 1


# --- one runner per DC ---------------------------------------------------------------------


def test_one_runner_per_dc_and_chat_control_survives_the_loss_of_a_dc(
        connect: Callable[[str], Side], slack_side: FakeSocketMode, store: str) -> None:
    dc1 = connect("dc1")
    dc2 = connect("dc2")
    link1, link2 = slack_side.wait_connections(2)
    hellos = [m for _, m in slack_side.sent if m.get("type") == "hello"]
    assert [h["num_connections"] for h in hellos] == [1, 2]

    # Slack picks one connection per envelope: each runner answers what it receives.
    assert "No runs yet" in text_of(ask(slack_side, "status", to=link1))
    assert "No runs yet" in text_of(ask(slack_side, "status", to=link2))
    _wait(lambda: (dc1.runner.handled, dc2.runner.handled) == (1, 1))

    # dc1 is lost: its connection goes; an envelope it never acknowledged comes again,
    # to the runner left.
    dc1.runner.close()
    slack_side.wait_closed(link1)
    assert slack_side.open_links == [link2]
    answer = ask(slack_side, "run failover target_dc=dc1 --dry-run", to=link2,
                 trigger="T-dc1", retry_attempt=1)
    assert "Accepted: *failover* → dc1 (dry run)" in text_of(answer)
    assert len(dc2.started) == 1 and not dc1.started

    # Across runners (processes), the store's one-active-run rule holds: a run that reached
    # the store from elsewhere is not started twice.
    run_id = create_run(store, target_dc="dc1")  # the failover of dc1 (into dc2)
    duplicate = ask(slack_side, "run failover target_dc=dc2", trigger="T-dc2")
    assert f"already running as run `{run_id}`" in text_of(duplicate)
    assert len(dc2.started) == 1


# --- connection lifecycle ------------------------------------------------------------------


@pytest.mark.parametrize("how", ["disconnect message", "close frame"])
def test_the_runner_reconnects_when_slack_recycles_the_connection(
        how: str, connect: Callable[[str], Side], slack_side: FakeSocketMode,
        fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="revive.web.socket_mode")
    dc1 = connect("dc1")
    (link,) = slack_side.wait_connections(1)
    if how == "disconnect message":
        slack_side.disconnect(link, "refresh_requested")
    else:
        slack_side.close(link, 1001, "going away")
    slack_side.wait_closed(link)
    _wait(lambda: dc1.runner.hellos == 2 and dc1.runner.connected)
    (new,) = slack_side.wait_connections(1)
    assert new.id != link.id
    assert len(fake_slack.requests("apps.connections.open")) == 2

    assert "No runs yet" in text_of(ask(slack_side, "status", to=new))
    assert "[dc1] connected to Slack in Socket Mode" in caplog.text
    assert "[dc1] reconnected to Slack in Socket Mode" in caplog.text


def test_a_refused_app_token_is_not_retried(
        settings: WebSettings, store: str, fake_slack: FakeSlack) -> None:
    fake_slack.slack_error("apps.connections.open", "invalid_auth")
    slack = build_slack_app(settings, start=lambda _job: None, groups_of=lambda _user: [])
    runner = SocketModeRunner(slack, APP_TOKEN, WebClient(base_url=fake_slack.url))
    try:
        with pytest.raises(SocketModeRefused, match="invalid_auth"):
            runner.start()
        assert not runner.connected
    finally:
        runner.close()


# --- the command line ----------------------------------------------------------------------


@pytest.mark.parametrize(("token", "message"), [
    (None, f"cannot start: {ENV_APP_TOKEN} is not set"),
    ("xoxb-123-bot", f"cannot start: {ENV_APP_TOKEN} is a bot token"),
])
def test_the_cli_refuses_to_start_without_an_app_token(
        token: str | None, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_APP_TOKEN, raising=False)
    if token is not None:
        monkeypatch.setenv(ENV_APP_TOKEN, token)
    result = CliRunner().invoke(cli, ["slack", "socket"])
    assert result.exit_code == 2
    assert message in result.stderr
    assert "xapp-" in result.stderr


def test_the_cli_exits_when_slack_refuses_the_app_token(
        store: str, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_slack.slack_error("apps.connections.open", "invalid_auth")
    monkeypatch.setenv(ENV_APP_TOKEN, APP_TOKEN)
    monkeypatch.setenv("REVIVE_SLACK_API_URL", fake_slack.url)
    monkeypatch.delenv("REVIVE_SLACK_BOT_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["slack", "socket", "--name", "dc1"])
    assert result.exit_code == 2, result.output
    assert "Slack refused the Socket Mode connection: invalid_auth" in result.stderr


def test_the_cli_runs_until_sigterm(store: str, fake_slack: FakeSlack,
                                    slack_side: FakeSocketMode) -> None:
    """The installed ``revive slack socket``: connects, answers, and stops cleanly on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REVIVE_SLACK_")}
    env.update({ENV_APP_TOKEN: APP_TOKEN, "REVIVE_SLACK_API_URL": fake_slack.url,
                "REVIVE_ROLES": json.dumps({"*": {"*": "viewer"}})})
    exe = Path(sys.executable).with_name("revive")
    process = subprocess.Popen(
        [str(exe), "slack", "socket", "--name", "dc1", "--topology", TOPOLOGY],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        (link,) = slack_side.wait_connections(1, timeout=30)
        assert "No runs yet" in text_of(ask(slack_side, "status", to=link, user=VIEWER))
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "runner dc1 starting" in out and "runner stopped" in out
    assert "[dc1] connected to Slack in Socket Mode" in err
    slack_side.wait_closed(link)


def _wait(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    """``condition()``'s first truthy value, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)
    return value
