"""Fixtures for the web tests: a store per test, settings with roles, a signed-request app."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from revive.web.settings import WebSettings
from tests.web.slack import (
    APPROVER,
    APPROVER2,
    NOW,
    OPERATOR,
    SLACK_SECRET,
    TOPOLOGY,
    App,
    FixedClock,
)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'revive.db'}"
    monkeypatch.setenv("REVIVE_DATABASE_URL", url)
    return url


@pytest.fixture
def settings() -> WebSettings:
    return WebSettings(
        slack_signing_secret=SecretStr(SLACK_SECRET),
        topology=TOPOLOGY,
        roles={"production": {OPERATOR: "operator", "SOPS": "operator", APPROVER: "approver",
                              APPROVER2: "approver"},
               "*": {"*": "viewer"}},
    )


@pytest.fixture
def app(settings: WebSettings, store: str) -> App:
    return App(settings, FixedClock(NOW), store)
