"""``/revive`` slash commands: authorise, answer, and audit every one of them.

This module knows nothing of HTTP: ``CommandHandler.handle`` takes who asked and the text they
typed and returns a ``Reply``, so the HTTP endpoint, a Socket Mode runner and the tests all get
the same behaviour, and it follows the CLI's rules, "one active run per (runbook, DC)"
included. Every command, including bad input and refusals, is written to the audit table; a
person is never shown a stack trace, only what went wrong and what to do.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from revive.chat.text import slack_escape
from revive.errors import InputError, ReviveError
from revive.planning.restart import DEFAULT_MAX_PARALLEL
from revive.render import render
from revive.runs.status import status_report
from revive.store import db, service
from revive.store.models import RunRecord
from revive.web.access import Access
from revive.web.parse import Command, CommandInputError, parse, validation_message
from revive.web.replies import Caller, Job, Reply
from revive.web.settings import Role

__all__ = ["CommandHandler"]

log = logging.getLogger(__name__)

TEMPLATES = "slack"

#: Parameters a person may not set: who started the run is who typed the command.
RESERVED_PARAMS = frozenset({"triggered_by", "trigger"})
#: Parameters that are the server's configuration, never a command's: which estate revive
#: acts on (and so whether approval gates apply) and which simulator it calls. A command
#: naming one is refused before the file is read or the URL called.
SERVER_PARAMS = {"topology": "REVIVE_TOPOLOGY", "sim_url": "REVIVE_SIM_URL"}
STATUS_LIMIT = 15


@dataclass
class _Result:
    reply: Reply
    outcome: str
    target: str
    run_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


class CommandHandler:
    """Answers commands for one app: its settings, its store, and how long work is started.

    ``start`` is called with an accepted ``Job`` and must not wait for it.
    """

    def __init__(self, access: Access, *, start: Callable[[Job], None]) -> None:
        self.access = access
        self.settings = access.settings
        self.engine = access.engine
        self.start = start
        self._pending: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    # --- entry point ---------------------------------------------------------------------

    def handle(self, caller: Caller, text: str) -> Reply:
        """Parse, authorise and answer ``text``; never raises for anything a person typed."""
        detail = {"text": text, "user_name": caller.user_name, "channel": caller.channel_id}
        verb = (text.split() or ["help"])[0].lower()[:32]
        try:
            command = parse(text)
        except CommandInputError as exc:
            self.access.audit(caller, verb, "revive", "invalid",
                              detail={**detail, "reason": str(exc)})
            return Reply(f":warning: {slack_escape(str(exc))}")
        environment = self.access.environment()
        role = self.access.role(caller, environment)
        if role < command.required_role:
            reason = (f"`{command.verb}` needs the {command.required_role} role in "
                      f"{environment}; you have {'no role' if role is Role.NONE else role}")
            self.access.audit(caller, command.verb, command.target, "refused",
                        detail={**detail, "reason": reason, "role": str(role),
                                "environment": environment})
            return Reply(f":no_entry: Refused: {slack_escape(reason)}.")
        try:
            result = self._dispatch(command, caller, role, environment)
        except InputError as exc:
            self.access.audit(caller, command.verb, command.target, "invalid",
                        detail={**detail, "reason": str(exc)})
            return Reply(f":warning: {slack_escape(str(exc))}")
        except Exception as exc:
            log.exception("/revive %s failed", command.verb)
            self.access.audit(caller, command.verb, command.target, "error",
                        detail={**detail, "reason": f"{type(exc).__name__}: {exc}"})
            what = str(exc) if isinstance(exc, ReviveError) else "an internal error (logged)"
            return Reply(f":x: `{command.verb}` failed: {slack_escape(what)}")
        self.access.audit(caller, command.verb, result.target, result.outcome, run_id=result.run_id,
                    detail={**detail, **result.detail})
        return result.reply

    def _dispatch(self, command: Command, caller: Caller, role: Role,
                  environment: str) -> _Result:
        if command.verb == "help":
            return self._help(role, environment)
        if command.verb == "status":
            return self._status()
        if command.verb == "check":
            return self._check()
        if command.verb == "plan":
            return self._plan(command)
        if command.verb == "abort":
            return self._abort(command, caller)
        if command.verb == "run":
            return self._run(command, caller)
        return self._drill(command, caller)

    # --- viewer commands -----------------------------------------------------------------

    def _help(self, role: Role, environment: str) -> _Result:
        from revive.drill.scenarios import SCENARIOS
        from revive.runs.catalog import ALIASES, RUNBOOKS

        runbooks = ", ".join(f"`{n}`" for n in sorted(RUNBOOKS) + sorted(ALIASES))
        text = render(f"{TEMPLATES}/help.md.j2", runbooks=runbooks,
                      scenarios=", ".join(f"`{s}`" for s in SCENARIOS), role=str(role),
                      environment=environment, esc=slack_escape)
        return _Result(Reply(text), "answered", "revive")

    def _status(self) -> _Result:
        report = status_report(self.engine, self.access.topology, limit=STATUS_LIMIT)
        text = render(f"{TEMPLATES}/status.md.j2", **report, esc=slack_escape)
        return _Result(Reply(text), "answered", "runs", detail={"runs": len(report["runs"])})

    def _check(self) -> _Result:
        from revive.readiness import Severity, run_check

        report = run_check(self.access.topology())
        counts = ", ".join(f"{report.count(s)} {s}(s)" for s in Severity)
        text = render(f"{TEMPLATES}/check.md.j2", source=self.settings.topology,
                      findings=report.findings, counts=counts, esc=slack_escape)
        return _Result(Reply(text), "answered", f"topology:{self.settings.topology}",
                       detail={"findings": len(report.findings)})

    def _plan(self, command: Command) -> _Result:
        from revive.planning import plan_capacity, plan_restart
        from revive.runs.catalog import parse_assignments

        topology = self.access.topology()
        assert command.dc is not None
        if command.plan_kind == "restart":
            values = parse_assignments(list(command.assignments), _RestartPlanArgs)
            try:
                args = _RestartPlanArgs(**values)
            except ValidationError as exc:
                raise CommandInputError(validation_message(exc)) from None
            plan = plan_restart(topology, command.dc, groups=args.groups,
                                max_parallel=args.max_parallel)
            text = render(f"{TEMPLATES}/plan_restart.md.j2", plan=plan, clock=_clock,
                          esc=slack_escape)
        else:
            values = parse_assignments(list(command.assignments), _ProvisionPlanArgs)
            try:
                pargs = _ProvisionPlanArgs(**values)
            except ValidationError as exc:
                raise CommandInputError(validation_message(exc)) from None
            cplan = plan_capacity(topology, command.dc, share=pargs.share)
            text = render(f"{TEMPLATES}/plan_provision.md.j2", plan=cplan,
                          adding=[line for line in cplan.services if line.add],
                          esc=slack_escape)
        return _Result(Reply(text), "answered", command.target)

    # --- operator commands ---------------------------------------------------------------

    def _abort(self, command: Command, caller: Caller) -> _Result:
        assert command.run_id is not None
        with db.session(self.engine) as s:
            run = service.find_run(s, command.run_id)
            service.request_abort(s, run.id, by=caller.user_id)
        text = (f":octagonal_sign: Abort requested for *{slack_escape(run.runbook)}* run "
                f"`{run.id}` by {slack_escape(caller.display)}; it stops after its current "
                "step (the traffic share stays where it is).")
        return _Result(Reply(text, ephemeral=False), "requested", f"{run.runbook}:{run.id}",
                       run_id=run.id)

    def _run(self, command: Command, caller: Caller) -> _Result:
        from revive.runs.catalog import RUNBOOKS, parse_assignments

        assert command.runbook is not None
        refused = _server_param(command)
        if refused is not None:
            return refused
        module_name, flow_name, params_name = RUNBOOKS[command.runbook]
        module = importlib.import_module(module_name)
        flow, params_model = getattr(module, flow_name), getattr(module, params_name)
        for pair in command.assignments:
            key = pair.partition("=")[0].strip().replace("-", "_")
            if key in RESERVED_PARAMS:
                raise CommandInputError(f"{key!r} is set by revive (it is you, via Slack)")
        values = parse_assignments(list(command.assignments), params_model)
        if "topology" in params_model.model_fields:  # the estate this app serves
            values.setdefault("topology", self.settings.topology)
        if command.dry_run:
            values["dry_run"] = True
        try:
            params = params_model(**values)
        except ValidationError as exc:
            raise CommandInputError(validation_message(exc)) from None
        target_dc, targets = self._dcs_of(params, command.runbook or "")
        key = (command.runbook, str(target_dc))
        where = f" → {', '.join(targets)}" if targets else ""
        if not command.dry_run:
            with db.session(self.engine) as s:
                active = service.get_active_run(s, runbook=command.runbook, target_dc=target_dc)
            if active is not None:
                return self._already_running(active)
        job = Job("run", command.runbook, params, caller, key, flow)
        if not command.dry_run and not self._claim(key):
            text = (f":hourglass: *{command.runbook}*{slack_escape(where)} was just started from "
                    "Slack and is starting up; see `/revive status`.")
            return _Result(Reply(text), "duplicate", command.runbook)
        self._start(job)
        mode = " (dry run)" if command.dry_run else ""
        text = (f":rocket: Accepted: *{command.runbook}*{slack_escape(where)}{mode}, started by "
                f"{slack_escape(caller.display)}. The outcome will be posted here.")
        return _Result(Reply(text, ephemeral=False), "accepted", f"{command.runbook}:{target_dc}",
                       detail={"dry_run": command.dry_run,
                               "parameters": params.model_dump(mode="json")})

    def _dcs_of(self, params: Any, runbook: str) -> tuple[str | None, list[str]]:
        """The DC the run is recorded for (one active run per runbook and DC: a failover's
        lost DC) and the DCs it acts on, by the same rule the run itself applies."""
        if not hasattr(params, "run_dc"):
            return None, []
        from flows.context import checked

        try:
            topology, run_dc = checked(params, runbook)
            targets = params.targets(topology) if hasattr(params, "targets") else [run_dc]
        except InputError as exc:
            raise CommandInputError(str(exc)) from None
        return run_dc, targets

    def _already_running(self, active: RunRecord) -> _Result:
        where = f" for {active.target_dc}" if active.target_dc else ""
        text = (f":information_source: *{slack_escape(active.runbook)}*{slack_escape(where)} is "
                f"already running as run `{active.id}` (started by "
                f"{slack_escape(active.triggered_by)} via {active.trigger}). Watch it with "
                f"`/revive status`, or stop it with `/revive abort {active.id}`.")
        return _Result(Reply(text), "duplicate", f"{active.runbook}:{active.id}",
                       run_id=active.id)

    def _drill(self, command: Command, caller: Caller) -> _Result:
        from revive.drill.scenarios import SCENARIOS

        if command.scenario not in SCENARIOS:
            raise CommandInputError(f"unknown scenario {command.scenario!r} "
                                    f"(known: {', '.join(SCENARIOS)})")
        if command.dc is not None and command.dc not in self.access.topology().dc_names:
            known = ", ".join(self.access.topology().dc_names)
            raise CommandInputError(f"lost_dc: unknown datacenter {command.dc!r} "
                                    f"(topology has: {known})")
        module = importlib.import_module("flows.drill")
        params = module.DrillParams(scenario=command.scenario, topology=self.settings.topology,
                                    lost_dc=command.dc)
        key = ("drill", command.scenario or "")
        if not self._claim(key):
            return _Result(Reply(f":hourglass: A `{command.scenario}` drill is already running "
                                 "from Slack; see `/revive status`."), "duplicate",
                           command.target)
        self._start(Job("drill", "drill", params, caller, key, module.drill))
        text = (f":fire_drill: Accepted: `{command.scenario}` drill on the simulator, started by "
                f"{slack_escape(caller.display)}. The report will be posted here.")
        return _Result(Reply(text, ephemeral=False), "accepted", command.target)

    # --- the one-at-a-time rule for work not yet in the store ----------------------------

    def _claim(self, key: tuple[str, str]) -> bool:
        with self._lock:
            if key in self._pending:
                return False
            self._pending.add(key)
            return True

    def release(self, key: tuple[str, str]) -> None:
        """The job for ``key`` has ended (or never started): the next one may start."""
        with self._lock:
            self._pending.discard(key)

    def _start(self, job: Job) -> None:
        try:
            self.start(job)
        except Exception:
            self.release(job.key)
            raise


def _server_param(command: Command) -> _Result | None:
    """The refusal of a command that sets server configuration (``topology=``,
    ``sim_url=``), or None. Checked before anything else about the run, so the file named is
    never read and the URL never called."""
    for pair in command.assignments:
        key = pair.partition("=")[0].strip().lower().replace("-", "_")
        if key in SERVER_PARAMS:
            reason = (f"`{key}` is the server's configuration ({SERVER_PARAMS[key]}), not a "
                      f"parameter of a command: runs from Slack act on the estate this server "
                      f"serves. Nothing was started")
            return _Result(Reply(f":no_entry: Refused: {reason}."), "refused",
                           command.runbook or "run", detail={"reason": reason})
    return None


class _RestartPlanArgs(BaseModel):
    groups: list[str] | None = None
    max_parallel: int = Field(DEFAULT_MAX_PARALLEL, ge=1)


class _ProvisionPlanArgs(BaseModel):
    share: float | None = Field(None, gt=0)
