"""Tasks on the config store: feature flags and the client retry policy."""

from __future__ import annotations

from prefect import task

from revive.ops.interfaces import ConfigStore
from revive.ops.models import RetryPolicy
from tasks.options import OPS


@task(name="feature_flags", **OPS)
async def feature_flags(config: ConfigStore) -> dict[tuple[str, str], bool]:
    return await config.flags()


@task(name="set_feature_flag", task_run_name="flag {service}/{feature}={on}", **OPS)
async def set_feature_flag(config: ConfigStore, service: str, feature: str, on: bool) -> None:
    await config.set_flag(service, feature, on)


@task(name="push_retry_policy", **OPS)
async def push_retry_policy(config: ConfigStore, policy: RetryPolicy | None) -> None:
    """Clients retry within a budget from now on: no self-inflicted DDoS during recovery."""
    await config.set_retry_policy(policy)
