"""chat_from_env: Slack only when both a token and a channel are configured."""

from __future__ import annotations

import asyncio
import logging

import pytest

from revive.chat import ConsoleSink, SlackSink, chat_from_env
from revive.chat.client import DEFAULT_SLACK_API_URL
from tests.chat.cards import TOKEN, card, message_text
from tests.chat.fake_slack import FakeSlack


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"REVIVE_SLACK_CHANNEL": "#ops"},
        {"REVIVE_SLACK_BOT_TOKEN": "  ", "REVIVE_SLACK_CHANNEL": "#ops"},
        {"REVIVE_SLACK_BOT_TOKEN": TOKEN},
        {
            "REVIVE_SLACK_BOT_TOKEN": TOKEN,
            "REVIVE_SLACK_CHANNEL": "#ops",
            "REVIVE_SLACK_API_URL": "file:///etc/",
        },
    ],
)
def test_console_without_a_usable_configuration(env: dict[str, str]) -> None:
    assert isinstance(chat_from_env(env), ConsoleSink)


def test_default_api_url() -> None:
    sink = chat_from_env({"REVIVE_SLACK_BOT_TOKEN": TOKEN, "REVIVE_SLACK_CHANNEL": "#ops"})
    assert isinstance(sink, SlackSink)
    assert sink.settings.base_url == DEFAULT_SLACK_API_URL == "https://slack.com/api/"


def test_slack_with_a_token_posts_to_the_configured_api(
    fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env = {
        "REVIVE_SLACK_BOT_TOKEN": TOKEN,
        "REVIVE_SLACK_CHANNEL": "C0OPS",
        "REVIVE_SLACK_API_URL": fake_slack.url.rstrip("/"),  # the missing "/" is added
    }
    sink = chat_from_env(env)
    assert isinstance(sink, SlackSink)
    assert sink.settings.base_url == fake_slack.url

    async def run() -> None:
        await sink.start(card())
        await sink.aclose()

    asyncio.run(run())
    (post,) = fake_slack.ok_calls("chat.postMessage")
    assert post["channel"] == "C0OPS"
    assert message_text(post).startswith("*[RUNNING]*")
    assert TOKEN not in caplog.text
