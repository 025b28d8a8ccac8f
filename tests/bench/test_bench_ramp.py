"""bench/ramp.py runs end to end on its smallest scenario and reports what it promises."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.bench.scripts import bench_script


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    with bench_script("ramp") as module:
        yield module


def test_json_report_has_every_policy_and_field(bench, capsys) -> None:
    assert bench.main(["--seeds", "1", "--scenario", "small", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (scenario,) = report["scenarios"]
    assert scenario["name"] == "small"
    assert set(scenario["policies"]) == {"revive", "instant", "fixed", "oracle"}
    for summary in scenario["policies"].values():
        assert {"time_to_full_s", "peak_db_util", "breach_seconds", "error_share_seconds",
                "worst_time_to_full_s"} <= set(summary)
    policies = scenario["policies"]
    assert policies["instant"]["breach_seconds"] > 0
    assert policies["oracle"]["breach_seconds"] == 0


def test_the_oracle_never_exceeds_the_limit(bench) -> None:
    result = bench.run(bench.SCENARIOS[0], "oracle", seed=2)
    assert result["peak_db_util"] <= 0.9
    assert result["time_to_full_s"] is not None


def test_revive_moves_every_class_without_a_breach(bench) -> None:
    result = bench.run(bench.SCENARIOS[0], "revive", seed=1)
    assert result["time_to_full_s"] is not None
    assert result["breach_seconds"] == 0
    assert result["peak_db_util"] <= 0.9
