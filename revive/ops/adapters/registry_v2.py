"""A Docker/OCI registry (HTTP API v2) as revive's ``Registry``: one registry per DC.

Why per DC and never with failover: each DC's registry is its own store, and the question
a runbook asks is whether THAT DC can pull an image (before deploying there) and, if not,
to copy it there from a DC that has it. Answering from another DC's registry would be a lie,
so every call goes to the named DC's replica only (an endpoint over that one replica, which
still retries it and keeps its breaker).

A copy checks what it moves: each blob's size and digest against the manifest's descriptor
(a registry stores a manifest whose sizes are wrong), copies only the blobs the target lacks,
and pushes the manifest's raw bytes last, so the target serves the same digest and a second
copy pushes nothing. It runs inside ``copy()``; the returned action is already done.
"""

from __future__ import annotations

import asyncio
import base64
import re
import string
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs, urlencode

import httpx
from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from revive.errors import DependencyError, NotFoundError, OpsError, PermanentOpsError
from revive.ops.adapters import oci
from revive.ops.endpoint import EndpointError, ReplicatedEndpoint
from revive.ops.models import ActionRef, ActionState, ActionStatus
from revive.ops.plugins import Adapter, AdapterSettings, ToolContext, secret
from revive.topology.models import ToolKind

__all__ = ["ADAPTER", "RegistryV2", "RegistryV2Settings"]

# The distribution spec's repository name and tag grammars.
_REPOSITORY = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_TAG_FIELDS = frozenset({"artifact", "version"})
COPY_KIND = "copy_artifact"
T = TypeVar("T")



def _repository(value: str) -> str:
    if len(value) > 255 or not re.fullmatch(_REPOSITORY, value):
        raise ValueError(f"{value!r} is not a repository path (lowercase letters, digits, "
                         "separators . _ __ -, components joined by /)")
    return value


Repository = Annotated[str, AfterValidator(_repository)]


class RegistryV2Settings(AdapterSettings):
    """``settings:`` of a ``registry-v2`` tool; every key is optional.

    ``repositories`` maps an artifact (a service's image) to its repository path when the
    two differ; ``tag_format`` builds the tag from ``{version}`` (and ``{artifact}``).
    Credentials are never in the topology: ``password_env`` or ``password_file`` names where
    the password is, for HTTP basic auth with ``username``.
    """

    repositories: dict[str, Repository] = Field(default_factory=dict)
    tag_format: str = "{version}"
    username: str | None = Field(None, min_length=1)
    password_env: str | None = Field(None, min_length=1)
    password_file: str | None = Field(None, min_length=1)
    timeout_s: float | None = Field(None, gt=0, le=3600)

    @field_validator("tag_format")
    @classmethod
    def _tag_format(cls, value: str) -> str:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"not a format string: {exc}") from exc
        unknown = fields - _TAG_FIELDS
        if unknown:
            raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}}: use {{version}} "
                             "and {artifact}")
        if "version" not in fields:
            raise ValueError("must contain {version}: every version needs its own tag")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> RegistryV2Settings:
        if self.password_env and self.password_file:
            raise ValueError("password_env and password_file: give one, not both")
        if self.username and not (self.password_env or self.password_file):
            raise ValueError("username needs password_env or password_file")
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("a password needs a username")
        return self


class RegistryV2:
    """``Registry`` over each DC's own registry (Distribution / any OCI registry)."""

    kind = "registry"

    def __init__(
        self,
        ctx: ToolContext,
        *,
        transport_factory: Callable[[], httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        """``transport_factory`` is for tests that watch the wire; the factory passes none."""
        settings: RegistryV2Settings = ctx.settings
        self.name = ctx.name
        self._ctx = ctx
        self._settings = settings
        self._timeout_s = settings.timeout_s or ctx.timeout_s
        self._transport_factory = transport_factory
        self._password: SecretStr | None = secret(
            settings.password_env, settings.password_file,
            what=f"ops_tools.{ctx.name}.settings.password")
        self._endpoints: dict[str, ReplicatedEndpoint] = {}
        self._actions: dict[str, ActionStatus] = {}
        self._by_request: dict[str, ActionRef] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"RegistryV2({self.name!r}, dcs={sorted(self._ctx.replicas)})"

    # --- Registry -----------------------------------------------------------------------

    async def has(self, artifact: str, version: str, dc: str) -> bool:
        """Whether ``dc``'s registry has ``artifact:version`` (a HEAD of its manifest)."""
        repository, tag = self._reference(artifact, version)
        digest = await self._call(
            dc, oci.manifest_digest(self._endpoint(dc), repository, tag))
        return digest is not None

    async def copy(
        self,
        artifact: str,
        version: str,
        src_dc: str,
        dst_dc: str,
        *,
        request_id: str | None = None,
    ) -> ActionRef:
        """Copy ``artifact:version`` from ``src_dc``'s registry to ``dst_dc``'s; done on return.

        A resend with the same ``request_id`` returns the first call's action without
        touching either registry. Raises ``NotFoundError`` when the source lacks it,
        ``PermanentOpsError`` when a blob does not match its descriptor (nothing is pushed
        for the manifest then), ``TransientOpsError`` when a registry cannot be reached.
        """
        ref = ActionRef(
            id=_action_id(artifact, version, src_dc, dst_dc, request_id),
            kind=COPY_KIND, target=f"{artifact}:{version}@{dst_dc}", tool=self.name)
        if request_id is None:
            await self._copy(artifact, version, src_dc, dst_dc)
            return self._done(ref)
        lock = self._locks.setdefault(request_id, asyncio.Lock())
        async with lock:  # a concurrent resend waits for the first one, then reuses it
            known = self._by_request.get(request_id)
            if known is not None:
                return known
            await self._copy(artifact, version, src_dc, dst_dc)
            self._by_request[request_id] = self._done(ref)
            return ref

    async def action_status(self, ref: ActionRef) -> ActionStatus:
        """How a copy is doing: copies finish inside ``copy()``, so known ones are done.

        A copy started by an earlier process (a resumed run) is judged by the target
        registry: done when the image is there, failed when it is not (any more).
        """
        known = self._actions.get(ref.id)
        if known is not None:
            return known
        params = _parse_action_id(ref) if ref.tool == self.name else None
        if params is None:
            raise NotFoundError(f"{self.name}: unknown action {ref.id} ({ref.kind} {ref.target})",
                                tool=self.name, target=ref.target)
        artifact, version, dst_dc = params
        if await self.has(artifact, version, dst_dc):
            return ActionStatus(ref=ref, state=ActionState.done)
        return ActionStatus(ref=ref, state=ActionState.failed,
                            error=f"{artifact}:{version} is not in {dst_dc}'s registry")

    async def probe(self) -> dict[str, bool]:
        """Which DCs' registries answer ``GET /v2/`` now (401 counts: it answered)."""
        dcs = list(self._ctx.replicas)

        async def one(dc: str) -> bool:
            try:
                response = await self._endpoint(dc).request("GET", "/v2/")
            except EndpointError:
                return False
            return response.status_code < 500

        return dict(zip(dcs, await asyncio.gather(*(one(dc) for dc in dcs)), strict=True))

    async def aclose(self) -> None:
        endpoints, self._endpoints = list(self._endpoints.values()), {}
        for endpoint in endpoints:
            await endpoint.aclose()

    # --- the copy -----------------------------------------------------------------------

    async def _copy(self, artifact: str, version: str, src_dc: str, dst_dc: str) -> None:
        repository, tag = self._reference(artifact, version)
        src, dst = self._endpoint(src_dc), self._endpoint(dst_dc)
        image = f"{repository}:{tag}"
        manifest = await self._call(src_dc, oci.get_manifest(src, repository, tag))
        if manifest is None:
            raise NotFoundError(f"{self.name}: {image} is not in {src_dc}'s registry",
                                tool=self.name, target=f"{artifact}:{version}@{src_dc}")
        if src_dc == dst_dc:
            return
        present = await self._call(dst_dc, oci.manifest_digest(dst, repository, tag))
        if present == manifest.digest:
            return  # already there, same bytes: push nothing
        missing = await self._missing_blobs(manifest, repository, src_dc, dst_dc)
        for descriptor in missing:
            data = await self._call(src_dc, oci.fetch_blob(src, repository, descriptor))
            await self._call(dst_dc, oci.push_blob(dst, repository, data, descriptor.digest))
        await self._call(
            dst_dc, oci.put_manifest(dst, repository, tag, manifest.raw, manifest.media_type))

    async def _missing_blobs(
        self, manifest: oci.Manifest, repository: str, src_dc: str, dst_dc: str
    ) -> list[oci.Descriptor]:
        """The blobs ``dst_dc`` lacks, after checking every size before anything is pushed."""
        missing: dict[str, oci.Descriptor] = {}
        for descriptor in manifest.blobs:
            if descriptor.digest in missing:
                continue
            dst_size = await self._call(
                dst_dc, oci.blob_size(self._endpoint(dst_dc), repository, descriptor.digest))
            size = dst_size
            if size is None:
                missing[descriptor.digest] = descriptor
                size = await self._call(
                    src_dc, oci.blob_size(self._endpoint(src_dc), repository, descriptor.digest))
                if size is None:
                    raise NotFoundError(
                        f"{self.name}: {repository}@{descriptor.digest} named by "
                        f"{repository}@{manifest.digest} is not in {src_dc}'s registry",
                        tool=self.name, target=f"{repository}@{src_dc}")
            if size >= 0 and size != descriptor.size:
                where = src_dc if dst_size is None else dst_dc
                raise PermanentOpsError(
                    f"{self.name}: {repository}@{manifest.digest}: blob {descriptor.digest} is "
                    f"{size} bytes in {where}'s registry, its descriptor says "
                    f"{descriptor.size}; not copied", tool=self.name, target=repository)
        return list(missing.values())

    # --- plumbing -----------------------------------------------------------------------

    def _reference(self, artifact: str, version: str) -> tuple[str, str]:
        """(repository, tag) of an artifact's version, per ``repositories``/``tag_format``."""
        repository = self._settings.repositories.get(artifact, artifact)
        if not re.fullmatch(_REPOSITORY, repository):
            raise PermanentOpsError(
                f"{self.name}: {artifact!r} is not a registry repository name: map it under "
                "settings.repositories", tool=self.name, target=artifact)
        tag = self._settings.tag_format.format(artifact=artifact, version=version)
        if not _TAG.match(tag):
            raise PermanentOpsError(
                f"{self.name}: tag {tag!r} for {artifact} {version} is not a valid registry tag "
                "(letters, digits, _ . -; at most 128): adjust settings.tag_format",
                tool=self.name, target=f"{artifact}:{version}")
        return repository, tag

    def _endpoint(self, dc: str) -> ReplicatedEndpoint:
        """An endpoint over ``dc``'s registry alone: retried and breakered, never failed over."""
        endpoint = self._endpoints.get(dc)
        if endpoint is not None:
            return endpoint
        address = self._ctx.replicas.get(dc)
        if address is None:
            raise DependencyError(
                f"{self.name}: no registry replica in {dc} (replicas: "
                f"{', '.join(sorted(self._ctx.replicas)) or 'none'})", tool=self.name, target=dc)
        if "://" not in address:
            address = f"https://{address}"
        headers: dict[str, str] = {}
        if self._settings.username and self._password is not None:
            pair = f"{self._settings.username}:{self._password.get_secret_value()}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        kwargs: dict[str, Any] = {"timeout": self._timeout_s, "headers": headers}
        if self._transport_factory is not None:
            kwargs["transport_factory"] = self._transport_factory
        endpoint = self._endpoints[dc] = self._ctx.endpoint({dc: address.rstrip("/")}, **kwargs)
        return endpoint

    async def _call(self, dc: str, call: Awaitable[T]) -> T:
        """Await an ``oci`` call, naming this tool and the DC in any error it raises."""
        try:
            return await call
        except EndpointError:
            raise  # already names the tool and the replica
        except OpsError as exc:
            raise type(exc)(f"{self.name} ({dc}): {exc}", tool=self.name,
                            target=exc.target or dc) from exc

    def _done(self, ref: ActionRef) -> ActionRef:
        self._actions[ref.id] = ActionStatus(ref=ref, state=ActionState.done)
        return ref


def _action_id(artifact: str, version: str, src_dc: str, dst_dc: str, request_id: str | None
               ) -> str:
    """The action's id carries what it copied, so any process can tell how it ended."""
    fields = {"artifact": artifact, "version": version, "src": src_dc, "dst": dst_dc}
    if request_id is not None:
        fields["request"] = request_id
    return f"{COPY_KIND}?{urlencode(fields)}"


def _parse_action_id(ref: ActionRef) -> tuple[str, str, str] | None:
    if ref.kind != COPY_KIND or not ref.id.startswith(f"{COPY_KIND}?"):
        return None
    query = parse_qs(ref.id.split("?", 1)[1])
    try:
        return query["artifact"][0], query["version"][0], query["dst"][0]
    except (KeyError, IndexError):
        return None


def _registry(ctx: ToolContext) -> RegistryV2:
    return RegistryV2(ctx)


ADAPTER = Adapter(
    name="registry-v2",
    kinds={ToolKind.registry: _registry},
    settings=RegistryV2Settings,
    summary="Docker/OCI registry HTTP API v2, one registry per DC: has, copy between DCs",
)
