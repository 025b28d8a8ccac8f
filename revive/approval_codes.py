"""One-time approval codes: how a decision typed into the Prefect UI or API proves its approver.

Prefect's open-source UI and API have no login, so a name typed there proves nothing. When
a production gate opens, revive sends each person holding the approver role a code of their
own by Slack direct message. The code names its holder: whoever types it approves as that
person, and the two-person rule and the role are checked for that person. A code works
once, for the gate that issued it, and only while that gate waits; the codes live only in
the waiting flow's memory (as hashes), never in Prefect or the store.

Approvers are the Slack user ids (``U...``/``W...``) and members of the Slack user groups
(``S...``) that ``REVIVE_ROLES`` makes approvers in the gate's environment. ``os:`` entries
approve from the CLI instead, and a ``*`` entry cannot be sent anything.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from revive.errors import InputError
from revive.runs.approvals import roles_settings
from revive.web.settings import ANY, Role, WebSettings

__all__ = ["CodeBook", "Holder", "approvers", "approvers_from_env", "code_message", "normalize"]

log = logging.getLogger("revive.approval_codes")

#: Letters and digits that cannot be mistaken for one another when read out or retyped.
ALPHABET = "ABCDEFGHJKMNPQRSTVWXYZ23456789"
GROUPS, GROUP_LENGTH = 3, 4  # 12 characters: about 59 bits, far beyond guessing

_SLACK_USER_PREFIXES = ("U", "W")
_SLACK_GROUP_PREFIX = "S"


@dataclass(frozen=True)
class Holder:
    """Whom a code was issued to, and the role they held in the gate's environment then."""

    user_id: str
    role: Role


def normalize(code: str) -> str:
    """The code as issued, whatever case, spaces or dashes it was typed with."""
    return "".join(ch for ch in code.upper() if ch.isalnum())


def _digest(code: str) -> str:
    return hashlib.sha256(normalize(code).encode()).hexdigest()


class CodeBook:
    """The codes of one open gate: issued once per approver, each redeemable once."""

    def __init__(self) -> None:
        self._by_digest: dict[str, Holder] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_digest)

    def issue(self, holder: Holder) -> str:
        """A fresh code for ``holder``, e.g. ``K7QM-3XPD-T9VA``; only its hash is kept."""
        raw = "".join(secrets.choice(ALPHABET) for _ in range(GROUPS * GROUP_LENGTH))
        with self._lock:
            self._by_digest[_digest(raw)] = holder
        return "-".join(raw[i:i + GROUP_LENGTH] for i in range(0, len(raw), GROUP_LENGTH))

    def redeem(self, code: str | None) -> Holder | None:
        """The holder of ``code``, which is used up; None for no code, a wrong or used one."""
        if not code or not normalize(code):
            return None
        with self._lock:
            return self._by_digest.pop(_digest(code), None)


def approvers(settings: WebSettings, environment: str,
              members: Mapping[str, Iterable[str]]) -> dict[str, Role]:
    """Slack user id -> role, for everyone ``settings`` makes an approver in ``environment``,
    directly or through a user group (``members``: user id -> their group ids)."""
    entries = {**settings.roles.get(ANY, {}), **settings.roles.get(environment, {})}
    candidates = {who for who in entries if who.startswith(_SLACK_USER_PREFIXES)}
    candidates.update(members)
    if entries.get(ANY, Role.NONE) >= Role.APPROVER:
        log.warning("REVIVE_ROLES makes everyone an approver in %s; approval codes go only to "
                    "the people it names", environment)
    found = {}
    for user in sorted(candidates):
        role = settings.role_of(user, tuple(members.get(user, ())), environment)
        if role >= Role.APPROVER:
            found[user] = role
    return found


def approvers_from_env(environment: str) -> dict[str, Role]:
    """``approvers`` from ``REVIVE_ROLES``, with user groups looked up in Slack (through
    ``REVIVE_SLACK_BOT_TOKEN``) when an approver entry is a group; {} (with a warning) when
    the roles cannot be read."""
    try:
        settings = roles_settings()
    except InputError as exc:
        log.warning("%s; no approval codes are sent", exc)
        return {}
    grants = {**settings.roles.get(ANY, {}), **settings.roles.get(environment, {})}
    members: Mapping[str, Iterable[str]] = {}
    if any(who.startswith(_SLACK_GROUP_PREFIX) and role >= Role.APPROVER
           for who, role in grants.items()):
        from revive.web.groups import SlackUserGroups, groups_from_env

        groups_of = groups_from_env()
        if isinstance(groups_of, SlackUserGroups):
            members = groups_of.members()
    return approvers(settings, environment, members)


def code_message(*, run_id: str, runbook: str, target_dc: str, gate: str, question: str,
                 code: str, started: bool) -> str:
    """The direct message carrying one approver's code (Slack mrkdwn)."""
    text = (f"*revive* {runbook} run `{run_id}` ({target_dc}) waits for approval at gate "
            f"`{gate}`: {question}\n"
            f"Your one-time approval code: `{code}`\n"
            "To approve in the Prefect UI: Resume, choose *approve* and enter this code (it "
            "approves as you, once, for this gate only). The Approve button in the incident "
            "channel works too. Do not share it.")
    if started:
        text += ("\nYou started this run, so this code will be refused: a second approver "
                 "must approve it (two-person rule).")
    return text
