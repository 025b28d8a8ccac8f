"""``revive run``, ``revive status``, ``revive abort`` and ``revive drill``.

Runbooks are Prefect flows; they are imported only when a command runs one, so the rest
of the CLI (and ``revive`` as a library) starts without Prefect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich import box
from rich.table import Table
from rich.text import Text

from revive.cli.common import (
    EXIT_FAILED,
    EXIT_INPUT,
    err,
    fail,
    one_line,
    out,
    plain,
    store_errors,
    user_errors,
    whoami,
)
from revive.errors import InputError, ReviveError, StoreError
from revive.runs.catalog import ALIASES, load_runbook, parse_assignments
from revive.runs.status import status_report
from revive.store import db, service
from revive.topology import DEFAULT_PATH, load

EXIT_ACTIVE = 3
#: Outcomes that end ``revive run`` with EXIT_FAILED (README: "1 failed or aborted").
FAILED_OUTCOMES = ("failed", "aborted", "crashed", "late", "degraded")
def quiet_prefect() -> None:
    """Progress goes to the live display; Prefect's per-task INFO lines would drown it, and
    its temporary server's shutdown chatter is not the user's business. A failed flow run
    is told in one line by the command itself, so Prefect's run loggers do not add their
    tracebacks. Every run of this process shares one temporary Prefect server."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "CRITICAL")
    import prefect.logging.configuration as logging_config
    import prefect.main  # noqa: F401  (importing it configures logging: before the levels)

    logging_config.setup_logging()
    for name in ("sqlalchemy", "prefect.server", "prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    from revive.prefect_server import install

    install()


def run(
    runbook: Annotated[str, typer.Argument(help="Runbook to run (failover, provision, ...).")],
    assignments: Annotated[
        list[str] | None, typer.Argument(help="Parameters as key=value.", show_default=False)
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the plan only.")] = False,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Continue this run, skipping done steps.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (dry runs).")] = False,
    local: Annotated[bool, typer.Option(
        "--local", help="Break glass: no Prefect server (PREFECT_API_URL is ignored), records "
        "in the local store, gates answered with `revive approve`.")] = False,
) -> None:
    """Run a runbook now, in this process, with live progress.

    ``failover --dry-run`` changes nothing anywhere: it rehearses the recovery graph in
    virtual time on the simulator of the same topology and prints each step, what it waits
    for, its predicted start and end, and the predicted RTO of each tier. Other dry runs
    ask no tool for anything they cannot do without: when none answers, they plan from
    the topology alone and say so.

    ``--local`` is for when the Prefect server or the central store is down: the same flow
    runs here on a temporary Prefect server of this process, revive records it in a local
    SQLite file, and `revive runs export` / `revive runs import` carry the records to the
    central store afterwards."""
    quiet_prefect()
    with contextlib.ExitStack() as stack:
        store = None
        if local:
            from revive.cli.live import local_mode

            store = stack.enter_context(local_mode())
            err.print(f"local run: no Prefect server needed (PREFECT_API_URL ignored); "
                      f"recording in {db.mask_url(store)}; carry the records to the central "
                      "store later with `revive runs export` and `revive runs import`",
                      markup=False, soft_wrap=True)
        _run(runbook, assignments, dry_run=dry_run, resume=resume, as_json=as_json,
             local_store=store)


def _run(runbook: str, assignments: list[str] | None, *, dry_run: bool, resume: str | None,
         as_json: bool, local_store: str | None) -> None:
    topology = None
    with user_errors():
        flow, params_model = load_runbook(runbook)
        values = parse_assignments(assignments or [], params_model)
        if dry_run:
            values["dry_run"] = True
        if resume:
            values["resume"] = resume
        try:
            params = params_model(**values)
        except ValidationError as exc:
            raise InputError(_validation_message(exc)) from None
        if hasattr(params, "run_dc"):  # the DCs and the database, as the run will judge them
            from flows.context import checked, tools_for

            topology, _ = checked(params, ALIASES.get(runbook, runbook))
            if not dry_run:  # and its tools: a tool that cannot be had starts nothing
                tools_for(params, topology)
    if dry_run and ALIASES.get(runbook, runbook) == "failover":
        with user_errors(), store_errors():
            _rehearse_failover(params, as_json)
        return
    with store_errors():  # unreachable: one line before anything starts, not mid-run
        db.upgrade()
    if dry_run and topology is not None:
        _say_if_no_tool_answers(params, topology)
    _report(runbook, _execute(runbook, flow, params, local_store=local_store))


#: What a dry run says when none of its tools answered.
NO_TOOL_ANSWERED = "no tool answered: planned from the topology alone"


def _say_if_no_tool_answers(params: Any, topology: Any) -> None:
    """A dry run needs no tool: when none answers (a dead estate, a break-glass laptop),
    it plans from the topology alone, and the operator is told the plan knows no more."""
    import asyncio

    from revive.cli.live import tools_answering
    from revive.ops.toolbox import SIM_URL_ENV

    sim_url = params.sim_url or os.environ.get(SIM_URL_ENV) or None
    if asyncio.run(tools_answering(topology, sim_url=sim_url)) == 0:
        out.print(NO_TOOL_ANSWERED, markup=False)


def _execute(title: str, flow: Any, params: Any, *, local_store: str | None = None) -> Any:
    """``live.execute``, with Prefect failing to start the run at all told in one line."""
    from revive.cli.live import execute

    try:
        return execute(title, flow, params, local_store=local_store)
    except Exception as exc:
        fail(f"{title}: not started: {_why(exc)}")


def _report(runbook: str, finished: Any) -> None:
    """Say how the run ended, with README's exit status: 0 done, 1 failed or aborted (one
    line on stderr says why), 2 invalid input, 3 already running. The outcome comes from
    what the flow returned, else from revive's run record: an aborted run returns nothing."""
    from revive.runs import ActiveRunError

    error = finished.error
    if isinstance(error, ActiveRunError):
        err.print(f"{error}; see `revive status`, or `revive abort {error.run_id}`",
                  markup=False)
        raise typer.Exit(EXIT_ACTIVE)
    if isinstance(error, InputError):
        typer.echo(str(error), err=True)
        raise typer.Exit(EXIT_INPUT)
    result = finished.result if isinstance(finished.result, dict) else {}
    run_id, recorded = _recorded(finished.flow_run_id)
    run_id = result.get("run_id") or run_id
    tail = f" (run {run_id})" if run_id else ""
    if error is not None:
        out.print(f"{runbook}: failed{tail}", markup=False)
        fail(f"{runbook}{tail}: {_why(error)}")
    outcome = result.get("outcome") or (recorded if recorded in FAILED_OUTCOMES else "done")
    out.print(f"{runbook}: {outcome}{tail}", markup=False)
    if result.get("headline"):
        out.print(result["headline"], markup=False)
    if outcome in FAILED_OUTCOMES:
        raise typer.Exit(EXIT_FAILED)


def _recorded(flow_run_id: str | None) -> tuple[str | None, str | None]:
    """(revive's run id, its recorded outcome) for a Prefect flow run; (None, None) when the
    run never reached the store or the store cannot say."""
    if not flow_run_id:
        return None, None
    try:
        engine = db.get_engine()
    except StoreError:
        return None, None
    try:
        with db.session(engine) as s:
            record = service.get_run_by_prefect_id(s, flow_run_id)
            return (record.id, str(record.outcome)) if record else (None, None)
    except StoreError:
        return None, None
    finally:
        engine.dispose()


def _why(exc: BaseException) -> str:
    """An error in one line: revive's own say what happened; anything else is named."""
    if isinstance(exc, ReviveError):
        return one_line(exc)
    return one_line(f"{type(exc).__name__}: {exc}")


def _drill_result(title: str, flow: Any, params: Any) -> dict[str, Any]:
    """A drill's (or rehearsal's) report; a drill that could not run exits in one line."""
    finished = _execute(title, flow, params)
    if isinstance(finished.error, InputError):
        typer.echo(str(finished.error), err=True)
        raise typer.Exit(EXIT_INPUT)
    if finished.error is not None:
        fail(f"{title}: {_why(finished.error)}")
    return finished.result


def _rehearse_failover(params: Any, as_json: bool) -> None:
    """The failover's graph, rehearsed on the simulator of the same topology."""
    import tempfile

    from flows.drill import DrillParams
    from flows.drill import drill as drill_flow

    topology = load(params.topology)
    lost = params.run_dc(topology)
    with tempfile.TemporaryDirectory() as tmp:
        report = _drill_result("rehearsal", drill_flow, DrillParams(
            scenario="dc-fire", topology=params.topology, lost_dc=lost, out=tmp,
            history=False))
    steps = [{k: row[k] for k in ("key", "action", "target", "after", "start_s", "end_s")}
             for row in report["graph"]]
    if as_json:
        typer.echo(json.dumps({"steps": steps, "predicted_rto_s": report["rto_seconds"]},
                              indent=2))
        return
    table = Table(title=plain(f"recovery graph: {lost} into {', '.join(report['target_dcs'])} "
                              "(rehearsed on the simulator, nothing changed)"),
                  box=box.SIMPLE_HEAD)
    for col in ("start", "end", "step", "waits for"):
        table.add_column(col)
    for row in sorted(steps, key=lambda r: (r["start_s"] is None, r["start_s"] or 0, r["key"])):
        table.add_row(_mmss(row["start_s"]), _mmss(row["end_s"]), plain(row["key"]),
                      plain(", ".join(row["after"]) or "-"))
    out.print(table)
    targets = report["rto_target_seconds"]
    out.print("predicted RTO: " + ", ".join(
        f"{tier} {_mmss(s)} (target {_mmss(targets[tier])})"
        for tier, s in report["rto_seconds"].items()), markup=False)
    out.print(f"predicted outcome: {report['outcome']}", markup=False)


def _mmss(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
    )


def status(
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="Recent runs.")] = 20,
    topology: Annotated[str, typer.Option("--topology", envvar="REVIVE_TOPOLOGY",
                                          help="Topology file (for the DCs).")
                        ] = str(DEFAULT_PATH),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The DCs (traffic share, healthy services) and active and recent runs, with progress."""
    with store_errors():
        engine = db.get_engine()
        db.upgrade(engine)
        report = status_report(engine, lambda: load(topology), limit=limit)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    render_status(report)


def render_status(report: dict[str, Any]) -> None:
    """``status_report`` as tables. Run records hold what people and tools wrote (who
    started a run, the DC, a tool's error): every cell is ``plain`` text, never markup."""
    if report["dcs"]:
        dcs = Table(title="datacenters", box=box.SIMPLE_HEAD)
        for col in ("dc", "traffic", "services up", "unknown"):
            dcs.add_column(col)
        for d in report["dcs"]:
            dcs.add_row(plain(d["dc"]), "?" if d["traffic"] is None else f"{d['traffic']:.0%}",
                        "?" if d["services_up"] is None else f"{d['services_up']}/{d['services']}",
                        plain(d["problem"] or ""))
        out.print(dcs)
    else:
        out.print(f"datacenters: unknown ({report['dc_problem']})", markup=False)
    rows = report["runs"]
    table = Table(title="revive runs", box=box.SIMPLE_HEAD)
    for col in ("run", "runbook", "dc", "by", "started", "state", "steps"):
        table.add_column(col)
    for r in rows:
        state = r["outcome"] + (" (abort requested)" if r["abort_requested"] else "") + (
            f" (waiting for approval: {r['waiting_for']})" if r["waiting_for"] else "") + (
            f" (last heartbeat {r['heartbeat_ago']}: --resume or abort it)"
            if r["crashed"] else "")
        table.add_row(plain(r["id"][:12]),
                      plain(r["runbook"] + (" (dry run)" if r["dry_run"] else "")),
                      plain(r["target_dc"] or "-"), plain(f"{r['by']} via {r['trigger']}"),
                      plain(r["ago"]), plain(state), f"{r['steps_done']}/{r['steps']}")
    out.print(table if rows else Text("no runs yet"))


def abort(run_id: Annotated[str, typer.Argument(help="The run to stop.")]) -> None:
    """Ask a run to stop after its current step (the traffic share stays where it is); a
    crashed run (its heartbeat stopped) is abandoned at once: marked aborted."""
    with store_errors():
        engine = db.get_engine()
        db.upgrade(engine)
        with user_errors(), db.session(engine) as s:
            run = service.find_run(s, run_id)
            run = service.request_abort(s, run.id, by=whoami())
            abandoned = str(run.outcome) == "aborted"
            service.create_audit_event(
                s, actor=whoami(), source="cli", action="abort",
                target=f"{run.runbook}:{run.id}",
                outcome="abandoned" if abandoned else "requested", run_id=run.id,
            )
    if abandoned:
        out.print(f"{run.runbook} run {run.id} had crashed (no heartbeat): marked aborted",
                  markup=False)
        return
    out.print(f"abort requested for {run.runbook} run {run.id}; it stops after its current step",
              markup=False)


def approve(
    run_id: Annotated[str, typer.Argument(help="The run waiting at an approval gate.")],
    reject: Annotated[bool, typer.Option("--reject", help="Reject: the run stops safely "
                                         "before the gated step.")] = False,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the record.")] = "",
    gate: Annotated[str | None, typer.Option(
        "--gate", help="The gate you mean; refused if the run waits at another one.")] = None,
) -> None:
    """Approve (or --reject) the gate a run waits at, as this operating-system user
    (os:USER in REVIVE_ROLES). The same rule as Slack: an approver who did not start the run
    approves; an operator may reject. A refusal changes nothing (exit 2)."""
    from revive.runs.approvals import decide_from_cli

    with store_errors():
        engine = db.get_engine()
        db.upgrade(engine)
        with user_errors():
            said = decide_from_cli(engine, run_id, approve=not reject, user=whoami(),
                                   reason=reason, gate=gate)
    out.print(said, markup=False)


def drill(
    scenario: Annotated[str, typer.Option("--scenario", help="Fault to inject.")] = "dc-fire",
    seed: Annotated[int, typer.Option("--seed", min=0, help="Same seed, same drill.")] = 1,
    out_dir: Annotated[
        str | None, typer.Option("--out", help="Report directory (default .revive/drills/<UTC>).")
    ] = None,
    topology: Annotated[str, typer.Option("--topology", "-t", envvar="REVIVE_TOPOLOGY",
                                          help="Topology file.")] = "runbooks/topology.yaml",
    lost_dc: Annotated[
        str | None,
        typer.Option("--lost-dc", help="The DC the fault takes out (default: the first DC)."),
    ] = None,
    target: Annotated[str, typer.Option(
        "--target", help="simulator (default), or lab: the processes `revive lab up` started."
    )] = "simulator",
    lab_dir: Annotated[str | None, typer.Option(
        "--lab-dir", help="With --target lab: the lab's directory (default: the last one up)."
    )] = None,
) -> None:
    """A DR drill on the built-in simulator, or on the lab; prints the report directory last."""
    quiet_prefect()
    from flows.drill import DrillParams
    from flows.drill import drill as drill_flow
    from revive.drill.scenarios import SCENARIOS

    if target not in ("simulator", "lab"):
        with user_errors():
            raise InputError(f"--target: {target!r} is not simulator or lab")
    if target == "lab":
        _lab_drill(scenario, lost_dc, out_dir, lab_dir)
        return
    with user_errors():
        if scenario not in SCENARIOS:
            raise InputError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")
        from flows.context import known_dc
        from revive.topology import load, require_databases

        estate = load(topology)
        require_databases(estate, "a drill", topology)
        if lost_dc is not None:
            known_dc(estate, "--lost-dc", lost_dc)
        params = DrillParams(scenario=scenario, seed=seed, out=out_dir, topology=topology,
                             lost_dc=lost_dc)
    result = _drill_result(f"drill {scenario}", drill_flow, params)
    rto = ", ".join(f"{k} {'never' if v is None else f'{v:.0f} s'}"
                    for k, v in result["rto_seconds"].items())
    out.print(f"outcome: {result['outcome']}; RTO {rto}; peak DB util "
              f"{result['peak_db_util']:.2f}; breach seconds {result['breach_seconds']}",
              markup=False)
    out.print(result["headline"], markup=False)
    typer.echo(result["out"])


def _lab_drill(scenario: str, lost_dc: str | None, out_dir: str | None,
               lab_dir: str | None) -> None:
    from flows.lab_drill import LabDrillParams, lab_drill, lab_state

    with user_errors():
        if scenario not in ("dc-fire", "partition"):
            raise InputError(f"--scenario: the lab has dc-fire and partition, not {scenario!r}")
        params = LabDrillParams(lab_dir=lab_dir, scenario=scenario, lost_dc=lost_dc,
                                out=out_dir)
        lab_state(params)  # the lab is up and the DC is one of its own: before anything starts
    result = _drill_result(f"lab drill {scenario}", lab_drill, params)
    rto = ", ".join(f"{k} {'never' if v is None else f'{v:.0f} s'}"
                    for k, v in result["rto_seconds"].items())
    out.print(f"outcome: {result['outcome']}; RTO {rto}; peak DB util "
              f"{result['peak_db_util']:.2f}; ramp holds {result['ramp_holds']}; wall "
              f"{result['wall_seconds']:.0f} s", markup=False)
    out.print(result["headline"], markup=False)
    typer.echo(result["out"])
