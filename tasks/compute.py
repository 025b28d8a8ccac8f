"""Tasks on the compute API: emergency capacity."""

from __future__ import annotations

from prefect import task

from revive.ops.interfaces import Compute
from revive.ops.models import ActionRef
from tasks.options import OPS


@task(name="provision_instances", task_run_name="provision {count} {service}@{dc}", **OPS)
async def provision_instances(
    compute: Compute, service: str, dc: str, count: int, request_id: str | None
) -> ActionRef:
    """Ask for ``count`` more instances of ``service`` in ``dc``."""
    return await compute.provision(service, dc, count, request_id=request_id)
