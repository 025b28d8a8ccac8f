"""Tasks on the artifact registry's per-DC replicas."""

from __future__ import annotations

from prefect import task

from revive.ops.interfaces import Registry
from revive.ops.models import ActionRef
from tasks.options import OPS


@task(name="artifact_present", task_run_name="has {artifact}:{version}@{dc}", **OPS)
async def artifact_present(registry: Registry, artifact: str, version: str, dc: str) -> bool:
    return await registry.has(artifact, version, dc)


@task(name="copy_artifact", task_run_name="copy {artifact}:{version} {src_dc}->{dst_dc}", **OPS)
async def copy_artifact(
    registry: Registry, artifact: str, version: str, src_dc: str, dst_dc: str,
    request_id: str | None,
) -> ActionRef:
    return await registry.copy(artifact, version, src_dc, dst_dc, request_id=request_id)
