"""What ``revive stack up`` asks of the Prefect API once it answers: pools, the zombie
automation, and whether every DC's worker has registered.

Pools are made here only while ``revive deploy`` is not there to make them (it creates the
pools and deployments of a topology); the stack needs them before its workers start, or
each worker would create its pool with whatever defaults it has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

__all__ = ["ensure_pools", "ensure_pools_with", "prepare", "workers_online"]


async def ensure_pools(api_url: str, pools: list[str]) -> list[str]:
    """Create the process work pools that are missing; returns those it created."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            return await ensure_pools_with(client, pools)


async def ensure_pools_with(client: PrefectClient, pools: list[str]) -> list[str]:
    """``ensure_pools`` through a client already open (``revive deploy``'s)."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    created = []
    for pool in pools:
        try:
            await client.read_work_pool(pool)
            continue
        except ObjectNotFound:
            pass
        try:
            await client.create_work_pool(WorkPoolCreate(
                name=pool, type="process",
                description=f"revive: runbooks executed from DC {pool}",
                base_job_template=ProcessWorker.get_default_base_job_template(),
            ))
            created.append(pool)
        except ObjectAlreadyExists:  # made meanwhile: what we wanted
            pass
    return created


async def prepare(api_url: str) -> str:
    """The zombie automation on the stack's server; returns its id."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from revive.orchestrator.automations import ensure_zombie_automation

    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            return await ensure_zombie_automation(client)


def workers_online(api_url: str, pools: list[str], *, timeout_s: float = 5.0) -> dict[str, int]:
    """How many workers of each pool the server sees ONLINE (plain HTTP: no Prefect import,
    so ``status`` stays fast)."""
    counts = {}
    with httpx.Client(timeout=timeout_s, trust_env=False) as http:
        for pool in pools:
            response = http.post(f"{api_url}/work_pools/{pool}/workers/filter", json={})
            if response.status_code == 404:
                counts[pool] = 0
                continue
            response.raise_for_status()
            counts[pool] = sum(1 for w in response.json() if w.get("status") == "ONLINE")
    return counts
