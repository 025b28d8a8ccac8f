"""Tasks on the metrics tool: one scrape of the bottleneck's metrics."""

from __future__ import annotations

from prefect import task

from revive.ops.interfaces import Metrics
from revive.ramp import Sample
from tasks.options import OPS


@task(name="scrape_metrics", task_run_name="scrape {dc}", **OPS)
async def scrape_metrics(metrics: Metrics, dc: str) -> Sample:
    return await metrics.sample(dc)


@task(name="scrape_class_metrics", task_run_name="scrape {lanes}", **OPS)
async def scrape_class_metrics(
    metrics: Metrics, lanes: list[tuple[str, str]]
) -> dict[tuple[str, str], Sample]:
    """One scrape round: a sample per (class, DC) lane, in one task run per round."""
    return {(cls, dc): await metrics.class_sample(cls, dc) for cls, dc in lanes}
