"""Roles are looked up in the served topology's environment, read again when it changes."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import create_engine

from revive.web.access import FALLBACK_ENVIRONMENT, Access
from revive.web.settings import WebSettings
from tests.web.slack import TOPOLOGY


def test_the_environment_follows_the_topology_file(tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    text = Path(TOPOLOGY).read_text()
    assert "environment: production" in text
    path.write_text(text.replace("environment: production", "environment: staging", 1))
    access = Access(WebSettings(slack_signing_secret=SecretStr("s"), topology=str(path)),
                    create_engine("sqlite://"))
    assert access.environment() == "staging"
    assert access.environment() == "staging"  # from memory: the file did not change
    path.write_text(text)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a newer version
    assert access.environment() == "production"
    path.write_text("environment: [broken")
    assert access.environment() == FALLBACK_ENVIRONMENT  # the strictest, never a wider one
