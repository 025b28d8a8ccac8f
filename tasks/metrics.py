"""Tasks on the metrics tool: one scrape of the bottleneck's metrics."""

from __future__ import annotations

from collections.abc import Collection

from prefect import task

from revive.errors import NoDataError
from revive.ops.interfaces import Metrics
from revive.ramp import Sample
from tasks.options import OPS


@task(name="scrape_metrics", task_run_name="scrape {dc}", **OPS)
async def scrape_metrics(metrics: Metrics, dc: str) -> Sample:
    return await metrics.sample(dc)


@task(name="scrape_class_metrics", task_run_name="scrape {lanes}", **OPS)
async def scrape_class_metrics(
    metrics: Metrics, lanes: list[tuple[str, str]], idle: Collection[tuple[str, str]] = ()
) -> dict[tuple[str, str], Sample]:
    """One scrape round: a sample per (class, DC) lane.

    A lane the metrics tool has no data for is left out: the caller holds it ("no data" is
    never 0). Except an ``idle`` lane, one the class sends no users to: it has nothing of
    its own to measure (no errors, no latency), so it reads the DC's shared database from
    the DC-level sample, with the class's own figures at 0."""

    async def one(cls: str, dc: str) -> Sample | None:
        try:
            return await metrics.class_sample(cls, dc)
        except NoDataError:
            if (cls, dc) not in idle:
                return None
        try:
            shared = await metrics.sample(dc)
        except NoDataError:
            return None
        return Sample(t=shared.t, share=0.0, db_util=shared.db_util, p99_ms=0.0,
                      error_rate=0.0, retry_ratio=shared.retry_ratio, cache_hit_ratio=0.0)

    # One lane after another: against the simulator, the order of reads is part of the replay.
    got = {lane: await one(*lane) for lane in lanes}
    return {lane: sample for lane, sample in got.items() if sample is not None}
