"""What ``revive stack up`` asks of the Prefect API once it answers: whether every DC's
worker has registered (pools, deployments and the automation are ``revive deploy``'s)."""

from __future__ import annotations

import httpx

__all__ = ["workers_online"]


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
