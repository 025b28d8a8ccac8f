"""Hostile HTTP input to the Slack endpoints: a 4xx with a reason, never a 500, and no body
read past the cap (Slack sends a few kB; an attacker can send hundreds of MB).

Every request goes through the real ASGI app. Bodies are streamed by generators that count
the bytes the app pulled, so "the app never read more than the cap" is asserted, not
inferred from memory figures. The transport turns an exception in the app into a 500
response (as a server would) rather than raising it into the test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from revive.web.verify import MAX_BODY_BYTES
from tests.web.slack import NOW, OPERATOR, App, button_payload, sign, signed_headers, text_of

CHUNK = 16 * 1024
HUGE = 300 * 1024 * 1024  # the 300 MB of the report


class Counted:
    """A streamed body of ``total`` bytes that counts how much of it was pulled."""

    def __init__(self, total: int, byte: bytes = b"a") -> None:
        self.total = total
        self.byte = byte
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.total:
            size = min(CHUNK, self.total - self.pulled)
            self.pulled += size
            yield self.byte * size


def post(app: App, path: str, content: Any, headers: dict[str, Any]) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://revive") as client:
            return await client.post(path, content=content, headers=headers)

    return asyncio.run(go())


def signed_form(app: App, path: str, form: dict[str, str], **headers: Any) -> httpx.Response:
    body = urlencode(form)
    return post(app, path, body, signed_headers(body, str(NOW), **headers))


def test_an_unsigned_huge_post_is_refused_without_reading_its_body(app: App) -> None:
    body = Counted(HUGE)
    response = post(app, "/slack/commands", body, {"Content-Type": "text/plain"})
    assert response.status_code == 401
    assert body.pulled == 0


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_huge_post_with_plausible_headers_is_413_and_read_only_up_to_the_cap(
    app: App, declared: bool
) -> None:
    body = Counted(HUGE)
    headers = {"X-Slack-Request-Timestamp": str(NOW), "X-Slack-Signature": "v0=" + "0" * 64}
    if declared:
        headers["Content-Length"] = str(HUGE)
    response = post(app, "/slack/interactions", body, headers)
    assert response.status_code == 413
    assert body.pulled <= (0 if declared else MAX_BODY_BYTES + CHUNK)
    assert app.audit() == [] and app.started == []


def test_a_signed_body_over_the_cap_is_413(app: App) -> None:
    body = "payload=" + "[" * 100_000  # 100k-deep nesting does not fit under the cap
    response = post(app, "/slack/interactions", body, signed_headers(body, str(NOW)))
    assert response.status_code == 413


def test_a_400_digit_timestamp_is_401(app: App) -> None:
    body = urlencode({"text": "help", "user_id": OPERATOR})
    timestamp = "9" * 400
    response = post(app, "/slack/commands", body,
                    {"X-Slack-Request-Timestamp": timestamp,
                     "X-Slack-Signature": sign(body, timestamp)})
    assert response.status_code == 401


def test_a_non_utf8_body_with_a_wrong_signature_is_401(app: App) -> None:
    response = post(app, "/slack/commands", b"\xff\xfe\xfd text=run",
                    {"X-Slack-Request-Timestamp": str(NOW),
                     "X-Slack-Signature": "v0=" + "0" * 64})
    assert response.status_code == 401


def test_a_non_ascii_signature_is_401(app: App) -> None:
    body = urlencode({"text": "help", "user_id": OPERATOR})
    response = post(app, "/slack/commands", body,
                    {"X-Slack-Request-Timestamp": str(NOW),
                     "X-Slack-Signature": ("v0=" + "\xe9" * 64).encode("latin-1")})
    assert response.status_code == 401


@pytest.mark.parametrize("declared", ["abc", "\xb2", "1" * 40])
def test_a_content_length_that_is_no_number_is_400(app: App, declared: str) -> None:
    body = urlencode({"text": "help", "user_id": OPERATOR})
    headers = signed_headers(body, str(NOW))
    headers["Content-Length"] = declared
    response = post(app, "/slack/commands", body.encode(), {
        k: v.encode("latin-1") for k, v in headers.items()})
    assert response.status_code == 400


def test_a_retry_header_that_is_no_ascii_number_is_ignored(app: App) -> None:
    body = urlencode({"text": "help", "user_id": OPERATOR, "trigger_id": "T-retry"})
    headers = {k: v.encode("latin-1") for k, v in signed_headers(body, str(NOW)).items()}
    headers["X-Slack-Retry-Num"] = "\xb2".encode("latin-1")  # isdigit(), yet no int()
    response = post(app, "/slack/commands", body, headers)
    assert response.status_code == 200
    assert "/revive" in text_of(response)


@pytest.mark.parametrize("payload", [
    {"type": "block_actions", "user": "mallory", "actions": [{"action_id": "x"}]},
    {"type": "block_actions", "user": {"id": OPERATOR}, "actions": "approve"},
    {"type": "block_actions", "user": {"id": OPERATOR}, "actions": [1]},
    {"type": "block_actions", "user": {"id": OPERATOR}, "channel": [],
     "actions": [{"action_id": "x"}]},
    {"type": "block_actions", "user": {"id": ["U1"]}, "actions": [{"action_id": "x"}]},
    {"type": "block_actions", "user": {"id": OPERATOR},
     "actions": [{"action_id": {"a": 1}, "value": "x"}]},
], ids=["user-string", "actions-string", "action-number", "channel-list", "user-id-list",
        "action-id-object"])
def test_signed_but_malformed_interaction_json_is_400(app: App, payload: dict[str, Any]
                                                      ) -> None:
    response = signed_form(app, "/slack/interactions", {"payload": json.dumps(payload)})
    assert response.status_code == 400
    assert "expected" in response.json()["error"]
    assert app.resumed == [] and app.audit() == []


@pytest.mark.parametrize("body", ["payload=" + "[" * 60_000, "payload=%7Bnope",
                                  "payload=%5B1%5D", "nothing=here"],
                         ids=["deep-nesting-under-the-cap", "not-json", "not-an-object",
                              "no-payload"])
def test_an_interaction_that_is_not_a_json_object_is_400(app: App, body: str) -> None:
    assert len(body) < MAX_BODY_BYTES
    response = post(app, "/slack/interactions", body, signed_headers(body, str(NOW)))
    assert response.status_code == 400
    assert app.resumed == []


def test_a_form_with_too_many_fields_is_400(app: App) -> None:
    body = "&".join(f"f{n}=1" for n in range(5_000))
    response = post(app, "/slack/commands", body, signed_headers(body, str(NOW)))
    assert response.status_code == 400
    assert app.started == []


def test_a_well_formed_click_still_works(app: App) -> None:
    run_id = app.create_run()
    response = signed_form(app, "/slack/interactions",
                           {"payload": json.dumps(button_payload(OPERATOR, run_id, "traffic"))})
    assert response.status_code == 200
