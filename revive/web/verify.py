"""Slack request verification: nothing a request asks for runs until its signature checks out.

Slack signs ``v0:<timestamp>:<raw body>`` with the app's signing secret (HMAC-SHA256). We check
it with slack-sdk's own ``SignatureVerifier`` (constant-time compare, 5-minute window, so a
captured request cannot be replayed later) rather than a hand-rolled copy. The clock is
injectable so Slack's published example, signed in 2018, can be checked in tests.

Everything here runs before anyone is authenticated, so nothing here may be made to fail
loudly or to use much memory: headers that cannot be Slack's are refused before the body is
read, the body is read in chunks up to ``MAX_BODY_BYTES`` (Slack sends a few kB) and refused
with 413 past it, and input slack-sdk would trip over (a timestamp too large for a float, a
body that is not UTF-8, a signature that is not ASCII) is simply "not signed": 401.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request
from slack_sdk.signature import Clock, SignatureVerifier

__all__ = ["MAX_BODY_BYTES", "SIGNATURE_HEADER", "TIMESTAMP_HEADER", "SignedBody",
           "make_verifier", "read_capped", "verified_body"]

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"
#: The largest body read. Slack's commands and interactions are a few kB.
MAX_BODY_BYTES = 64 * 1024
#: Epoch seconds have 10 digits until the year 2286; more cannot be a real timestamp.
MAX_TIMESTAMP_DIGITS = 12
#: ``v0=`` and 64 hex digits, with room to spare.
MAX_SIGNATURE_CHARS = 128


@dataclass(frozen=True)
class SignedBody:
    """The raw body of a correctly signed, fresh request, and what it was signed with."""

    body: bytes
    timestamp: int
    signature: str

    @property
    def signed(self) -> tuple[int, str]:
        """(timestamp, signature): unique per signed request, the key a replay is known by."""
        return self.timestamp, self.signature


def make_verifier(signing_secret: str, *, clock: Clock | None = None) -> SignatureVerifier:
    """A verifier for ``signing_secret``; an empty secret is refused (ValueError) at start-up."""
    if not signing_secret.strip():
        raise ValueError("REVIVE_SLACK_SIGNING_SECRET is not set: Slack requests cannot be "
                         "verified, so the Slack endpoints will not start")
    return SignatureVerifier(signing_secret=signing_secret, clock=clock or Clock())


def _plausible(timestamp: str, signature: str) -> bool:
    """Whether the headers could be Slack's at all: checked before the body is read."""
    return (timestamp.isascii() and timestamp.isdigit()
            and len(timestamp) <= MAX_TIMESTAMP_DIGITS
            and signature.isascii() and 0 < len(signature) <= MAX_SIGNATURE_CHARS)


def is_signed(verifier: SignatureVerifier, body: bytes, timestamp: str, signature: str) -> bool:
    """Whether the request is correctly signed and fresh; malformed input is simply false."""
    timestamp = timestamp.strip()
    if not _plausible(timestamp, signature):
        return False
    try:
        text = body.decode("utf-8")  # Slack's bodies are; slack-sdk would raise on others
    except UnicodeDecodeError:
        return False
    try:
        return verifier.is_valid(body=text, timestamp=timestamp, signature=signature)
    except (ValueError, TypeError, OverflowError):
        return False


async def read_capped(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, read in chunks and never more than ``limit`` bytes of it: 413 past that
    (at once when ``Content-Length`` says so), 400 for a ``Content-Length`` that is no
    number."""
    declared = request.headers.get("content-length")
    if declared is not None:
        declared = declared.strip()
        if not (declared.isascii() and declared.isdigit() and len(declared) <= 18):
            raise HTTPException(status_code=400, detail="invalid Content-Length")
        if int(declared) > limit:
            raise HTTPException(status_code=413, detail=f"body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status_code=413, detail=f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def verified_body(verifier: SignatureVerifier, *, limit: int = MAX_BODY_BYTES
                  ) -> Callable[[Request], Awaitable[SignedBody]]:
    """A FastAPI dependency: the body of a correctly signed, fresh request (``SignedBody``),
    else 401; a body over ``limit`` is refused (413) without being read past it."""

    def refuse(request: Request) -> HTTPException:
        log.warning("refused a Slack request to %s: bad, missing or stale signature",
                    request.url.path)
        return HTTPException(status_code=401, detail="invalid Slack signature")

    async def dependency(request: Request) -> SignedBody:
        timestamp = request.headers.get(TIMESTAMP_HEADER, "").strip()
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not _plausible(timestamp, signature):
            raise refuse(request)  # before reading a byte of the body
        body = await read_capped(request, limit)
        if not is_signed(verifier, body, timestamp, signature):
            raise refuse(request)
        return SignedBody(body, int(timestamp), signature)

    return dependency
