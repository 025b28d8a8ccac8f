"""ReplicatedEndpoint against real local HTTP replicas: failover, breakers, retries, budget."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from revive.errors import OpsError, ReviveError, TransientOpsError
from revive.ops.endpoint import BreakerState, EndpointError, EndpointPolicy, ReplicatedEndpoint
from tests.ops.replica_servers import ReplicaServer, replica_servers

TOOL = "vault"
SHORT_TIMEOUT_S = 0.2
UNREACHABLE = {"error": f"{TOOL} replica in dc1 is unreachable", "kind": "Unavailable"}


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingSleep:
    """Records every backoff instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


Servers = dict[str, ReplicaServer]


@pytest.fixture
def servers() -> Iterator[Servers]:
    with replica_servers("dc1", "dc2", "dc3") as started:
        yield started


def endpoint(
    servers: Servers,
    *,
    prefer_dc: str | None = "dc1",
    timeout: float = 2.0,
    policy: EndpointPolicy | None = None,
    clock: FakeClock | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    rng: random.Random | None = None,
) -> ReplicatedEndpoint:
    return ReplicatedEndpoint(
        TOOL,
        {name: server.url for name, server in servers.items()},
        prefer_dc=prefer_dc,
        timeout=timeout,
        policy=policy,
        rng=rng,
        sleep=sleep or RecordingSleep(),
        monotonic=clock or FakeClock(),
    )


def served_by(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return str(response.json()["server"])


T = TypeVar("T")


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(main())


# --- preference and failover ------------------------------------------------------------


def test_prefers_the_replica_in_the_local_dc(servers: Servers) -> None:
    async def main() -> None:
        async with endpoint(servers, prefer_dc="dc2") as ep:
            assert ep.current_dc is None
            response = await ep.request("GET", "/v1/secret", params={"v": "1"})
            assert served_by(response) == "dc2"
            assert response.json()["path"] == "/r/tool/dc2/v1/secret?v=1"
            assert ep.current_dc == "dc2"

    run(main)
    assert [len(servers[dc].hits) for dc in ("dc1", "dc2", "dc3")] == [0, 1, 0]


def test_without_a_local_replica_the_given_order_is_used(servers: Servers) -> None:
    async def main() -> None:
        async with endpoint(servers, prefer_dc="dc9") as ep:
            assert served_by(await ep.request("GET", "/x")) == "dc1"

    run(main)


def test_fails_over_on_connection_refused_and_logs_it(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    servers["dc1"].down()

    async def main() -> None:
        async with endpoint(servers) as ep:
            assert served_by(await ep.request("GET", "/x")) == "dc2"
            assert ep.current_dc == "dc2"
            assert ep.breaker_state("dc1") is BreakerState.CLOSED  # one failure of three

    with caplog.at_level(logging.INFO, logger="revive.ops"):
        run(main)
    failover = [r for r in caplog.records if "failing over" in r.getMessage()]
    assert len(failover) == 1
    record: Any = failover[0]
    assert record.levelno == logging.WARNING
    assert (record.tool, record.from_dc, record.to_dc) == (TOOL, "dc1", "dc2")
    assert "ConnectError" in record.reason


@pytest.mark.parametrize("status", [503, 502, 500, 504])
def test_fails_over_on_server_errors(servers: Servers, status: int) -> None:
    servers["dc1"].error(status)

    async def main() -> None:
        async with endpoint(servers) as ep:
            assert served_by(await ep.request("GET", "/x")) == "dc2"

    run(main)
    assert len(servers["dc1"].hits) == 1


def test_fails_over_on_timeout(servers: Servers) -> None:
    servers["dc1"].hang(seconds=3.0)

    async def main() -> float:
        async with endpoint(servers, timeout=SHORT_TIMEOUT_S) as ep:
            started = time.monotonic()
            assert served_by(await ep.request("GET", "/x")) == "dc2"
            return time.monotonic() - started

    elapsed = run(main)
    assert SHORT_TIMEOUT_S <= elapsed < 1.0


def test_429_fails_over_without_counting_against_the_breaker(servers: Servers) -> None:
    servers["dc1"].error(429, headers={"Retry-After": "1"})

    async def main() -> None:
        async with endpoint(servers) as ep:
            for _ in range(4):
                assert served_by(await ep.request("GET", "/x")) == "dc2"
            assert ep.breaker_state("dc1") is BreakerState.CLOSED

    run(main)
    assert len(servers["dc1"].hits) == 4


def test_a_failed_replica_gets_a_fresh_client_that_reaches_the_restarted_server(
    servers: Servers,
) -> None:
    dc1 = servers["dc1"]

    async def main() -> None:
        async with endpoint(servers) as ep:
            assert served_by(await ep.request("GET", "/x")) == "dc1"
            first = ep.pooled_client("dc1")
            assert first is not None and not first.is_closed

            dc1.down()
            assert served_by(await ep.request("GET", "/x")) == "dc2"
            assert first.is_closed  # no pooled connection to the dead address survives
            assert ep.pooled_client("dc1") is None

            dc1.up()
            response = await ep.request("GET", "/x")
            assert served_by(response) == "dc1"
            assert response.json()["boot"] == 2
            second = ep.pooled_client("dc1")
            assert second is not None and second is not first
            assert ep.current_dc == "dc1"

    run(main)
    assert len(dc1.hits_in_boot(1)) == 1
    assert len(dc1.hits_in_boot(2)) == 1


class CountingTransport(httpx.AsyncHTTPTransport):
    """A real transport that remembers whether it was closed."""

    closed = False

    async def aclose(self) -> None:
        self.closed = True
        await super().aclose()


def test_transport_factory_gives_each_fresh_client_a_fresh_transport(servers: Servers) -> None:
    made: list[CountingTransport] = []

    def factory() -> httpx.AsyncBaseTransport:
        made.append(CountingTransport())
        return made[-1]

    async def main() -> None:
        async with ReplicatedEndpoint(
            TOOL,
            {dc: s.url for dc, s in servers.items()},
            prefer_dc="dc1",
            transport_factory=factory,
        ) as ep:
            await ep.request("GET", "/x")
            await ep.request("GET", "/x")
            assert len(made) == 1  # pooled while healthy
            servers["dc1"].error(503)
            assert served_by(await ep.request("GET", "/x")) == "dc2"
            assert made[0].closed and len(made) == 2
            servers["dc1"].ok()
            assert served_by(await ep.request("GET", "/x")) == "dc1"
            assert len(made) == 3 and not made[2].closed

    run(main)
    assert all(t.closed for t in made)


def test_4xx_passes_through_without_failover_or_retry(servers: Servers) -> None:
    servers["dc1"].error(404, body={"error": "no such secret"})
    sleep = RecordingSleep()

    async def main() -> None:
        async with endpoint(servers, sleep=sleep) as ep:
            response = await ep.request("GET", "/missing")
            assert response.status_code == 404
            assert response.json() == {"error": "no such secret"}
            assert ep.current_dc == "dc1"
            assert ep.breaker_state("dc1") is BreakerState.CLOSED
            assert ep.pooled_client("dc1") is not None  # a decisive answer keeps the pool

    run(main)
    assert len(servers["dc1"].hits) == 1
    assert servers["dc2"].hits == [] and servers["dc3"].hits == []
    assert sleep.calls == []


# --- circuit breaker --------------------------------------------------------------------


def test_breaker_opens_skips_then_trials_and_closes(servers: Servers) -> None:
    dc1 = servers["dc1"]
    dc1.error(503)
    clock = FakeClock()
    policy = EndpointPolicy(failure_threshold=3, open_s=30.0)

    async def main() -> None:
        async with endpoint(servers, clock=clock, policy=policy) as ep:
            for _ in range(3):
                assert served_by(await ep.request("GET", "/x")) == "dc2"
            assert ep.breaker_state("dc1") is BreakerState.OPEN
            assert len(dc1.hits) == 3

            for _ in range(3):  # skipped without a request while open
                assert served_by(await ep.request("GET", "/x")) == "dc2"
            clock.advance(29.9)
            assert served_by(await ep.request("GET", "/x")) == "dc2"
            assert len(dc1.hits) == 3

            clock.advance(0.1)
            assert ep.breaker_state("dc1") is BreakerState.HALF_OPEN
            # the trial fails: open again, for another open_s
            assert served_by(await ep.request("GET", "/x")) == "dc2"
            assert len(dc1.hits) == 4
            assert ep.breaker_state("dc1") is BreakerState.OPEN
            assert served_by(await ep.request("GET", "/x")) == "dc2"
            assert len(dc1.hits) == 4

            dc1.ok()
            clock.advance(30.0)
            assert ep.breaker_state("dc1") is BreakerState.HALF_OPEN
            assert served_by(await ep.request("GET", "/x")) == "dc1"  # the trial succeeds
            assert ep.breaker_state("dc1") is BreakerState.CLOSED
            assert len(dc1.hits) == 5

    run(main)


def test_half_open_allows_a_single_trial_at_a_time(servers: Servers) -> None:
    dc1 = servers["dc1"]
    dc1.down()
    clock = FakeClock()

    async def main() -> None:
        async with endpoint(servers, clock=clock) as ep:
            for _ in range(3):
                await ep.request("GET", "/x")
            assert ep.breaker_state("dc1") is BreakerState.OPEN
            dc1.up()
            dc1.hang(seconds=0.3)  # slow but answers within the timeout
            clock.advance(30.0)
            trial = asyncio.ensure_future(ep.request("GET", "/trial"))
            await asyncio.sleep(0.1)  # the trial is in flight on dc1
            assert served_by(await ep.request("GET", "/other")) == "dc2"
            assert served_by(await trial) == "dc1"
            assert ep.breaker_state("dc1") is BreakerState.CLOSED

    run(main)
    assert [hit.path for hit in dc1.hits_in_boot(2)] == ["/r/tool/dc1/trial"]


def test_comes_back_to_the_preferred_dc_after_it_recovers(
    servers: Servers, caplog: pytest.LogCaptureFixture
) -> None:
    dc1 = servers["dc1"]
    dc1.down()
    clock = FakeClock()

    async def main() -> None:
        async with endpoint(servers, clock=clock) as ep:
            for _ in range(3):
                assert served_by(await ep.request("GET", "/x")) == "dc2"
            assert ep.current_dc == "dc2"
            dc1.up()
            assert served_by(await ep.request("GET", "/x")) == "dc2"  # still open
            assert dc1.hits_in_boot(2) == []
            clock.advance(30.0)
            assert served_by(await ep.request("GET", "/x")) == "dc1"
            assert ep.current_dc == "dc1"
            assert ep.breaker_state("dc1") is BreakerState.CLOSED

    with caplog.at_level(logging.INFO, logger="revive.ops"):
        run(main)
    messages = [r.getMessage() for r in caplog.records]
    assert any("circuit for dc1 open" in m for m in messages)
    assert any("circuit for dc1 half-open" in m for m in messages)
    assert any("circuit for dc1 closed" in m for m in messages)
    assert any("back on the preferred replica" in m for m in messages)


def test_all_breakers_open_fails_fast_without_requests(servers: Servers) -> None:
    for server in servers.values():
        server.error(502)
    sleep = RecordingSleep()
    policy = EndpointPolicy(budget_min_retries=100)

    async def main() -> None:
        async with endpoint(servers, sleep=sleep, policy=policy) as ep:
            with pytest.raises(EndpointError):  # 3 replicas x 4 rounds: all breakers trip
                await ep.request("GET", "/x")
            assert {ep.breaker_state(dc) for dc in servers} == {BreakerState.OPEN}
            before = sum(len(s.hits) for s in servers.values())
            with pytest.raises(EndpointError, match="circuit open"):
                await ep.request("GET", "/x")
            assert sum(len(s.hits) for s in servers.values()) == before

    run(main)


# --- non-idempotent requests ------------------------------------------------------------


def test_post_is_not_resent_after_a_read_timeout(servers: Servers) -> None:
    servers["dc1"].hang(seconds=3.0)

    async def main() -> None:
        async with endpoint(servers, timeout=SHORT_TIMEOUT_S) as ep:
            with pytest.raises(EndpointError, match="outcome unknown") as caught:
                await ep.request("POST", "/v1/restart", json={"service": "api"})
            assert caught.value.outcome_unknown
            assert isinstance(caught.value.__cause__, httpx.ReadTimeout)

    run(main)
    assert len(servers["dc1"].hits) == 1
    assert servers["dc2"].hits == [] and servers["dc3"].hits == []


@pytest.mark.parametrize("status", [502, 504, 500])
def test_post_is_not_resent_after_a_gateway_error(servers: Servers, status: int) -> None:
    servers["dc1"].error(status)

    async def main() -> None:
        async with endpoint(servers) as ep:
            with pytest.raises(EndpointError, match="outcome unknown") as caught:
                await ep.request("POST", "/v1/restart", json={"service": "api"})
            assert isinstance(caught.value.__cause__, httpx.HTTPStatusError)

    run(main)
    assert len(servers["dc1"].hits) == 1
    assert servers["dc2"].hits == []


def test_post_fails_over_on_connection_refused(servers: Servers) -> None:
    servers["dc1"].down()

    async def main() -> None:
        async with endpoint(servers) as ep:
            response = await ep.request("POST", "/v1/restart", json={"service": "api"})
            assert served_by(response) == "dc2"
            assert response.json()["body"] == {"service": "api"}

    run(main)
    assert len(servers["dc2"].hits) == 1


def test_post_fails_over_on_the_routers_replica_unreachable_503(servers: Servers) -> None:
    servers["dc1"].error(503, body=UNREACHABLE)

    async def main() -> None:
        async with endpoint(servers) as ep:
            assert served_by(await ep.request("POST", "/v1/restart", json={})) == "dc2"

    run(main)


def test_post_declared_idempotent_fails_over_after_a_timeout(servers: Servers) -> None:
    servers["dc1"].hang(seconds=3.0)

    async def main() -> None:
        async with endpoint(servers, timeout=SHORT_TIMEOUT_S) as ep:
            response = await ep.request("POST", "/v1/lookup", json={}, idempotent=True)
            assert served_by(response) == "dc2"

    run(main)


# --- backoff, budget, giving up ---------------------------------------------------------


def test_backoff_is_full_jitter_within_bounds(servers: Servers) -> None:
    for server in servers.values():
        server.error(503)
    sleep = RecordingSleep()
    policy = EndpointPolicy(
        failure_threshold=100, budget_min_retries=100, backoff_base_s=0.05, backoff_cap_s=0.15
    )

    async def main() -> None:
        async with endpoint(servers, sleep=sleep, policy=policy, rng=random.Random(7)) as ep:
            with pytest.raises(EndpointError):
                await ep.request("GET", "/x")

    run(main)
    bounds = [0.05, 0.1, 0.15]  # min(cap, base * 2**retry): the cap bites on the third
    expected = random.Random(7)
    assert sleep.calls == [expected.uniform(0, bound) for bound in bounds]
    assert all(0 <= slept <= bound for slept, bound in zip(sleep.calls, bounds, strict=True))
    assert [len(s.hits) for s in servers.values()] == [4, 4, 4]  # 4 rounds through 3 replicas


@pytest.mark.parametrize(
    ("retry_after", "slept"),
    [("1", 1.0), ("600", 5.0), ("Wed, 21 Oct 2099 07:28:00 GMT", 5.0)],
)
def test_backoff_honours_retry_after_capped(
    servers: Servers, retry_after: str, slept: float
) -> None:
    for server in servers.values():
        server.error(429, headers={"Retry-After": retry_after})
    sleep = RecordingSleep()
    policy = EndpointPolicy(max_attempts=2, retry_after_cap_s=5.0)

    async def main() -> None:
        async with endpoint(servers, sleep=sleep, policy=policy) as ep:
            with pytest.raises(EndpointError, match="429"):
                await ep.request("GET", "/x")

    run(main)
    assert sleep.calls == [slept]


def test_the_retry_budget_stops_retries(servers: Servers) -> None:
    for server in servers.values():
        server.error(503)
    calls = 40
    policy = EndpointPolicy(failure_threshold=10**6)  # keep every replica in play

    async def main() -> int:
        async with endpoint(servers, policy=policy) as ep:
            exhausted = 0
            for _ in range(calls):
                with pytest.raises(EndpointError) as caught:
                    await ep.request("GET", "/x")
                exhausted += "retry budget exhausted" in str(caught.value)
            assert ep.budget.retries == total_hits() - calls * len(servers)
            return exhausted

    def total_hits() -> int:
        return sum(len(s.hits) for s in servers.values())

    exhausted = run(main)
    retries = total_hits() - calls * len(servers)  # each call's first round is not a retry
    assert 0 < retries <= 0.1 * calls + 3
    assert exhausted >= calls - 1


def test_all_replicas_down_names_every_dc(servers: Servers) -> None:
    for server in servers.values():
        server.down()

    async def main() -> None:
        async with endpoint(servers) as ep:
            with pytest.raises(EndpointError) as caught:
                await ep.request("GET", "/x")
            error = caught.value
            assert isinstance(error, EndpointError) and isinstance(error, TransientOpsError)
            assert isinstance(error, OpsError) and isinstance(error, ReviveError)
            assert error.tool == TOOL and not error.outcome_unknown
            assert set(error.errors) == {"dc1", "dc2", "dc3"}
            message = str(error)
            assert TOOL in message
            for dc in ("dc1", "dc2", "dc3"):
                assert f"{dc}: ConnectError" in message
            assert isinstance(error.__cause__, httpx.ConnectError)

    run(main)


def test_closed_endpoint_closes_its_clients_and_refuses_requests(servers: Servers) -> None:
    async def main() -> None:
        ep = endpoint(servers)
        await ep.request("GET", "/x")
        client = ep.pooled_client("dc1")
        await ep.aclose()
        assert client is not None and client.is_closed
        with pytest.raises(RuntimeError, match="closed"):
            await ep.request("GET", "/x")

    run(main)


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        EndpointPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="no replicas"):
        ReplicatedEndpoint(TOOL, {}, prefer_dc=None)


def test_a_policy_can_treat_a_5xx_as_the_tools_own_answer(servers: Servers) -> None:
    servers["dc1"].error(503, body={"error": "dc4 is down (power loss)", "kind": "Unavailable"})
    policy = EndpointPolicy(replica_failed=lambda r: r.status_code in {502, 504})

    async def main() -> None:
        async with endpoint(servers, policy=policy) as ep:
            response = await ep.request("POST", "/v1/restart", json={})
            assert response.status_code == 503
            assert ep.breaker_state("dc1") is BreakerState.CLOSED

    run(main)
    assert servers["dc2"].hits == []
