"""Configuration of the web app (Slack endpoints and status board), from the environment, so
secrets never live in a file.

Roles are per environment (the topology's ``environment``) because the same person may be
trusted to restart staging but not production. ``REVIVE_ROLES`` maps an environment (or
``*`` for any) to Slack user ids and user-group ids (or ``*`` for anyone) and a role; a person
gets the highest role any matching entry gives them, and nobody gets anything by default.
"""

from __future__ import annotations

import enum
import ipaddress
import os
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ANY", "Role", "WebSettings", "role_of", "startup_warnings"]

#: Wildcard for "any environment" and "any user" in ``REVIVE_ROLES``.
ANY = "*"


class Role(enum.IntEnum):
    """What a person may do; each role includes everything the ones below it may do."""

    NONE = 0
    VIEWER = 1
    OPERATOR = 2
    APPROVER = 3
    ADMIN = 4

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            known = ", ".join(r.name.lower() for r in cls if r is not cls.NONE)
            raise ValueError(f"unknown role {name!r} (known: {known})") from None

    def __str__(self) -> str:
        return self.name.lower()


class WebSettings(BaseSettings):
    """``REVIVE_*`` environment variables read by ``revive serve`` and its tests."""

    model_config = SettingsConfigDict(env_prefix="REVIVE_", extra="ignore")

    slack_signing_secret: SecretStr = Field(
        SecretStr(""), description="Slack app signing secret; without it the Slack endpoints "
        "are off (503) and only the status board is served.")
    board_token: SecretStr = Field(
        SecretStr(""), description="When set, the status board asks for it (Authorization: "
        "Bearer, or ?token= once, which then becomes a cookie).")
    roles: dict[str, dict[str, Role]] = Field(
        default_factory=dict,
        description='JSON: {"production": {"U123": "approver"}, "*": {"*": "viewer"}}.',
    )
    topology: str = Field(
        "runbooks/topology.yaml", description="The estate this server serves: check, plan, "
        "the environment roles are looked up in, and every run started from Slack (a command "
        "cannot name another, nor a simulator: those are this server's configuration).")
    start_mode: Literal["auto", "deployment", "process"] = Field(
        "auto", description="Where runs started from Slack execute: a Prefect deployment "
        "run on a worker, or this process; auto = deployment when PREFECT_API_URL is set.")
    max_parallel_dry_runs: int = Field(
        4, ge=1, le=64, description="Dry runs and drills run in this process at once at most.")
    run_from_dc: str | None = Field(
        None, description="Work pool (DC) for deployment runs; default: the run's target DC.")

    @field_validator("roles", mode="before")
    @classmethod
    def _parse_roles(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        parsed: dict[str, dict[str, Role]] = {}
        for env, members in value.items():
            if not isinstance(members, dict):
                raise ValueError(f"roles[{env!r}] must map user or group ids to roles")
            parsed[str(env)] = {
                str(who): role if isinstance(role, Role) else Role.parse(str(role))
                for who, role in members.items()
            }
        return parsed

    @property
    def slack_enabled(self) -> bool:
        """Whether Slack requests can be verified, and so whether the Slack endpoints serve."""
        return bool(self.slack_signing_secret.get_secret_value().strip())

    def role_of(self, user_id: str, groups: Iterable[str], environment: str) -> Role:
        """The highest role ``user_id`` (in ``groups``) holds in ``environment``."""
        return role_of(user_id, groups, environment, settings=self)


def role_of(
    user_id: str,
    groups: Iterable[str],
    environment: str,
    *,
    settings: WebSettings | None = None,
) -> Role:
    """The highest role ``user_id`` (in ``groups``) holds in ``environment``; NONE if none.

    Without ``settings`` the environment's ``REVIVE_ROLES`` is read now.
    """
    settings = settings if settings is not None else WebSettings()
    ids = {user_id, *groups, ANY}
    best = Role.NONE
    for env in (str(environment), ANY):
        for who, role in settings.roles.get(env, {}).items():
            if who in ids and role > best:
                best = role
    return best


def startup_warnings(settings: WebSettings, env: Mapping[str, str] = os.environ, *,
                     host: str = "127.0.0.1") -> list[str]:
    """One line per setting whose absence makes ``revive serve`` quietly less than it seems.

    Each of these starts fine and then fails someone later: Slack's requests answered 503,
    every user refused (even ``/revive help``), progress that never reaches a channel, a
    board anyone on the network can read. Saying so at start is cheaper than finding out
    during an incident."""
    from revive.chat.client import ENV_CHANNEL, ENV_TOKEN

    warnings = []
    if not settings.slack_enabled:
        warnings.append("warning: REVIVE_SLACK_SIGNING_SECRET is not set: /slack/commands and "
                        "/slack/interactions answer 503; only the status board (GET /) is on")
    if not any(settings.roles.values()):
        warnings.append("warning: REVIVE_ROLES is empty: every Slack user is refused, even "
                        '/revive help; e.g. REVIVE_ROLES=\'{"*": {"U0123ABCD": "admin"}}\'')
    if not env.get(ENV_TOKEN, "").strip():
        warnings.append(f"warning: {ENV_TOKEN} is not set: run progress, approval codes and "
                        "user-group roles need it; progress goes to the log only")
    if not env.get(ENV_CHANNEL, "").strip():
        warnings.append(f"warning: {ENV_CHANNEL} is not set: run progress goes to the log "
                        "only, not to a Slack channel")
    if not settings.board_token.get_secret_value() and not _loopback(host):
        warnings.append(f"warning: REVIVE_BOARD_TOKEN is not set: anyone who reaches {host} "
                        "can read the status board")
    return warnings


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
