"""Replica choice, circuit breakers and retries for an ops tool, whatever carries the request.

Why this exists apart from ``ReplicatedEndpoint``: some tools are not reached over HTTP
(HAProxy's runtime socket, ZooKeeper through kazoo, a Kubernetes client), yet they must follow
the same replica rules: the local DC's replica first, failover on error or timeout, a breaker
per replica, retries bounded by rounds and by a budget, and never a resend of a
non-idempotent request that may have been applied. ``ReplicaSet.call`` holds those rules once;
an adapter hands it one attempt against one DC's replica and says how that attempt failed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from revive.errors import TransientOpsError

log = logging.getLogger("revive.ops")

T = TypeVar("T")


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


@dataclass(frozen=True)
class ReplicaPolicy:
    """How hard a replica set tries, and when it gives a replica a rest."""

    failure_threshold: int = 3
    open_s: float = 30.0
    max_attempts: int = 4
    backoff_base_s: float = 0.05
    backoff_cap_s: float = 2.0
    retry_after_cap_s: float = 5.0
    budget_ratio: float = 0.1
    budget_min_retries: int = 3
    budget_window: int = 100

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
        self, tool: str, dc: str, policy: ReplicaPolicy, monotonic: Callable[[], float]
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


@dataclass(frozen=True, slots=True)
class Failure:
    """One attempt on one replica that gave no usable answer.

    ``counts``: against the replica's breaker (the replica is broken or unreachable).
    ``unsent``: the request provably never reached the tool, so a non-idempotent request
    may go to another replica. ``retry_after``: the replica asked for a pause (seconds).
    """

    reason: str
    exc: BaseException
    counts: bool = True
    unsent: bool = False
    retry_after: float = 0.0


def describe(exc: BaseException) -> str:
    """``ExcType: message`` (or just the type when the message is empty)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


#: Connection-level errors raised before a byte of the request can have reached the tool.
UNSENT_OS_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionRefusedError,
    FileNotFoundError,  # a unix socket that is not there
)


def os_failure(exc: BaseException) -> Failure:
    """A socket-level failure (refused, reset, timed out), for adapters not on httpx."""
    return Failure(describe(exc), exc, counts=True, unsent=isinstance(exc, UNSENT_OS_ERRORS))


class ReplicaSet:
    """An ops tool's replicas, one per DC, tried in order with breakers and a retry budget."""

    def __init__(
        self,
        tool: str,
        dcs: list[str] | tuple[str, ...] | Mapping[str, object],
        *,
        prefer_dc: str | None,
        policy: ReplicaPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not dcs:
            raise ValueError(f"ops tool {tool!r} has no replicas")
        self.tool = tool
        self.prefer_dc = prefer_dc
        # A prefer_dc without a replica is not an error: the given order is used as is.
        self.order: tuple[str, ...] = tuple(sorted(dcs, key=lambda dc: dc != prefer_dc))
        self.policy = policy or ReplicaPolicy()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._breakers = {dc: _Breaker(tool, dc, self.policy, monotonic) for dc in self.order}
        self.budget = RetryBudget(
            self.policy.budget_ratio, self.policy.budget_min_retries, self.policy.budget_window
        )
        self.current_dc: str | None = None

    def breaker_state(self, dc: str) -> BreakerState:
        """The circuit breaker state of ``dc``'s replica (open turns half-open after open_s)."""
        if dc not in self._breakers:
            raise KeyError(f"ops tool {self.tool!r} has no replica in {dc!r}")
        return self._breakers[dc].current()

    async def call(
        self,
        attempt: Callable[[str], Awaitable[T | Failure]],
        *,
        what: str,
        idempotent: bool,
        on_failure: Callable[[str], Awaitable[None]] | None = None,
        check_open: Callable[[], None] | None = None,
    ) -> T:
        """Run ``attempt(dc)`` on the best replica, failing over and retrying as needed.

        ``attempt`` returns the answer, or a ``Failure`` saying why this replica gave none;
        an exception it raises (cancellation, a local bug) propagates with no verdict on the
        replica. ``on_failure(dc)`` runs after a failure that counts (drop that replica's
        connections). Raises ``EndpointError`` when no replica answered, or when a
        non-idempotent request may have been applied without an answer.
        """
        ticket = self.budget.start()
        errors: dict[str, str] = {}
        last_exc: BaseException | None = None
        pending: tuple[str, str, int] | None = None  # (from DC, reason, log level)
        retry_after = 0.0
        budget_spent = False

        for round_no in range(self.policy.max_attempts):
            if round_no:
                if not any(self._breakers[dc].available() for dc in self.order):
                    break
                if not self.budget.can_retry():
                    budget_spent = True
                    break
                await self._sleep(self._backoff(round_no - 1, retry_after))
                retry_after = 0.0
            for dc in self.order:
                if check_open:
                    check_open()  # the owner may have closed while this request slept
                breaker = self._breakers[dc]
                if round_no and not self.budget.can_retry():
                    budget_spent = True
                    break
                if not breaker.acquire():
                    errors[dc] = breaker.describe()
                    if pending is None:
                        pending = (dc, "circuit open", logging.INFO)
                    continue
                if round_no:
                    self.budget.spend(ticket)
                if pending is not None:
                    self._log_failover(pending, dc, round_no)
                    pending = None
                try:
                    outcome = await attempt(dc)
                except BaseException:
                    breaker.release()
                    raise
                if not isinstance(outcome, Failure):
                    breaker.success()
                    self._answered(dc)
                    return outcome
                if outcome.counts:
                    breaker.failure(outcome.reason)
                    if on_failure:
                        await on_failure(dc)
                else:
                    breaker.success()  # it answered, even if to ask for a pause
                errors[dc] = outcome.reason
                last_exc = outcome.exc
                if not idempotent and not outcome.unsent:
                    raise EndpointError(
                        f"{self.tool}: {what} sent to {dc}, outcome unknown "
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
            "ops tool %s: every replica failed for %s (%s)%s",
            self.tool,
            what,
            detail,
            note,
            extra={"tool": self.tool},
        )
        raise EndpointError(
            f"{self.tool}: every replica failed for {what} ({detail}){note}",
            tool=self.tool,
            errors=errors,
        ) from last_exc

    async def each(
        self, attempt: Callable[[str], Awaitable[T | Failure]], *, what: str
    ) -> dict[str, T | Failure]:
        """Run ``attempt`` once on every replica whose breaker lets it through.

        For writes that must reach every reachable replica (weights to each GSLB replica,
        flags to each config-store node); the caller decides how many answers are enough.
        """
        results: dict[str, T | Failure] = {}
        for dc in self.order:
            breaker = self._breakers[dc]
            if not breaker.acquire():
                results[dc] = Failure(breaker.describe(), TransientOpsError(what), counts=False,
                                      unsent=True)
                continue
            try:
                outcome = await attempt(dc)
            except BaseException:
                breaker.release()
                raise
            if isinstance(outcome, Failure) and outcome.counts:
                breaker.failure(outcome.reason)
            else:
                breaker.success()
            results[dc] = outcome
        return results

    def _backoff(self, retry_no: int, retry_after: float) -> float:
        """Full jitter: uniform(0, min(cap, base * 2**retry_no)), at least a capped Retry-After."""
        bound = min(self.policy.backoff_cap_s, self.policy.backoff_base_s * 2**retry_no)
        delay = self._rng.uniform(0.0, bound)
        if retry_after > 0:
            delay = max(delay, min(retry_after, self.policy.retry_after_cap_s))
        return delay

    def _answered(self, dc: str) -> None:
        previous, self.current_dc = self.current_dc, dc
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
