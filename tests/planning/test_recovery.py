"""The failover's recovery graph on random N-DC estates (hypothesis): every step waits only
for its own pre-conditions, and those always hold before it starts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from revive.planning import plan_failover_capacity
from revive.planning.graph import rehearse
from revive.planning.recovery import (
    FEATURES_OFF,
    GATE,
    RETRY_POLICY,
    Survey,
    closure,
    ramp_key,
    recovery_graph,
)
from revive.planning.restart import effective_tiers
from revive.planning.shares import default_weights
from revive.topology import Topology, parse
from tests.factories import estate, service

DC_NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,7}", fullmatch=True)


@st.composite
def estates(draw: st.DrawFn) -> tuple[Topology, str]:
    dcs = draw(st.lists(DC_NAMES, min_size=2, max_size=5, unique=True))
    n = draw(st.integers(2, 9))
    services = [service("db", role="database", instances=dict.fromkeys(dcs, 2))]
    for i in range(n):
        deps = draw(st.lists(st.sampled_from(["db", *[f"s{j}" for j in range(i)]]),
                             max_size=2, unique=True))
        services.append(service(
            f"s{i}", tier=draw(st.integers(0, 3)),
            traffic_class=draw(st.sampled_from(["web", "api", None])),
            depends_on=deps, restart_seconds=draw(st.integers(10, 200)),
            caches_dependency_ips=draw(st.booleans()),
            instances={dc: draw(st.integers(0, 3)) for dc in dcs},
            peak_load=draw(st.integers(0, 4000)),
        ))
    for svc in services:  # the factory's default class key is not part of these estates
        if svc.get("traffic_class") is None:
            svc.pop("traffic_class", None)
    topology = parse(estate(*services, datacenters=[{"name": dc} for dc in dcs], ops_tools={}))
    return topology, draw(st.sampled_from(dcs))


def survey_of(topology: Topology, lost: str) -> Survey:
    """What a failover would find on a fresh estate: the topology's own state."""
    targets = [dc for dc in topology.dc_names if dc != lost]
    plan = {s.dc: s for s in plan_failover_capacity(topology, lost).survivors}
    weights = default_weights(topology)
    survey = Survey(lost=lost, targets=targets,
                    classes=[c for c in topology.traffic_classes if weights[c][lost] > 0])
    for dc in targets:
        survey.deploys[dc] = {s.name: 1 for s in topology.services
                              if s.runs_in(lost) and not s.runs_in(dc)}
        survey.provisions[dc] = {line.service: line.add for line in plan[dc].services
                                 if line.add > 0 and topology.service(line.service).runs_in(dc)}
        survey.restarts[dc] = [s.name for s in topology.services
                               if s.runs_in(dc) and s.caches_dependency_ips]
    return survey


@settings(max_examples=150, deadline=None)
@given(case=estates(), cap=st.integers(1, 4))
def test_no_step_starts_before_its_pre_conditions(case: tuple[Topology, str], cap: int) -> None:
    topology, lost = case
    survey = survey_of(topology, lost)
    steps, pools = recovery_graph(topology, survey, max_parallel=cap)
    by_key = {s.key: s for s in steps}
    timings = rehearse(steps, pools)
    assert set(timings) == set(by_key)  # every step runs once
    for step in steps:
        for before in (*step.after, *step.after_end):
            assert timings[before].end_s <= timings[step.key].start_s + 1e-9
        assert not step.target.endswith(f"@{lost}")  # nothing acts on the lost DC
    for name in survey.classes:  # a class moves after the gate and its services' steps
        ramp = by_key[ramp_key(name)]
        assert {GATE, RETRY_POLICY, FEATURES_OFF} <= set(ramp.after)
        needed = closure(topology, topology.traffic_classes[name].services)
        for step in steps:
            if step.action in ("deploy", "provision", "restart") \
                    and step.target.split("@")[0] in needed:
                assert step.key in ramp.after_end
    tiers = effective_tiers(topology)
    for pool in pools:  # tier first: nothing more urgent was left waiting when a step began
        mine = [st_ for st_ in steps if st_.pool == pool]
        for a in mine:
            start = timings[a.key].start_s
            for b in mine:
                ready = all(timings[k].end_s <= start + 1e-9 for k in b.after)
                if timings[b.key].start_s > start + 1e-9 and ready:
                    assert tiers[a.target.split("@")[0]] <= tiers[b.target.split("@")[0]]
