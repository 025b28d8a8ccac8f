"""Tasks on the metrics tool: one scrape of the bottleneck's metrics."""

from __future__ import annotations

from prefect import task

from revive.ops.interfaces import Metrics
from revive.ramp import Sample
from tasks.options import OPS


@task(name="scrape_metrics", task_run_name="scrape {dc}", **OPS)
async def scrape_metrics(metrics: Metrics, dc: str) -> Sample:
    return await metrics.sample(dc)
