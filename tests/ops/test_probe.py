"""``revive check --probe``: a finding for each replica that does not answer."""

from __future__ import annotations

import asyncio

from revive.drill.server import SimServer
from revive.readiness.probe import probe_findings
from revive.sim import Simulator
from revive.topology import load
from tests.factories import EXAMPLE


def test_the_probe_names_each_replica_that_does_not_answer() -> None:
    topology = load(EXAMPLE)
    sim = Simulator(topology, seed=1)
    sim.advance(5)
    sim.estate.tool_down("vault", "dc1")
    sim.estate.power_loss("dc2")
    with SimServer(sim) as server:
        findings = asyncio.run(probe_findings(topology, sim_url=server.url, timeout_s=5))
    down = {f.subject for f in findings if f.rule == "replica-unreachable"}
    assert "vault@dc1" in down
    assert {f"{tool}@dc2" for tool in ("registry", "gslb", "prometheus")} <= down
    assert "registry@dc1" not in down and "gslb@dc1" not in down
    assert all(f.severity == "error" for f in findings if f.rule == "replica-unreachable")


def test_without_a_simulator_its_tools_are_skipped_and_said_so() -> None:
    findings = asyncio.run(probe_findings(load(EXAMPLE), sim_url=None))
    assert [f.rule for f in findings] == ["probe-skipped"]
    assert "vault" in findings[0].subject
