"""The fake Slack itself accepts what slack_sdk sends, JSON or form-encoded."""

from __future__ import annotations

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from tests.chat.cards import TOKEN
from tests.chat.fake_slack import FakeSlack


def test_fake_answers_like_slack(fake_slack: FakeSlack) -> None:
    assert fake_slack.url.startswith("http://127.0.0.1:") and fake_slack.url.endswith("/api/")
    client = WebClient(token=TOKEN, base_url=fake_slack.url, timeout=2, retry_handlers=[])
    assert client.auth_test()["user_id"] == "U0FAKE"
    first = client.chat_postMessage(channel="#ops", text="hello")  # JSON body
    second = client.api_call(  # form-encoded body, as older callers send
        "chat.postMessage",
        params={"channel": "#ops", "text": "reply", "thread_ts": first["ts"]},
    )
    assert (first["ts"], second["ts"]) == ("1700000000.000100", "1700000000.000200")
    assert first["channel"] == second["channel"] == "C0FAKE0001"
    updated = client.chat_update(channel=first["channel"], ts=first["ts"], text="edited")
    assert updated["message"]["text"] == "edited"
    assert [m for m, _ in fake_slack.calls] == [
        "auth.test",
        "chat.postMessage",
        "chat.postMessage",
        "chat.update",
    ]
    assert fake_slack.calls[2][1]["thread_ts"] == first["ts"]

    fake_slack.slack_error("chat.update", "message_not_found", n=1)
    with pytest.raises(SlackApiError) as caught:
        client.chat_update(channel=first["channel"], ts=first["ts"], text="again")
    assert caught.value.response["error"] == "message_not_found"
    with pytest.raises(SlackApiError) as caught:
        WebClient(base_url=fake_slack.url, retry_handlers=[]).auth_test()
    assert caught.value.response["error"] == "not_authed"
    fake_slack.rate_limit("auth.test", 1, retry_after=7)
    with pytest.raises(SlackApiError) as caught:
        client.auth_test()
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["retry-after"] == "7"
