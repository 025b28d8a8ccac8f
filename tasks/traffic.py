"""Tasks on the traffic manager (GSLB)."""

from __future__ import annotations

from collections.abc import Mapping

from prefect import task

from revive.ops.interfaces import Traffic
from tasks.options import OPS


@task(name="traffic_weights", **OPS)
async def traffic_weights(traffic: Traffic) -> dict[str, float]:
    return await traffic.weights()


@task(name="set_traffic_weights", task_run_name="weights {weights}", **OPS)
async def set_traffic_weights(traffic: Traffic, weights: Mapping[str, float]) -> None:
    await traffic.set_weights(dict(weights))
