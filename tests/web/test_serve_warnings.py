"""``revive serve`` says at start, one line each on stderr, what it lacks for Slack."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from revive.drill.server import free_port
from revive.web.settings import WebSettings, startup_warnings
from tests.web.slack import TOPOLOGY

START_TIMEOUT_S = 120.0
CONFIGURED = {"REVIVE_SLACK_BOT_TOKEN": "xoxb-1", "REVIVE_SLACK_CHANNEL": "#incident"}


def settings(*, secret: str = "s3cret", roles: dict[str, dict[str, str]] | None = None,
             token: str = "") -> WebSettings:
    return WebSettings(slack_signing_secret=SecretStr(secret), board_token=SecretStr(token),
                       roles={"*": {"U1": "admin"}} if roles is None else roles,
                       topology=TOPOLOGY)


def test_nothing_to_say_when_everything_is_set() -> None:
    assert startup_warnings(settings(), CONFIGURED) == []


def test_each_missing_setting_is_one_line() -> None:
    lines = startup_warnings(settings(secret="", roles={}), {}, host="127.0.0.1")
    assert len(lines) == 4
    assert all(line.startswith("warning: ") and "\n" not in line for line in lines)
    secret, roles, token, channel = lines
    assert "REVIVE_SLACK_SIGNING_SECRET" in secret and "503" in secret and "GET /" in secret
    assert "REVIVE_ROLES" in roles and "/revive help" in roles
    assert "REVIVE_SLACK_BOT_TOKEN" in token
    assert "REVIVE_SLACK_CHANNEL" in channel and "log only" in channel


def test_roles_that_give_nobody_anything_are_empty() -> None:
    (line,) = startup_warnings(settings(roles={"production": {}}), CONFIGURED)
    assert "REVIVE_ROLES is empty" in line


def test_an_open_board_on_a_public_interface_is_said() -> None:
    assert startup_warnings(settings(), CONFIGURED, host="::1") == []
    (line,) = startup_warnings(settings(), CONFIGURED, host="0.0.0.0")
    assert "REVIVE_BOARD_TOKEN" in line and "0.0.0.0" in line
    assert startup_warnings(settings(token="t"), CONFIGURED, host="0.0.0.0") == []


def _wait_for_line(process: subprocess.Popen[str], needle: str) -> list[str]:
    """stdout lines up to and with ``needle``; fails if the process ends first."""
    assert process.stdout is not None
    seen: list[str] = []
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if selector.select(timeout=1.0):
            line = process.stdout.readline()
            if not line:
                break
            seen.append(line)
            if needle in line:
                return seen
    raise AssertionError(f"no {needle!r} from revive serve; stdout: {seen}")


def test_serve_starts_without_slack_warns_and_serves_the_board(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REVIVE_", "PREFECT_API"))}
    env.update(REVIVE_DATABASE_URL=f"sqlite:///{tmp_path / 'revive.db'}", REVIVE_TOPOLOGY=TOPOLOGY)
    port = free_port()
    revive = str(Path(sys.executable).with_name("revive"))
    process = subprocess.Popen([revive, "serve", "--port", str(port)], env=env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_line(process, "listening on")
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # uvicorn binds just after the line
            try:
                board = httpx.get(f"http://127.0.0.1:{port}/", timeout=30.0)
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        assert board.status_code == 200 and "revive status board" in board.text
        slack = httpx.post(f"http://127.0.0.1:{port}/slack/commands", content="text=help",
                           timeout=30.0)
        assert slack.status_code == 503
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            _out, err = process.communicate()
            pytest.fail(f"revive serve did not stop on SIGTERM: {err}")
    assert process.returncode == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert [w.split(" ")[1] for w in warnings] == [
        "REVIVE_SLACK_SIGNING_SECRET", "REVIVE_ROLES", "REVIVE_SLACK_BOT_TOKEN",
        "REVIVE_SLACK_CHANNEL"]
    assert "Traceback" not in err
