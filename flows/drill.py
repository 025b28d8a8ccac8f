"""The DR drill, revive's main job: break the simulated estate, recover it, report.

The topology runs on the built-in simulator with each traffic class split evenly over the
DCs that run it; then the scenario's fault hits the lost DC (``dc-fire``: it loses power,
its ops-tool replicas and health checker with it) and the failover runbook recovers into
every other DC over the simulator's HTTP API, as it would against real tools. The drill
measures the RTO of every tier on the simulator's true state and writes ``report.html``
and ``report.json``.

However it was started (``revive drill``, ``/revive drill``, a schedule), a drill leaves a
history: its summary in revive's store (``revive drills``, the status board), its report
under ``REVIVE_REPORTS_DIR``, a Prefect artifact with the outcome, each tier's RTO against
its target and where the report is, and a final state whose message says the same. Each
step is compared with the same step in earlier drills of the scenario; one slower than the
75th percentile of its history is marked in the report.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml
from prefect import flow, get_run_logger, tags
from prefect.artifacts import acreate_markdown_artifact
from prefect.runtime import flow_run as current_run
from prefect.states import Completed, State
from pydantic import Field
from sqlalchemy import Engine

from flows.context import known_dc, using_store
from flows.failover import FailoverParams, failover
from revive.drill.charts import fmt_clock
from revive.drill.models import (
    DrillReport,
    FindingRow,
    GraphStep,
    RampPoint,
    StepResult,
    TierResult,
)
from revive.drill.recorder import Recorder
from revive.drill.report import write_report
from revive.drill.scenarios import SCENARIOS
from revive.drill.server import SimServer
from revive.drill.trend import slow_steps, step_seconds, trend_note
from revive.errors import StoreError
from revive.readiness import run_check
from revive.render import render
from revive.runs import RunSession
from revive.runs.drills import (
    REPORTS_DIR_ENV,
    DrillSummary,
    Earlier,
    earlier_drills,
    new_drill_id,
    record_drill,
    report_dir_name,
    reports_dir,
)
from revive.runs.form import FormModel
from revive.runs.origin import current_origin, origin_tags
from revive.sim import Simulator
from revive.store import db
from revive.store.models import TriggerSource
from revive.topology import (
    DEFAULT_PATH,
    Environment,
    Topology,
    content_hash,
    load,
    require_databases,
)
from revive.verdict import TierRto, headline, outcome

SETTLE_S = 60.0
HISTORY_LIMIT = 20
"""Earlier drills a drill's steps and RTOs are compared with."""
ARTIFACT_KEY = "drill-report"
TEMPLATE = "drill/summary.md.j2"


class DrillParams(FormModel):
    scenario: str = Field("dc-fire", description=f"One of: {', '.join(SCENARIOS)}.")
    seed: int = Field(1, ge=0, description="Same seed, same drill.")
    topology: str = Field(str(DEFAULT_PATH), description="Topology file.")
    lost_dc: str | None = Field(
        None, description="The DC the fault takes out (default: the topology's first DC)."
    )
    out: str | None = Field(
        None, description=f"Report directory (default ${REPORTS_DIR_ENV}, else .revive/drills, "
        "then <UTC time>-<run id>).")
    judge_for_s: float = Field(
        3600.0, ge=0, le=86400,
        description="After the runbook ends, how long (simulated) to wait for every tier's "
        "RTO to be judged.")
    history: bool = Field(
        True, description="Keep the drill in the history (`revive drills`) and compare its "
        "steps with earlier drills; a rehearsal of the failover graph does not.")


@flow(name="drill", log_prints=False)
async def drill(params: DrillParams) -> State:
    """Run one drill scenario end to end, write its report, keep it in the history and
    publish it as an artifact.

    Ends in a Completed state whose message gives the outcome and the report's path; callers
    get its data: the report's JSON plus ``drill_id``, ``out`` (the report directory),
    ``report_html``, ``report_json`` and ``history_kept``.
    """
    began, wall0 = datetime.now(UTC), time.monotonic()
    if params.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {params.scenario!r} (known: {', '.join(SCENARIOS)})")
    drill_id = current_drill_id()
    origin = current_origin()  # its failover is started by the same person or schedule
    out = Path(params.out) if params.out else default_out(began, drill_id)
    out.mkdir(parents=True, exist_ok=True)
    # A drill keeps its runs in its own store: it never blocks, nor is blocked by, a real
    # failover of the same DC. Handed to its failover explicitly (never through the process
    # environment: a real run started meanwhile in this process belongs in the real store).
    engine = db.get_engine(f"sqlite:///{(out / 'runs.db').resolve()}")
    try:
        with using_store(engine), tags(*origin_tags(origin.trigger, origin.by)):
            report = await _drill(params, out, began, wall0, engine)
    finally:
        engine.dispose()
    return await publish(report, out, drill_id=drill_id, began=began, trigger=origin.trigger,
                         triggered_by=origin.by, history=params.history)


async def publish(report: DrillReport, out: Path, *, drill_id: str, began: datetime,
                  trigger: TriggerSource, triggered_by: str, history: bool = True) -> State:
    """Compare a drill's report with the history, write it into ``out``, keep it in the
    history and publish it as an artifact; the Completed state the drill's flow ends in.

    Any drill flow ends with this (the lab's too: its steps are compared only with other
    drills on the same ``report.target``, their clock)."""
    # The history lives in revive's own store (the one the status board reads).
    notes: list[str] = []
    store = _store(notes) if history else None
    kept = False
    try:
        earlier = _earlier(store, report, notes)
        seconds = step_seconds(report.steps)
        report = report.model_copy(update={"slow_steps": slow_steps(seconds, earlier.steps)})
        json_path, html_path = [path.resolve() for path in write_report(report, out)]
        if store is not None:
            kept = _keep(store, DrillSummary.of(
                report, run_id=drill_id, started_at=began, finished_at=datetime.now(UTC),
                trigger=trigger, triggered_by=triggered_by, report_dir=out.resolve()),
                seconds, notes)
    finally:
        if store is not None:
            store.dispose()
    if not history:
        notes.append("not kept (history off, as for a rehearsal)")
    note = "; ".join(notes)
    await _artifact(report, earlier, json_path, html_path, trigger=str(trigger),
                    triggered_by=triggered_by, note=note)
    return Completed(
        message=f"{report.outcome}: {report.headline}; report {html_path}",
        data={"out": str(out), "drill_id": drill_id, "report_html": str(html_path),
              "report_json": str(json_path), "history_kept": kept, **report.to_json_dict()})


def current_drill_id() -> str:
    """The drill's id: its Prefect flow run id (a fresh one outside a flow run)."""
    return str(current_run.id or new_drill_id())


def default_out(began: datetime, drill_id: str) -> Path:
    """Where a drill told no directory writes its report."""
    return reports_dir() / report_dir_name(began, drill_id)


def _store(notes: list[str]) -> Engine | None:
    try:
        return db.get_engine()
    except StoreError as exc:
        _note(notes, f"no store, the drill was not kept ({exc})")
        return None


def _earlier(store: Engine | None, report: DrillReport, notes: list[str]) -> Earlier:
    """The earlier drills of the same scenario on the same target; none when the store
    cannot be read (the drill goes on, and says so)."""
    if store is None:
        return Earlier()
    try:
        db.upgrade(store)
        return earlier_drills(store, scenario=report.scenario, target=report.target,
                              limit=HISTORY_LIMIT)
    except StoreError as exc:
        _note(notes, f"earlier drills not read, no step compared ({exc})")
        return Earlier()


def _keep(store: Engine, summary: DrillSummary, seconds: dict[str, float],
          notes: list[str]) -> bool:
    """Record the drill; a store that fails loses the row, not the drill's report."""
    try:
        db.upgrade(store)
        record_drill(store, summary, step_seconds=seconds)
    except StoreError as exc:
        _note(notes, f"this drill was not kept ({exc})")
        return False
    return True


def _note(notes: list[str], text: str) -> None:
    notes.append(text)
    get_run_logger().warning("drill history: %s", text)


async def _artifact(report: DrillReport, earlier: Earlier, json_path: Path, html_path: Path,
                    *, trigger: str, triggered_by: str, note: str) -> None:
    """The outcome, each tier's RTO against its target and trend, the slow steps and where
    the report is, as the run's markdown artifact."""
    tiers = sorted(report.tiers, key=lambda t: t.tier)
    trends = {t.tier: trend_note(t.rto_s, [d.rto_s.get(f"tier{t.tier}") for d in earlier.drills])
              for t in tiers}
    await acreate_markdown_artifact(
        markdown=render(
            TEMPLATE, r=report, tiers=tiers, trends=trends, trigger=trigger,
            triggered_by=triggered_by, json_path=str(json_path), html_path=str(html_path),
            duration=_duration, history_note=note,
            failed_steps=sum(1 for s in report.steps if s.state == "failed")),
        key=ARTIFACT_KEY,
        description=f"Drill {report.scenario} of {report.lost_dc}: {report.outcome}")


def _duration(seconds: float | None) -> str:
    return "never" if seconds is None else fmt_clock(seconds)


async def _drill(params: DrillParams, out: Path, began: datetime, wall0: float,
                 engine: Engine) -> DrillReport:
    topology = load(params.topology).model_copy(update={"environment": Environment.drill})
    require_databases(topology, "a drill", params.topology)
    lost = known_dc(topology, "lost_dc", params.lost_dc or topology.dc_names[0])
    targets = [dc for dc in topology.dc_names if dc != lost]
    # The failover reads this copy: a drill never waits at the production approval gate,
    # and its run record says which (drill) topology it used.
    drill_topology = out / "topology.yaml"
    drill_topology.write_text(yaml.safe_dump(topology.model_dump(mode="json"), sort_keys=False))
    # Unless the topology says otherwise, the IP-caching callers hold the lost DC's IPs:
    # the seed's case, and the one the failover must handle.
    knobs = topology.simulation
    if knobs.cached_ips_point_to is None:
        knobs = knobs.model_copy(update={"cached_ips_point_to": lost})
    sim = Simulator(topology, seed=params.seed, config=knobs)
    recorder = Recorder(sim, lost, targets)
    sim.advance(SETTLE_S)
    with SimServer(sim) as server:
        scenario = SCENARIOS[params.scenario]
        recorder.mark_fault()
        scenario.inject(sim, lost)
        async with httpx.AsyncClient(base_url=server.url) as client:
            await client.post("/clock/wait", json={"for_s": 1})  # the fault lands
        result = await failover(FailoverParams(
            topology=str(drill_topology), lost_dc=lost, sim_url=server.url,
            run_from_dc=lost if scenario.run_from_lost_dc else targets[0],
        ))
        steps = _steps(sim, engine, result["run_id"])
    # The runbook may end before the recorder sees a tier back (the last move settles):
    # the drill ends once every tier is judged, or at its limit.
    limit = sim.clock.now + params.judge_for_s
    while not recorder.judged and sim.clock.now < limit:
        sim.advance(min(10.0, limit - sim.clock.now))
    finished = sim.clock.now
    return _report(params, topology, recorder, result, steps, began, finished,
                   time.monotonic() - wall0, sim.estate.class_weights)


def _steps(sim: Simulator, engine: Engine, run_id: str) -> list[StepResult]:
    """The run's steps with simulated start and end times of the actions behind them."""
    session = RunSession(engine, run_id, dry_run=False)
    rows = []
    for step in session.steps():
        detail = step["detail"]
        started = ended = None
        action_id = detail.get("action_id")
        if action_id:
            view = sim.estate.action(action_id)
            started, ended = view.started_at, view.ends_at
        key = step["key"]
        rows.append(StepResult(
            key=key, action=step["action"], target=key.split(":", 1)[-1], state=step["state"],
            started_s=started, ended_s=ended, detail=str(detail.get("error") or ""),
        ))
    return rows


def _since(t: float | None, recorder: Recorder) -> float | None:
    return None if t is None else round(t - (recorder.fault_at or 0.0), 3)


def _critical_steps(topology: Topology, recorder: Recorder,
                    steps: list[StepResult]) -> dict[int, str]:
    """Per tier, what it waited for last: the latest step on one of its services, or its
    traffic class's ramp when the tier came back (or not) well after every such step."""
    out: dict[int, str] = {}
    fault = recorder.fault_at or 0.0
    for tier in recorder.tiers:
        names = {s.name for s in topology.services if s.tier == tier}
        ends = [(s.ended_s, s.key) for s in steps
                if s.ended_s is not None and s.target.split("@")[0] in names]
        last_end, last_key = max(ends, default=(fault, ""))
        back = recorder.recovered_at.get(tier)
        if back is None or back > last_end + recorder.every_s * 6:
            out[tier] = "the traffic ramp of its class"
        elif last_key:
            out[tier] = f"{last_key} (ended at {last_end - fault:.0f} s)"
    return out


def _report(
    params: DrillParams,
    topology: Topology,
    recorder: Recorder,
    result: dict,
    steps: list[StepResult],
    began: datetime,
    finished: float,
    wall: float,
    final_weights: dict[str, dict[str, float]],
) -> DrillReport:
    """Everything the drill measured, in the report's shape."""
    tiers = []
    rtos = [TierRto(tier=tier, rto_s=recorder.rto(tier),
                    target_s=topology.tier_policy[tier].rto_target_s) for tier in recorder.tiers]
    for t in rtos:
        tiers.append(TierResult(
            tier=t.tier, rto_s=t.rto_s, target_s=t.target_s, met=t.met,
            services=sum(1 for s in topology.services if s.tier == t.tier),
        ))
    failed_steps = sum(1 for s in steps if s.state == "failed")
    verdict = result["outcome"] if result["outcome"] == "aborted" else outcome(
        rtos, failed_steps=failed_steps, serving=recorder.serving)
    by_action: dict[str, list[str]] = {}
    for step in steps:
        if step.state == "done":
            by_action.setdefault(step.action, []).append(step.target)
    return DrillReport(
        scenario=params.scenario, seed=params.seed, outcome=verdict,
        headline=headline(rtos, verdict, failed_steps=failed_steps,
                          critical=_critical_steps(topology, recorder, steps)),
        topology=params.topology, topology_hash=content_hash(topology),
        environment=str(topology.environment), lost_dc=recorder.lost_dc,
        target_dcs=recorder.target_dcs, fault_at_s=recorder.fault_at or 0.0,
        finished_at_s=finished, started_at=began.isoformat(), wall_seconds=round(wall, 2),
        tiers=tiers, peak_db_util=round(recorder.peak_db_util, 4),
        breach_seconds=recorder.breach_seconds,
        deployed=by_action.get("deploy", []), provisioned=by_action.get("provision", []),
        restarted=by_action.get("restart", []), patched=by_action.get("patch", []),
        failed=[s.target for s in steps if s.state == "failed"],
        steps=steps,
        graph=[GraphStep(**{**row, "start_s": _since(row["start_s"], recorder),
                            "end_s": _since(row["end_s"], recorder)})
               for row in result.get("graph", [])],
        ramp=[RampPoint(t=p.t, share=p.share, db_util=min(p.db_util, 10.0),
                        hit_ratio=p.hit_ratio, error_rate=p.error_rate)
              for p in recorder.points],
        findings=[FindingRow(rule=f.rule, severity=str(f.severity), subject=f.subject,
                             message=f.message) for f in run_check(topology).findings],
        notes=[f"ramp: {result['ramp'].get('result')} at {result['ramp'].get('share', 0):.0%}"],
        simulation=recorder.sim.config.model_dump(mode="json"),
        final_weights={c: {dc: round(w, 4) for dc, w in per_dc.items()}
                       for c, per_dc in final_weights.items()},
    )
