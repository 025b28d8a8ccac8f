"""Gather the status board from the store, the topology, the ops tools and the drill history.

Every source may fail on its own and none may fail the page: the store, the topology file,
the drill history and each tool read are separate sections, and a section that cannot be
had is shown as unknown with the reason. The ops tools are asked all at once under one
short deadline (2 s): a DC that is on fire must not make the board hang for the people
watching it. Tool answers are kept a few seconds, so many open boards refreshing together
ask the tools once; runs come from the store on every request, so progress is always fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine

from revive.drill.trend import tier_keys, trend_note
from revive.errors import ReviveError
from revive.ops.toolbox import SIM_URL_ENV, Toolbox, build_toolbox
from revive.readiness import Report, run_check
from revive.runs.drills import DrillSummary, recent_drills
from revive.runs.status import recent_runs
from revive.store import db, service
from revive.store.models import StepState
from revive.topology import Topology
from revive.web.board_models import (
    Board,
    DcRow,
    DrillRow,
    FindingRow,
    RunRow,
    ServiceRow,
    TierDrills,
    TierRow,
)

__all__ = ["BoardSource", "ToolFacts", "dc_state", "drill_trends", "read_tools"]

#: The longest the board waits for the ops tools, all reads together.
TOOL_TIMEOUT_S = 2.0
#: How long one set of tool answers is shown before the tools are asked again.
TOOLS_TTL_S = 5.0
RUN_LIMIT = 30
RECENT_LIMIT = 8
DRILL_LIMIT = 10
#: A DC with less than this share of users is drained.
DRAINED_BELOW = 0.0005


@dataclass
class ToolFacts:
    """What the tools said; a missing key (or None) is unknown, with the reason alongside."""

    weights: dict[str, float] | None = None
    class_weights: dict[str, dict[str, float]] | None = None
    healthy: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    """``traffic`` or ``health:<dc>`` or ``tools`` -> why it is unknown."""


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:159] + "…"


def read_tools(topology: Topology, *, sim_url: str | None,
               timeout_s: float = TOOL_TIMEOUT_S) -> ToolFacts:
    """Traffic weights (per DC and per class) and healthy instances per DC, asked together;
    whatever has not answered within ``timeout_s`` is unknown. Never raises for a tool."""
    try:
        tools = build_toolbox(topology, sim_url=sim_url, run_dc=None, timeout_s=timeout_s / 2)
    except ReviveError as exc:
        return ToolFacts(problems={"tools": f"no ops tools to ask ({_why(exc)})"})
    return asyncio.run(_ask(tools, topology.dc_names, timeout_s))


async def _ask(tools: Toolbox, dcs: Sequence[str], timeout_s: float) -> ToolFacts:
    calls: dict[str, Coroutine[Any, Any, Any]] = {
        "weights": tools.traffic.weights(),
        "classes": tools.traffic.class_weights(),
        **{f"health:{dc}": tools.health.healthy(dc) for dc in dcs},
    }
    tasks = {key: asyncio.ensure_future(call) for key, call in calls.items()}
    facts = ToolFacts()
    try:
        _done, pending = await asyncio.wait(tasks.values(), timeout=timeout_s)
        for task in pending:
            task.cancel()
        for key, task in tasks.items():
            where = "traffic" if key in {"weights", "classes"} else key
            if task in pending or task.cancelled():
                facts.problems.setdefault(where, f"no answer within {timeout_s:g} s")
            elif (exc := task.exception()) is not None:
                facts.problems.setdefault(where, _why(exc))
            elif key == "weights":
                facts.weights = {str(k): float(v) for k, v in task.result().items()}
            elif key == "classes":
                facts.class_weights = {str(c): {str(d): float(w) for d, w in per.items()}
                                       for c, per in task.result().items()}
            else:
                facts.healthy[key.removeprefix("health:")] = {
                    str(k): int(v) for k, v in task.result().items()}
        if pending:
            await asyncio.wait(pending, timeout=0.2)
    finally:
        # Closing only drops connections; a tool slow to let go must not hold the page.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(tools.aclose(), 0.5)
    return facts


def dc_state(share: float | None, services: int, services_up: int | None) -> str:
    """up | degraded | down | drained | unknown, from what is known of the DC."""
    if services_up is not None and services and services_up == 0:
        return "down"
    if share is not None and share < DRAINED_BELOW:
        return "drained"
    if share is None or services_up is None:
        return "unknown"
    return "up" if services_up >= services else "degraded"


def drill_trends(drills: Sequence[DrillSummary], topology: Topology | None = None
                 ) -> list[TierDrills]:
    """Per tier, oldest drill first: RTO seconds (None = never back) and the target.

    ``drills`` is newest first, as the history gives it. The target is the newest drill's;
    a tier a drill did not score is left out of that drill's points."""
    oldest_first = list(reversed(drills))
    tiers = tier_keys([*(d.rto_s for d in drills), *(d.target_s for d in drills)])
    rows = []
    for tier in tiers:
        target = next((d.target_s[tier] for d in drills if tier in d.target_s), None)
        if target is None and topology is not None and tier.removeprefix("tier").isdigit():
            policy = topology.tier_policy.get(int(tier.removeprefix("tier")))
            target = float(policy.rto_target_s) if policy is not None else None
        points = [d.rto_s[tier] for d in oldest_first if tier in d.rto_s]
        rows.append(TierDrills(
            tier=tier, target_s=target, rto_s=points,
            trend=trend_note(points[-1], points[-2::-1]) if points else ""))
    return rows


class BoardSource:
    """The board of one app: its store, its topology, and the caches that keep it cheap."""

    def __init__(
        self,
        engine: Engine,
        topology: Callable[[], Topology],
        topology_name: str,
        *,
        sim_url: Callable[[], str | None] = lambda: os.environ.get(SIM_URL_ENV) or None,
        tool_timeout_s: float = TOOL_TIMEOUT_S,
        tools_ttl_s: float = TOOLS_TTL_S,
        drills: Callable[[Engine, int], list[DrillSummary]] = recent_drills,
    ) -> None:
        self.engine = engine
        self.topology = topology
        self.topology_name = topology_name
        self.sim_url = sim_url
        self.tool_timeout_s = tool_timeout_s
        self.tools_ttl_s = tools_ttl_s
        self.drills = drills
        self._lock = threading.Lock()
        self._tools: tuple[tuple[int, str | None], float, ToolFacts] | None = None
        self._readiness: tuple[int, date, Report] | None = None

    def board(self) -> Board:
        board = Board(generated_at=datetime.now(UTC), topology=self.topology_name)
        try:
            topology: Topology | None = self.topology()
        except (ReviveError, OSError) as exc:
            topology = None
            board.problems["topology"] = f"topology unreadable: {_why(exc)}"
        if topology is not None:
            board.environment = str(topology.environment)
            self._estate(board, topology, self._tool_facts(topology))
            self._findings(board, topology)
        self._runs(board)
        self._drills(board, topology)
        return board

    # --- sections ------------------------------------------------------------------------

    def _tool_facts(self, topology: Topology) -> ToolFacts:
        key = (id(topology), self.sim_url())
        with self._lock:  # one read at a time: concurrent viewers share its answer
            now = time.monotonic()
            if self._tools is not None and self._tools[0] == key \
                    and now - self._tools[1] < self.tools_ttl_s:
                return self._tools[2]
            facts = read_tools(topology, sim_url=key[1], timeout_s=self.tool_timeout_s)
            self._tools = (key, time.monotonic(), facts)
            return facts

    def _estate(self, board: Board, topology: Topology, facts: ToolFacts) -> None:
        classes = list(topology.traffic_classes)
        board.traffic_classes = classes
        general = facts.problems.get("tools")
        if general:
            board.problems["tools"] = general
        elif "traffic" in facts.problems:
            board.problems["traffic"] = f"traffic shares unknown ({facts.problems['traffic']})"
        for dc in topology.dc_names:
            expected = [svc.name for svc in topology.services if svc.runs_in(dc)]
            healthy = facts.healthy.get(dc)
            up = None if healthy is None else sum(1 for n in expected if healthy.get(n, 0) > 0)
            share = None if facts.weights is None else facts.weights.get(dc, 0.0)
            problem = facts.problems.get(f"health:{dc}")
            board.dcs.append(DcRow(
                name=dc, state=dc_state(share, len(expected), up), share=share,
                class_shares={c: None if facts.class_weights is None
                              else facts.class_weights.get(c, {}).get(dc, 0.0)
                              for c in classes},
                services=len(expected), services_up=up,
                problem=f"health unknown ({problem})" if problem else None))
        for tier in sorted({svc.tier for svc in topology.services}):
            policy = topology.tier_policy.get(tier)
            board.tiers.append(TierRow(
                tier=tier, rto_target_s=float(policy.rto_target_s) if policy else 0.0,
                services=[ServiceRow(
                    name=svc.name, group=svc.group, traffic_class=svc.traffic_class_name,
                    role=str(svc.role),
                    expected={dc: svc.instances_in(dc) for dc in topology.dc_names},
                    healthy={dc: None if dc not in facts.healthy
                             else facts.healthy[dc].get(svc.name, 0)
                             for dc in topology.dc_names})
                    for svc in topology.services if svc.tier == tier]))

    def _findings(self, board: Board, topology: Topology) -> None:
        today = date.today()
        with self._lock:
            cached = self._readiness
            if cached is None or cached[0] != id(topology) or cached[1] != today:
                cached = (id(topology), today, run_check(topology))
                self._readiness = cached
        board.findings_checked_on = cached[1].isoformat()
        board.findings = [FindingRow(rule=f.rule, severity=str(f.severity), subject=f.subject,
                                     message=f.message, hint=f.hint)
                          for f in cached[2].findings]

    def _runs(self, board: Board) -> None:
        try:
            rows = recent_runs(self.engine, limit=RUN_LIMIT)
            active = [r for r in rows if r["outcome"] in {"running", "crashed"}]
            current = self._current_steps([r["id"] for r in active])
        except ReviveError as exc:
            board.problems["runs"] = f"runs unknown: the store cannot be read ({_why(exc)})"
            return
        for row in rows:
            run = RunRow(**{k: v for k, v in row.items() if k in RunRow.model_fields},
                         current_step=current.get(row["id"]))
            if row["outcome"] in {"running", "crashed"}:
                board.running.append(run)
            elif len(board.recent) < RECENT_LIMIT:
                board.recent.append(run)

    def _current_steps(self, run_ids: Sequence[str]) -> dict[str, str]:
        """The step each run is in: the newest one started and not ended."""
        found: dict[str, str] = {}
        with db.session(self.engine) as s:
            for run_id in run_ids:
                open_steps = [st for st in service.get_steps(s, run_id=run_id)
                              if st.state == StepState.STARTED]
                if open_steps:
                    found[run_id] = open_steps[-1].step_key
        return found

    def _drills(self, board: Board, topology: Topology | None) -> None:
        try:
            drills = self.drills(self.engine, DRILL_LIMIT)
        except ReviveError as exc:
            board.problems["drills"] = f"drill history unknown ({_why(exc)})"
            return
        board.drills = [DrillRow(**d.model_dump(include=set(DrillRow.model_fields)))
                        for d in drills]
        board.drill_tiers = drill_trends(drills, topology)
