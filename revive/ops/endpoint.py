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

Every failure is raised as ``EndpointError``, a ``revive.errors.TransientOpsError`` that also
carries the last error per DC and whether a non-idempotent request's outcome is unknown.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import httpx

from revive.errors import OpsError, TransientOpsError

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

log = logging.getLogger("revive.ops")

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


class EndpointError(TransientOpsError):
    """No replica of an ops tool gave an answer now; trying again later may work.

    ``errors`` maps each DC to the last error seen there. ``outcome_unknown`` is true when a
    non-idempotent request may have been applied by a replica that then failed to answer: the
    caller must find out (the runbook's step records decide) before sending it again.
    """

    def __init__(
        self,
        message: str,
        *,
        tool: str = "",
        target: str = "",
        errors: Mapping[str, str] | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message, tool=tool, target=target)
        self.errors = dict(errors or {})
        self.outcome_unknown = outcome_unknown


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
class EndpointPolicy:
    """How hard a ``ReplicatedEndpoint`` tries, and when it gives a replica a rest.

    ``replica_failed`` says whether a 5xx response means the replica is broken (fail over,
    count it against the breaker) rather than being the tool's own answer, which is returned.
    ``unreached`` says whether such a response proves the request never reached the tool,
    which is what allows a non-idempotent request to fail over.
    """

    failure_threshold: int = 3
    open_s: float = 30.0
    max_attempts: int = 4
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 2.0
    retry_after_cap_s: float = 5.0
    budget_ratio: float = 0.1
    budget_min_retries: int = 3
    budget_window: int = 100
    replica_failed: Callable[[httpx.Response], bool] = field(default=failover_status)
    unreached: Callable[[httpx.Response], bool] = field(default=replica_unreachable)

    def __post_init__(self) -> None:
        positive = {
            "failure_threshold": self.failure_threshold,
            "max_attempts": self.max_attempts,
            "budget_window": self.budget_window,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        non_negative = {
            "open_s": self.open_s,
            "backoff_base_s": self.backoff_base_s,
            "backoff_cap_s": self.backoff_cap_s,
            "retry_after_cap_s": self.retry_after_cap_s,
            "budget_ratio": self.budget_ratio,
            "budget_min_retries": self.budget_min_retries,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")


class BreakerState(StrEnum):
    """A replica's circuit breaker: closed (use it), open (skip it), half_open (one trial)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class _Ticket:
    """One request's entry in the retry budget's window."""

    retries: int = 0


class RetryBudget:
    """Retries may not exceed ``ratio`` of first attempts plus ``min_retries``.

    Counted over a sliding window of the last ``window`` requests (each request is one first
    attempt; failing over to another replica within the first round is not a retry).
    """

    def __init__(self, ratio: float = 0.1, min_retries: int = 3, window: int = 100) -> None:
        self.ratio, self.min_retries = ratio, min_retries
        self._window: deque[_Ticket] = deque(maxlen=window)

    def start(self) -> _Ticket:
        """Record a new request (a first attempt) and return its ticket."""
        ticket = _Ticket()
        self._window.append(ticket)
        return ticket

    @property
    def retries(self) -> int:
        """Retries spent by the requests in the window."""
        return sum(t.retries for t in self._window)

    def can_retry(self) -> bool:
        """Whether one more retry stays within the budget."""
        return self.retries + 1 <= self.ratio * len(self._window) + self.min_retries

    def spend(self, ticket: _Ticket) -> None:
        """Count one retry against ``ticket``'s request."""
        ticket.retries += 1


class _Breaker:
    """Consecutive-failure circuit breaker for one replica, on an injectable monotonic clock."""

    def __init__(
        self, tool: str, dc: str, policy: EndpointPolicy, monotonic: Callable[[], float]
    ) -> None:
        self.tool, self.dc, self.policy, self.monotonic = tool, dc, policy, monotonic
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.trial_in_flight = False
        self.last_reason = ""

    def current(self) -> BreakerState:
        if (
            self.state is BreakerState.OPEN
            and self.monotonic() - self.opened_at >= self.policy.open_s
        ):
            self.state = BreakerState.HALF_OPEN
            self.trial_in_flight = False
            log.info(
                "ops tool %s: circuit for %s half-open after %.1f s; next request is a trial",
                self.tool,
                self.dc,
                self.policy.open_s,
                extra={"tool": self.tool, "dc": self.dc, "breaker": "half_open"},
            )
        return self.state

    def available(self) -> bool:
        state = self.current()
        return state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and not self.trial_in_flight
        )

    def acquire(self) -> bool:
        """Take permission to send one request (the single trial when half-open)."""
        if not self.available():
            return False
        if self.state is BreakerState.HALF_OPEN:
            self.trial_in_flight = True
        return True

    def release(self) -> None:
        """The request ended without a verdict on the replica (cancelled, local error)."""
        self.trial_in_flight = False

    def success(self) -> None:
        self.trial_in_flight = False
        self.failures = 0
        if self.state is not BreakerState.CLOSED:
            log.info(
                "ops tool %s: circuit for %s closed; the replica answers again",
                self.tool,
                self.dc,
                extra={"tool": self.tool, "dc": self.dc, "breaker": "closed"},
            )
            self.state = BreakerState.CLOSED

    def failure(self, reason: str) -> None:
        self.trial_in_flight = False
        self.failures += 1
        self.last_reason = reason
        trial_failed = self.state is BreakerState.HALF_OPEN
        tripped = (
            self.state is BreakerState.CLOSED and self.failures >= self.policy.failure_threshold
        )
        if trial_failed or tripped:
            self.state = BreakerState.OPEN
            self.opened_at = self.monotonic()
            why = "trial request failed" if trial_failed else f"{self.failures} failures in a row"
            log.warning(
                "ops tool %s: circuit for %s open for %.1f s (%s): %s",
                self.tool,
                self.dc,
                self.policy.open_s,
                why,
                reason,
                extra={"tool": self.tool, "dc": self.dc, "breaker": "open", "reason": reason},
            )

    def describe(self) -> str:
        left = max(0.0, self.policy.open_s - (self.monotonic() - self.opened_at))
        if self.state is BreakerState.HALF_OPEN:
            return f"circuit half-open, trial in flight (last error: {self.last_reason})"
        return f"circuit open for another {left:.1f} s (last error: {self.last_reason})"


@dataclass(slots=True)
class _Pooled:
    """A replica's client and how many requests are using it right now."""

    client: httpx.AsyncClient
    in_flight: int = 0
    retired: bool = False


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: str
    exc: BaseException
    counts: bool  # against the replica's breaker (and drops its connection pool)
    unsent: bool  # provably never processed: a non-idempotent request may go elsewhere
    retry_after: float = 0.0


class ReplicatedEndpoint:
    """An ops tool reached through its per-DC replicas, with failover, breakers and retries."""

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
    ) -> None:
        if not replicas:
            raise ValueError(f"ops tool {tool!r} has no replicas")
        self.tool = tool
        self.replicas = dict(replicas)
        self.prefer_dc = prefer_dc
        # A prefer_dc without a replica is not an error: the given order is used as is.
        self.order: tuple[str, ...] = tuple(sorted(self.replicas, key=lambda dc: dc != prefer_dc))
        self.policy = policy or EndpointPolicy()
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._transport_factory = transport_factory
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._breakers = {dc: _Breaker(tool, dc, self.policy, monotonic) for dc in self.order}
        self._budget = RetryBudget(
            self.policy.budget_ratio, self.policy.budget_min_retries, self.policy.budget_window
        )
        self._pools: dict[str, _Pooled] = {}
        # One TLS context for every client this endpoint opens: building one per client costs
        # milliseconds, and holds no addresses (names are still resolved per connection).
        self._ssl_context = httpx.create_ssl_context()
        self._current_dc: str | None = None
        self._closed = False

    async def __aenter__(self) -> ReplicatedEndpoint:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def current_dc(self) -> str | None:
        """The DC whose replica last answered (``None`` before the first answer)."""
        return self._current_dc

    @property
    def budget(self) -> RetryBudget:
        """This endpoint's retry budget (read it to see how many retries were spent)."""
        return self._budget

    def breaker_state(self, dc: str) -> BreakerState:
        """The circuit breaker state of ``dc``'s replica (open turns half-open after open_s)."""
        if dc not in self._breakers:
            raise KeyError(f"ops tool {self.tool!r} has no replica in {dc!r}")
        return self._breakers[dc].current()

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
        ticket = self._budget.start()
        errors: dict[str, str] = {}
        last_exc: BaseException | None = None
        pending: tuple[str, str, int] | None = None  # (from DC, reason, log level)
        retry_after = 0.0
        budget_spent = False

        for round_no in range(self.policy.max_attempts):
            if round_no:
                if not any(self._breakers[dc].available() for dc in self.order):
                    break
                if not self._budget.can_retry():
                    budget_spent = True
                    break
                await self._sleep(self._backoff(round_no - 1, retry_after))
                retry_after = 0.0
            for dc in self.order:
                self._check_open()  # aclose() may have run while this request slept
                breaker = self._breakers[dc]
                if round_no and not self._budget.can_retry():
                    budget_spent = True
                    break
                if not breaker.acquire():
                    errors[dc] = breaker.describe()
                    if pending is None:
                        pending = (dc, "circuit open", logging.INFO)
                    continue
                if round_no:
                    self._budget.spend(ticket)
                if pending is not None:
                    self._log_failover(pending, dc, round_no)
                    pending = None
                outcome = await self._send(dc, method, path, json, params, headers)
                if isinstance(outcome, httpx.Response):
                    self._answered(dc)
                    return outcome
                errors[dc] = outcome.reason
                last_exc = outcome.exc
                if not idempotent and not outcome.unsent:
                    raise EndpointError(
                        f"{self.tool}: {method} {path} sent to {dc}, outcome unknown "
                        f"({outcome.reason}); not resent because it is not idempotent",
                        tool=self.tool,
                        errors=errors,
                        outcome_unknown=True,
                    ) from outcome.exc
                retry_after = max(retry_after, outcome.retry_after)
                pending = (dc, outcome.reason, logging.WARNING)
            if budget_spent:
                break

        note = "; retry budget exhausted" if budget_spent else ""
        detail = "; ".join(f"{dc}: {errors.get(dc, 'not tried')}" for dc in self.order)
        log.warning(
            "ops tool %s: every replica failed for %s %s (%s)%s",
            self.tool,
            method,
            path,
            detail,
            note,
            extra={"tool": self.tool},
        )
        raise EndpointError(
            f"{self.tool}: every replica failed for {method} {path} ({detail}){note}",
            tool=self.tool,
            errors=errors,
        ) from last_exc

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"endpoint for {self.tool!r} is closed")

    def _backoff(self, retry_no: int, retry_after: float) -> float:
        """Full jitter: uniform(0, min(cap, base * 2**retry_no)), at least a capped Retry-After."""
        bound = min(self.policy.backoff_cap_s, self.policy.backoff_base_s * 2**retry_no)
        delay = self._rng.uniform(0.0, bound)
        if retry_after > 0:
            delay = max(delay, min(retry_after, self.policy.retry_after_cap_s))
        return delay

    async def _send(
        self,
        dc: str,
        method: str,
        path: str,
        json: Any,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
    ) -> httpx.Response | _Failure:
        """One request to one replica, classified; the breaker always gets its verdict."""
        breaker = self._breakers[dc]
        pooled = self._pool(dc)
        pooled.in_flight += 1
        outcome: httpx.Response | _Failure | None = None
        try:
            try:
                response = await pooled.client.request(
                    method, path, json=json, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                outcome = _Failure(
                    reason=_describe(exc),
                    exc=exc,
                    counts=not isinstance(exc, httpx.PoolTimeout),
                    unsent=isinstance(exc, _UNSENT_ERRORS),
                )
            else:
                outcome = self._classify(response)
        finally:
            pooled.in_flight -= 1
            if outcome is None:  # cancelled or a local error: no verdict on the replica
                breaker.release()
                await self._close_if_idle(pooled)
        if isinstance(outcome, _Failure) and outcome.counts:
            breaker.failure(outcome.reason)
            await self._retire(dc, pooled)
        else:
            breaker.success()  # it answered, even if with 429
            await self._close_if_idle(pooled)
        return outcome

    def _classify(self, response: httpx.Response) -> httpx.Response | _Failure:
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
            return _Failure(reason, exc, counts=True, unsent=self.policy.unreached(response))
        return _Failure(
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
            )
            pooled = self._pools[dc] = _Pooled(client)
        return pooled

    async def _retire(self, dc: str, pooled: _Pooled) -> None:
        """Drop ``dc``'s client so the next request opens fresh connections (and resolves)."""
        if self._pools.get(dc) is pooled:
            del self._pools[dc]
        pooled.retired = True
        await self._close_if_idle(pooled)

    async def _close_if_idle(self, pooled: _Pooled) -> None:
        # Requests still in flight on a retired client finish first; the last one closes it.
        if pooled.retired and pooled.in_flight == 0 and not pooled.client.is_closed:
            await pooled.client.aclose()

    def _answered(self, dc: str) -> None:
        previous, self._current_dc = self._current_dc, dc
        if previous is not None and previous != dc:
            back = " (back on the preferred replica)" if dc == self.prefer_dc else ""
            log.info(
                "ops tool %s: now using %s instead of %s%s",
                self.tool,
                dc,
                previous,
                back,
                extra={"tool": self.tool, "from_dc": previous, "to_dc": dc},
            )

    def _log_failover(self, pending: tuple[str, str, int], to_dc: str, round_no: int) -> None:
        from_dc, reason, level = pending
        verb = "retrying" if from_dc == to_dc else "failing over"
        log.log(
            level,
            "ops tool %s: %s from %s to %s (round %d): %s",
            self.tool,
            verb,
            from_dc,
            to_dc,
            round_no + 1,
            reason,
            extra={"tool": self.tool, "from_dc": from_dc, "to_dc": to_dc, "reason": reason},
        )


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
