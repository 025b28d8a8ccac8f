"""The readiness-check flow publishes its report as artifacts and fails only on bad input."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.readiness_check import ReadinessCheckParams, readiness_check
from revive.errors import TopologyError
from tests.factories import EXAMPLE

pytestmark = pytest.mark.usefixtures("prefect_harness")


async def _latest(key: str):
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    return sorted(found, key=lambda a: a.created)[-1]


def test_the_example_report_lists_its_findings() -> None:
    result = readiness_check(ReadinessCheckParams(topology=str(EXAMPLE)))
    rules = {f["rule"] for f in result["findings"]}
    assert {"tier-redundancy", "health-checker-replicas", "dc-capacity"} <= rules

    report = asyncio.run(_latest("readiness-report"))
    assert report.type == "markdown"
    assert "| error | `health-checker-replicas` | health-checker |" in report.data
    errors = sum(1 for f in result["findings"] if f["severity"] == "error")
    assert f"**{errors} error(s)" in report.data

    table = asyncio.run(_latest("readiness-findings"))
    assert table.type == "table"
    assert "config-server" in str(table.data)


def test_an_invalid_topology_fails_the_flow_with_the_located_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("datacenters: [{name: dc1}]\nservices: 3\n")
    with pytest.raises(TopologyError, match=r"bad.yaml:2 services: Input should be a valid list"):
        readiness_check(ReadinessCheckParams(topology=str(bad)))
