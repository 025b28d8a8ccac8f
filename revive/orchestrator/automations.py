"""The Prefect automations revive relies on, created idempotently on any Prefect server.

A worker that dies (its host lost with its DC) leaves its flow runs ``Running`` for ever:
nothing in Prefect notices a run that stopped talking. Runs started by workers send a
heartbeat event every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (the stack sets 30);
the zombie automation expects, after each heartbeat of a run, another heartbeat or a
terminal state within ``ZOMBIE_WITHIN``, and marks the run ``Crashed`` when neither comes.
So a run whose worker died is seen as crashed within two minutes, and a new run of the same
runbook and DC can start (revive's store applies the same rule to its own records).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

__all__ = ["ZOMBIE_AUTOMATION", "ZOMBIE_WITHIN", "ensure_zombie_automation", "zombie_automation"]

ZOMBIE_AUTOMATION = "revive: crash zombie flow runs"
#: Three missed heartbeats at 30 s: late enough for a busy host, soon enough for an incident.
ZOMBIE_WITHIN = timedelta(seconds=90)
HEARTBEAT = "prefect.flow-run.heartbeat"
#: Events that end the expectation: another heartbeat, or the run reached a final state.
STILL_ALIVE_OR_DONE = (HEARTBEAT, "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                       "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed")


def zombie_automation() -> AutomationCore:
    """The automation as revive wants it (docs/v3/advanced/detect-zombie-flows.mdx)."""
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=(
            "A flow run whose heartbeats stopped (its worker or host died) is marked Crashed "
            f"{int(ZOMBIE_WITHIN.total_seconds())} s after its last heartbeat. Managed by revive."
        ),
        trigger=EventTrigger(
            after={HEARTBEAT},
            expect=set(STILL_ALIVE_OR_DONE),
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=ZOMBIE_WITHIN,
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message="Flow run marked as crashed: its heartbeats stopped (worker or host lost).",
        )],
    )


async def ensure_zombie_automation(client: PrefectClient) -> str:
    """The id of the zombie automation on ``client``'s server, created if missing.

    Found by name, as people see it in the UI: an existing one is kept as it is (someone
    may have tuned ``within`` for their hosts). Duplicates left by two concurrent callers
    are deleted, so any number of calls leave exactly one.
    """
    wanted = zombie_automation()
    found = await client.read_automations_by_name(ZOMBIE_AUTOMATION)
    if not found:
        return str(await client.create_automation(wanted))
    keep, *extra = sorted(found, key=lambda a: str(a.id))
    for duplicate in extra:
        await client.delete_automation(duplicate.id)
    return str(keep.id)
