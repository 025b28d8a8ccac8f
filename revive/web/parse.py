"""``/revive`` command text to a ``Command``: the grammar, and what each verb may be given.

Parsing knows nothing of roles, the store or Slack, so the same text means the same thing
from the HTTP endpoint, a Socket Mode runner and the tests. The grammar mirrors the CLI
(``revive run/status/abort``): the same runbook names and aliases, the same ``key=value``
parameters, so on-call people learn one set of words.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from pydantic import ValidationError

from revive.errors import InputError
from revive.web.settings import Role

__all__ = ["PLAN_KINDS", "REQUIRED_ROLE", "Command", "CommandInputError", "parse",
           "validation_message"]

#: The role each command needs (approval buttons need ``approver``: see approvals.py).
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

    @property
    def target(self) -> str:
        """What the command acts on, as the audit trail names it."""
        if self.verb == "run":
            return f"{self.runbook}"
        if self.verb == "plan":
            return f"plan {self.plan_kind} {self.dc}"
        if self.verb == "drill":
            return f"drill:{self.scenario}"
        if self.verb == "abort":
            return f"run:{self.run_id}"
        return "revive"


def _usage(message: str) -> CommandInputError:
    return CommandInputError(f"{message}. Try `/revive help`.")


def validation_message(exc: ValidationError) -> str:
    """A pydantic error as ``field: problem; ...`` (no URLs, no input echo)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
    )


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
        return _parse_drill(args)
    if verb == "abort":
        if len(args) != 1:
            raise _usage("`abort` takes the run id (see `/revive status`)")
        return Command("abort", run_id=args[0])
    raise _usage(f"unknown command `{verb}`")


def _parse_drill(args: list[str]) -> Command:
    """``drill [scenario] [lost_dc=NAME]``: the lost DC defaults to the topology's first."""
    scenario: str | None = None
    lost: str | None = None
    for word in args:
        key, sep, value = word.partition("=")
        if sep and key.strip().lower().replace("-", "_") == "lost_dc" and value.strip():
            lost = value.strip()
        elif sep:
            raise _usage(f"unknown parameter {key.strip()!r} for `drill` (known: lost_dc)")
        elif scenario is None:
            scenario = word
        else:
            raise _usage("`drill` takes at most one scenario")
    return Command("drill", scenario=scenario or "dc-fire", dc=lost)


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
    from revive.runs.catalog import ALIASES, RUNBOOKS

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
