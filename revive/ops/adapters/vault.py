"""Vault as a boot-time secret store: is each DC's replica able to hand out secrets now?

Services read their secrets while they boot, so a DC whose Vault is sealed, uninitialised or
only a standby cannot bring services back, even though Vault "answers". The probe asks each
replica's unauthenticated ``GET /v1/sys/health`` (no token needed) with its default status
codes: 200 initialised, unsealed and active; 429 unsealed standby; 472 DR secondary; 473
performance standby; 474 standby that cannot reach its active node; 501 not initialised; 503
sealed; 530 removed from its cluster. Only an active node is up, and a standby (plain or
performance) too when ``standby_ok`` says a standby forwards well enough in this estate.
When the answer has a JSON body (a GET does), its ``initialized``/``sealed``/``standby``
fields can only make the verdict worse: a proxy that rewrites status codes does not turn a
sealed Vault into an active one.

Why not ``ReplicatedEndpoint``: it treats 503 and 429 as a replica to fail over from and
retries them, while here they are the answer itself, and the probe must ask every replica
rather than find one. ``ReplicaSet.each`` asks each replica once, within ``timeout_s``,
keeping the per-replica breakers: a replica that does not answer (refused, reset, timed out,
a 5xx from a proxy) is down, and the probe never raises for it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from enum import StrEnum
from typing import Any

import httpx
from pydantic import PositiveFloat

from revive.errors import InputError
from revive.ops.plugins import Adapter, AdapterSettings, ToolContext
from revive.ops.replicas import Failure, describe
from revive.topology.models import ToolKind

log = logging.getLogger("revive.ops.vault")

HEALTH_PATH = "/v1/sys/health"


class VaultSettings(AdapterSettings):
    """How strict the probe is, and how long one replica may take to answer."""

    standby_ok: bool = False
    """Count a standby (429) or performance standby (473) as up; by default only active is."""
    timeout_s: PositiveFloat | None = None
    """Bound on one replica's answer; default: the run's timeout."""


class VaultState(StrEnum):
    """What one replica's ``/v1/sys/health`` says it is."""

    ACTIVE = "active"
    STANDBY = "standby"
    PERFORMANCE_STANDBY = "performance_standby"
    DR_SECONDARY = "dr_secondary"
    STANDBY_NO_ACTIVE = "standby_no_active"
    NOT_INITIALIZED = "not_initialized"
    SEALED = "sealed"
    REMOVED = "removed"
    UNEXPECTED = "unexpected"
    """An answer that is not Vault's (a 404 from something else on that address)."""
    UNREACHABLE = "unreachable"


#: Vault's default status codes for /v1/sys/health.
STATUS_STATES: dict[int, VaultState] = {
    200: VaultState.ACTIVE,
    429: VaultState.STANDBY,
    472: VaultState.DR_SECONDARY,
    473: VaultState.PERFORMANCE_STANDBY,
    474: VaultState.STANDBY_NO_ACTIVE,
    501: VaultState.NOT_INITIALIZED,
    503: VaultState.SEALED,
    530: VaultState.REMOVED,
}
_STANDBYS = frozenset({VaultState.STANDBY, VaultState.PERFORMANCE_STANDBY})


def health_url(address: str) -> str:
    """The sys/health URL of a replica given as ``https://host:8200`` (``/v1`` optional)."""
    url = httpx.URL(address.strip())
    if url.scheme not in ("http", "https") or not url.host:
        raise InputError(f"Vault address {address!r} is not an http(s):// URL")
    base = url.path.rstrip("/")
    if base.endswith("/v1"):
        base = base[: -len("/v1")]
    return str(url.copy_with(path=f"{base}{HEALTH_PATH}", query=None, fragment=None))


def state_of(status: int, body: Any) -> VaultState | None:
    """The replica's state from its status code and body; None for a failed replica (5xx)."""
    state = STATUS_STATES.get(status)
    if state is None:
        return None if status >= 500 else VaultState.UNEXPECTED
    if isinstance(body, dict):
        if body.get("initialized") is False:
            return VaultState.NOT_INITIALIZED
        if body.get("sealed") is True:
            return VaultState.SEALED
        if state is VaultState.ACTIVE and body.get("standby") is True:
            return (VaultState.PERFORMANCE_STANDBY if body.get("performance_standby") is True
                    else VaultState.STANDBY)
    return state


class VaultHealth:
    """The probe of a ``secret_store`` tool served by Vault (``ToolHealth`` uses it)."""

    def __init__(self, ctx: ToolContext) -> None:
        settings: VaultSettings = ctx.settings
        self.tool = ctx.name
        self.standby_ok = settings.standby_ok
        self.timeout_s = settings.timeout_s or ctx.timeout_s
        self.urls = {dc: health_url(address) for dc, address in ctx.replicas.items()}
        self.set = ctx.replica_set(self.urls)
        self._client: httpx.AsyncClient | None = None

    async def probe(self) -> dict[str, bool]:
        """DC -> whether its replica can serve secrets now (never raises for a down one)."""
        return {dc: self.up(state) for dc, state in (await self.states()).items()}

    def up(self, state: VaultState) -> bool:
        return state is VaultState.ACTIVE or (self.standby_ok and state in _STANDBYS)

    async def states(self) -> dict[str, VaultState]:
        """DC -> what its replica says it is (``unreachable`` when it gave no answer)."""
        results = await self.set.each(self._ask, what=f"GET {HEALTH_PATH}")
        states: dict[str, VaultState] = {}
        for dc in self.urls:
            outcome = results.get(dc)
            states[dc] = (outcome if isinstance(outcome, VaultState)
                          else VaultState.UNREACHABLE)
            if not self.up(states[dc]):
                why = outcome.reason if isinstance(outcome, Failure) else states[dc].value
                log.info("ops tool %s: the replica in %s is down for boot: %s", self.tool, dc,
                         why, extra={"tool": self.tool, "dc": dc})
        return states

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _ask(self, dc: str) -> VaultState | Failure:
        client = self._http()  # built outside the timeout: loading CA certificates is slow
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await client.get(self.urls[dc])
        except TimeoutError as exc:
            return Failure(f"no answer within {self.timeout_s:g} s", exc)
        except httpx.TransportError as exc:
            return Failure(describe(exc), exc, unsent=isinstance(exc, httpx.ConnectError))
        try:
            body = response.json()
        except ValueError:
            body = None
        state = state_of(response.status_code, body)
        if state is None:
            reason = f"HTTP {response.status_code} {response.reason_phrase}"
            return Failure(reason, httpx.HTTPStatusError(reason, request=response.request,
                                                         response=response))
        return state

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # httpx's own timeout backs up the asyncio one (which also bounds connecting).
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s),
                                             verify=_ssl_context(), follow_redirects=False)
        return self._client


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One default TLS context for every probe: loading the CA bundle costs ~0.1 s each time,
    and the context holds no per-replica state."""
    return httpx.create_ssl_context()


def _health(ctx: ToolContext) -> VaultHealth:
    return VaultHealth(ctx)


ADAPTER = Adapter(
    name="vault",
    kinds={ToolKind.secret_store: _health},
    settings=VaultSettings,
    summary="HashiCorp Vault (secret store): /v1/sys/health per DC; sealed or standby is down",
)

__all__ = ["ADAPTER", "STATUS_STATES", "VaultHealth", "VaultSettings", "VaultState",
           "health_url", "state_of"]
