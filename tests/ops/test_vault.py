"""The ``vault`` adapter against local servers answering ``/v1/sys/health`` as Vault does.

Only an active replica can hand out secrets to booting services; a standby counts when
``standby_ok`` says so; sealed, uninitialised, DR-secondary, unreachable and silent replicas
are down, and the probe says so instead of raising.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from revive.errors import InputError, TopologyError
from revive.lab.daemon import free_port
from revive.ops import plugins
from revive.ops.adapters import vault as vault_adapter
from revive.ops.adapters.vault import VaultHealth, VaultState, health_url
from revive.ops.plugins import ToolContext, settings_of
from revive.ops.replicas import BreakerState
from revive.ops.toolbox import ToolProbes
from revive.topology import loads
from revive.topology.models import ToolKind
from tests.factories import dump, estate, service, tools
from tests.ops.fake_vault import STATES, FakeVault, fake_vaults

T = TypeVar("T")
TOOL = "vault"
TIMEOUT_S = 3.0  # a live local server answers in milliseconds; generous for a busy CI


def run(main: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(main)


def topology_text(replicas: dict[str, str], settings: dict[str, Any] | None = None) -> str:
    tool: dict[str, Any] = {"kind": "secret_store", "adapter": "vault", "replicas": replicas}
    if settings is not None:
        tool["settings"] = settings
    return dump(estate(service("app"), ops_tools=tools(vault=tool)))


def health(replicas: dict[str, str], run_dc: str | None = "dc1", **settings: Any) -> VaultHealth:
    """The adapter as the toolbox builds it: topology -> validated settings -> factory."""
    topology = loads(topology_text(replicas, {"timeout_s": TIMEOUT_S, **settings}))
    tool = topology.ops_tools[TOOL]
    ctx = ToolContext(TOOL, tool, settings_of(TOOL, tool), run_dc, topology=topology)
    factory = plugins.adapter("vault").factory(tool.kind)
    assert factory is not None
    made = factory(ctx)
    assert isinstance(made, VaultHealth)
    return made


async def probe(adapter: VaultHealth) -> dict[str, bool]:
    try:
        return await adapter.probe()
    finally:
        await adapter.aclose()


@pytest.fixture
def vaults() -> Iterator[dict[str, FakeVault]]:
    with fake_vaults("dc1", "dc2") as started:
        yield started


def urls(vaults: dict[str, FakeVault]) -> dict[str, str]:
    return {dc: v.url for dc, v in vaults.items()}


# --- the documented states -------------------------------------------------------------------

UP_BY_DEFAULT = {"active"}
UP_WITH_STANDBY_OK = {"active", "standby", "performance_standby"}


@pytest.mark.parametrize("state", sorted(STATES))
@pytest.mark.parametrize("standby_ok", [False, True])
def test_each_documented_state_maps_to_up_or_down(
    vaults: dict[str, FakeVault], state: str, standby_ok: bool
) -> None:
    vaults["dc1"].set(state)
    got = run(probe(health(urls(vaults), standby_ok=standby_ok)))
    expected = state in (UP_WITH_STANDBY_OK if standby_ok else UP_BY_DEFAULT)
    assert got == {"dc1": expected, "dc2": True}
    assert vaults["dc1"].requests[-1] == ("GET", "/v1/sys/health")


def test_states_names_what_each_replica_is(vaults: dict[str, FakeVault]) -> None:
    vaults["dc1"].set("sealed")
    vaults["dc2"].set("performance_standby")

    async def main() -> dict[str, VaultState]:
        adapter = health(urls(vaults))
        try:
            return await adapter.states()
        finally:
            await adapter.aclose()

    assert run(main()) == {"dc1": VaultState.SEALED, "dc2": VaultState.PERFORMANCE_STANDBY}


def test_a_proxy_rewriting_a_sealed_answer_to_200_is_still_down(
    vaults: dict[str, FakeVault],
) -> None:
    vaults["dc1"].set("sealed")
    vaults["dc1"].rewrite_status = 200
    vaults["dc2"].set("standby")
    vaults["dc2"].rewrite_status = 200
    assert run(probe(health(urls(vaults)))) == {"dc1": False, "dc2": False}


def test_the_probe_is_served_as_tool_health(vaults: dict[str, FakeVault]) -> None:
    vaults["dc2"].set("sealed")

    async def main() -> dict[str, bool]:
        adapter = health(urls(vaults))
        try:
            return await ToolProbes({TOOL: adapter}).replicas(TOOL)
        finally:
            await adapter.aclose()

    assert run(main()) == {"dc1": True, "dc2": False}


# --- faults ------------------------------------------------------------------------------------


def test_an_unreachable_replica_is_down_and_the_other_still_answers(
    vaults: dict[str, FakeVault],
) -> None:
    vaults["dc1"].stop()
    assert run(probe(health(urls(vaults)))) == {"dc1": False, "dc2": True}


def test_nothing_listening_at_all_is_all_down_not_an_error() -> None:
    replicas = {"dc1": f"http://127.0.0.1:{free_port()}", "dc2": f"http://127.0.0.1:{free_port()}"}
    assert run(probe(health(replicas))) == {"dc1": False, "dc2": False}


def test_a_replica_that_never_answers_is_down_within_the_timeout(
    vaults: dict[str, FakeVault],
) -> None:
    vaults["dc1"].hang()
    got = run(asyncio.wait_for(probe(health(urls(vaults))), timeout=30))
    assert got == {"dc1": False, "dc2": True}
    assert vaults["dc1"].requests  # it was asked, and did not answer


@pytest.mark.parametrize("status", [500, 502, 404])
def test_answers_that_are_not_vaults_health_are_down(
    vaults: dict[str, FakeVault], status: int
) -> None:
    vaults["dc1"].rewrite_status = status
    assert run(probe(health(urls(vaults)))) == {"dc1": False, "dc2": True}


def test_a_replica_that_keeps_failing_trips_its_breaker_and_stays_down(
    vaults: dict[str, FakeVault],
) -> None:
    vaults["dc1"].stop()

    async def main() -> tuple[list[dict[str, bool]], BreakerState]:
        adapter = health(urls(vaults))
        try:
            return [await adapter.probe() for _ in range(4)], adapter.set.breaker_state("dc1")
        finally:
            await adapter.aclose()

    results, breaker = run(main())
    assert results == [{"dc1": False, "dc2": True}] * 4
    assert breaker is BreakerState.OPEN


# --- settings, addresses, entry point ----------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"standby_ok": "perhaps"}, "ops_tools.vault.settings.standby_ok"),
        ({"timeout_s": 0}, "ops_tools.vault.settings.timeout_s"),
        ({"token_env": "VAULT_TOKEN"}, "ops_tools.vault.settings.token_env: unknown setting"),
    ],
)
def test_wrong_settings_are_refused_with_their_key(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(TopologyError, match=message.replace(".", r"\.")):
        loads(topology_text({"dc1": "https://v1.example", "dc2": "https://v2.example"}, settings))


def test_settings_have_safe_defaults() -> None:
    topology = loads(topology_text({"dc1": "https://v1.example"}))
    settings = settings_of(TOOL, topology.ops_tools[TOOL])
    assert settings == vault_adapter.VaultSettings(standby_ok=False, timeout_s=None)


def test_replica_addresses_become_health_urls() -> None:
    assert health_url("https://vault.dc1.example:8200") == (
        "https://vault.dc1.example:8200/v1/sys/health")
    assert health_url("http://127.0.0.1:8200/v1/") == "http://127.0.0.1:8200/v1/sys/health"
    with pytest.raises(InputError, match="not an http"):
        health_url("vault.dc1.example:8200")


def test_the_adapter_is_found_through_its_entry_point() -> None:
    found = plugins.adapter("vault")
    assert found is vault_adapter.ADAPTER
    assert found.factory(ToolKind.secret_store) is not None
