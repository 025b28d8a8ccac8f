"""HTTP plumbing of the simulator's API: error statuses, request bodies, replica routing.

Kept apart from the routes (``app.py``) so each file stays readable: this part is what an
adapter author reads to know which status means what and how replicas are addressed.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from revive.sim.estate import (
    BadRequest,
    Conflict,
    QuotaExceeded,
    SimError,
    Unavailable,
    UnknownTarget,
)

ACCEPTED = 202
_STATUS: list[tuple[type[SimError], int]] = [
    (UnknownTarget, 404),
    (BadRequest, 422),
    (QuotaExceeded, 409),
    (Conflict, 409),
    # ArtifactMissing included. 424, not 503: the request reached a healthy replica and the
    # action depends on something that is gone; 503 means "this replica is unreachable" and
    # makes clients fail over (see ReplicaRouting).
    (Unavailable, 424),
]


def status_of(exc: SimError) -> int:
    """HTTP status for a simulator error (500 for a SimError this table does not know)."""
    return next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)


RequestId = Annotated[
    str | None,
    Query(max_length=200, description="Idempotency key: the same key never starts twice."),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PatchBody(_Body):
    version: str


class DeployBody(_Body):
    instances: int
    version: str = "v1"


class ProvisionBody(_Body):
    service: str
    count: int


class CopyBody(_Body):
    artifact: str
    version: str
    src_dc: str
    dst_dc: str


class PushBody(_Body):
    artifact: str
    version: str


class WeightsBody(_Body):
    weights: dict[str, float]


class FlagBody(_Body):
    on: bool


class SlowBody(_Body):
    extra_latency_s: float


class FailRestartsBody(_Body):
    count: int = 1


class WaitBody(_Body):
    participant: str | None = None
    until: float | None = Field(None, allow_inf_nan=False)
    for_s: float | None = Field(None, ge=0, allow_inf_nan=False)
    actions: list[str] | None = None
    any: bool = False


class ReplicaRouting:
    """Serve ``/r/{tool}/{dc}/...`` as that ops-tool replica would: 503 while it is down.

    Every ops tool in the topology has one replica per DC; clients address a replica by
    this prefix, so their failover between replicas is exercised for real over HTTP.
    """

    def __init__(self, app: Any, estate: Any) -> None:
        self.app, self.estate = app, estate

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/r/"):
            parts = scope["path"].split("/", 4)
            if len(parts) < 4:
                await _send_json(
                    send, 404, {"error": "use /r/{tool}/{dc}/...", "kind": "UnknownTarget"}
                )
                return
            tool, dc = parts[2], parts[3]
            try:
                view = self.estate.replica(tool, dc)
            except SimError as exc:
                await _send_json(
                    send, status_of(exc), {"error": str(exc), "kind": type(exc).__name__}
                )
                return
            if not view.reachable:
                body = {"error": f"{tool} replica in {dc} is unreachable", "kind": "Unavailable"}
                await _send_json(send, 503, body)
                return
            rest = "/" + (parts[4] if len(parts) > 4 else "")
            scope = {**scope, "path": rest, "raw_path": rest.encode()}
        await self.app(scope, receive, send)


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
