"""Fixtures for the chat tests: a fake Slack on 127.0.0.1 and no proxy in the way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chat.fake_slack import FakeSlack, running

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """slack_sdk sends every request through $HTTPS_PROXY, even to 127.0.0.1."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    """A running fake Slack Web API; ``.url`` ends in ``/api/``."""
    yield from running()
