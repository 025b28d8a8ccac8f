"""The planner benchmark script runs end to end and generates what it says it does.

No timing assertions: the goals are for ``make bench``, not for the test suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from revive.topology import parse
from tests.bench.scripts import bench_script


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with bench_script("plan") as module:
        yield module


def test_main_runs_a_small_benchmark(bench: ModuleType, capsys: pytest.CaptureFixture) -> None:
    assert bench.main(["--services", "300", "--deps", "900", "--repeat", "1"]) == 0

    out = capsys.readouterr().out
    for row in ("baseline", "restart plan", "capacity plan", "parse+validate"):
        assert row in out
    assert "ratio vs baseline" in out
    assert "restart plan < 1 s:" in out
    assert "within 10x baseline:" in out
    assert "(ratio " in out
    assert "300 services / 900 hard deps" in out


def test_generate_is_exact_valid_and_deterministic(bench: ModuleType) -> None:
    data = bench.generate(200, 600, seed=3)

    services = data["services"]
    assert len(services) == 200
    assert len({s["name"] for s in services}) == 200
    hard = [
        (s["name"], d)
        for s in services
        for d in s["depends_on"]
        if isinstance(d, str) or not d.get("soft", False)
    ]
    assert len(hard) == 600
    assert len(set(hard)) == 600

    topology = parse(data)
    assert len(topology.services) == 200
    assert sum(len(s.hard_dependencies) for s in topology.services) == 600
    assert {dc.name for dc in topology.datacenters} == {"dc1", "dc2"}
    assert all(s.runs_in("dc1") for s in topology.services)

    assert bench.generate(200, 600, seed=3) == data
    assert bench.generate(200, 600, seed=4) != data


def test_generate_fills_a_complete_dag(bench: ModuleType) -> None:
    data = bench.generate(6, 15, seed=1)  # every acyclic edge there is
    assert sum(len(s.hard_dependencies) for s in parse(data).services) == 15
    with pytest.raises(ValueError):
        bench.generate(6, 16, seed=1)
