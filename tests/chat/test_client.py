"""slack_api_url and web_client_from_env: every Slack client of revive reaches one server."""

from __future__ import annotations

import logging

import pytest

from revive.chat.client import DEFAULT_SLACK_API_URL, slack_api_url, web_client_from_env
from tests.chat.cards import TOKEN
from tests.chat.fake_slack import FakeSlack


def test_slack_when_no_url_is_configured() -> None:
    assert slack_api_url({}) == slack_api_url({"REVIVE_SLACK_API_URL": " "})
    assert slack_api_url({}) == DEFAULT_SLACK_API_URL


def test_a_missing_slash_is_added_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="revive.chat")
    assert slack_api_url({"REVIVE_SLACK_API_URL": "http://127.0.0.1:9/api"}) == (
        "http://127.0.0.1:9/api/"
    )
    assert "REVIVE_SLACK_API_URL should end with '/'" in caplog.text


@pytest.mark.parametrize("url", ["file:///etc/", "slack.com/api/", "ftp://slack.com/api/"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(ValueError, match=r"^REVIVE_SLACK_API_URL=.* is not an http\(s\) URL$"):
        slack_api_url({"REVIVE_SLACK_API_URL": url})


def test_client_uses_the_bot_token_at_the_configured_url(fake_slack: FakeSlack) -> None:
    client = web_client_from_env(
        {"REVIVE_SLACK_BOT_TOKEN": f" {TOKEN} ", "REVIVE_SLACK_API_URL": fake_slack.url}
    )
    assert client.auth_test()["team_id"] == "T0FAKE"
    (call,) = fake_slack.requests("auth.test")
    assert call.authorization == f"Bearer {TOKEN}"


def test_client_without_a_bot_token() -> None:
    client = web_client_from_env({"REVIVE_SLACK_API_URL": "http://127.0.0.1:9/api/"})
    assert client.token is None
    assert client.base_url == "http://127.0.0.1:9/api/"


def test_client_refuses_what_slack_api_url_refuses() -> None:
    with pytest.raises(ValueError, match="REVIVE_SLACK_API_URL"):
        web_client_from_env({"REVIVE_SLACK_API_URL": "file:///etc/"})
