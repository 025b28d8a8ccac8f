"""In production the failover pauses before traffic moves until an approver answers."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName
from prefect.flow_runs import resume_flow_run

from flows.failover import FailoverParams, failover
from revive.store import db, service
from tests.flows.estates import small, write

pytestmark = pytest.mark.usefixtures("prefect_harness", "store_url")


async def _paused_run_id() -> str | None:
    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"]))))
    return str(runs[0].id) if runs else None


@pytest.mark.parametrize("approve", [True, False])
def test_production_failover_waits_for_an_approver(tmp_path, serve, approve: bool) -> None:
    topology, path = write(tmp_path, small(environment="production"))
    sim, url = serve(topology)
    sim.estate.power_loss("dc1")
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = asyncio.run(failover(FailoverParams(
                topology=path, target_dc="dc2", sim_url=url, approval_timeout_s=120)))
        except Exception as exc:  # the rejected run fails; the test inspects why
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 60
    paused = None
    while paused is None and time.monotonic() < deadline:
        time.sleep(0.5)
        paused = asyncio.run(_paused_run_id())
    assert paused, "the failover never paused at the approval gate"
    assert sim.estate.weights["dc2"] == 0.5  # no traffic moved while waiting
    resume_flow_run(paused, run_input={  # what the UI's Resume dialog sends
        "approve": approve, "approver": "bob", "reason": "" if approve else "not now"})
    worker.join(timeout=120)
    assert not worker.is_alive()
    with db.session(db.get_engine()) as s:
        (run,) = service.get_all_runs(s)
        (event,) = service.get_audit_events(s, run_id=run.id)
    assert event.actor == "bob"
    if approve:
        assert outcome["result"]["outcome"] == "recovered"
        assert event.outcome == "approved"
        assert sim.estate.weights["dc2"] == 1.0
    else:
        assert "rejected: not now" in str(outcome["error"])
        assert event.outcome == "rejected: not now"
        assert sim.estate.weights["dc2"] == 0.5  # traffic never moved
        assert str(run.outcome) == "failed"
