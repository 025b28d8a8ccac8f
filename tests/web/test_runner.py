"""Outcomes reach the channel: through response_url while it lasts, then as a bot message."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from revive.web.access import Access
from revive.web.replies import Caller, Job
from revive.web.runner import RESPONSE_URL_TTL_S, BackgroundRunner
from tests.chat.fake_slack import FakeSlack
from tests.web.slack import OPERATOR, App


class _Params(BaseModel):
    target_dc: str = "dc2"


async def _recovered(params: _Params) -> dict[str, Any]:
    return {"outcome": "recovered", "run_id": "r1"}


@pytest.mark.parametrize("age_s", [0.0, RESPONSE_URL_TTL_S + 60])
def test_an_outcome_after_thirty_minutes_is_posted_by_the_bot(
        app: App, monkeypatch: pytest.MonkeyPatch, age_s: float) -> None:
    hooked: list[dict[str, Any]] = []

    def response_url(request: httpx.Request) -> httpx.Response:
        hooked.append(json.loads(request.content))
        return httpx.Response(200)

    settings = app.app.state.settings
    runner = BackgroundRunner(settings, Access(settings, app.app.state.engine),
                              httpx.Client(transport=httpx.MockTransport(response_url)))
    caller = Caller(OPERATOR, "op", "CINCIDENT", "https://hooks.slack.test/resp",
                    received_at=time.monotonic() - age_s)
    with FakeSlack() as fake:
        monkeypatch.setenv("REVIVE_SLACK_BOT_TOKEN", "xoxb-test")
        monkeypatch.setenv("REVIVE_SLACK_CHANNEL", "#incident")
        monkeypatch.setenv("REVIVE_SLACK_API_URL", fake.url)
        runner.execute(Job("run", "failover", _Params(), caller, ("failover", "dc2"),
                           _recovered))
        posted = fake.ok_calls("chat.postMessage")
    if age_s == 0.0:
        assert "*failover*: recovered" in hooked[0]["text"] and posted == []
    else:
        assert hooked == []  # Slack no longer takes it: not even tried
        (message,) = posted
        assert message["channel"] == "CINCIDENT"
        assert "*failover*: recovered" in message["text"]


class _DryParams(BaseModel):
    target_dc: str = "dc2"
    dry_run: bool = True


def _rehearsal_runner(app: App, started: list[float]) -> tuple[BackgroundRunner, Job]:
    async def rehearse(params: _DryParams) -> dict[str, Any]:
        started.append(time.monotonic())
        return {"outcome": "dry run", "run_id": "r1"}

    settings = app.app.state.settings
    runner = BackgroundRunner(settings, Access(settings, app.app.state.engine),
                              httpx.Client(transport=httpx.MockTransport(
                                  lambda _request: httpx.Response(200))))
    caller = Caller(OPERATOR, "op", "CINCIDENT", "https://hooks.slack.test/resp")
    return runner, Job("run", "failover", _DryParams(), caller, ("failover", "dc2"), rehearse)


def _requests_for(runner: BackgroundRunner, seconds: float, started: list[float]) -> float:
    """Requests every 20 ms for ``seconds`` (or until the rehearsal starts); the last one's time."""
    end = time.monotonic() + seconds
    last = time.monotonic()
    while time.monotonic() < end and not started:
        last = time.monotonic()  # taken before the runner's own stamp, so never after it
        runner.saw_request()
        time.sleep(0.02)
    return last


def test_a_rehearsal_waits_for_a_burst_of_requests_to_pass(app: App) -> None:
    started: list[float] = []
    runner, job = _rehearsal_runner(app, started)
    runner.rehearsal_quiet_s, runner.rehearsal_max_defer_s = 0.3, 30.0
    runner.start(job)
    last = _requests_for(runner, 1.0, started)
    assert started == []  # never while people were being answered
    deadline = time.monotonic() + 10
    while not started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert started and started[0] >= last + 0.3


def test_a_rehearsal_is_never_deferred_for_longer_than_the_bound(app: App) -> None:
    started: list[float] = []
    runner, job = _rehearsal_runner(app, started)
    runner.rehearsal_quiet_s, runner.rehearsal_max_defer_s = 0.3, 0.5
    runner.start(job)
    _requests_for(runner, 20.0, started)  # Slack never goes quiet
    assert started, "the rehearsal waited for quiet that never came"
