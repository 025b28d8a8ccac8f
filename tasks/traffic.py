"""Tasks on the traffic manager (GSLB)."""

from __future__ import annotations

from collections.abc import Mapping

from prefect import task

from revive.ops.interfaces import Traffic
from tasks.options import OPS


@task(name="traffic_weights", **OPS)
async def traffic_weights(traffic: Traffic) -> dict[str, float]:
    return await traffic.weights()


@task(name="traffic_class_weights", **OPS)
async def traffic_class_weights(traffic: Traffic) -> dict[str, dict[str, float]]:
    return await traffic.class_weights()


@task(name="set_traffic_weights", task_run_name="weights {weights}", **OPS)
async def set_traffic_weights(traffic: Traffic, weights: Mapping[str, float]) -> None:
    await traffic.set_weights(dict(weights))


@task(name="set_class_weights", task_run_name="weights {traffic_class} {weights}", **OPS)
async def set_class_weights(
    traffic: Traffic, traffic_class: str, weights: Mapping[str, float]
) -> None:
    await traffic.set_class_weights(traffic_class, dict(weights))
