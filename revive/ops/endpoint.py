"""One async client for an ops tool that has a replica in every data center.

Why this exists: in the seed incident, clients that had cached a burning DC's addresses kept
failing long after healthy replicas elsewhere could have answered. Every ops tool revive calls
(registry, secret store, compute API, GSLB, metrics, ...) therefore goes through a
``ReplicatedEndpoint``, which:

- prefers the replica in the DC the run executes from, then the others in topology order;
- fails over on transport errors, on 500/502/503/504 and on 408/425/429 (honouring a capped
  ``Retry-After``), but hands any other answer (2xx, 3xx, 404, 409, 422, ...) straight back;
- keeps one ``httpx.AsyncClient`` per replica and closes it as soon as that replica fails, so
  no pooled connection to a dead address survives; names are resolved by the OS on every new
  connection and never cached here;
- trips a per-replica circuit breaker after consecutive failures so a dead DC costs nothing
  until ``open_s`` has passed, then sends one trial request and, on success, returns to the
  preferred replica;
- retries whole rounds of replicas with full-jitter exponential backoff, bounded both by a
  number of rounds and by a retry budget, so revive never piles onto a struggling tool;
- never resends a non-idempotent request that may have reached a server: when the outcome is
  unknown it raises ``EndpointError(outcome_unknown=True)`` and the runbook's step records
  decide what to do.

The rules themselves (order, breakers, rounds, budget, unknown outcomes) live in
``revive.ops.replicas.ReplicaSet``, shared with the adapters whose tools are not on HTTP;
this module adds what is HTTP: pooled clients, status classification and ``Retry-After``.

Every failure is raised as ``EndpointError``, a ``revive.errors.TransientOpsError`` that also
carries the last error per DC and whether a non-idempotent request's outcome is unknown.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from revive.errors import OpsError, TransientOpsError
from revive.ops.replicas import (
    BreakerState,
    EndpointError,
    Failure,
    ReplicaPolicy,
    ReplicaSet,
    RetryBudget,
    describe,
)

__all__ = [
    "BreakerState",
    "EndpointError",
    "EndpointPolicy",
    "OpsError",
    "ReplicatedEndpoint",
    "RetryBudget",
    "TransientOpsError",
    "failover_status",
    "replica_unreachable",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# The replica is broken or unreachable: fail over, and count it against the replica's breaker.
FAILOVER_STATUSES = frozenset({500, 502, 503, 504})
# The replica is alive but asks us to come back later: fail over, no breaker failure.
TRANSIENT_STATUSES = frozenset({408, 425, 429})
# Transport errors raised before any byte of the request can have reached a server.
_UNSENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)
_BODY_EXCERPT = 200


def failover_status(response: httpx.Response) -> bool:
    """True when a response means the replica is broken: 500, 502, 503 or 504."""
    return response.status_code in FAILOVER_STATUSES


def replica_unreachable(response: httpx.Response) -> bool:
    """True for the replica router's 503 saying the replica itself was never reached.

    The router in front of the replicas (``/r/{tool}/{dc}/...``) answers
    ``503 {"kind": "Unavailable", "error": "<tool> replica in <dc> is unreachable"}`` without
    forwarding the request, so a non-idempotent request can safely go to another replica.
    """
    if response.status_code != 503:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return (
        isinstance(body, dict)
        and body.get("kind") == "Unavailable"
        and str(body.get("error", "")).endswith("is unreachable")
    )


@dataclass(frozen=True)
class EndpointPolicy(ReplicaPolicy):
    """How hard a ``ReplicatedEndpoint`` tries, and what an HTTP answer says of its replica.

    ``replica_failed`` says whether a 5xx response means the replica is broken (fail over,
    count it against the breaker) rather than being the tool's own answer, which is returned.
    ``unreached`` says whether such a response proves the request never reached the tool,
    which is what allows a non-idempotent request to fail over.
    """

    replica_failed: Callable[[httpx.Response], bool] = field(default=failover_status)
    unreached: Callable[[httpx.Response], bool] = field(default=replica_unreachable)


@dataclass(slots=True)
class _Pooled:
    """A replica's client and how many requests are using it right now."""

    client: httpx.AsyncClient
    in_flight: int = 0
    retired: bool = False


class ReplicatedEndpoint:
    """An ops tool reached over HTTP through its per-DC replicas (rules in ``ReplicaSet``)."""

    def __init__(
        self,
        tool: str,
        replicas: Mapping[str, str],
        *,
        prefer_dc: str | None,
        timeout: httpx.Timeout | float = 5.0,
        policy: EndpointPolicy | None = None,
        transport_factory: Callable[[], httpx.AsyncBaseTransport] | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not replicas:
            raise ValueError(f"ops tool {tool!r} has no replicas")
        self.tool = tool
        self.replicas = dict(replicas)
        self.prefer_dc = prefer_dc
        self.policy = policy or EndpointPolicy()
        self.set = ReplicaSet(
            tool, self.replicas, prefer_dc=prefer_dc, policy=self.policy, rng=rng,
            sleep=sleep, monotonic=monotonic,
        )
        self.order = self.set.order
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._transport_factory = transport_factory
        self._headers = dict(headers or {})
        self._pools: dict[str, _Pooled] = {}
        # One TLS context for every client this endpoint opens: building one per client costs
        # milliseconds, and holds no addresses (names are still resolved per connection).
        self._ssl_context = httpx.create_ssl_context()
        self._closed = False

    async def __aenter__(self) -> ReplicatedEndpoint:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def current_dc(self) -> str | None:
        """The DC whose replica last answered (``None`` before the first answer)."""
        return self.set.current_dc

    @property
    def budget(self) -> RetryBudget:
        """This endpoint's retry budget (read it to see how many retries were spent)."""
        return self.set.budget

    def breaker_state(self, dc: str) -> BreakerState:
        """The circuit breaker state of ``dc``'s replica (open turns half-open after open_s)."""
        return self.set.breaker_state(dc)

    def pooled_client(self, dc: str) -> httpx.AsyncClient | None:
        """The client currently pooled for ``dc``'s replica, if any (diagnostics and tests)."""
        pooled = self._pools.get(dc)
        return pooled.client if pooled else None

    async def aclose(self) -> None:
        """Close every replica's client; the endpoint cannot be used afterwards."""
        self._closed = True
        pools, self._pools = list(self._pools.values()), {}
        for pooled in pools:
            pooled.retired = True
            await pooled.client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """Send ``method path`` to the best replica, failing over and retrying as needed.

        Returns the first answer that is not a failure (including 4xx, which the caller maps).
        ``idempotent`` defaults to the HTTP meaning of ``method`` (POST and PATCH are not).
        Raises ``EndpointError`` (a ``TransientOpsError``) when no replica answered, or when a
        non-idempotent request may have been applied without an answer (``outcome_unknown``).
        """
        self._check_open()
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS

        async def attempt(dc: str) -> httpx.Response | Failure:
            return await self._send(dc, method, path, json, params, headers, content)

        return await self.set.call(
            attempt, what=f"{method} {path}", idempotent=idempotent,
            on_failure=self._retire, check_open=self._check_open,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"endpoint for {self.tool!r} is closed")

    async def _send(
        self,
        dc: str,
        method: str,
        path: str,
        json: Any,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        content: bytes | None = None,
    ) -> httpx.Response | Failure:
        """One request to one replica, classified."""
        pooled = self._pool(dc)
        pooled.in_flight += 1
        try:
            response = await pooled.client.request(
                method, path, json=json, params=params, headers=headers, content=content
            )
        except httpx.TransportError as exc:
            return Failure(
                reason=describe(exc),
                exc=exc,
                counts=not isinstance(exc, httpx.PoolTimeout),
                unsent=isinstance(exc, _UNSENT_ERRORS),
            )
        else:
            return self._classify(response)
        finally:
            pooled.in_flight -= 1
            await self._close_if_idle(pooled)

    def _classify(self, response: httpx.Response) -> httpx.Response | Failure:
        status = response.status_code
        broken = self.policy.replica_failed(response)
        if not broken and status not in TRANSIENT_STATUSES:
            return response
        reason = f"HTTP {status} {response.reason_phrase}"
        excerpt = response.text[:_BODY_EXCERPT].strip()
        if excerpt:
            reason = f"{reason}: {excerpt}"
        exc = httpx.HTTPStatusError(reason, request=response.request, response=response)
        if broken:
            return Failure(reason, exc, counts=True, unsent=self.policy.unreached(response))
        return Failure(
            reason,
            exc,
            counts=False,
            unsent=True,
            retry_after=_retry_after(response.headers.get("retry-after")),
        )

    def _pool(self, dc: str) -> _Pooled:
        pooled = self._pools.get(dc)
        if pooled is None:
            transport = self._transport_factory() if self._transport_factory else None
            client = httpx.AsyncClient(
                base_url=self.replicas[dc],
                timeout=self._timeout,
                verify=self._ssl_context,
                transport=transport,
                headers=self._headers,
            )
            pooled = self._pools[dc] = _Pooled(client)
        return pooled

    async def _retire(self, dc: str) -> None:
        """Drop ``dc``'s client so the next request opens fresh connections (and resolves)."""
        pooled = self._pools.pop(dc, None)
        if pooled is not None:
            pooled.retired = True
            await self._close_if_idle(pooled)

    async def _close_if_idle(self, pooled: _Pooled) -> None:
        # Requests still in flight on a retired client finish first; the last one closes it.
        if pooled.retired and pooled.in_flight == 0 and not pooled.client.is_closed:
            await pooled.client.aclose()


def _retry_after(value: str | None) -> float:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or HTTP date), else 0."""
    if not value:
        return 0.0
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
