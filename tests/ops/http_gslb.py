"""A team's own GSLB and compute API, as the http-template tests wire it: real local HTTP.

Two replicas (one per DC) share one state, as a replicated GSLB's nodes do; each replica can
be switched to answer 503, to hang, or be taken down. Every request needs
``Authorization: Bearer <TOKEN>``. Under ``/gslb``:

- ``GET  /api/v1/dcs`` -> ``{"data": {"weights": {dc: w}}}`` (the classes' mean);
  ``PUT`` ``{"weights": {...}}`` sets every class -> ``{"ok": true}``, or
  ``200 {"ok": false, "error": ...}`` for an unknown DC (the API's way to say no);
- ``GET  /api/v1/classes`` -> ``{"data": {"classes": {class: {dc: w}}}}``;
  ``PUT /api/v1/classes/<class>`` ``{"weights": {...}}`` (missing DCs 0, normalised);
  unknown class -> 404;
- ``POST /api/v1/compute/<dc>/<service>?count=N`` with ``Idempotency-Key`` ->
  ``{"operation": {"name": "op-N"}}`` (the same key gives the same operation);
  ``GET /api/v1/operations/<name>`` -> ``{"status": "RUNNING"}`` then ``"SUCCEEDED"``;
  ``GET /api/v1/quota/<dc>`` -> ``{"left": n}``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.ops.http_servers import JsonHandler, LocalServer

TOKEN = "s3cret-token"
PREFIX = "/gslb"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    authorized: bool


@dataclass
class GslbState:
    """What every replica shares."""

    dcs: tuple[str, ...]
    classes: dict[str, dict[str, float]]
    quota: dict[str, int]
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_class(self, name: str, weights: dict[str, Any]) -> None:
        total = sum(float(v) for v in weights.values())
        self.classes[name] = {dc: (float(weights.get(dc, 0.0)) / total if total else 0.0)
                              for dc in self.dcs}


class _GslbHandler(JsonHandler):
    def do_GET(self) -> None:
        self._serve()

    do_PUT = do_POST = do_GET

    def _serve(self) -> None:
        replica: GslbReplica = self.server.owner  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        authorized = self.headers.get("Authorization") == f"Bearer {TOKEN}"
        with replica.lock:
            replica.seen.append(Seen(self.command, parts.path, authorized))
            mode = replica.mode
        if mode == "fail":
            self.reply(503, {"error": f"{replica.name} is overloaded"})
            return
        if mode == "hang":
            replica.released.wait(20.0)
            self.close_connection = True
            return
        if not authorized:
            self.reply(401, {"error": "unauthorized"})
            return
        if not parts.path.startswith(PREFIX + "/"):
            self.reply(404, {"error": "not here"})
            return
        body = json.loads(raw) if raw else None
        status, answer = route(replica.state, self.command, parts.path[len(PREFIX):],
                               parse_qs(parts.query), body, self.headers.get("Idempotency-Key"))
        self.reply(status, answer)


def route(state: GslbState, method: str, path: str, query: dict[str, list[str]], body: Any,
          key: str | None) -> tuple[int, Any]:
    segments = [unquote(s) for s in path.strip("/").split("/")]
    with state.lock:
        match method, segments:
            case "GET", ["api", "v1", "dcs"]:
                n = len(state.classes)
                weights = {dc: sum(c[dc] for c in state.classes.values()) / n
                           for dc in state.dcs}
                return 200, {"data": {"weights": weights}}
            case "PUT", ["api", "v1", "dcs"]:
                unknown = sorted(set(body["weights"]) - set(state.dcs))
                if unknown:
                    return 200, {"ok": False, "error": f"unknown datacenter {unknown[0]}"}
                for name in state.classes:
                    state.set_class(name, body["weights"])
                return 200, {"ok": True}
            case "GET", ["api", "v1", "classes"]:
                return 200, {"data": {"classes": state.classes}}
            case "PUT", ["api", "v1", "classes", name]:
                if name not in state.classes:
                    return 404, {"error": f"no traffic class {name}"}
                state.set_class(name, body["weights"])
                return 200, {"ok": True}
            case "POST", ["api", "v1", "compute", dc, service]:
                if key and key in state.by_key:
                    return 200, {"operation": {"name": state.by_key[key]}}
                count = int(query["count"][0])
                if count > state.quota[dc]:
                    return 403, {"error": f"quota: {state.quota[dc]} left in {dc}"}
                state.quota[dc] -= count
                name = f"op-{len(state.operations) + 1}"
                state.operations[name] = {"service": service, "dc": dc, "polls": 0}
                if key:
                    state.by_key[key] = name
                return 200, {"operation": {"name": name}}
            case "GET", ["api", "v1", "operations", name]:
                op = state.operations.get(name)
                if op is None:
                    return 404, {"error": f"no operation {name}"}
                op["polls"] += 1
                return 200, {"status": "RUNNING" if op["polls"] < 2 else "SUCCEEDED"}
            case "GET", ["api", "v1", "quota", dc]:
                return 200, {"left": state.quota[dc]}
    return 404, {"error": f"no route {method} {path}"}


class GslbReplica(LocalServer):
    """One DC's node of the API; ``mode`` is ok, fail (503) or hang."""

    handler = _GslbHandler

    def __init__(self, name: str, state: GslbState) -> None:
        super().__init__(name)
        self.state = state
        self.mode = "ok"
        self.seen: list[Seen] = []

    @property
    def base(self) -> str:
        return f"{self.url}{PREFIX}"

    def set_mode(self, mode: str) -> None:
        with self.lock:
            self.mode = mode
        if mode != "hang":
            self.released.set()
            self.released = threading.Event()
