"""Tasks on the deploy tool and service manager: restart, deploy, patch, state."""

from __future__ import annotations

from prefect import task

from revive.errors import OpsError
from revive.ops.interfaces import HealthChecker, ServiceControl
from revive.ops.models import ActionRef, ServiceState
from tasks.options import OPS


@task(name="restart_service", task_run_name="restart {service}@{dc}", **OPS)
async def restart_service(
    services: ServiceControl, service: str, dc: str, request_id: str | None
) -> ActionRef:
    return await services.restart(service, dc, request_id=request_id)


@task(name="deploy_component", task_run_name="deploy {service}@{dc}", **OPS)
async def deploy_component(
    services: ServiceControl,
    service: str,
    dc: str,
    instances: int,
    version: str,
    request_id: str | None,
) -> ActionRef:
    """Emergency deployment of a component where it does not exist yet."""
    return await services.deploy(service, dc, instances, version, request_id=request_id)


@task(name="set_service_version", task_run_name="version {service}@{dc} -> {version}", **OPS)
async def set_service_version(
    services: ServiceControl, service: str, dc: str, version: str | None, request_id: str | None
) -> ActionRef:
    """Patch to ``version``; ``None`` rolls back to the previous version."""
    return await services.set_version(service, dc, version, request_id=request_id)


@task(name="service_state", task_run_name="state {service}@{dc}", **OPS)
async def service_state(services: ServiceControl, service: str, dc: str) -> ServiceState:
    return await services.state(service, dc)


@task(name="health_view", task_run_name="health {dc}", **{**OPS, "retries": 0})
async def health_view(health: HealthChecker, dc: str) -> dict[str, int] | None:
    """Healthy counts per service, or None when no health checker replica answers (the
    seed: it burned with its DC); the gate then falls back to the service tool's view."""
    try:
        return await health.healthy(dc)
    except OpsError:
        return None
