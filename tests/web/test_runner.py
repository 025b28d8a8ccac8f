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
