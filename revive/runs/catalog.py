"""The runbooks revive knows, by name: one catalog for the CLI, Slack, the documents and
the deployments.

Flows are imported only when one is run (``load_runbook``), so that the CLI, the web app
and ``revive`` as a library start without Prefect.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from revive.errors import InputError

#: name -> (module, flow function, parameter model): the runbooks people run by name.
RUNBOOKS: dict[str, tuple[str, str, str]] = {
    "provision": ("flows.provision", "provision", "ProvisionParams"),
    "restart_service_groups": ("flows.restart_service_groups", "restart_service_groups",
                               "RestartParams"),
    "warm_up_ramp": ("flows.warm_up_ramp", "warm_up_ramp", "RampParams"),
    "deploy_patch": ("flows.deploy_patch", "deploy_patch", "PatchParams"),
    "failover": ("flows.failover", "failover", "FailoverParams"),
    "readiness_check": ("flows.readiness_check", "readiness_check", "ReadinessCheckParams"),
}
ALIASES = {
    "restart": "restart_service_groups",
    "ramp": "warm_up_ramp",
    "patch": "deploy_patch",
    "check": "readiness_check",
}


@dataclass(frozen=True)
class Deployable:
    """A flow deployed on every DC's work pool (``<flow>/<flow>-from-<dc>``)."""

    flow: str
    """The flow's Prefect name (its ``@flow(name=...)``)."""
    entrypoint: str
    description: str
    defaults: tuple[str, ...] = ("topology",)
    """What its deployment on a DC's pool presets: ``topology``; ``run_from_dc`` (that
    DC); ``target_dc`` (that DC: flows acting on one DC); ``lost_dc`` (the DC before it:
    drills, which must not run from the DC they pretend to lose)."""


#: What ``revive deploy`` puts on every pool: the runbooks, and the drills.
DEPLOYABLES: tuple[Deployable, ...] = (
    Deployable("readiness-check", "flows/readiness_check.py:readiness_check",
               "The readiness checklist against the topology, as a report; changes nothing."),
    Deployable("failover", "flows/failover.py:failover",
               "Recover a lost DC into the survivors: deploy, provision, restart, then move "
               "each traffic class as its services are ready.",
               ("topology", "run_from_dc")),
    Deployable("provision", "flows/provision.py:provision",
               "Provision the capacity target_dc needs to carry its new load.",
               ("topology", "run_from_dc", "target_dc")),
    Deployable("restart_service_groups", "flows/restart_service_groups.py:restart_service_groups",
               "Restart service groups in target_dc in dependency and tier order.",
               ("topology", "run_from_dc", "target_dc")),
    Deployable("warm_up_ramp", "flows/warm_up_ramp.py:warm_up_ramp",
               "Push the client retry policy, then ramp traffic into the targets per class.",
               ("topology", "run_from_dc")),
    Deployable("deploy_patch", "flows/deploy_patch.py:deploy_patch",
               "Ship an emergency patch in canary batches, rolling a failed batch back.",
               ("topology", "run_from_dc", "target_dc")),
    Deployable("drill", "flows/drill.py:drill",
               "A DR drill on the built-in simulator (touches no real estate); writes its "
               "report and keeps it in the drill history.",
               ("topology", "lost_dc")),
    Deployable("lab-drill", "flows/lab_drill.py:lab_drill",
               "A DR drill on the lab of real processes (`revive lab up` on the worker's host).",
               ("lost_dc",)),
)


def resolve(runbook: str) -> str:
    """The runbook's catalog name; ``InputError`` naming the known ones otherwise."""
    name = ALIASES.get(runbook, runbook)
    if name not in RUNBOOKS:
        known = ", ".join(sorted(RUNBOOKS) + sorted(ALIASES))
        raise InputError(f"unknown runbook {runbook!r} (known: {known})")
    return name


def load_runbook(runbook: str) -> tuple[Any, type[BaseModel]]:
    """The runbook's flow and parameter model (imports the flow, and so Prefect)."""
    module_name, flow_name, params_name = RUNBOOKS[resolve(runbook)]
    module = importlib.import_module(module_name)
    return getattr(module, flow_name), getattr(module, params_name)


def parse_assignments(pairs: list[str], model: type[BaseModel]) -> dict[str, Any]:
    """``key=value`` pairs into a parameter dict; values are JSON when they parse as JSON,
    comma lists for list fields, strings otherwise. Unknown keys are input errors."""
    values: dict[str, Any] = {}
    fields = model.model_fields
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise InputError(f"{pair!r}: parameters are key=value")
        if key not in fields:
            raise InputError(f"unknown parameter {key!r} (known: {', '.join(sorted(fields))})")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        annotation = str(fields[key].annotation)
        if "list" in annotation and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        values[key] = value
    return values
