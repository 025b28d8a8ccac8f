"""Runbook: move traffic into the recovering DC without melting its cold caches.

First the client retry policy goes to the config store (so clients cannot DDoS the DC),
then the ramp controller, fed only scraped metrics, raises the DC's GSLB share; at full
traffic it switches features back on in priority order. It stops when everything is on,
when the controller stalls and asks for a human, on abort (the share stays where it is),
or at ``max_duration_s``.

The pause between scrapes is a plain wait on the clock, not a task: it changes nothing and
asks nothing of an ops tool that its client does not already retry, and a ramp takes
hundreds of them, which as task runs would only load the Prefect server and bury the
scrapes and moves that matter in its UI.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import acreate_table_artifact
from pydantic import Field

from flows.context import RunbookParams, RunContext, open_run
from revive.ops.models import RetryPolicy
from revive.ramp import Change, DecisionKind, FeatureCandidate, RampPolicy, Sample, decide
from tasks.config_store import feature_flags, push_retry_policy, set_feature_flag
from tasks.metrics import scrape_metrics
from tasks.traffic import set_traffic_weights, traffic_weights


class RampParams(RunbookParams):
    policy: RampPolicy = Field(default_factory=RampPolicy, description="Limits and pacing.")
    retry_policy: RetryPolicy = Field(
        default_factory=RetryPolicy, description="Client retry rules pushed before any move."
    )
    scrape_interval_s: float = Field(10.0, gt=0, le=300, description="Seconds between scrapes.")
    max_duration_s: float = Field(
        7200.0, gt=0, le=86400, description="Give up (hold the share) after this long."
    )


async def run_ramp(
    ctx: RunContext,
    *,
    policy: RampPolicy,
    retry_policy: RetryPolicy,
    scrape_interval_s: float = 10.0,
    max_duration_s: float = 7200.0,
) -> dict:
    """Ramp the target DC to 100% and then its features; returns the samples and moves."""
    dc = ctx.target_dc
    tools = ctx.tools
    if ctx.dry_run:
        ctx.log("dry run: would push %s, then ramp %s to 100%% under %s",
                retry_policy.model_dump(), dc, policy.model_dump())
        return {"planned": True}
    await ctx.instant("ramp:retry-policy", "config", lambda: push_retry_policy(
        tools.config, retry_policy), note=f"client retry policy: {retry_policy.model_dump()}")
    weights = await traffic_weights(tools.traffic)
    others = [d for d in weights if d != dc]
    share = weights.get(dc, 0.0)
    # The pre-ramp error rate is what the ramp cannot change (components lost with the DC):
    # measured one scrape after the retry policy went out, so the metrics are current.
    start = await tools.clock.wait(for_s=scrape_interval_s)
    baseline = (await scrape_metrics(tools.metrics, dc)).error_rate
    features = _features_off(ctx, await feature_flags(tools.config))
    samples: list[Sample] = []
    changes: list[Change] = []
    last_advance: float | None = None
    result = "timeout"
    while True:
        ctx.check_abort()
        now = await tools.clock.wait(for_s=scrape_interval_s)
        if now - start > max_duration_s:
            break
        samples.append(await scrape_metrics(tools.metrics, dc))
        decision = decide(
            samples, share=share, policy=policy, now=now,
            last_change_t=changes[-1].t if changes else None, last_advance_t=last_advance,
            features_off=features, changes=changes, baseline_error_rate=baseline,
        )
        if decision.kind in (DecisionKind.advance, DecisionKind.back_off):
            new = decision.share
            rest = 1.0 - new
            target = {dc: new, **{d: rest / len(others) for d in others}} if others else {dc: 1}
            key = f"ramp:share@{now:.0f}"  # a resumed ramp re-reads the weights: new keys
            await ctx.instant(key, "traffic", lambda t=target: set_traffic_weights(
                tools.traffic, t))
            changes.append(Change(t=now, share_from=share, share_to=new))
            if decision.kind == DecisionKind.advance:
                last_advance = now
            share = new
        elif decision.kind == DecisionKind.enable_feature and decision.feature is not None:
            f = decision.feature
            await ctx.instant(f"ramp:feature:{f.service}/{f.name}", "config",
                              lambda f=f: set_feature_flag(tools.config, f.service, f.name, True),
                              note=f"feature on: {f.service}/{f.name}")
            features = [x for x in features if x != f]
            changes.append(Change(t=now, share_from=share, share_to=share))
        elif decision.kind == DecisionKind.stall:
            await ctx.warn("ramp", f"STALLED: {decision.reason}")
            result = "stalled"
            break
        ctx.run.progress.set(current=f"ramp {dc} {share:.0%}: {decision.reason}")
        await ctx.tick()
        if share >= 1.0 and not features:
            result = "full"
            break
    ctx.highlight(f"ramp {dc}: {share:.0%} ({result}) after {now - start:.0f} s")
    await acreate_table_artifact(
        table=[s.model_dump() for s in samples[-500:]], key="ramp-samples",
        description=f"Metrics the ramp controller saw for {dc}",
    )
    return {"result": result, "share": share, "seconds": now - start,
            "samples": [s.model_dump() for s in samples],
            "changes": [c.model_dump() for c in changes]}


def _features_off(ctx: RunContext, flags: dict[tuple[str, str], bool]) -> list[FeatureCandidate]:
    """Features switched off, priced as their share of the whole estate's load."""
    total = sum(s.peak_load for s in ctx.topology.services) or 1.0
    off = []
    for svc in ctx.topology.services:
        for f in svc.features:
            if not flags.get((svc.name, f.name), True):
                off.append(FeatureCandidate(service=svc.name, name=f.name, priority=f.priority,
                                            cost=f.cost * svc.peak_load / total))
    return off


@flow(name="warm_up_ramp", log_prints=False)
async def warm_up_ramp(params: RampParams) -> dict:
    """Push the retry policy, then ramp the target DC's traffic under the controller."""
    async with open_run("warm_up_ramp", params) as ctx:
        return await run_ramp(ctx, policy=params.policy, retry_policy=params.retry_policy,
                              scrape_interval_s=params.scrape_interval_s,
                              max_duration_s=params.max_duration_s)
