"""The replica rules without HTTP: what adapters on sockets, kazoo or a client library get."""

from __future__ import annotations

import asyncio

import pytest

from revive.ops.replicas import BreakerState, EndpointError, Failure, ReplicaSet, os_failure


async def _no_sleep(_: float) -> None:
    return None


def _set(**kw: object) -> ReplicaSet:
    return ReplicaSet("zk", ["dc1", "dc2"], prefer_dc="dc2", sleep=_no_sleep, **kw)


def test_the_local_replica_goes_first_and_a_refused_one_fails_over() -> None:
    tried: list[str] = []

    async def attempt(dc: str) -> str | Failure:
        tried.append(dc)
        if dc == "dc2":
            return os_failure(ConnectionRefusedError("refused"))
        return f"answer from {dc}"

    replicas = _set()
    assert asyncio.run(replicas.call(attempt, what="get /flags", idempotent=False)) == (
        "answer from dc1")
    assert tried == ["dc2", "dc1"]  # refused: never sent, so even a write may go elsewhere
    assert replicas.current_dc == "dc1"


def test_a_write_whose_outcome_is_unknown_is_not_resent() -> None:
    tried: list[str] = []

    async def attempt(dc: str) -> str | Failure:
        tried.append(dc)
        return os_failure(ConnectionResetError("reset mid-reply"))

    with pytest.raises(EndpointError) as err:
        asyncio.run(_set().call(attempt, what="set weight", idempotent=False))
    assert err.value.outcome_unknown and tried == ["dc2"]


def test_breakers_trip_and_every_replica_failing_names_each_error() -> None:
    async def attempt(dc: str) -> str | Failure:
        return os_failure(TimeoutError(f"{dc} slow"))

    replicas = _set()
    for _ in range(2):
        with pytest.raises(EndpointError) as err:
            asyncio.run(replicas.call(attempt, what="ruok", idempotent=True))
    assert "dc1:" in str(err.value) and "dc2:" in str(err.value)
    assert replicas.breaker_state("dc1") is BreakerState.OPEN


def test_each_reaches_every_replica_whose_breaker_allows() -> None:
    async def attempt(dc: str) -> str | Failure:
        return "ok" if dc == "dc1" else os_failure(ConnectionRefusedError())

    replicas = _set()
    results = asyncio.run(replicas.each(attempt, what="set flag"))
    assert results["dc1"] == "ok" and isinstance(results["dc2"], Failure)


def test_an_error_raised_by_the_attempt_itself_is_not_a_verdict_on_the_replica() -> None:
    async def attempt(dc: str) -> str:
        raise ValueError("a bug in the adapter")

    replicas = _set()
    with pytest.raises(ValueError):
        asyncio.run(replicas.call(attempt, what="x", idempotent=True))
    assert replicas.breaker_state("dc2") is BreakerState.CLOSED
