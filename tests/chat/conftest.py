"""Fixtures for the chat tests: a fake Slack on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chat.fake_slack import FakeSlack, running


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    """A running fake Slack Web API; ``.url`` ends in ``/api/``."""
    yield from running()
