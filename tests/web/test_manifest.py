"""slack/manifest.yaml stays true to the app: its command and URLs are routes revive serves,
and its bot scopes are exactly what the Web API methods revive calls need."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from fastapi.routing import APIRoute
from pydantic import SecretStr

from revive.web.app import create_app
from revive.web.settings import WebSettings
from tests.factories import REPO
from tests.web.slack import TOPOLOGY

MANIFEST = REPO / "slack" / "manifest.yaml"
#: Bot scope each Web API method revive calls needs; ``None``: no bot scope (the app-level
#: token's connections:write opens Socket Mode connections). A method missing here fails
#: the test: add its scope to the manifest and to this map.
METHOD_SCOPES: dict[str, str | None] = {
    "chat.postMessage": "chat:write",  # to a channel, and to a user id: the app's DM
    "chat.update": "chat:write",
    "usergroups.list": "usergroups:read",
    "apps.connections.open": None,
}
_QUOTED = re.compile(r"""["'](chat|conversations|usergroups|users|reactions|files|views|im|"""
                     r"""apps|auth|team)\.([a-zA-Z.]+)["']""")
_SDK_CALL = re.compile(r"\.(chat|conversations|usergroups|users|reactions|files|views|im|"
                       r"apps|auth|team)_([a-zA-Z_]+)\(")


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def methods_called() -> set[str]:
    """Every Web API method named in revive's code, quoted or as a slack_sdk call."""
    found: set[str] = set()
    for path in (REPO / "revive").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        found |= {f"{family}.{name}" for family, name in _QUOTED.findall(text)}
        for family, name in _SDK_CALL.findall(text):
            head, *rest = name.split("_")
            found.add(".".join([family, head + "".join(w.title() for w in rest)]))
    return found


def served_posts(store: str) -> set[str]:
    api = create_app(WebSettings(slack_signing_secret=SecretStr("s3cret"), topology=TOPOLOGY))
    return {route.path for route in api.routes
            if isinstance(route, APIRoute) and "POST" in route.methods}


def test_the_command_and_urls_are_the_routes_revive_serves(
        manifest: dict[str, Any], store: str) -> None:
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/revive"
    interactivity = manifest["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    urls = [command["url"], interactivity["request_url"]]
    assert all(urlparse(u).scheme == "https" for u in urls)
    assert len({urlparse(u).netloc for u in urls}) == 1  # one server
    paths = [urlparse(u).path for u in urls]
    assert paths == ["/slack/commands", "/slack/interactions"]
    assert set(paths) <= served_posts(store)
    assert manifest["settings"]["socket_mode_enabled"] is False


def test_the_bot_scopes_are_what_the_code_needs(manifest: dict[str, Any]) -> None:
    called = methods_called()
    assert {"chat.postMessage", "chat.update", "usergroups.list"} <= called
    unknown = called - set(METHOD_SCOPES)
    assert not unknown, f"revive calls {sorted(unknown)}: add their scopes"
    needed = {"commands"} | {METHOD_SCOPES[m] for m in called} - {None}
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == needed


def test_direct_messages_can_reach_people(manifest: dict[str, Any]) -> None:
    """Approval codes go to the approver's DM with the app (chat.postMessage to a user id),
    which is its App Home's messages tab."""
    home = manifest["features"]["app_home"]
    assert home["messages_tab_enabled"] is True
    assert manifest["features"]["bot_user"]["display_name"]
