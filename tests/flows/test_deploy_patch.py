"""The emergency patch runbook through Prefect against a simulator served over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from flows.deploy_patch import PatchParams, deploy_patch, plan_batches
from revive.errors import DependencyError, InputError
from revive.runs import RunSession
from revive.sim import Simulator
from revive.sim.estate import ActionKind, ActionView
from revive.store import db, service
from revive.store.models import RunOutcome
from tests.flows.estates import small, write

pytestmark = pytest.mark.usefixtures("prefect_harness", "store_url")

DC2 = ["user-db", "cache", "api", "caller"]  # everything small() runs in dc2


def patches(sim: Simulator) -> list[ActionView]:
    return sorted((a for a in sim.estate.actions() if a.kind == ActionKind.patch),
                  key=lambda a: (a.started_at, a.target))


def versions(sim: Simulator, names: list[str]) -> dict[str, str]:
    return {name: sim.estate.state(name, "dc2").version for name in names}


def runs():
    with db.session(db.get_engine()) as s:
        return service.get_all_runs(s)


def when_runs(sim: Simulator, name: str, version: str, then: Callable[[], None]) -> None:
    """Call ``then`` once, at the first tick ``name`` runs ``version`` in dc2.

    A patch in the simulator changes neither health nor load, so a bad version is modelled
    as a consequence the test attaches to it. Deterministic: the simulator's clock only
    moves while the runbook waits, so this fires at the same virtual instant every time.
    """
    fired = False

    def tick(now: float, dt: float) -> None:
        nonlocal fired
        if not fired and sim.estate.state(name, "dc2").version == version:
            fired = True
            then()

    sim.clock.add_ticker(tick, every=1.0)


def test_batches_are_the_canary_alone_then_batch_size_at_a_time():
    assert plan_batches(["a", "b", "c", "d"], 1, 2) == [["a"], ["b", "c"], ["d"]]
    assert plan_batches(["a", "b", "c"], 0, 2) == [["a", "b"], ["c"]]
    assert plan_batches(["a"], 3, 2) == [["a"]]


def test_copies_the_missing_image_then_patches_canary_first_in_batches(tmp_path, serve):
    topology, path = write(tmp_path, small())
    sim, url = serve(topology)
    order = ["caller", "api", "cache", "user-db"]
    for name in order:
        sim.estate.push_artifact(name, "v2", "dc1")  # CI published it to dc1's replica only
    result = asyncio.run(deploy_patch(PatchParams(
        topology=path, target_dc="dc2", sim_url=url, services=order, version="v2",
        canary=1, batch_size=2, gate_s=20)))
    assert result["outcome"] == "patched", result
    assert result["batches"] == [["caller"], ["api", "cache"], ["user-db"]]
    assert sorted(result["copied"]) == sorted(order)
    assert result["rolled_back"] == [] and result["failed"] == {}
    assert versions(sim, order) == dict.fromkeys(order, "v2")
    copies = [a for a in sim.estate.actions() if a.kind == ActionKind.copy_artifact]
    assert {a.target for a in copies} == {f"{n}:v2@dc2" for n in order}
    done = patches(sim)
    assert max(a.ends_at for a in copies) <= done[0].started_at  # image first
    canary, rest = done[0], done[1:]
    assert canary.target == "caller@dc2"
    assert all(canary.ends_at <= a.started_at for a in rest)  # the canary was alone
    for a in done:  # never more than batch_size patches in flight
        assert sum(b.started_at <= a.started_at < b.ends_at for b in done) <= 2
    (run,) = runs()
    assert run.outcome == RunOutcome.SUCCEEDED


def test_an_image_nowhere_fails_before_anything_changes(tmp_path, serve):
    topology, path = write(tmp_path, small())
    sim, url = serve(topology)
    before = len(sim.estate.log)
    with pytest.raises(DependencyError, match=r"no registry replica holds caller:v9 .*; api:v9"):
        asyncio.run(deploy_patch(PatchParams(
            topology=path, target_dc="dc2", sim_url=url, services=["caller", "api"],
            version="v9")))
    assert sim.estate.actions() == []  # no copy, no patch
    assert len(sim.estate.log) == before
    (run,) = runs()
    assert run.outcome == RunOutcome.FAILED


def test_a_rising_error_rate_rolls_the_batch_back_and_stops(tmp_path, serve):
    topology, path = write(tmp_path, small())
    sim, url = serve(topology)
    for name in DC2:
        sim.estate.push_artifact(name, "v2", "dc2")
    # The "bad" api v2: once it runs, every user lands in dc2 (GSLB), whose 7 api instances
    # cannot carry the 10 000 req/s peak: ~16% of dc2's requests fail, far over the 1% gate.
    when_runs(sim, "api", "v2", lambda: sim.estate.set_weights({"dc2": 1.0}))
    result = asyncio.run(deploy_patch(PatchParams(
        topology=path, target_dc="dc2", sim_url=url, services=["caller", "api", "cache"],
        version="v2", canary=1, batch_size=1, gate_s=30)))
    assert result["outcome"] == "failed"
    assert "error rate in dc2 rose" in result["reason"]
    assert result["patched"] == ["caller"]  # passed its gate earlier: stays
    assert result["rolled_back"] == ["api"]
    assert "error rate" in result["failed"]["api"]
    assert result["not_started"] == ["cache"]
    assert versions(sim, ["caller", "api", "cache"]) == {
        "caller": "v2", "api": "v1", "cache": "v1"}
    assert [a.target for a in patches(sim)] == ["caller@dc2", "api@dc2"]  # cache never began
    rollbacks = [a for a in sim.estate.actions() if a.kind == ActionKind.rollback]
    assert [a.target for a in rollbacks] == ["api@dc2"]


def test_a_service_that_stays_unhealthy_is_rolled_back(tmp_path, serve):
    topology, path = write(tmp_path, small())
    sim, url = serve(topology)
    for name in DC2:
        sim.estate.push_artifact(name, "v2", "dc2")
    sim.estate.fail_next_restarts("cache", "dc2")
    sim.estate.restart("cache", "dc2")
    sim.advance(60)  # the restart failed: cache has no healthy instance (nor will it)
    assert sim.estate.state("cache", "dc2").healthy == 0
    result = asyncio.run(deploy_patch(PatchParams(
        topology=path, target_dc="dc2", sim_url=url, services=["api", "cache", "caller"],
        version="v2", canary=1, batch_size=1, gate_s=10)))
    assert result["outcome"] == "failed"
    assert result["failed"] == {"cache": "no healthy instance on the new version in dc2"}
    assert result["patched"] == ["api"] and result["rolled_back"] == ["cache"]
    assert versions(sim, ["api", "cache", "caller"]) == {
        "api": "v2", "cache": "v1", "caller": "v1"}


def test_an_abort_mid_batch_rolls_that_batch_back(tmp_path, serve, monkeypatch):
    topology, path = write(tmp_path, small())
    sim, url = serve(topology)
    for name in DC2:
        sim.estate.push_artifact(name, "v2", "dc2")
    checked = RunSession.abort_requested
    monkeypatch.setattr(RunSession, "abort_requested",
                        lambda self, every_s=1.0: checked(self, every_s=0.0))  # no wall throttle

    def abort() -> None:
        with db.session(db.get_engine()) as s:
            run = service.get_active_run(s, runbook="deploy_patch", target_dc="dc2")
            assert run is not None
            service.request_abort(s, run.id, by="oncall")

    # cache (5 instances) is patched 4 s before api (7): the abort comes while api's patch is
    # still in flight, so the second batch never reaches its gate.
    when_runs(sim, "cache", "v2", abort)
    asyncio.run(deploy_patch(PatchParams(
        topology=path, target_dc="dc2", sim_url=url, services=["caller", "api", "cache",
                                                                 "user-db"],
        version="v2", canary=1, batch_size=2, gate_s=10)))
    (run,) = runs()
    assert run.outcome == RunOutcome.ABORTED
    assert versions(sim, DC2) == {"caller": "v2", "api": "v1", "cache": "v1", "user-db": "v1"}
    rollbacks = {a.target for a in sim.estate.actions() if a.kind == ActionKind.rollback}
    assert rollbacks == {"api@dc2", "cache@dc2"}  # the partial batch, not the canary
    assert "user-db@dc2" not in {a.target for a in patches(sim)}  # never started


def test_a_dry_run_changes_nothing(tmp_path, serve):
    topology, path = write(tmp_path, small())
    sim, url = serve(topology)
    sim.estate.push_artifact("api", "v2", "dc1")
    sim.estate.push_artifact("cache", "v2", "dc2")
    before = len(sim.estate.log)
    result = asyncio.run(deploy_patch(PatchParams(
        topology=path, target_dc="dc2", sim_url=url, services=["api", "cache", "caller"],
        version="v2", dry_run=True)))
    assert result["planned"] == [["api"], ["cache", "caller"]]
    assert result["copy"] == {"api": "dc1"}
    assert result["missing"] == {"caller": "not in dc2; not in dc1"}
    assert len(sim.estate.log) == before and sim.estate.actions() == []


@pytest.mark.parametrize(("name", "message"), [
    ("nope", "unknown service 'nope'"),
    ("reports", "'reports' does not run in dc2"),
])
def test_a_bad_service_is_refused_before_anything_changes(tmp_path, serve, name, message):
    topology, path = write(tmp_path, small())
    sim, url = serve(topology)
    for svc in DC2:
        sim.estate.push_artifact(svc, "v2", "dc2")
    before = len(sim.estate.log)
    with pytest.raises(InputError, match=message):
        asyncio.run(deploy_patch(PatchParams(
            topology=path, target_dc="dc2", sim_url=url, services=["api", name],
            version="v2")))
    assert len(sim.estate.log) == before and sim.estate.actions() == []


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="services"):
        PatchParams(services=[], version="v2")
    with pytest.raises(ValueError, match="batch_size"):
        PatchParams(services=["api"], version="v2", batch_size=0)


def test_in_production_no_service_is_patched_without_an_approver(tmp_path, serve):
    """The patch gate: images are put in place, then the run waits; nobody answers, so it
    stops before any service is touched and says why."""
    topology, path = write(tmp_path, small(environment="production"))
    sim, url = serve(topology)
    sim.estate.push_artifact("caller", "v2", "dc1")
    with pytest.raises(Exception, match=r"patch timed out \(no answer within 5 s\)"):
        asyncio.run(deploy_patch(PatchParams(
            topology=path, target_dc="dc2", sim_url=url, services=["caller"], version="v2",
            approval_timeout_s=5)))
    assert patches(sim) == []
    assert versions(sim, ["caller"]) == {"caller": "v1"}
    assert [a.kind for a in sim.estate.actions()] == [ActionKind.copy_artifact]
    (run,) = runs()
    assert run.outcome == RunOutcome.FAILED
    with db.session(db.get_engine()) as s:
        decision = service.get_gate_decision(s, run_id=run.id, gate="patch")
        assert (decision.decision, decision.decided_by) == ("timed out", "revive")
