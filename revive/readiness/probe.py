"""``revive check --probe``: ask every replica of every declared tool whether it answers.

The static rules say whether the estate is *shaped* to survive a DC loss; the probe says
whether the replicas the rules count on are actually there now. Each adapter knows how to ask
its own tool (``probe()``: runtime socket, ``/-/ready``, ``ruok``, ``/v1/sys/health``, ...).
"""

from __future__ import annotations

import asyncio
from typing import Any

from revive.errors import ReviveError
from revive.ops.toolbox import SIM_URL_ENV, build_tools
from revive.readiness.models import Finding, Severity
from revive.topology import Topology


async def replica_answers(
    topology: Topology, *, sim_url: str | None, timeout_s: float = 5.0
) -> dict[str, dict[str, bool] | str]:
    """Each tool's answer per replica DC (all asked at once), or why it could not be asked;
    tools without a probe, and simulator tools with no simulator to ask, are left out."""
    names = [n for n, t in topology.ops_tools.items() if t.adapter != "sim" or sim_url]
    tools = build_tools(topology, sim_url=sim_url, run_dc=None, timeout_s=timeout_s,
                        names=names)

    async def one(adapter: Any) -> dict[str, bool] | str | None:
        probe = getattr(adapter, "probe", None)
        if probe is None:
            return None
        try:
            return await asyncio.wait_for(probe(), timeout_s * 2)
        except (ReviveError, OSError, TimeoutError) as exc:
            return str(exc) or type(exc).__name__

    try:
        results = await asyncio.gather(*(one(a) for a in tools.values()))
    finally:
        for adapter in tools.values():
            close = getattr(adapter, "aclose", None)
            if close is not None:
                await close()
    return {name: got for name, got in zip(tools, results, strict=True) if got is not None}


async def probe_findings(
    topology: Topology, *, sim_url: str | None, timeout_s: float = 5.0
) -> list[Finding]:
    """One finding per replica that does not answer, and per tool that cannot be probed."""
    findings: list[Finding] = []
    skipped = [n for n, t in topology.ops_tools.items() if t.adapter == "sim" and not sim_url]
    if skipped:
        findings.append(Finding(
            rule="probe-skipped", severity=Severity.info, subject=", ".join(skipped),
            message=f"{len(skipped)} tool(s) use the simulator adapter and were not probed",
            hint=f"set ${SIM_URL_ENV} to probe a running simulator"))
    answers = await replica_answers(topology, sim_url=sim_url, timeout_s=timeout_s)
    for name, got in answers.items():
        declared = list(topology.ops_tools[name].replicas)
        why = got if isinstance(got, str) else "it does not answer"
        answered = {} if isinstance(got, str) else got
        findings.extend(
            Finding(
                rule="replica-unreachable", severity=Severity.error, subject=f"{name}@{dc}",
                message=f"the {dc} replica of {name} ({topology.ops_tools[name].adapter}) "
                        f"did not answer: {why}",
                hint=f"start or fix {name} in {dc}, or correct its address in the topology",
            )
            for dc in declared if not answered.get(dc, False)
        )
    return findings
