"""Work pools and deployments made from the topology: one process pool per DC, and every
runbook deployed on every pool (``<flow>/<flow>-from-<dc>``), so that losing any DC leaves
workers elsewhere to run its recovery.

``plan`` is pure (what to deploy, for any DC names and count); ``apply`` makes it so on a
Prefect server, idempotently; ``prefect_yaml`` writes the same plan as a ``prefect.yaml``
for teams that deploy with ``prefect deploy --all``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from revive.render import render
from revive.runs.catalog import DEPLOYABLES, Deployable
from revive.runs.form import ADVANCED, with_choices
from revive.topology import Topology

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

#: When the scheduled runs happen (UTC): the readiness check daily, a drill weekly.
READINESS_CRON = "0 6 * * *"
DRILL_CRON = "0 10 * * 1"


class Schedule(BaseModel):
    cron: str
    timezone: str = "UTC"


class DeploymentSpec(BaseModel):
    """One deployment as ``revive deploy`` makes it."""

    flow: str
    name: str
    pool: str
    entrypoint: str
    description: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[Schedule] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.flow}/{self.name}"


class DeployPlan(BaseModel):
    pools: list[str]
    deployments: list[DeploymentSpec]
    topology: str
    home: str


def plan(topology: Topology, *, topology_path: str, home: str) -> DeployPlan:
    """Every deployable flow on every DC's pool, with defaults and schedules.

    The readiness check runs daily from the first DC, the weekly drill from the second (a
    DC other than the one it pretends to lose), so that no single DC's loss stops both."""
    dcs = list(topology.dc_names)
    specs = []
    for i, dc in enumerate(dcs):
        for item in DEPLOYABLES:
            specs.append(DeploymentSpec(
                flow=item.flow, name=f"{item.flow}-from-{dc}", pool=dc,
                entrypoint=item.entrypoint, description=item.description,
                parameters={"params": _defaults(item, dc, dcs[i - 1], topology_path)},
                schedules=_schedules(item, i),
                tags=["revive", f"dc:{dc}"],
            ))
    return DeployPlan(pools=dcs, deployments=specs, topology=topology_path, home=home)


def _defaults(item: Deployable, dc: str, previous: str, topology_path: str) -> dict[str, Any]:
    """The presets ``item.defaults`` names, for its deployment on ``dc``'s pool."""
    offered = {"topology": topology_path, "target_dc": dc, "lost_dc": previous}
    values: dict[str, Any] = {k: offered[k] for k in item.defaults if k in offered}
    if "run_from_dc" in item.defaults:  # the form's advanced group holds it
        values[ADVANCED] = {"run_from_dc": dc}
    return values


def _schedules(item: Deployable, index: int) -> list[Schedule]:
    if item.flow == "readiness-check" and index == 0:
        return [Schedule(cron=READINESS_CRON)]
    if item.flow == "drill" and index == 1:
        return [Schedule(cron=DRILL_CRON)]
    return []


def parameter_schema(item_entrypoint: str, dcs: list[str]) -> dict[str, Any]:
    """The flow's parameter schema as Prefect makes it, with the DCs as choices."""
    from prefect.utilities.callables import parameter_schema as prefect_schema

    path, _, name = item_entrypoint.partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    schema = prefect_schema(getattr(module, name).fn).model_dump()
    for definition in schema.get("definitions", {}).values():
        with_choices(definition, dcs)
    return schema


async def apply(deploy: DeployPlan, client: PrefectClient) -> list[str]:
    """Pools, deployments (created or updated in place, schedules replaced) and the zombie
    automation; returns a line per thing made or updated."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate, DeploymentUpdate
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.exceptions import ObjectNotFound

    from revive.orchestrator.automations import ensure_zombie_automation

    lines = [f"work pool {p}: created" for p in await ensure_pools(client, deploy.pools)]
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": deploy.home}}]
    schemas: dict[str, dict[str, Any]] = {}
    for spec in deploy.deployments:
        if spec.entrypoint not in schemas:
            schemas[spec.entrypoint] = parameter_schema(spec.entrypoint, deploy.pools)
        flow_id = await client.create_flow_from_name(spec.flow)
        fields: dict[str, Any] = dict(
            description=spec.description, parameters=spec.parameters,
            parameter_openapi_schema=schemas[spec.entrypoint], entrypoint=spec.entrypoint,
            path=deploy.home, pull_steps=pull, tags=spec.tags, work_pool_name=spec.pool,
            enforce_parameter_schema=True)
        schedules = [DeploymentScheduleCreate(schedule=CronSchedule(cron=s.cron,
                                                                    timezone=s.timezone),
                                              active=True) for s in spec.schedules]
        try:
            existing = await client.read_deployment_by_name(spec.full_name)
        except ObjectNotFound:
            await client.create_deployment(flow_id=flow_id, name=spec.name,
                                           schedules=schedules, **fields)
            lines.append(f"deployment {spec.full_name}: created")
            continue
        await client.update_deployment(existing.id, DeploymentUpdate(**fields))
        for old in existing.schedules:
            await client.delete_deployment_schedule(existing.id, old.id)
        if schedules:
            await client.create_deployment_schedules(
                existing.id, [(s.schedule, s.active) for s in schedules])
        lines.append(f"deployment {spec.full_name}: updated")
    await ensure_zombie_automation(client)
    lines.append("automation: zombie flow runs are marked Crashed")
    return lines


async def ensure_pools(client: PrefectClient, pools: list[str]) -> list[str]:
    """Create the process work pools that are missing; returns those it created."""
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


def prefect_yaml(deploy: DeployPlan) -> str:
    """The same deployments as a ``prefect.yaml`` (``prefect deploy --all``)."""
    import prefect

    return render("deploy/prefect.yaml.j2", plan=deploy, prefect_version=prefect.__version__)
