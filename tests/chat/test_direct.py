"""Direct messages carry approval codes to one person, never to a channel, never to the log."""

from __future__ import annotations

import logging

import pytest

from revive.chat.direct import DirectMessages, direct_from_env
from tests.chat.fake_slack import FakeSlack

SECRET_TEXT = "your code: K7QM-3XPD-T9VA"


def test_a_direct_message_goes_to_the_user(fake_slack: FakeSlack) -> None:
    direct = DirectMessages("xoxb-test", base_url=fake_slack.url)
    assert direct.send("UANA", SECRET_TEXT)
    (call,) = fake_slack.requests("chat.postMessage")
    assert (call.params["channel"], call.params["text"]) == ("UANA", SECRET_TEXT)
    assert call.authorization == "Bearer xoxb-test"
    assert (direct.sent, direct.failures) == (1, 0)


def test_a_failed_send_is_counted_and_logged_without_its_text(
        fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    fake_slack.slack_error("chat.postMessage", "user_not_found")
    direct = DirectMessages("xoxb-secret-token", base_url=fake_slack.url)
    with caplog.at_level(logging.DEBUG):
        assert direct.send("UGONE", SECRET_TEXT) is False
    assert (direct.sent, direct.failures) == (0, 1)
    assert "user_not_found" in caplog.text and "UGONE" in caplog.text
    assert "K7QM" not in caplog.text and "xoxb-secret-token" not in caplog.text
    assert "xoxb-secret-token" not in repr(direct)


def test_without_a_bot_token_there_are_no_direct_messages(fake_slack: FakeSlack) -> None:
    assert direct_from_env({}) is None
    assert direct_from_env({"REVIVE_SLACK_BOT_TOKEN": "xoxb-t",
                            "REVIVE_SLACK_API_URL": "ftp://nope"}) is None
    direct = direct_from_env({"REVIVE_SLACK_BOT_TOKEN": "xoxb-t",
                              "REVIVE_SLACK_API_URL": fake_slack.url})
    assert direct is not None and direct.send("UANA", "hello")
