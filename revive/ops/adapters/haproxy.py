"""HAProxy 2.6 as the GSLB (kind ``traffic``), driven through its runtime API.

Why a thin client of our own: no maintained Python client for the runtime API exists, and
the protocol is a line of text per connection, read to EOF. Each traffic class is an HAProxy
backend (setting ``backends``), each DC a server in every backend (setting ``servers``), and
each DC runs its own HAProxy replica: writes go to every reachable replica, reads come from
the first that answers (the local DC's first), both under the shared replica rules
(``ReplicaSet``: breakers, failover, retry budget).

Weights: a class's shares are written as **absolute** HAProxy weights (``set weight be/srv
N``, 0..256), scaled so the largest share gets 256, and read back from ``get weight`` (whose
first number is the current absolute weight) as weight / sum of the class's weights. Absolute
on both sides keeps get and set consistent whatever initial weight the config gave a server
(percent weights, ``30%``, are relative to that initial weight). A positive share never
rounds down to 0.

A DC at share 0 gets weight 0: HAProxy sends it no new requests, while requests already
running finish, which is what moving traffic away needs. The adapter never changes a
server's admin state (``ready``/``drain``/``maint``): that stays with operators and health
checks. Within one write, raised weights are sent before lowered ones, so a class never
passes through "every DC at 0" on its way from one DC to another.

Caveat: a replica that was unreachable during a write keeps its old weights until the next
write; the write logs which replicas it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, StringConstraints, model_validator

from revive.errors import InputError, NotFoundError, PermanentOpsError
from revive.ops.plugins import Adapter, AdapterSettings, ToolContext
from revive.ops.replicas import EndpointError, Failure, ReplicaSet, describe, os_failure
from revive.topology.models import ToolKind

log = logging.getLogger("revive.ops")

#: HAProxy's largest absolute server weight; the largest share of a class is written as it.
MAX_WEIGHT = 256
#: Commands joined with ``;`` on one connection; more go on further connections.
MAX_BATCH = 50

HAProxyName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,100}$")]
Key = Annotated[str, StringConstraints(min_length=1, max_length=200)]
_WEIGHT_REPLY = re.compile(r"^(\d+) \(initial (\d+)\)$")


@dataclass(frozen=True)
class RuntimeTarget:
    """Where one replica's runtime API listens: a unix socket path, or host and port."""

    socket: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        return f"unix://{self.socket}" if self.socket else f"tcp://{self.host}:{self.port}"


def parse_address(text: str) -> RuntimeTarget:
    """``host:port`` (``[v6]:port`` too) as a TCP target; ``ValueError`` saying what is wrong."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {text!r}")
    return RuntimeTarget(host=host, port=int(port))


def parse_replica_url(url: str) -> RuntimeTarget:
    """``unix:///path/haproxy.sock`` or ``tcp://host:port``, as a topology replica gives it."""
    parts = urlsplit(url)
    if parts.scheme == "unix" and not parts.netloc and parts.path.startswith("/"):
        return RuntimeTarget(socket=parts.path)
    if parts.scheme == "tcp" and parts.netloc and parts.path in ("", "/"):
        return parse_address(parts.netloc)
    raise ValueError(f"expected unix:///path/to/haproxy.sock or tcp://host:port, got {url!r}")


class ReplicaAddress(AdapterSettings):
    """One replica's runtime API: ``socket`` (a unix socket path) or ``address`` (host:port)."""

    socket: Annotated[str, StringConstraints(min_length=1)] | None = None
    address: Annotated[str, StringConstraints(min_length=1)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ReplicaAddress:
        if (self.socket is None) == (self.address is None):
            raise ValueError("give exactly one of socket (a unix socket path) or address "
                             "(host:port of a TCP admin socket)")
        if self.socket is not None and not Path(self.socket).is_absolute():
            raise ValueError(f"socket must be an absolute path, got {self.socket!r}")
        if self.address is not None:
            parse_address(self.address)
        return self

    def target(self) -> RuntimeTarget:
        if self.socket is not None:
            return RuntimeTarget(socket=self.socket)
        return parse_address(str(self.address))


class HAProxySettings(AdapterSettings):
    """``settings:`` of an ``adapter: haproxy`` tool.

    ``backends``: traffic class -> backend name; ``servers``: DC -> its server's name in
    every backend; ``replicas``: DC -> runtime API (else the tool's ``replicas:`` URL);
    ``timeout_s``: per replica attempt (else the run's tool timeout).
    """

    backends: dict[Key, HAProxyName] = Field(min_length=1)
    servers: dict[Key, HAProxyName] = Field(min_length=1)
    replicas: dict[Key, ReplicaAddress] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0, le=600)


class RuntimeReplyError(Exception):
    """A reply that is not what the runtime API sends (cut short, or not one per command)."""


async def runtime_exchange(target: RuntimeTarget, line: str) -> str:
    """Send one line to a runtime API and read the whole reply (the server closes after)."""
    if target.socket is not None:
        reader, writer = await asyncio.open_unix_connection(target.socket)
    else:
        reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(line.encode() + b"\n")
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return data.decode(errors="replace")


def split_replies(raw: str, count: int) -> list[str]:
    """Each command's reply from the reply to ``count`` commands joined with ``;``.

    HAProxy ends every command's output with an empty line, and a successful ``set`` has no
    output, so ``"\\nNo such server.\\n\\n\\n"`` is three replies: "", "No such server.", "".
    """
    replies: list[str] = []
    current: list[str] = []
    for line in raw.removesuffix("\n").split("\n") if raw else []:
        if line:
            current.append(line)
        else:
            replies.append("\n".join(current))
            current = []
    if current or len(replies) != count:
        shown = raw if len(raw) <= 200 else raw[:200] + "..."
        raise RuntimeReplyError(f"expected {count} replies, got {shown!r}")
    return replies


async def runtime_commands(target: RuntimeTarget, commands: Sequence[str]) -> list[str]:
    """Each command's reply, in order; up to ``MAX_BATCH`` commands per connection."""
    replies: list[str] = []
    for start in range(0, len(commands), MAX_BATCH):
        batch = commands[start:start + MAX_BATCH]
        replies += split_replies(await runtime_exchange(target, "; ".join(batch)), len(batch))
    return replies


def integer_weights(shares: Mapping[str, float], dcs: Sequence[str], *, tool: str,
                    target: str) -> dict[str, int]:
    """Shares over ``dcs`` (missing ones 0) as HAProxy weights, the largest at ``MAX_WEIGHT``."""
    unknown = sorted(set(shares) - set(dcs))
    if unknown:
        raise NotFoundError(f"{tool}: no HAProxy server for DC {', '.join(unknown)} "
                            f"(settings.servers has {', '.join(dcs)})", tool=tool, target=target)
    for dc, share in shares.items():
        if isinstance(share, bool) or not isinstance(share, Real) or not 0 <= share < math.inf:
            raise PermanentOpsError(f"{tool}: weight for {dc} must be a non-negative number, "
                                    f"got {share!r}", tool=tool, target=target)
    top = max(shares.values(), default=0)
    if top <= 0:
        raise PermanentOpsError(f"{tool}: GSLB weights for {target} must sum to more than 0",
                                tool=tool, target=target)
    out: dict[str, int] = {}
    for dc in dcs:
        share = float(shares.get(dc, 0))
        out[dc] = max(1, round(MAX_WEIGHT * share / top)) if share > 0 else 0
    return out


def refusal(tool: str, target: str, detail: str, replies: Sequence[str]) -> PermanentOpsError:
    """The typed error for HAProxy's refusal(s): unknown backend/server -> NotFoundError."""
    kind = NotFoundError if all(r.startswith("No such") for r in replies) else PermanentOpsError
    return kind(f"{tool}: HAProxy refused {detail}", tool=tool, target=target)


class HAProxyTraffic:
    """The ``Traffic`` protocol over one HAProxy replica per DC."""

    def __init__(self, name: str, settings: HAProxySettings, targets: Mapping[str, RuntimeTarget],
                 replicas: ReplicaSet, *, timeout_s: float,
                 class_shares: Mapping[str, float] | None = None) -> None:
        self.name = name
        self.backends = dict(settings.backends)
        self.servers = dict(settings.servers)
        self.targets = dict(targets)
        self.replicas = replicas
        self.timeout_s = timeout_s
        self.class_shares = dict(class_shares) if class_shares else None
        self.last_missed: dict[str, str] = {}
        """Replicas the last write did not reach (DC -> why); empty when all took it."""

    async def _run(self, dc: str, commands: Sequence[str]) -> list[str] | Failure:
        """One attempt on ``dc``'s replica: its replies, or why it gave none."""
        target = self.targets[dc]
        try:
            async with asyncio.timeout(self.timeout_s):
                return await runtime_commands(target, commands)
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            return Failure(f"{target} gave no answer within {self.timeout_s:g} s", exc)
        except OSError as exc:
            return os_failure(exc)
        except RuntimeReplyError as exc:
            return Failure(f"{target}: {exc}", exc)

    # --- reads ----------------------------------------------------------------------------

    async def class_weights(self) -> dict[str, dict[str, float]]:
        """Every class's shares per DC, all read from the first replica that answers."""
        pairs = [(c, dc) for c in self.backends for dc in self.servers]
        commands = [f"get weight {self.backends[c]}/{self.servers[dc]}" for c, dc in pairs]
        replies = await self.replicas.call(lambda dc: self._run(dc, commands),
                                           what="get weight", idempotent=True)
        raw: dict[str, dict[str, int]] = {c: {} for c in self.backends}
        for (traffic_class, dc), command, reply in zip(pairs, commands, replies, strict=True):
            match = _WEIGHT_REPLY.match(reply.strip())
            if match is None:
                raise refusal(self.name, traffic_class, f"`{command}`: {reply.strip()}", [reply])
            raw[traffic_class][dc] = int(match.group(1))
        out: dict[str, dict[str, float]] = {}
        for traffic_class, per_dc in raw.items():
            total = sum(per_dc.values())
            out[traffic_class] = {dc: (w / total if total else 0.0) for dc, w in per_dc.items()}
        return out

    async def weights(self) -> dict[str, float]:
        """Each DC's share of all users: the classes' shares weighted by each class's load
        share when the topology gives them (as the simulator does), else their plain mean."""
        per_class = await self.class_weights()
        shares = self.class_shares or {c: 1.0 for c in per_class}
        total = sum(shares[c] for c in per_class) or 1.0
        return {dc: sum(shares[c] * per_class[c][dc] for c in per_class) / total
                for dc in self.servers}

    # --- writes ---------------------------------------------------------------------------

    async def set_class_weights(self, traffic_class: str, weights: Mapping[str, float]) -> None:
        """Move one class's users: every reachable replica gets the new weights."""
        if traffic_class not in self.backends:
            raise NotFoundError(f"{self.name}: unknown traffic class {traffic_class!r} "
                                f"(settings.backends has {', '.join(self.backends)})",
                                tool=self.name, target=traffic_class)
        ints = integer_weights(weights, list(self.servers), tool=self.name, target=traffic_class)
        await self._write({traffic_class: ints}, target=traffic_class)

    async def set_weights(self, weights: Mapping[str, float]) -> None:
        """Every class to the same shares, in one write per replica."""
        ints = integer_weights(weights, list(self.servers), tool=self.name, target="gslb")
        await self._write({c: ints for c in self.backends}, target="gslb")

    async def _write(self, weights: Mapping[str, Mapping[str, int]], *, target: str) -> None:
        """Send the weights to every replica whose breaker allows; enough if one took them.

        Raises the typed refusal if any replica refused a command, ``EndpointError`` (a
        TransientOpsError) if none took them; logs the replicas that were missed.
        """
        items = [(self.backends[c], self.servers[dc], w)
                 for c, per_dc in weights.items() for dc, w in per_dc.items()]
        items.sort(key=lambda item: -item[2])  # raise before lowering: never all at 0
        commands = [f"set weight {be}/{srv} {w}" for be, srv, w in items]
        what = f"set weight ({target})"

        async def attempt(dc: str) -> dict[str, str] | Failure:
            replies = await self._run(dc, commands)
            if isinstance(replies, Failure):
                return replies
            return {cmd: reply for cmd, reply in zip(commands, replies, strict=True) if reply}

        results = await self.replicas.each(attempt, what=what)
        missed = {dc: r.reason for dc, r in results.items() if isinstance(r, Failure)}
        refused = {dc: r for dc, r in results.items() if not isinstance(r, Failure) and r}
        self.last_missed = missed
        if refused:
            detail = "; ".join(f"{dc}: `{cmd}`: {reply}" for dc, per in refused.items()
                               for cmd, reply in per.items())
            replies = [reply for per in refused.values() for reply in per.values()]
            raise refusal(self.name, target, detail, replies)
        took = [dc for dc, r in results.items() if not isinstance(r, Failure)]
        detail = "; ".join(f"{dc}: {why}" for dc, why in missed.items())
        if not took:
            raise EndpointError(f"{self.name}: no replica took {what} ({detail})",
                                tool=self.name, target=target, errors=missed)
        if missed:
            # A replica whose circuit is already open was reported when it opened.
            fresh = any(isinstance(r, Failure) and r.counts for r in results.values())
            log.log(logging.WARNING if fresh else logging.INFO,
                    "ops tool %s: %s reached %s but not %s; those keep their old weights "
                    "until the next write", self.name, what, ", ".join(took), detail,
                    extra={"tool": self.name, "missed": sorted(missed)})

    # --- tool health ----------------------------------------------------------------------

    async def probe(self) -> dict[str, bool]:
        """Which replicas answer ``show info`` right now (each asked directly, breakers aside)."""
        async def one(dc: str) -> bool:
            try:
                async with asyncio.timeout(self.timeout_s):
                    reply = await runtime_exchange(self.targets[dc], "show info")
            except OSError as exc:  # TimeoutError included
                log.info("ops tool %s: %s does not answer: %s", self.name, dc, describe(exc))
                return False
            return reply.startswith("Name:")

        dcs = list(self.targets)
        return dict(zip(dcs, await asyncio.gather(*(one(dc) for dc in dcs)), strict=True))

    async def aclose(self) -> None:
        """Nothing to release: every command opens and closes its own connection."""


def resolve_targets(ctx: ToolContext, settings: HAProxySettings) -> dict[str, RuntimeTarget]:
    """DC -> runtime API: ``settings.replicas`` first, else the tool's replica URL."""
    known = ctx.topology.dc_names if ctx.topology is not None else None
    targets: dict[str, RuntimeTarget] = {}
    for dc in [*ctx.tool.replicas, *(d for d in settings.replicas if d not in ctx.tool.replicas)]:
        if known is not None and dc not in known:
            raise InputError(f"ops_tools.{ctx.name}.settings.replicas.{dc}: unknown datacenter "
                             f"{dc!r} (declared: {', '.join(known)})")
        if dc in settings.replicas:
            targets[dc] = settings.replicas[dc].target()
            continue
        try:
            targets[dc] = parse_replica_url(ctx.tool.replicas[dc])
        except ValueError as exc:
            raise InputError(f"ops_tools.{ctx.name}.replicas.{dc}: {exc} (or set "
                             f"settings.replicas.{dc}.socket / .address)") from None
    if not targets:
        raise InputError(f"ops_tools.{ctx.name}.replicas: the GSLB needs at least one HAProxy "
                         "replica (unix:///path/haproxy.sock or tcp://host:port)")
    return targets


def _class_shares(ctx: ToolContext, settings: HAProxySettings) -> dict[str, float] | None:
    """Each class's load share when the topology knows every configured class."""
    if ctx.topology is None:
        return None
    classes = ctx.topology.traffic_classes
    if not all(c in classes for c in settings.backends):
        return None
    shares = {c: classes[c].load_share for c in settings.backends}
    return shares if sum(shares.values()) > 0 else None


def make_traffic(ctx: ToolContext) -> HAProxyTraffic:
    """The factory for kind ``traffic``: validates addresses, opens nothing."""
    settings: Any = ctx.settings
    if not isinstance(settings, HAProxySettings):
        settings = HAProxySettings.model_validate(settings)
    targets = resolve_targets(ctx, settings)
    return HAProxyTraffic(ctx.name, settings, targets, ctx.replica_set(targets),
                          timeout_s=settings.timeout_s or ctx.timeout_s,
                          class_shares=_class_shares(ctx, settings))


ADAPTER = Adapter(
    name="haproxy",
    kinds={ToolKind.traffic: make_traffic},
    settings=HAProxySettings,
    summary="HAProxy 2.6 runtime API (traffic): class weights per DC, one replica per DC",
)
