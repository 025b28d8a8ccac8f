"""Runbook flows through Prefect against a simulator served over HTTP."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from flows.failover import FailoverParams, failover
from flows.provision import ProvisionParams, provision
from flows.restart_service_groups import RestartParams, restart_service_groups
from flows.warm_up_ramp import RampParams, warm_up_ramp
from revive.runs import ActiveRunError
from revive.sim.estate import ActionKind
from revive.store import db, service
from revive.store.models import RunOutcome, TriggerSource
from tests.flows.estates import small, write

pytestmark = pytest.mark.usefixtures("prefect_harness", "store_url")


def actions(sim, kind: ActionKind) -> list[str]:
    return sorted(a.target for a in sim.estate.actions() if a.kind == kind)


def runs():
    with db.session(db.get_engine()) as s:
        return service.get_all_runs(s)


def test_provision_adds_what_the_plan_says_and_reports_quota_shortfalls(tmp_path, serve):
    topology, path = write(tmp_path, small())
    sim, url = serve(topology)
    sim.estate.exhaust_quota("dc2")
    result = asyncio.run(provision(ProvisionParams(topology=path, target_dc="dc2", sim_url=url)))
    assert result["provisioned"] == []
    assert any("quota" in line for line in result["shortfalls"])
    assert actions(sim, ActionKind.provision) == []
    (run,) = runs()
    assert run.outcome == RunOutcome.SUCCEEDED  # shortfalls are escalated, never fatal


def test_provision_in_tier_order_and_the_instances_arrive(tmp_path, serve):
    topology, path = write(tmp_path, small())
    sim, url = serve(topology)
    result = asyncio.run(provision(ProvisionParams(topology=path, target_dc="dc2", sim_url=url)))
    # api needs ceil(1.2 * 10000 / 1000) = 12 and has 7
    assert "5 api" in result["provisioned"]
    assert sim.estate.state("api", "dc2").instances == 12
    assert sim.estate.state("api", "dc2").healthy == 12  # waited until booted


def test_a_dry_run_changes_nothing(tmp_path, serve):
    topology, path = write(tmp_path, small())
    sim, url = serve(topology)
    before = len(sim.estate.log)
    sim.estate.power_loss("dc1")
    result = asyncio.run(failover(FailoverParams(
        topology=path, target_dc="dc2", sim_url=url, dry_run=True)))
    assert result["planned"] is True
    assert len(sim.estate.log) == before + 1  # only the power loss above
    assert runs()[0].dry_run


def test_a_failed_restart_blocks_only_its_dependents(tmp_path, serve):
    topology, path = write(tmp_path, small())
    sim, url = serve(topology)
    sim.estate.fail_next_restarts("cache", "dc2")
    result = asyncio.run(restart_service_groups(RestartParams(
        topology=path, target_dc="dc2", sim_url=url, max_parallel=2)))
    assert "cache" in result["failed"]
    assert set(result["blocked"]) == {"api"}
    assert {"user-db", "caller"} <= set(result["up"])
    assert "restart:api@dc2" not in {f"restart:{t}" for t in actions(sim, ActionKind.restart)}
    starts = {a.target: a.started_at for a in sim.estate.actions()}
    assert starts["cache@dc2"] >= max(  # the dependency restarted first and was healthy
        a.ends_at for a in sim.estate.actions() if a.target == "user-db@dc2")


def test_the_cap_on_parallel_restarts_holds(tmp_path, serve):
    topology, path = write(tmp_path, small())
    sim, url = serve(topology)
    asyncio.run(restart_service_groups(RestartParams(
        topology=path, target_dc="dc2", sim_url=url, max_parallel=1)))
    spans = sorted((a.started_at, a.ends_at) for a in sim.estate.actions())
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans))


def test_the_ramp_pushes_the_retry_policy_first_and_reaches_full_traffic(tmp_path, serve):
    topology, path = write(tmp_path, small())
    sim, url = serve(topology)
    sim.estate.power_loss("dc1")
    sim.estate.provision("api", "dc2", 6)  # dc2 could not carry the API's peak (7 of 10)
    sim.estate.set_flag("api", "previews", False)
    result = asyncio.run(warm_up_ramp(RampParams(topology=path, target_dc="dc2", sim_url=url)))
    assert result["result"] == "full" and result["share"] == 1.0
    kinds = [entry.kind for entry in sim.estate.log]
    assert kinds.index("set_retry_policy") < kinds.index("set_class_weights")
    assert sim.estate.flag("api", "previews")  # switched back on once traffic was full
    shares = [c["share_to"] for c in result["changes"]["tier0"]["dc2"]]
    assert shares == sorted(shares)  # the most important class never had to back off
    assert max(s["db_util"] for c in result["samples"].values() for s in c["dc2"]) <= 0.9
    # every class moved, including tier 3's, whose only service lived in dc1: its users
    # fail wherever they are until it is deployed, so moving them harms nobody
    assert result["weights"] == {c: {"dc1": 0.0, "dc2": 1.0} for c in ("tier0", "tier1", "tier3")}
    assert result["classes"] == {"tier0": 1.0, "tier1": 1.0, "tier3": 1.0}


def test_features_come_back_when_no_user_is_left_to_move(tmp_path, serve):
    """Every class already out of the lost DC (a ramp run again after its last move) with a
    feature still off: the ramp switches it back on, judged on the targets' databases, and
    reports full traffic only then."""
    topology, path = write(tmp_path, small())
    sim, url = serve(topology)
    sim.estate.power_loss("dc1")
    sim.estate.provision("api", "dc2", 6)
    for name in sim.estate.class_weights:
        sim.estate.set_class_weights(name, {"dc1": 0.0, "dc2": 1.0})
    sim.estate.set_flag("api", "previews", False)
    result = asyncio.run(warm_up_ramp(RampParams(topology=path, target_dc="dc2", sim_url=url)))
    assert sim.estate.flag("api", "previews")
    assert result["result"] == "full"


def test_a_failover_with_nobody_left_to_move_switches_features_back_on(tmp_path, serve):
    """The failover switches features off first; when no class has users left in the lost
    DC, no ramp runs, and the features must still come back."""
    topology, path = write(tmp_path, small(environment="drill"))
    sim, url = serve(topology)
    sim.estate.power_loss("dc1")
    for name in sim.estate.class_weights:
        sim.estate.set_class_weights(name, {"dc1": 0.0, "dc2": 1.0})
    assert sim.estate.flag("api", "previews")
    asyncio.run(failover(FailoverParams(topology=path, target_dc="dc2", lost_dc="dc1",
                                        sim_url=url)))
    kinds = [entry.kind for entry in sim.estate.log]
    assert "set_flag" in kinds  # it was switched off for the emergency ...
    assert sim.estate.flag("api", "previews")  # ... and back on


def test_failover_recovers_a_lost_dc_end_to_end(tmp_path, serve):
    topology, path = write(tmp_path, small(environment="drill"))
    sim, url = serve(topology)
    sim.estate.power_loss("dc1")
    result = asyncio.run(failover(FailoverParams(
        topology=path, target_dc="dc2", lost_dc="dc1", sim_url=url)))
    assert result["outcome"] == "recovered"
    assert result["deployed"] == ["reports@dc2"]  # lived only in dc1
    assert sim.estate.state("caller", "dc2").ip_target == "dc2"  # restarted: no stale IPs
    assert sim.estate.weights["dc2"] == 1.0
    with db.session(db.get_engine()) as s:
        events = service.get_audit_events(s, run_id=result["run_id"])
    assert [(e.actor, e.outcome, e.detail) for e in events] == [
        ("revive", "approved", {"reason": "auto-approved (drill)"})]


def test_a_second_trigger_gets_the_active_run(tmp_path, serve):
    topology, path = write(tmp_path, small())
    _, url = serve(topology)
    engine = db.get_engine()
    db.upgrade(engine)
    with db.session(engine) as s:
        active = service.create_run(s, runbook="failover", parameters={},
                                    trigger=TriggerSource.SLACK, triggered_by="someone",
                                    target_dc="dc1")  # one active failover per lost DC
    with pytest.raises(ActiveRunError) as info:
        asyncio.run(failover(FailoverParams(topology=path, target_dc="dc2", sim_url=url)))
    assert info.value.run_id == active.id


def test_an_abort_stops_between_steps_and_holds_traffic(tmp_path, serve):
    from revive.chat.console import ConsoleSink

    class AbortOnStart(ConsoleSink):
        async def start(self, card):
            await super().start(card)
            with db.session(db.get_engine()) as s:
                service.request_abort(s, card.run_id, by="oncall")

    from prefect import flow

    from flows.context import open_run
    from flows.failover import run_failover

    topology, path = write(tmp_path, small(environment="drill"))
    sim, url = serve(topology)
    sim.estate.power_loss("dc1")
    weights = sim.estate.weights
    params = FailoverParams(topology=path, target_dc="dc2", sim_url=url)

    @flow(name="failover-aborted-at-once")
    async def go(params: FailoverParams) -> None:
        async with open_run("failover", params, chat=AbortOnStart()) as ctx:
            await run_failover(ctx, params)

    asyncio.run(go(params))
    (run,) = runs()
    assert run.outcome == RunOutcome.ABORTED
    assert sim.estate.weights == weights
    assert sim.estate.actions() == []


def test_invalid_parameters_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="max_parallel"):
        RestartParams(max_parallel=0)
    assert Path(tmp_path).exists()


def test_a_prefect_retry_of_the_flow_run_continues_the_same_run(tmp_path, serve):
    from prefect import flow

    from flows.context import open_run
    from flows.provision import run_provision
    from tasks.traffic import set_traffic_weights

    topology, path = write(tmp_path, small())
    sim, url = serve(topology)
    params = ProvisionParams(topology=path, target_dc="dc2", sim_url=url)
    attempts: list[str] = []

    @flow(name="provision-then-crash", retries=1, retry_delay_seconds=0)
    async def crashing(params: ProvisionParams) -> dict:
        async with open_run("provision", params) as ctx:
            attempts.append(ctx.run.run_id)
            result = await run_provision(ctx, None)
            await ctx.instant("weights", "traffic", lambda: set_traffic_weights(
                ctx.tools.traffic, {"dc1": 0.4, "dc2": 0.6}))
            if len(attempts) == 1:
                raise RuntimeError("the worker died")  # Prefect retries the flow run
            return result

    asyncio.run(crashing(params))
    assert len(attempts) == 2 and attempts[0] == attempts[1]  # one revive run, resumed
    assert actions(sim, ActionKind.provision) == ["api@dc2"]  # provisioned once
    assert [e.kind for e in sim.estate.log].count("set_weights") == 1
    (run,) = runs()
    assert run.outcome == RunOutcome.SUCCEEDED
