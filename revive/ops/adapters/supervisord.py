"""supervisord 4.2 as revive's ``ServiceControl`` and ``Compute``: one supervisord per DC.

Why per DC and never with failover: each DC's supervisord runs that DC's processes, and the
method's ``dc`` says which DC's processes to act on; restarting the service in another DC
because dc1's supervisord did not answer would be a lie. Every call therefore goes to the
named DC's replica alone (an endpoint over that one replica: retried, breakered, never
failed over), speaking XML-RPC over httpx (``POST /RPC2``, HTTP basic auth).

What it does on a DC's supervisord:

- ``state``: the service's program group and its extras (``<group>_extra_<k>``), RUNNING ones
  as healthy, STARTING/STOPPING as busy, the version from revive's deploy file.
- ``restart``: stop the group, wait until it has stopped, start it again.
- ``deploy``/``set_version``: fetch the service's artifact (the first layer of an OCI
  artifact) from the DC's registry, unpack it safely into ``<artifacts_dir>/<service>-<version>``,
  write ``<conf_dir>/revive-<group>.conf`` (``[group:<group>]`` of ``<group>_00``... with one
  ``[program:]`` per instance so each gets its own ``{port}``), ``reloadConfig``, then replace
  the running group (stop, ``removeProcessGroup``, ``addProcessGroup``). The file also
  records the version and the previous one, so ``set_version(None)`` rolls back.
- ``provision``: new files ``revive-<group>_extra_<k>.conf``, ``reloadConfig`` and
  ``addProcessGroup`` of each new program only: changing ``numprocs`` of a running group
  would restart all of it, so running processes are never touched.

Actions are judged by supervisord itself: done when every process they started is RUNNING
(it stayed up ``startsecs``), failed when one is FATAL or EXITED, with its log's tail.
Resends with the same ``request_id`` return the first call's action and start nothing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import os
import re
import shutil
import string
import tarfile
import time
import uuid
import xmlrpc.client
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode
from xml.parsers.expat import ExpatError

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from revive.errors import (
    ConflictError,
    DependencyError,
    InputError,
    NotFoundError,
    OpsError,
    PermanentOpsError,
    QuotaError,
    TransientOpsError,
)
from revive.ops.adapters.oci import fetch_layer
from revive.ops.endpoint import EndpointError, ReplicatedEndpoint
from revive.ops.models import ActionRef, ActionState, ActionStatus, ServiceState
from revive.ops.plugins import Adapter, AdapterSettings, ToolContext, secret
from revive.topology.models import ToolKind

__all__ = [
    "ADAPTER",
    "ProgramSettings",
    "Supervisord",
    "SupervisordSettings",
    "UnsafeArtifact",
    "render_program",
    "unpack_tarball",
]

# supervisord's fault codes (supervisor.xmlrpc.Faults) that revive tells apart.
SHUTDOWN_STATE = 6
BAD_NAME = 10
ALREADY_STARTED = 60
NOT_RUNNING = 70
SUCCESS = 80
ALREADY_ADDED = 90
STILL_RUNNING = 91
_CONFLICTS = frozenset({ALREADY_STARTED, NOT_RUNNING, ALREADY_ADDED, STILL_RUNNING})

RUNNING, STARTING, STOPPING = "RUNNING", "STARTING", "STOPPING"
_FAILED_STATES = frozenset({"FATAL", "EXITED"})
_ACTIVE_STATES = frozenset({RUNNING, STARTING, "BACKOFF", STOPPING})

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_VERSION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_EXTRA = re.compile(r"^(?P<base>.+)_extra_(?P<k>[0-9]+)$")
_REPOSITORY = r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$"
_PLACEHOLDERS = frozenset({"port", "instance", "dir"})
_QUOTES = frozenset("'\"")
_HEADER = "; revive-"
_LOG_EXCERPT = 400
_MAX_REMEMBERED = 4096

ProgramName = Annotated[str, StringConstraints(pattern=_NAME)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Repository = Annotated[str, StringConstraints(pattern=_REPOSITORY, max_length=255)]
Url = Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")]


def _plain_path(value: str) -> str:
    """An absolute path that supervisord's config syntax can carry unquoted."""
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    if any(c.isspace() for c in value) or "%" in value or ";" in value:
        raise ValueError("must not contain whitespace, '%' or ';'")
    return value.rstrip("/") or "/"


AbsPath = Annotated[str, AfterValidator(_plain_path)]


class ProgramSettings(AdapterSettings):
    """How one service runs under supervisord.

    ``command`` is the program's command line (supervisord syntax), in which revive fills
    ``{port}`` (``base_port`` + the instance number), ``{instance}`` and ``{dir}`` (the
    deployed artifact's directory, else ``directory``); write a literal brace as ``{{``.
    Deployed instances are numbered 0..n-1; extra ``k`` (1, 2, ...) is instance
    ``extra_offset + k - 1``, so its port never collides with a deployed one.
    """

    group: ProgramName | None = None
    command: str | None = Field(None, min_length=1)
    directory: AbsPath | None = None
    environment: dict[EnvName, str] = Field(default_factory=dict)
    base_port: int | None = Field(None, ge=1, le=65535)
    extra_offset: int = Field(100, ge=1, le=10000)
    startsecs: int = Field(1, ge=0, le=3600)
    startretries: int = Field(3, ge=0, le=100)
    stopwaitsecs: int = Field(10, ge=1, le=3600)

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "\n" in value or "\r" in value:
            raise ValueError("must be one line")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(
                f"not a format string ({exc}): write a literal brace as {{{{") from exc
        unknown = fields - _PLACEHOLDERS
        if unknown:
            raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}}: use {{port}}, "
                             "{instance} or {dir}")
        return value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if "\n" in item or "\r" in item:
                raise ValueError(f"{key}: must be one line")
            both = '"' in item and "'" in item
            if both or (item and (item[0] in _QUOTES or item[-1] in _QUOTES)):
                raise ValueError(f"{key}: supervisord cannot carry a value with both kinds of "
                                 "quote, or starting or ending with one")
        return value

    @model_validator(mode="after")
    def _port(self) -> ProgramSettings:
        if self.command and "{port}" in self.command and self.base_port is None:
            raise ValueError("command uses {port}: set base_port")
        return self

    def group_of(self, service: str) -> str:
        return self.group or service


class SupervisordSettings(AdapterSettings):
    """``settings:`` of a ``supervisord`` tool (kinds ``deploy`` and ``compute``).

    Per DC (keys are the tool's replica DCs): ``conf_dirs`` is the directory whose
    ``*.conf`` that DC's supervisord includes (revive writes its program files there);
    ``artifacts_dirs`` where deploys unpack; ``registry_urls`` the DC's registry replica to
    pull artifacts from. ``programs`` says how each service runs (a service not listed is
    the group of its own name, restartable but neither deployable nor provisionable);
    ``repositories`` maps a service to its artifact repository when the names differ.
    Credentials are never in the topology: ``password_env`` / ``password_file`` name where
    the password for HTTP basic auth with ``username`` is.
    """

    conf_dirs: dict[str, AbsPath] = Field(min_length=1)
    programs: dict[ProgramName, ProgramSettings] = Field(default_factory=dict)
    artifacts_dirs: dict[str, AbsPath] = Field(default_factory=dict)
    registry_urls: dict[str, Url] = Field(default_factory=dict)
    repositories: dict[str, Repository] = Field(default_factory=dict)
    username: str | None = Field(None, min_length=1)
    password_env: str | None = Field(None, min_length=1)
    password_file: str | None = Field(None, min_length=1)
    timeout_s: float | None = Field(None, gt=0, le=3600)

    @model_validator(mode="after")
    def _credentials(self) -> SupervisordSettings:
        if self.password_env and self.password_file:
            raise ValueError("password_env and password_file: give one, not both")
        if self.username and not (self.password_env or self.password_file):
            raise ValueError("username needs password_env or password_file")
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("a password needs a username")
        return self


# --- supervisord's files ------------------------------------------------------------------


def _escape(value: str) -> str:
    """A value for supervisord's config: ``%`` is its expansion character."""
    return value.replace("%", "%%")


def _quote(value: str) -> str:
    """An ``environment=`` value, ``%`` doubled, in the quotes it does not contain.

    supervisord splits ``environment`` with a non-POSIX shlex (no escapes inside quotes) and
    strips quote characters from both ends: a value holding both kinds of quote, or starting
    or ending with one, cannot be written (``ProgramSettings`` refuses those).
    """
    quote = "'" if '"' in value else '"'
    return f"{quote}{_escape(value)}{quote}"


def render_program(
    name: str,
    command: str,
    *,
    directory: str | None = None,
    environment: Mapping[str, str] | None = None,
    numprocs: int = 1,
    autostart: bool = True,
    startsecs: int = 1,
    startretries: int = 3,
    stopwaitsecs: int = 10,
) -> str:
    """One ``[program:<name>]`` section; ``command`` is final (supervisord syntax, as is).

    stderr goes to the stdout log (``AUTO``: supervisord's ``childlogdir``), which is where
    a failed action's log excerpt is read from.
    """
    lines = [f"[program:{name}]", f"command={command}"]
    if numprocs > 1:
        lines += [f"numprocs={numprocs}", "process_name=%(program_name)s_%(process_num)02d"]
    if directory:
        lines.append(f"directory={_escape(directory)}")
    if environment:
        pairs = ",".join(f"{key}={_quote(value)}" for key, value in environment.items())
        lines.append(f"environment={pairs}")
    lines += [
        f"autostart={'true' if autostart else 'false'}",
        "autorestart=true",
        f"startsecs={startsecs}",
        f"startretries={startretries}",
        "stopsignal=TERM",
        f"stopwaitsecs={stopwaitsecs}",
        "stopasgroup=true",
        "killasgroup=true",
        "redirect_stderr=true",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True)
class _Deployed:
    """What revive's deploy file for a group says: the service's version, the one before."""

    version: str | None
    previous: str | None
    directory: str | None
    instances: int


def _read_deployed(path: Path) -> _Deployed | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DependencyError(f"cannot read {path}: {exc.strerror}", target=str(path)) from exc
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith(_HEADER) and ":" in line:
            key, value = line[len(_HEADER):].split(":", 1)
            fields[key.strip()] = value.strip()
    return _Deployed(
        version=fields.get("version") or None,
        previous=fields.get("previous") or None,
        directory=fields.get("directory") or None,
        instances=int(fields.get("instances") or 0),
    )


def _write_atomically(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all (the temp name does not match ``*.conf``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- artifacts ----------------------------------------------------------------------------


class UnsafeArtifact(ValueError):
    """A tarball member that would land outside the directory it is unpacked into."""


def _check_member(member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith("\\"):
        raise UnsafeArtifact(f"member {member.name!r} has an absolute path")
    if ".." in name.parts:
        raise UnsafeArtifact(f"member {member.name!r} leaves the directory ('..')")
    if member.issym() or member.islnk():
        target = PurePosixPath(member.linkname)
        if target.is_absolute() or ".." in target.parts:
            raise UnsafeArtifact(f"link {member.name!r} points outside ({member.linkname!r})")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeArtifact(f"member {member.name!r} is a device or fifo")


def unpack_tarball(data: bytes, target: Path) -> list[str]:
    """Unpack a (gzip) tarball into ``target``, which must not exist yet; return the names.

    Refuses (``UnsafeArtifact``, nothing written) absolute paths, ``..`` members, links out
    of the directory and devices, before extracting anything; extraction also runs
    tarfile's ``data`` filter. It unpacks beside ``target`` and renames the whole directory
    into place, so a crash never leaves a half-unpacked version that looks deployed.
    """
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.unpacking")
            tmp.mkdir()
            try:
                tar.extractall(tmp, members=members, filter="data")
                try:
                    os.rename(tmp, target)
                except OSError:
                    if not target.is_dir():
                        raise  # else: unpacked meanwhile; versions are immutable, keep it
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
    except tarfile.TarError as exc:
        raise UnsafeArtifact(f"not a readable tarball ({exc})") from exc
    return [m.name for m in members]


# --- the adapter --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Action:
    kind: str
    dc: str
    groups: tuple[str, ...]


def _action_id(kind: str, dc: str, groups: list[str]) -> str:
    """The id carries the DC and groups, so any process can judge the action later."""
    query = urlencode({"dc": dc, "groups": ",".join(groups), "n": uuid.uuid4().hex[:12]})
    return f"supervisord-{kind}?{query}"


def _parse_action_id(ref: ActionRef) -> _Action | None:
    head, _, query = ref.id.partition("?")
    if not head.startswith("supervisord-") or not query:
        return None
    fields = parse_qs(query)
    try:
        dc, groups = fields["dc"][0], fields["groups"][0]
    except (KeyError, IndexError):
        return None
    return _Action(head.removeprefix("supervisord-"), dc, tuple(g for g in groups.split(",") if g))


class Supervisord:
    """``ServiceControl`` and ``Compute`` over each DC's own supervisord (XML-RPC)."""

    def __init__(self, ctx: ToolContext) -> None:
        settings: SupervisordSettings = ctx.settings
        self.name = ctx.name
        self._ctx = ctx
        self._settings = settings
        missing = sorted(set(ctx.replicas) - set(settings.conf_dirs))
        if missing:
            raise InputError(f"ops_tools.{ctx.name}.settings.conf_dirs: no entry for "
                             f"{', '.join(missing)} (every replica's DC needs one)")
        self._timeout_s = settings.timeout_s or ctx.timeout_s
        password: SecretStr | None = secret(
            settings.password_env, settings.password_file,
            what=f"ops_tools.{ctx.name}.settings.password")
        self._auth: dict[str, SecretStr] = {}
        if settings.username and password is not None:
            pair = f"{settings.username}:{password.get_secret_value()}"
            self._auth["Authorization"] = SecretStr(
                "Basic " + base64.b64encode(pair.encode()).decode())
        self._endpoints: dict[str, ReplicatedEndpoint] = {}
        self._registries: dict[str, ReplicatedEndpoint] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._requests: dict[str, tuple[Hashable, asyncio.Future[ActionRef]]] = {}
        self._ended: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"Supervisord({self.name!r}, dcs={sorted(self._ctx.replicas)})"

    # --- ServiceControl -----------------------------------------------------------------

    async def state(self, service: str, dc: str) -> ServiceState:
        """The service's processes in ``dc``: its group and its extras."""
        group = self._program(service).group_of(service)
        processes = [p for p in await self._processes(dc) if _belongs(p["group"], group)]
        deployed = self._deployed(dc, group)
        return ServiceState(
            service=service,
            dc=dc,
            exists=bool(processes),
            instances=len(processes),
            healthy=sum(p["statename"] == RUNNING for p in processes),
            version=(deployed.version if deployed and deployed.version else "unknown"),
            busy=any(p["statename"] in (STARTING, STOPPING) for p in processes),
        )

    async def restart(
        self, service: str, dc: str, *, request_id: str | None = None
    ) -> ActionRef:
        """Stop the service's group in ``dc``, wait until it stopped, start it again.

        ``NotFoundError`` when ``dc``'s supervisord has no such group. The extras are left
        running: they are the emergency capacity a restart must not take away.
        """
        self._check_dc(dc)
        group = self._program(service).group_of(service)

        async def start() -> ActionRef:
            await self._stop_group(dc, group, self._program(service).stopwaitsecs)
            results = await self._rpc(dc, "supervisor.startProcessGroup", group, False)
            self._check_results(dc, "startProcessGroup", group, results, ALREADY_STARTED)
            return self._ref("restart", service, dc, [group])

        return await self._once(request_id, ("restart", service, dc), start)

    async def deploy(
        self, service: str, dc: str, instances: int, version: str, *,
        request_id: str | None = None,
    ) -> ActionRef:
        """Deploy ``version`` of the service in ``dc`` as ``instances`` processes.

        Pulls the artifact from ``dc``'s registry (``NotFoundError`` when it is not there),
        unpacks it (``PermanentOpsError`` for an unsafe tarball: nothing is written), writes
        the group's file and replaces the running group. The action is done when every
        instance is RUNNING.
        """
        self._check_deploy(service, dc, instances, version)

        async def start() -> ActionRef:
            return await self._deploy(service, dc, instances, version)

        return await self._once(request_id, ("deploy", service, dc, instances, version), start)

    async def set_version(
        self, service: str, dc: str, version: str | None, *, request_id: str | None = None
    ) -> ActionRef:
        """Redeploy ``version`` (None: the version deployed before the current one).

        Keeps the number of instances running now. ``ConflictError`` when no previous
        version is recorded or nothing of the service is deployed in ``dc``.
        """
        self._check_dc(dc)
        group = self._program(service).group_of(service)

        async def start() -> ActionRef:
            deployed = self._deployed(dc, group)
            chosen = version
            if chosen is None:
                if deployed is None or deployed.previous is None:
                    raise ConflictError(
                        f"{self.name}: no previous version of {service} recorded in {dc} "
                        "to go back to", tool=self.name, target=f"{service}@{dc}")
                chosen = deployed.previous
            running = [p for p in await self._processes(dc) if p["group"] == group]
            instances = len(running) or (deployed.instances if deployed else 0)
            if not instances and self._ctx.topology is not None:
                with contextlib.suppress(KeyError):
                    instances = self._ctx.topology.service(service).instances_in(dc)
            if not instances:
                raise ConflictError(
                    f"{self.name}: {service} has no instances in {dc} to set the version of",
                    tool=self.name, target=f"{service}@{dc}")
            self._check_deploy(service, dc, instances, chosen)
            return await self._deploy(service, dc, instances, chosen)

        return await self._once(request_id, ("set_version", service, dc, version), start)

    # --- Compute ------------------------------------------------------------------------

    async def provision(
        self, service: str, dc: str, count: int, *, request_id: str | None = None
    ) -> ActionRef:
        """Start ``count`` more instances of the service in ``dc``, touching no running one.

        ``QuotaError`` (nothing started) when ``count`` exceeds ``quota(dc)``. Each new
        instance is its own program ``<group>_extra_<k>``; the action is done when all are
        RUNNING.
        """
        self._check_dc(dc)
        program = self._program(service)
        if count < 1:
            raise PermanentOpsError(f"{self.name}: provision {count} instances of {service}: "
                                    "count must be at least 1", tool=self.name, target=service)
        if not program.command:
            raise NotFoundError(
                f"{self.name}: {service} has no settings.programs.{service}.command, so no "
                "instance of it can be started", tool=self.name, target=service)

        async def start() -> ActionRef:
            return await self._provision(service, dc, count)

        return await self._once(request_id, ("provision", service, dc, count), start)

    async def quota(self, dc: str) -> int | None:
        """``dc``'s ``spare_instances`` minus the extras already there; None: no limit."""
        self._check_dc(dc)
        spare = self._spare(dc)
        if spare is None:
            return None
        return max(0, spare - _extras(await self._processes(dc)))

    # --- actions, probe, close ----------------------------------------------------------

    async def action_status(self, ref: ActionRef) -> ActionStatus:
        """Done when every process the action started is RUNNING; failed on FATAL/EXITED."""
        action = _parse_action_id(ref) if ref.tool == self.name else None
        if action is None or action.dc not in self._ctx.replicas:
            raise NotFoundError(f"{self.name}: unknown action {ref.id} ({ref.kind} {ref.target})",
                                tool=self.name, target=ref.target)
        processes = await self._processes(action.dc)
        mine = [p for p in processes if p["group"] in action.groups]
        gone = sorted(set(action.groups) - {p["group"] for p in mine})
        if gone:
            return self._finished(ref, ActionState.failed,
                                  f"{', '.join(gone)} no longer loaded in {action.dc}'s "
                                  "supervisord")
        failed = [p for p in mine if p["statename"] in _FAILED_STATES]
        if failed:
            return self._finished(ref, ActionState.failed,
                                  await self._failure(action.dc, failed[0]))
        if all(p["statename"] == RUNNING for p in mine):
            return self._finished(ref, ActionState.done, None)
        return ActionStatus(ref=ref, state=ActionState.running)

    async def probe(self) -> dict[str, bool]:
        """Which DCs' supervisords answer ``getState`` with RUNNING now."""
        dcs = list(self._ctx.replicas)

        async def one(dc: str) -> bool:
            try:
                state = await self._rpc(dc, "supervisor.getState", idempotent=True)
            except OpsError:
                return False
            return isinstance(state, dict) and state.get("statename") == RUNNING

        return dict(zip(dcs, await asyncio.gather(*(one(dc) for dc in dcs)), strict=True))

    async def aclose(self) -> None:
        endpoints = [*self._endpoints.values(), *self._registries.values()]
        self._endpoints, self._registries = {}, {}
        for endpoint in endpoints:
            await endpoint.aclose()

    # --- deploy and provision -----------------------------------------------------------

    def _check_deploy(self, service: str, dc: str, instances: int, version: str) -> None:
        """Refuse a deploy that cannot work before anything is fetched or written."""
        self._check_dc(dc)
        program = self._program(service)
        target = f"{service}@{dc}"
        if not program.command:
            raise NotFoundError(
                f"{self.name}: {service} has no settings.programs.{service}.command, so it "
                "cannot be deployed", tool=self.name, target=target)
        if not 1 <= instances < program.extra_offset:
            raise PermanentOpsError(
                f"{self.name}: deploy {instances} instances of {service}: must be 1 to "
                f"{program.extra_offset - 1} (extra_offset)", tool=self.name, target=target)
        if not _VERSION.match(version):
            raise PermanentOpsError(
                f"{self.name}: version {version!r} of {service} is not a valid tag (letters, "
                "digits, _ . -; at most 128)", tool=self.name, target=target)
        for key in ("artifacts_dirs", "registry_urls"):
            if dc not in getattr(self._settings, key):
                raise DependencyError(
                    f"{self.name}: no settings.{key} entry for {dc}: cannot deploy there",
                    tool=self.name, target=target)

    async def _deploy(self, service: str, dc: str, instances: int, version: str) -> ActionRef:
        program = self._program(service)
        group = program.group_of(service)
        target = f"{service}@{dc}"
        directory = Path(self._settings.artifacts_dirs[dc]) / f"{service}-{version}"
        async with self._lock(dc):
            if not directory.is_dir():  # versions are immutable: an unpacked one is reused
                repository = self._settings.repositories.get(service, service)
                try:
                    tarball = await fetch_layer(self._registry(dc), repository, version)
                except EndpointError:
                    raise
                except OpsError as exc:
                    raise type(exc)(f"{self.name}: deploy {service} {version} in {dc}: {exc}",
                                    tool=self.name, target=target) from exc
                try:
                    await asyncio.to_thread(unpack_tarball, tarball, directory)
                except UnsafeArtifact as exc:
                    raise PermanentOpsError(
                        f"{self.name}: refused {repository}:{version} from {dc}'s registry: "
                        f"{exc}", tool=self.name, target=target) from exc
                except OSError as exc:
                    raise DependencyError(
                        f"{self.name}: cannot unpack {service} {version} into {directory}: "
                        f"{exc}", tool=self.name, target=target) from exc
            current = self._deployed(dc, group)
            previous = current.previous if current else None
            if current and current.version and current.version != version:
                previous = current.version
            header = [
                "; written by revive (supervisord adapter); the next deploy rewrites it",
                f"{_HEADER}service: {service}",
                f"{_HEADER}version: {version}",
                f"{_HEADER}previous: {previous or ''}",
                f"{_HEADER}directory: {directory}",
                f"{_HEADER}instances: {instances}",
                f"[group:{group}]",
                "programs=" + ",".join(f"{group}_{i:02d}" for i in range(instances)),
                "",
            ]
            sections = [
                self._section(program, f"{group}_{i:02d}", i, str(directory), service)
                for i in range(instances)
            ]
            path = self._group_file(dc, group)
            before = path.read_text() if path.exists() else None
            _write_atomically(path, "\n".join([*header, *sections]))
            try:
                await self._apply(dc, group)
            except BaseException as exc:
                # The file must keep saying what supervisord was last told to run, unless
                # the new one may have been applied (then the resend's outcome decides).
                if not (isinstance(exc, EndpointError) and exc.outcome_unknown):
                    if before is None:
                        path.unlink(missing_ok=True)
                    else:
                        _write_atomically(path, before)
                raise
        return self._ref("deploy", service, dc, [group])

    async def _apply(self, dc: str, group: str) -> None:
        """Make ``dc``'s supervisord run the group as its file now says."""
        answer = await self._rpc(dc, "supervisor.reloadConfig", idempotent=True)
        _, changed, _ = answer[0]
        loaded = {p["group"] for p in await self._processes(dc)}
        if group in loaded and group in changed:
            await self._stop_group(dc, group, self._program_of_group(group).stopwaitsecs)
            await self._rpc(dc, "supervisor.removeProcessGroup", group)
            await self._rpc(dc, "supervisor.addProcessGroup", group)
        elif group in loaded:  # same config (a resend after a restart of revive): just start it
            results = await self._rpc(dc, "supervisor.startProcessGroup", group, False)
            self._check_results(dc, "startProcessGroup", group, results, ALREADY_STARTED)
        else:
            await self._rpc(dc, "supervisor.addProcessGroup", group, allow=(ALREADY_ADDED,))

    async def _provision(self, service: str, dc: str, count: int) -> ActionRef:
        program = self._program(service)
        group = program.group_of(service)
        target = f"{service}@{dc}"
        async with self._lock(dc):  # the quota read and the start are one step per DC
            processes = await self._processes(dc)
            spare = self._spare(dc)
            left = None if spare is None else max(0, spare - _extras(processes))
            if left is not None and count > left:
                raise QuotaError(
                    f"{self.name}: {count} more instances of {service} asked in {dc}, the quota "
                    f"leaves {left} (spare_instances {spare}); nothing started",
                    tool=self.name, target=target)
            deployed = self._deployed(dc, group)
            directory = (deployed.directory if deployed else None) or program.directory
            conf = Path(self._settings.conf_dirs[dc])
            taken = [int(m["k"]) for p in processes
                     if (m := _EXTRA.match(p["group"])) and m["base"] == group]
            taken += [int(m["k"]) for f in conf.glob(f"revive-{group}_extra_*.conf")
                      if (m := _EXTRA.match(f.name[len("revive-"):-len(".conf")]))
                      and m["base"] == group]
            first = max(taken, default=0) + 1
            names = [f"{group}_extra_{k}" for k in range(first, first + count)]
            texts = [self._section(program, name, program.extra_offset + k - 1, directory,
                                   service) for k, name in enumerate(names, start=first)]
            files = [self._group_file(dc, name) for name in names]
            for path, text in zip(files, texts, strict=True):
                _write_atomically(path, text)
            added: set[str] = set()
            try:
                await self._rpc(dc, "supervisor.reloadConfig", idempotent=True)
                for name in names:
                    await self._rpc(dc, "supervisor.addProcessGroup", name,
                                    allow=(ALREADY_ADDED,))
                    added.add(name)
            finally:
                for name, path in zip(names, files, strict=True):
                    if name not in added:  # never leave a file an operator's update would start
                        path.unlink(missing_ok=True)
        return self._ref("provision", service, dc, names)

    def _section(self, program: ProgramSettings, name: str, instance: int,
                 directory: str | None, service: str) -> str:
        if program.command is None:
            raise NotFoundError(f"{self.name}: {service} has no command", tool=self.name,
                                target=service)
        if "{dir}" in program.command and not directory:
            raise ConflictError(
                f"{self.name}: the command of {service} uses {{dir}} but nothing is deployed "
                "and settings.programs has no directory", tool=self.name, target=service)
        port = (program.base_port or 0) + instance
        command = program.command.format(
            port=port, instance=instance, dir=_escape(directory or ""))
        return render_program(
            name, command, directory=directory, environment=program.environment,
            startsecs=program.startsecs, startretries=program.startretries,
            stopwaitsecs=program.stopwaitsecs)

    async def _stop_group(self, dc: str, group: str, stopwaitsecs: int) -> None:
        """Stop ``group`` and wait until none of its processes is stopping.

        ``stopProcessGroup`` without waiting, then polls: waiting inside the call would tie
        the HTTP request to the programs' ``stopwaitsecs``.
        """
        results = await self._rpc(dc, "supervisor.stopProcessGroup", group, False,
                                  idempotent=True)
        self._check_results(dc, "stopProcessGroup", group, results, NOT_RUNNING)
        deadline = time.monotonic() + stopwaitsecs + 5.0
        pause = 0.05
        while True:
            mine = [p for p in await self._processes(dc) if p["group"] == group]
            if not any(p["statename"] in _ACTIVE_STATES for p in mine):
                return
            if time.monotonic() > deadline:
                raise TransientOpsError(
                    f"{self.name}: {group} in {dc} still not stopped {stopwaitsecs + 5} s after "
                    "stopProcessGroup", tool=self.name, target=f"{group}@{dc}")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _check_results(self, dc: str, method: str, group: str, results: Any,
                       *fine: int) -> None:
        """A group call answers per process; any status but SUCCESS (or ``fine``) is a no."""
        bad = [r for r in results or []
               if isinstance(r, dict) and r.get("status") not in (SUCCESS, *fine)]
        if bad:
            detail = "; ".join(f"{r.get('group')}:{r.get('name')}: {r.get('description')}"
                               for r in bad)
            raise PermanentOpsError(f"{self.name}: {method}({group}) in {dc}: {detail}",
                                    tool=self.name, target=f"{group}@{dc}")

    async def _failure(self, dc: str, process: Mapping[str, Any]) -> str:
        """``group:name is FATAL (why); log: <tail>`` for a failed action."""
        name = f"{process['group']}:{process['name']}"
        why = process.get("spawnerr") or process.get("description") or ""
        text = f"{name} is {process['statename']}" + (f" ({why})" if why else "")
        with contextlib.suppress(OpsError):
            tail = await self._rpc(dc, "supervisor.tailProcessStdoutLog", name, 0,
                                   _LOG_EXCERPT, idempotent=True)
            excerpt = str(tail[0]).strip() if tail else ""
            if excerpt:
                text += f"; log: {excerpt[-_LOG_EXCERPT:]}"
        return text

    # --- plumbing -----------------------------------------------------------------------

    def _program(self, service: str) -> ProgramSettings:
        found = self._settings.programs.get(service)
        if found is not None:
            return found
        if not re.match(_NAME, service):
            raise NotFoundError(f"{self.name}: {service!r} is not a supervisord group name: "
                                "name its group under settings.programs", tool=self.name,
                                target=service)
        return ProgramSettings()

    def _program_of_group(self, group: str) -> ProgramSettings:
        for service, program in self._settings.programs.items():
            if program.group_of(service) == group:
                return program
        return ProgramSettings()

    def _check_dc(self, dc: str) -> None:
        if dc not in self._ctx.replicas:
            raise NotFoundError(
                f"{self.name}: no supervisord replica in {dc} (replicas: "
                f"{', '.join(sorted(self._ctx.replicas)) or 'none'})", tool=self.name, target=dc)

    def _spare(self, dc: str) -> int | None:
        topology = self._ctx.topology
        if topology is None:
            return None
        try:
            return topology.datacenter(dc).spare_instances
        except KeyError as exc:
            raise NotFoundError(f"{self.name}: {dc} is not a DC of the topology",
                                tool=self.name, target=dc) from exc

    def _group_file(self, dc: str, group: str) -> Path:
        return Path(self._settings.conf_dirs[dc]) / f"revive-{group}.conf"

    def _deployed(self, dc: str, group: str) -> _Deployed | None:
        return _read_deployed(self._group_file(dc, group))

    def _lock(self, dc: str) -> asyncio.Lock:
        return self._locks.setdefault(dc, asyncio.Lock())

    def _ref(self, kind: str, service: str, dc: str, groups: list[str]) -> ActionRef:
        return ActionRef(id=_action_id(kind, dc, groups), kind=kind,
                         target=f"{service}@{dc}", tool=self.name)

    def _finished(self, ref: ActionRef, state: ActionState, error: str | None) -> ActionStatus:
        ended = self._ended.setdefault(ref.id, time.time())
        while len(self._ended) > _MAX_REMEMBERED:
            self._ended.pop(next(iter(self._ended)))
        return ActionStatus(ref=ref, state=state, error=error, ended_at=ended)

    async def _once(self, request_id: str | None, key: Hashable,
                    start: Callable[[], Awaitable[ActionRef]]) -> ActionRef:
        """Start the action once per ``request_id``; a resend gets the first action back.

        A concurrent resend waits for the first call. A first call that failed is forgotten,
        so the request can be sent again (an unknown outcome says so in its error).
        """
        if request_id is None:
            return await start()
        known = self._requests.get(request_id)
        if known is not None:
            known_key, future = known
            if known_key != key:
                raise ConflictError(
                    f"{self.name}: request id {request_id} was already used for another "
                    f"action ({known_key})", tool=self.name, target=request_id)
            return await asyncio.shield(future)
        future: asyncio.Future[ActionRef] = asyncio.get_running_loop().create_future()
        self._requests[request_id] = (key, future)
        while len(self._requests) > _MAX_REMEMBERED:
            self._requests.pop(next(iter(self._requests)))
        try:
            ref = await start()
        except BaseException as exc:
            self._requests.pop(request_id, None)
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" noise when no resend waits
            raise
        future.set_result(ref)
        return ref

    def _endpoint(self, dc: str) -> ReplicatedEndpoint:
        """An endpoint over ``dc``'s supervisord alone: retried and breakered, never failed over."""
        self._check_dc(dc)
        endpoint = self._endpoints.get(dc)
        if endpoint is None:
            address = self._ctx.replicas[dc]
            if "://" not in address:
                address = f"http://{address}"
            endpoint = self._endpoints[dc] = self._ctx.endpoint(
                {dc: address.rstrip("/")}, timeout=self._timeout_s)
        return endpoint

    def _registry(self, dc: str) -> ReplicatedEndpoint:
        """An endpoint over ``dc``'s registry replica alone (never another DC's)."""
        endpoint = self._registries.get(dc)
        if endpoint is None:
            endpoint = self._registries[dc] = self._ctx.endpoint(
                {dc: self._settings.registry_urls[dc].rstrip("/")}, timeout=self._timeout_s)
        return endpoint

    async def _processes(self, dc: str) -> list[dict[str, Any]]:
        answer = await self._rpc(dc, "supervisor.getAllProcessInfo", idempotent=True)
        return [p for p in answer if isinstance(p, dict)]

    async def _rpc(self, dc: str, method: str, *params: Any, idempotent: bool = False,
                   allow: tuple[int, ...] = ()) -> Any:
        """One XML-RPC call to ``dc``'s supervisord; a fault in ``allow`` is returned.

        Faults are typed: BAD_NAME -> ``NotFoundError``, SHUTDOWN_STATE -> transient,
        ALREADY_STARTED / NOT_RUNNING / ALREADY_ADDED / STILL_RUNNING -> ``ConflictError``,
        any other -> ``PermanentOpsError``.
        """
        endpoint = self._endpoint(dc)
        body = xmlrpc.client.dumps(params, method, allow_none=False).encode()
        headers = {"Content-Type": "text/xml",
                   **{k: v.get_secret_value() for k, v in self._auth.items()}}
        target = f"{params[0] if params else method}@{dc}"
        try:
            response = await endpoint.request("POST", "/RPC2", content=body, headers=headers,
                                              idempotent=idempotent)
        except EndpointError as exc:
            raise EndpointError(
                f"{self.name}: supervisord in {dc} gave no answer to {method}: {exc}",
                tool=self.name, target=target, errors=exc.errors,
                outcome_unknown=exc.outcome_unknown) from exc
        if response.status_code in (401, 403):
            raise PermanentOpsError(
                f"{self.name}: supervisord in {dc} refused {method}: HTTP "
                f"{response.status_code} (check username and password)",
                tool=self.name, target=target)
        if response.status_code != 200:
            raise PermanentOpsError(
                f"{self.name}: supervisord in {dc} answered {method} with HTTP "
                f"{response.status_code}", tool=self.name, target=target)
        try:
            answer, _ = xmlrpc.client.loads(response.content, use_builtin_types=True)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode in allow:
                return fault
            raise self._fault(fault, dc, method, target) from None
        except (ExpatError, xmlrpc.client.ResponseError, ValueError) as exc:
            raise PermanentOpsError(
                f"{self.name}: {dc}'s {endpoint.replicas[dc]} is not an XML-RPC supervisord "
                f"({method}: {exc})", tool=self.name, target=target) from exc
        return answer[0] if answer else None

    def _fault(self, fault: xmlrpc.client.Fault, dc: str, method: str,
               target: str) -> OpsError:
        message = (f"{self.name}: supervisord in {dc} refused {method} on "
                   f"{target.rsplit('@', 1)[0]}: {fault.faultString} ({fault.faultCode})")
        code = fault.faultCode
        if code == BAD_NAME:
            return NotFoundError(message, tool=self.name, target=target)
        if code == SHUTDOWN_STATE:
            return TransientOpsError(message, tool=self.name, target=target)
        if code in _CONFLICTS:
            return ConflictError(message, tool=self.name, target=target)
        return PermanentOpsError(message, tool=self.name, target=target)


def _belongs(group: str, base: str) -> bool:
    """Whether process group ``group`` is ``base`` itself or one of its extras."""
    if group == base:
        return True
    match = _EXTRA.match(group)
    return bool(match and match["base"] == base)


def _extras(processes: list[dict[str, Any]]) -> int:
    """Extra instances revive started (groups named ``<group>_extra_<k>``) in one DC."""
    return sum(1 for p in processes if _EXTRA.match(p["group"]))


def _factory(ctx: ToolContext) -> Supervisord:
    return Supervisord(ctx)


ADAPTER = Adapter(
    name="supervisord",
    kinds={ToolKind.deploy: _factory, ToolKind.compute: _factory},
    settings=SupervisordSettings,
    summary="supervisord XML-RPC, one per DC: restart, deploy from the DC's registry, "
            "extra instances within spare_instances",
)
