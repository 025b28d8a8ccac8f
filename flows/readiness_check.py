"""The readiness check as a Prefect flow: the seed's checklist, run daily, as a report.

Findings are information for people, never a failure of the flow; only an invalid topology
fails it, with the same located message the CLI prints.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from revive.readiness import Severity, run_check
from revive.render import render
from revive.topology import DEFAULT_PATH, content_hash, load


class ReadinessCheckParams(BaseModel):
    """Parameters of the readiness check (rendered as a form in the Prefect UI)."""

    topology: str = Field(
        default=str(DEFAULT_PATH),
        min_length=1,
        description="Topology file, relative to the worker's working directory.",
    )


@flow(name="readiness-check", log_prints=False)
def readiness_check(params: ReadinessCheckParams | None = None) -> dict:
    """Check a topology and publish the findings as markdown and table artifacts."""
    params = params or ReadinessCheckParams()
    topology = load(params.topology)
    report = run_check(topology)
    counts = {str(s): report.count(s) for s in Severity}
    markdown = render(
        "readiness_check/report.md.j2",
        source=params.topology,
        topology_hash=content_hash(topology),
        services=len(topology.services),
        datacenters=topology.dc_names,
        counts=counts,
        findings=report.findings,
    )
    create_markdown_artifact(
        markdown=markdown, key="readiness-report", description="Readiness check report"
    )
    if report.findings:
        create_table_artifact(
            table=[f.model_dump(mode="json") for f in report.findings],
            key="readiness-findings",
            description="Readiness findings",
        )
    get_run_logger().info(
        "readiness of %s: %d error(s), %d warning(s)",
        params.topology,
        counts["error"],
        counts["warning"],
    )
    return report.model_dump(mode="json")
