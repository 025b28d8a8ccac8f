"""``/revive`` slash commands: parse, authorise, answer, and audit every one of them.

This module knows nothing of HTTP: ``CommandHandler.handle`` takes who asked and the text they
typed and returns a ``Reply``, so the HTTP endpoint, a Socket Mode runner and the tests all get
the same behaviour. The rules mirror the CLI (``revive run/status/abort``) because on-call
people must not learn two sets of behaviours: the same runbook names and aliases, the same
``key=value`` parameters, the same "one active run per (runbook, DC)" rule.

Every command, including bad input and refusals, is written to the audit table with
source ``slack``; a person is never shown a stack trace, only what went wrong and what to do.
"""

from __future__ import annotations

import importlib
import logging
import shlex
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import Engine

from revive.chat.blocks import MAX_TEXT_CHARS, text_to_blocks, truncate
from revive.chat.text import slack_escape
from revive.errors import InputError, ReviveError
from revive.planning.restart import DEFAULT_MAX_PARALLEL
from revive.render import render
from revive.runs.status import recent_runs
from revive.store import db, service
from revive.store.models import AuditSource, RunOutcome, RunRecord
from revive.web.settings import Role, WebSettings

__all__ = [
    "REQUIRED_ROLE",
    "Caller",
    "Command",
    "CommandHandler",
    "CommandInputError",
    "Job",
    "Reply",
    "parse",
]

log = logging.getLogger(__name__)

TEMPLATES = "slack"

#: The role each command needs (approvals, later, need ``approver``).
REQUIRED_ROLE: dict[str, Role] = {
    "help": Role.VIEWER,
    "status": Role.VIEWER,
    "check": Role.VIEWER,
    "plan": Role.VIEWER,
    "run": Role.OPERATOR,
    "drill": Role.OPERATOR,
    "abort": Role.OPERATOR,
}
PLAN_KINDS = ("restart", "provision")
#: Where roles are looked up when the topology cannot be read: the strictest environment.
FALLBACK_ENVIRONMENT = "production"
#: Parameters a person may not set: who started the run is who typed the command.
RESERVED_PARAMS = frozenset({"triggered_by", "trigger"})
STATUS_LIMIT = 15


class CommandInputError(InputError):
    """The command text cannot be understood; the message says why and what to type."""


@dataclass(frozen=True)
class Command:
    """One parsed ``/revive`` command."""

    verb: str
    runbook: str | None = None
    assignments: tuple[str, ...] = ()
    dry_run: bool = False
    plan_kind: str | None = None
    dc: str | None = None
    scenario: str | None = None
    run_id: str | None = None

    @property
    def required_role(self) -> Role:
        return REQUIRED_ROLE[self.verb]


@dataclass(frozen=True)
class Caller:
    """Who sent a command, from where, and where later answers go."""

    user_id: str
    user_name: str = ""
    channel_id: str = ""
    response_url: str | None = None

    @property
    def display(self) -> str:
        return self.user_name or self.user_id


@dataclass
class Reply:
    """An answer in Slack mrkdwn; ``ephemeral`` answers are shown to the caller only."""

    text: str
    ephemeral: bool = True

    def to_slack(self) -> dict[str, Any]:
        """The JSON body Slack expects, within its limits (50 blocks, 3,000 chars a section)."""
        first = next((line for line in self.text.splitlines() if line.strip()), "revive")
        return {
            "response_type": "ephemeral" if self.ephemeral else "in_channel",
            "text": truncate(first, MAX_TEXT_CHARS),
            "blocks": text_to_blocks(self.text),
        }


@dataclass(frozen=True)
class Job:
    """Long work accepted from Slack and run after the answer: a runbook or a drill."""

    kind: str
    name: str
    params: BaseModel
    caller: Caller
    key: tuple[str, str]
    flow: Any = field(repr=False)


@dataclass
class _Result:
    reply: Reply
    outcome: str
    target: str
    run_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _usage(message: str) -> CommandInputError:
    return CommandInputError(f"{message}. Try `/revive help`.")


def parse(text: str) -> Command:
    """The command in ``text``; ``CommandInputError`` saying what is wrong otherwise."""
    try:
        words = shlex.split(text.replace("\u201c", '"').replace("\u201d", '"'))
    except ValueError as exc:
        raise _usage(f"cannot read the command ({exc})") from None
    if not words:
        return Command("help")
    verb, args = words[0].lower(), words[1:]
    if verb in ("help", "status", "check"):
        if args:
            raise _usage(f"`{verb}` takes no arguments")
        return Command(verb)
    if verb == "plan":
        return _parse_plan(args)
    if verb == "run":
        return _parse_run(args)
    if verb == "drill":
        if len(args) > 1:
            raise _usage("`drill` takes at most one scenario")
        return Command("drill", scenario=args[0] if args else "dc-fire")
    if verb == "abort":
        if len(args) != 1:
            raise _usage("`abort` takes the run id (see `/revive status`)")
        return Command("abort", run_id=args[0])
    raise _usage(f"unknown command `{verb}`")


def _parse_plan(args: list[str]) -> Command:
    if not args or args[0].lower() not in PLAN_KINDS:
        raise _usage("`plan` needs `restart` or `provision`, then a DC")
    kind, rest = args[0].lower(), args[1:]
    dc: str | None = None
    assignments: list[str] = []
    for word in rest:
        key, sep, value = word.partition("=")
        if sep and key.strip().lower() == "dc":
            dc = value.strip()
        elif sep:
            assignments.append(word)
        elif dc is None:
            dc = word
        else:
            raise _usage(f"unexpected {word!r} in `plan {kind}`")
    if not dc:
        raise _usage(f"`plan {kind}` needs a DC, e.g. `/revive plan {kind} dc2`")
    allowed = {"restart": {"groups", "max_parallel"}, "provision": {"share"}}[kind]
    for pair in assignments:
        key = pair.partition("=")[0].strip().replace("-", "_")
        if key not in allowed:
            raise _usage(f"unknown parameter {key!r} for `plan {kind}` "
                         f"(known: {', '.join(sorted(allowed))})")
    return Command("plan", plan_kind=kind, dc=dc, assignments=tuple(assignments))


def _parse_run(args: list[str]) -> Command:
    from revive.cli.runs import ALIASES, RUNBOOKS

    if not args:
        raise _usage("`run` needs a runbook, e.g. `/revive run failover target_dc=dc2 --dry-run`")
    name = ALIASES.get(args[0], args[0])
    if name not in RUNBOOKS:
        known = ", ".join(sorted(RUNBOOKS) + sorted(ALIASES))
        raise _usage(f"unknown runbook {args[0]!r} (known: {known})")
    dry_run = False
    assignments: list[str] = []
    for word in args[1:]:
        if word in ("--dry-run", "--dry_run", "dry-run"):
            dry_run = True
        elif "=" in word and not word.startswith("="):
            assignments.append(word)
        else:
            raise _usage(f"{word!r}: parameters are key=value (or `--dry-run`)")
    return Command("run", runbook=name, assignments=tuple(assignments), dry_run=dry_run)


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
    )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


class CommandHandler:
    """Answers commands for one app: its settings, its store, and how long work is started.

    ``start`` is called with an accepted ``Job`` and must not wait for it; ``groups_of``
    gives a user's Slack user-group ids (for roles granted to groups).
    """

    def __init__(
        self,
        settings: WebSettings,
        engine: Engine,
        *,
        start: Callable[[Job], None],
        groups_of: Callable[[str], Iterable[str]] = lambda _user: (),
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.start = start
        self.groups_of = groups_of
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
            self._audit(caller, verb, "revive", "invalid", detail={**detail, "reason": str(exc)})
            return Reply(f":warning: {slack_escape(str(exc))}")
        environment = self._environment()
        role = self._role(caller, environment)
        if role < command.required_role:
            reason = (f"`{command.verb}` needs the {command.required_role} role in "
                      f"{environment}; you have {'no role' if role is Role.NONE else role}")
            self._audit(caller, command.verb, self._target(command), "refused",
                        detail={**detail, "reason": reason, "role": str(role),
                                "environment": environment})
            return Reply(f":no_entry: Refused: {slack_escape(reason)}.")
        try:
            result = self._dispatch(command, caller, role, environment)
        except InputError as exc:
            self._audit(caller, command.verb, self._target(command), "invalid",
                        detail={**detail, "reason": str(exc)})
            return Reply(f":warning: {slack_escape(str(exc))}")
        except Exception as exc:
            log.exception("/revive %s failed", command.verb)
            self._audit(caller, command.verb, self._target(command), "error",
                        detail={**detail, "reason": f"{type(exc).__name__}: {exc}"})
            what = str(exc) if isinstance(exc, ReviveError) else "an internal error (logged)"
            return Reply(f":x: `{command.verb}` failed: {slack_escape(what)}")
        self._audit(caller, command.verb, result.target, result.outcome, run_id=result.run_id,
                    detail={**detail, **result.detail})
        return result.reply

    # --- helpers -------------------------------------------------------------------------

    def _environment(self) -> str:
        """The topology's environment; the strictest one when it cannot be read."""
        from revive.topology import load

        try:
            return str(load(self.settings.topology).environment)
        except (ReviveError, OSError) as exc:
            log.warning("topology %s unreadable (%s); assuming %s for roles",
                        self.settings.topology, exc, FALLBACK_ENVIRONMENT)
            return FALLBACK_ENVIRONMENT

    def _role(self, caller: Caller, environment: str) -> Role:
        try:
            groups = list(self.groups_of(caller.user_id))
        except Exception:
            log.exception("could not look up the user groups of %s", caller.user_id)
            groups = []
        return self.settings.role_of(caller.user_id, groups, environment)

    @staticmethod
    def _target(command: Command) -> str:
        if command.verb == "run":
            return f"{command.runbook}"
        if command.verb == "plan":
            return f"plan {command.plan_kind} {command.dc}"
        if command.verb == "drill":
            return f"drill:{command.scenario}"
        if command.verb == "abort":
            return f"run:{command.run_id}"
        return "revive"

    def audit(self, caller: Caller, action: str, target: str, outcome: str, *,
              run_id: str | None = None, detail: dict[str, Any] | None = None) -> None:
        """Write one audit row (source ``slack``); a store failure is logged, not raised."""
        self._audit(caller, action, target, outcome, run_id=run_id, detail=detail)

    def _audit(self, caller: Caller, action: str, target: str, outcome: str, *,
               run_id: str | None = None, detail: dict[str, Any] | None = None) -> None:
        try:
            with db.session(self.engine) as s:
                service.create_audit_event(
                    s, actor=caller.user_id, source=AuditSource.SLACK, action=action,
                    target=target, outcome=outcome, run_id=run_id, detail=detail,
                )
        except Exception:
            log.exception("could not audit %s %s by %s (%s)", action, target, caller.user_id,
                          outcome)

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
        from revive.cli.runs import ALIASES, RUNBOOKS
        from revive.drill.scenarios import SCENARIOS

        runbooks = ", ".join(f"`{n}`" for n in sorted(RUNBOOKS) + sorted(ALIASES))
        text = render(f"{TEMPLATES}/help.md.j2", runbooks=runbooks,
                      scenarios=", ".join(f"`{s}`" for s in SCENARIOS), role=str(role),
                      environment=environment, esc=slack_escape)
        return _Result(Reply(text), "answered", "revive")

    def _status(self) -> _Result:
        rows = recent_runs(self.engine, limit=STATUS_LIMIT)
        text = render(f"{TEMPLATES}/status.md.j2", runs=rows, esc=slack_escape)
        return _Result(Reply(text), "answered", "runs", detail={"runs": len(rows)})

    def _check(self) -> _Result:
        from revive.readiness import Severity, run_check
        from revive.topology import load

        report = run_check(load(self.settings.topology))
        counts = ", ".join(f"{report.count(s)} {s}(s)" for s in Severity)
        text = render(f"{TEMPLATES}/check.md.j2", source=self.settings.topology,
                      findings=report.findings, counts=counts, esc=slack_escape)
        return _Result(Reply(text), "answered", f"topology:{self.settings.topology}",
                       detail={"findings": len(report.findings)})

    def _plan(self, command: Command) -> _Result:
        from revive.cli.runs import parse_assignments
        from revive.planning import plan_capacity, plan_restart
        from revive.topology import load

        topology = load(self.settings.topology)
        assert command.dc is not None
        if command.plan_kind == "restart":
            values = parse_assignments(list(command.assignments), _RestartPlanArgs)
            try:
                args = _RestartPlanArgs(**values)
            except ValidationError as exc:
                raise CommandInputError(_validation_message(exc)) from None
            plan = plan_restart(topology, command.dc, groups=args.groups,
                                max_parallel=args.max_parallel)
            text = render(f"{TEMPLATES}/plan_restart.md.j2", plan=plan, clock=_clock,
                          esc=slack_escape)
        else:
            values = parse_assignments(list(command.assignments), _ProvisionPlanArgs)
            try:
                pargs = _ProvisionPlanArgs(**values)
            except ValidationError as exc:
                raise CommandInputError(_validation_message(exc)) from None
            cplan = plan_capacity(topology, command.dc, share=pargs.share)
            text = render(f"{TEMPLATES}/plan_provision.md.j2", plan=cplan,
                          adding=[line for line in cplan.services if line.add],
                          esc=slack_escape)
        return _Result(Reply(text), "answered", self._target(command))

    # --- operator commands ---------------------------------------------------------------

    def _abort(self, command: Command, caller: Caller) -> _Result:
        assert command.run_id is not None
        with db.session(self.engine) as s:
            run = _find(s, command.run_id)
            service.request_abort(s, run.id, by=caller.user_id)
        text = (f":octagonal_sign: Abort requested for *{slack_escape(run.runbook)}* run "
                f"`{run.id}` by {slack_escape(caller.display)}; it stops after its current "
                "step (the traffic share stays where it is).")
        return _Result(Reply(text, ephemeral=False), "requested", f"{run.runbook}:{run.id}",
                       run_id=run.id)

    def _run(self, command: Command, caller: Caller) -> _Result:
        from revive.cli.runs import RUNBOOKS, parse_assignments

        assert command.runbook is not None
        module_name, flow_name, params_name = RUNBOOKS[command.runbook]
        module = importlib.import_module(module_name)
        flow, params_model = getattr(module, flow_name), getattr(module, params_name)
        for pair in command.assignments:
            key = pair.partition("=")[0].strip().replace("-", "_")
            if key in RESERVED_PARAMS:
                raise CommandInputError(f"{key!r} is set by revive (it is you, via Slack)")
        values = parse_assignments(list(command.assignments), params_model)
        values.update(triggered_by=caller.display, trigger="slack")
        if command.dry_run:
            values["dry_run"] = True
        try:
            params = params_model(**values)
        except ValidationError as exc:
            raise CommandInputError(_validation_message(exc)) from None
        target_dc = getattr(params, "target_dc", None)
        key = (command.runbook, str(target_dc))
        where = f" → {target_dc}" if target_dc else ""
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

    def _already_running(self, active: RunRecord) -> _Result:
        where = f" → {active.target_dc}" if active.target_dc else ""
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
        module = importlib.import_module("flows.drill")
        params = module.DrillParams(scenario=command.scenario, topology=self.settings.topology,
                                    triggered_by=caller.display, trigger="slack")
        key = ("drill", command.scenario or "")
        if not self._claim(key):
            return _Result(Reply(f":hourglass: A `{command.scenario}` drill is already running "
                                 "from Slack; see `/revive status`."), "duplicate",
                           self._target(command))
        self._start(Job("drill", "drill", params, caller, key, module.drill))
        text = (f":fire_drill: Accepted: `{command.scenario}` drill on the simulator, started by "
                f"{slack_escape(caller.display)}. The report will be posted here.")
        return _Result(Reply(text, ephemeral=False), "accepted", self._target(command))

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


class _RestartPlanArgs(BaseModel):
    groups: list[str] | None = None
    max_parallel: int = Field(DEFAULT_MAX_PARALLEL, ge=1)


class _ProvisionPlanArgs(BaseModel):
    share: float | None = Field(None, gt=0)


def _find(session: Any, run_id: str) -> RunRecord:
    """A run by id or unique id prefix (status shows ids in full; people paste prefixes)."""
    run = service.get_run(session, run_id)
    if run is not None:
        return run
    matches = [r for r in service.get_all_runs(session, limit=500) if r.id.startswith(run_id)]
    if len(matches) != 1:
        raise InputError(f"no run {run_id!r}" if not matches
                         else f"run id {run_id!r} is ambiguous")
    return matches[0]


def run_outcome_text(job: Job, result: Any) -> tuple[str, str]:
    """The answer posted to ``response_url`` when a job ends: (mrkdwn, outcome)."""
    outcome = (result or {}).get("outcome") if isinstance(result, dict) else None
    outcome = str(outcome or "done")
    run_id = result.get("run_id") if isinstance(result, dict) else None
    icon = ":white_check_mark:" if outcome in ("succeeded", "done", "ok") else ":x:"
    if outcome == str(RunOutcome.RUNNING):
        icon = ":hourglass:"
    tail = f" (run `{run_id}`)" if run_id else ""
    name = job.name if job.kind == "run" else f"{getattr(job.params, 'scenario', '')} drill"
    return f"{icon} *{slack_escape(name)}*: {slack_escape(outcome)}{tail}", outcome
