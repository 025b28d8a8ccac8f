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


async def probe_findings(
    topology: Topology, *, sim_url: str | None, timeout_s: float = 5.0
) -> list[Finding]:
    """One finding per replica that does not answer, and per tool that cannot be probed."""
    findings: list[Finding] = []
    names = [n for n, t in topology.ops_tools.items() if t.adapter != "sim" or sim_url]
    skipped = [n for n in topology.ops_tools if n not in names]
    if skipped:
        findings.append(Finding(
            rule="probe-skipped", severity=Severity.info, subject=", ".join(skipped),
            message=f"{len(skipped)} tool(s) use the simulator adapter and were not probed",
            hint=f"set ${SIM_URL_ENV} to probe a running simulator"))
    tools = build_tools(topology, sim_url=sim_url, run_dc=None, timeout_s=timeout_s,
                        names=names)

    async def one(name: str, adapter: Any) -> list[Finding]:
        declared = list(topology.ops_tools[name].replicas)
        probe = getattr(adapter, "probe", None)
        if probe is None:
            return []
        try:
            answers = await asyncio.wait_for(probe(), timeout_s * 2)
        except (ReviveError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            answers, why = dict.fromkeys(declared, False), reason
        else:
            why = "it does not answer"
        return [
            Finding(
                rule="replica-unreachable", severity=Severity.error, subject=f"{name}@{dc}",
                message=f"the {dc} replica of {name} ({topology.ops_tools[name].adapter}) "
                        f"did not answer: {why}",
                hint=f"start or fix {name} in {dc}, or correct its address in the topology",
            )
            for dc in declared if not answers.get(dc, False)
        ]

    try:
        results = await asyncio.gather(*(one(n, a) for n, a in tools.items()))
    finally:
        for adapter in tools.values():
            close = getattr(adapter, "aclose", None)
            if close is not None:
                await close()
    for found in results:
        findings.extend(found)
    return findings
