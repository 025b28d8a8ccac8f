"""Kubernetes Deployments as the deploy tool (ServiceControl) and emergency compute (Compute).

One cluster API per DC (the tool's ``replicas: {dc: "https://api.k8s.dc1:6443"}``), and the
method's ``dc`` says which cluster to act on: a DC's Deployment is never touched through
another DC's API. Each DC's API is a ``ReplicaSet`` of one, so it still gets a breaker and
bounded retries. Every change is a strategic merge patch of the Deployment carrying
``metadata.resourceVersion`` (the API server refuses it with 409 if the object changed since
we read it) and the action's request id in the annotation ``revive.io/requests``: a resent
request (a retried patch, a resumed run) finds its id there and patches nothing again.

Why annotations on the Deployment rather than memory: a resumed run is a new process, and
the cluster is the only record both runs share (request ids, the image to roll back to, the
instances revive provisioned against the DC's spare quota).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, unquote

import aiohttp
from kubernetes_asyncio.client import (
    ApiClient,
    ApiException,
    AppsV1Api,
    Configuration,
    V1Container,
    V1Deployment,
    VersionApi,
)
from pydantic import Field, SecretStr, StringConstraints, field_validator, model_validator

from revive.errors import (
    ConflictError,
    NotFoundError,
    OpsError,
    PermanentOpsError,
    QuotaError,
)
from revive.ops.models import ActionRef, ActionState, ActionStatus, ServiceState
from revive.ops.plugins import Adapter, AdapterSettings, ToolContext, secret
from revive.ops.replicas import EndpointError, Failure, ReplicaSet, describe, os_failure
from revive.topology.models import ToolKind

T = TypeVar("T")

STRATEGIC_MERGE = "application/strategic-merge-patch+json"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
PREVIOUS_IMAGE = "revive.io/previous-image"
PROVISIONED = "revive.io/provisioned"
REQUESTS = "revive.io/requests"
#: Request ids remembered per Deployment: far more than a run resends.
KEEP_REQUESTS = 20
#: Read-modify-write rounds when the Deployment changes between our read and our patch.
CONFLICT_ROUNDS = 3

K8sName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                                           max_length=253)]


class KubeService(AdapterSettings):
    """Where one revive service lives in each DC's cluster."""

    namespace: K8sName
    deployment: K8sName
    container: K8sName | None = None
    """The container whose image is the service's version (default: the first one)."""
    image: str | None = None
    """``"<repo>:{version}"``: the image of a version (default: the current repo, new tag)."""

    @field_validator("image")
    @classmethod
    def _one_version_placeholder(cls, value: str | None) -> str | None:
        """A template without ``{version}`` would deploy the same image for every version."""
        if value is None:
            return value
        rest = value.replace("{version}", "", 1)
        if "{version}" not in value or "{" in rest or "}" in rest:
            raise ValueError('must contain "{version}" exactly once and no other braces')
        return value


class KubernetesSettings(AdapterSettings):
    """``settings:`` of a ``kubernetes`` tool (kind ``deploy`` or ``compute``)."""

    services: dict[str, KubeService] = Field(min_length=1)
    token_env: str | None = None
    token_file: str | None = None
    ca_file: str | None = None
    insecure_skip_tls_verify: bool = False
    timeout_s: float | None = Field(None, gt=0, le=600)

    @model_validator(mode="after")
    def _one_source_each(self) -> KubernetesSettings:
        """Two token sources or two TLS rules leave it unclear which one applies."""
        if self.token_env and self.token_file:
            raise ValueError("set token_env or token_file, not both")
        if self.ca_file and self.insecure_skip_tls_verify:
            raise ValueError("set ca_file or insecure_skip_tls_verify, not both")
        return self


@dataclass(frozen=True)
class _Target:
    """One service's Deployment in one DC's cluster."""

    service: str
    dc: str
    namespace: str
    deployment: str
    settings: KubeService

    @property
    def label(self) -> str:
        return f"{self.service}@{self.dc}"

    @property
    def where(self) -> str:
        return f"deployment {self.namespace}/{self.deployment} in {self.dc}'s cluster"


@dataclass(frozen=True)
class _Refused:
    """The API server answered and said no (4xx): not a replica failure, mapped by caller."""

    exc: BaseException


Change = Callable[[V1Deployment], Awaitable[dict[str, Any]]]


class KubernetesTool:
    """Deployments in each DC's cluster: ServiceControl and Compute over kubernetes_asyncio."""

    def __init__(self, ctx: ToolContext) -> None:
        settings: KubernetesSettings = ctx.settings
        self.name = ctx.name
        self._ctx = ctx
        self._settings = settings
        self._urls = {dc: url.rstrip("/") for dc, url in ctx.replicas.items()}
        self._timeout = settings.timeout_s or ctx.timeout_s
        self._token: SecretStr | None = secret(
            settings.token_env, settings.token_file, what=f"ops tool {ctx.name}: token")
        self._token_mtime = self._mtime()
        self._sets: dict[str, ReplicaSet] = {}
        self._clients: dict[str, ApiClient] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"KubernetesTool({self.name!r}, dcs={sorted(self._urls)})"

    # ServiceControl

    async def state(self, service: str, dc: str) -> ServiceState:
        """The Deployment as it is: replicas, ready ones, the image tag, rollout in progress."""
        target = self._target(service, dc)
        dep = await self._read(target, missing_ok=True)
        if dep is None:
            return ServiceState(service=service, dc=dc, exists=False, instances=0, healthy=0,
                                version="")
        spec, status = dep.spec, dep.status
        replicas = spec.replicas if spec.replicas is not None else 1
        busy = (status is None
                or (status.observed_generation or 0) < (dep.metadata.generation or 0)
                or (status.updated_replicas or 0) < replicas)
        return ServiceState(
            service=service, dc=dc, exists=True, instances=replicas,
            healthy=(status.ready_replicas or 0) if status else 0,
            version=_version_of(self._container(dep, target).image or "", target.settings),
            busy=busy,
        )

    async def restart(self, service: str, dc: str, *, request_id: str | None = None) -> ActionRef:
        """A rolling restart, as ``kubectl rollout restart`` does it: a new pod template
        annotation makes the controller replace every pod."""
        target = self._target(service, dc)

        async def change(dep: V1Deployment) -> dict[str, Any]:
            now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
            return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}

        return await self._act(target, "restart", request_id, change)

    async def deploy(
        self, service: str, dc: str, instances: int, version: str, *,
        request_id: str | None = None,
    ) -> ActionRef:
        """The version's image on ``instances`` replicas, in one patch (one rollout)."""
        target = self._target(service, dc)
        if instances < 0:
            raise PermanentOpsError(f"{self.name}: cannot deploy {instances} instances of "
                                    f"{target.label}", tool=self.name, target=target.label)

        async def change(dep: V1Deployment) -> dict[str, Any]:
            patch = self._image_patch(dep, target, version)
            patch.setdefault("spec", {})["replicas"] = instances
            return patch

        return await self._act(target, "deploy", request_id, change)

    async def set_version(
        self, service: str, dc: str, version: str | None, *, request_id: str | None = None
    ) -> ActionRef:
        """Set the container's image; ``None`` goes back to the image revive replaced last."""
        target = self._target(service, dc)

        async def change(dep: V1Deployment) -> dict[str, Any]:
            return self._image_patch(dep, target, version)

        return await self._act(target, "set_version", request_id, change)

    # Compute

    async def provision(
        self, service: str, dc: str, count: int, *, request_id: str | None = None
    ) -> ActionRef:
        """``count`` more replicas, within the DC's spare instances (QuotaError otherwise)."""
        target = self._target(service, dc)
        if count < 1:
            raise PermanentOpsError(f"{self.name}: cannot provision {count} instances of "
                                    f"{target.label}", tool=self.name, target=target.label)

        async def change(dep: V1Deployment) -> dict[str, Any]:
            left = await self.quota(dc)
            if left is not None and count > left:
                raise QuotaError(
                    f"{self.name}: {count} more instances of {target.label} exceed the quota "
                    f"left in {dc} ({left} of the DC's spare instances)",
                    tool=self.name, target=target.label)
            replicas = dep.spec.replicas if dep.spec.replicas is not None else 1
            added = _int_annotation(dep, PROVISIONED) + count
            return {"metadata": {"annotations": {PROVISIONED: str(added)}},
                    "spec": {"replicas": replicas + count}}

        return await self._act(target, "provision", request_id, change)

    async def quota(self, dc: str) -> int | None:
        """The DC's ``spare_instances`` less what revive provisioned there (read from the
        Deployments' annotations, so every run sees the same count); None: no limit."""
        self._url(dc)
        topology = self._ctx.topology
        if topology is None:
            return None
        try:
            spare = topology.datacenter(dc).spare_instances
        except KeyError:
            raise NotFoundError(f"{self.name}: unknown datacenter {dc!r}", tool=self.name,
                                target=dc) from None
        if spare is None:
            return None
        used = 0
        seen: set[tuple[str, str]] = set()
        for service in self._settings.services:
            target = self._target(service, dc)
            if (target.namespace, target.deployment) in seen:
                continue
            seen.add((target.namespace, target.deployment))
            dep = await self._read(target, missing_ok=True)
            used += _int_annotation(dep, PROVISIONED) if dep is not None else 0
        return max(0, spare - used)

    # Actions, probes, lifecycle

    async def action_status(self, ref: ActionRef) -> ActionStatus:
        """Done when the rollout is complete, failed past the progress deadline."""
        try:
            dc, namespace, deployment, _ = (unquote(p) for p in ref.id.split("/"))
        except ValueError:
            raise NotFoundError(f"{self.name}: {ref.id!r} is not an action of this tool",
                                tool=self.name, target=ref.target) from None
        self._url(dc)  # a DC this tool has no API for: NotFoundError, not "gone"
        service = ref.target.rsplit("@", 1)[0]
        settings = KubeService.model_construct(namespace=namespace, deployment=deployment)
        target = _Target(service, dc, namespace, deployment, settings)
        dep = await self._read(target, missing_ok=True)
        if dep is None:
            return ActionStatus(ref=ref, state=ActionState.failed, ended_at=time.time(),
                                error=f"{self.name}: {target.where} is gone")
        if _rollout_complete(dep):
            return ActionStatus(ref=ref, state=ActionState.done, ended_at=_ended(dep))
        for cond in (dep.status.conditions or []) if dep.status else []:
            if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
                return ActionStatus(
                    ref=ref, state=ActionState.failed, ended_at=_ended(dep),
                    error=f"{self.name}: rollout of {target.where} exceeded its progress "
                          f"deadline: {cond.message or 'no message'}")
        return ActionStatus(ref=ref, state=ActionState.running)

    async def probe(self) -> dict[str, bool]:
        """Which DCs' cluster APIs answer ``GET /version`` now (one try each, no retries)."""

        async def one(dc: str) -> bool:
            try:
                async with asyncio.timeout(self._timeout):
                    await VersionApi(self._client(dc)).get_code(_request_timeout=self._timeout)
            except (ApiException, aiohttp.ClientError, OSError, TimeoutError):
                return False
            return True

        dcs = sorted(self._urls)
        return dict(zip(dcs, await asyncio.gather(*(one(dc) for dc in dcs)), strict=True))

    async def aclose(self) -> None:
        self._closed = True
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    # The read-modify-write of one Deployment

    async def _act(
        self, target: _Target, kind: str, request_id: str | None, change: Change
    ) -> ActionRef:
        """Patch once per request id: read, skip if already recorded, patch with the id.

        A 409 means the Deployment changed since the read: either another writer, or our
        own earlier attempt that applied without an answer; reading again tells which.
        """
        marker = request_id or uuid.uuid4().hex
        ref = ActionRef(id="/".join(quote(p, safe="") for p in
                                    (target.dc, target.namespace, target.deployment, marker)),
                        kind=kind, target=target.label, tool=self.name)
        for _ in range(CONFLICT_ROUNDS):
            dep = await self._read(target)
            recorded = _requests(dep)
            if marker in recorded:
                return ref
            patch = await change(dep)
            meta = patch.setdefault("metadata", {})
            meta["resourceVersion"] = dep.metadata.resource_version
            meta.setdefault("annotations", {})[REQUESTS] = json.dumps(
                [*recorded, marker][-KEEP_REQUESTS:])
            try:
                await self._patch(target, patch, what=kind)
            except ConflictError:
                continue
            return ref
        raise ConflictError(
            f"{self.name}: {kind} of {target.label}: {target.where} kept changing while revive "
            f"patched it ({CONFLICT_ROUNDS} tries); another controller is writing to it",
            tool=self.name, target=target.label)

    def _image_patch(
        self, dep: V1Deployment, target: _Target, version: str | None
    ) -> dict[str, Any]:
        """The container's new image, remembering the one it replaces for a rollback."""
        container = self._container(dep, target)
        current = container.image or ""
        annotations = dep.metadata.annotations or {}
        if version is None:
            image = annotations.get(PREVIOUS_IMAGE)
            if not image:
                raise ConflictError(
                    f"{self.name}: no previous version of {target.label} to go back to: revive "
                    f"records it ({PREVIOUS_IMAGE}) only when it sets a version",
                    tool=self.name, target=target.label)
        else:
            image = _image_for(current, version, target.settings)
        patch: dict[str, Any] = {
            "spec": {"template": {"spec": {"containers": [
                {"name": container.name, "image": image}]}}}}
        if image != current:
            patch["metadata"] = {"annotations": {PREVIOUS_IMAGE: current}}
        return patch

    # One call to one DC's cluster API

    async def _read(self, target: _Target, *, missing_ok: bool = False) -> V1Deployment | None:
        try:
            return await self._call(
                target, "read",
                lambda api: api.read_namespaced_deployment(
                    target.deployment, target.namespace, _request_timeout=self._timeout),
                idempotent=True)
        except NotFoundError:
            if missing_ok:
                return None
            raise

    async def _patch(self, target: _Target, body: dict[str, Any], *, what: str) -> None:
        # kubernetes_asyncio picks strategic merge for a dict body already; said explicitly
        # because a JSON merge patch would replace the whole containers list.
        # Idempotent: the body sets absolute values and carries resourceVersion, so a resend
        # of an applied patch is refused with 409, which _act reads as "look again".
        await self._call(
            target, f"{what} patch",
            lambda api: api.patch_namespaced_deployment(
                target.deployment, target.namespace, body, _content_type=STRATEGIC_MERGE,
                _request_timeout=self._timeout),
            idempotent=True)

    async def _call(
        self, target: _Target, what: str, fn: Callable[[AppsV1Api], Awaitable[T]], *,
        idempotent: bool,
    ) -> T:
        """``fn`` against ``target.dc``'s API only, through that DC's replica rules."""
        dc = target.dc
        description = f"{what} of {target.where}"

        async def attempt(_: str) -> T | Failure | _Refused:
            try:
                async with asyncio.timeout(self._timeout):
                    return await fn(AppsV1Api(self._client(dc)))
            except ApiException as exc:
                return _api_failure(exc)
            except TimeoutError as exc:
                return Failure(f"no answer within {self._timeout:g} s", exc)
            except aiohttp.ClientSSLError as exc:  # a certificate or TLS set-up problem
                return _Refused(exc)
            except aiohttp.ClientConnectorError as exc:
                return Failure(describe(exc), exc, unsent=True)
            except (aiohttp.ClientError, OSError) as exc:
                return os_failure(exc)

        try:
            result = await self._replica_set(dc).call(
                attempt, what=description, idempotent=idempotent, check_open=self._check_open)
        except EndpointError as exc:
            exc.target = target.label
            raise
        if isinstance(result, _Refused):
            raise self._refusal(result.exc, target, description)
        return result

    def _refusal(self, exc: BaseException, target: _Target, what: str) -> OpsError:
        """The typed error for an answer that says no."""
        where = dict(tool=self.name, target=target.label)
        if not isinstance(exc, ApiException):
            how = "ca_file" if self._settings.ca_file else "ca_file (or insecure_skip_tls_verify)"
            return PermanentOpsError(f"{self.name}: {what}: TLS verification of "
                                     f"{self._urls[target.dc]} failed ({describe(exc)}); "
                                     f"check {how}", **where)
        detail = _status_message(exc)
        if exc.status == 404:
            return NotFoundError(f"{self.name}: {target.where} not found ({detail})", **where)
        if exc.status == 409:
            return ConflictError(f"{self.name}: {what}: conflict ({detail})", **where)
        if exc.status in (401, 403):
            source = (f"token_env {self._settings.token_env}" if self._settings.token_env else
                      f"token_file {self._settings.token_file}" if self._settings.token_file
                      else "no token is configured (token_env/token_file)")
            why = ("the API server did not accept the token" if exc.status == 401 else
                   "the token's account may not do this (RBAC)")
            return PermanentOpsError(f"{self.name}: {what}: {exc.status} {exc.reason}: {why}; "
                                     f"check the token ({source})", **where)
        return PermanentOpsError(f"{self.name}: {what}: {exc.status} {exc.reason} ({detail})",
                                 **where)

    # Per-DC plumbing, built lazily

    def _target(self, service: str, dc: str) -> _Target:
        self._url(dc)
        found = self._settings.services.get(service)
        if found is None:
            raise NotFoundError(
                f"{self.name}: service {service!r} has no Deployment in settings.services "
                f"(configured: {', '.join(sorted(self._settings.services))})",
                tool=self.name, target=f"{service}@{dc}")
        return _Target(service, dc, found.namespace, found.deployment, found)

    def _url(self, dc: str) -> str:
        if dc not in self._urls:
            raise NotFoundError(
                f"{self.name}: no cluster API for datacenter {dc!r} (replicas: "
                f"{', '.join(sorted(self._urls))})", tool=self.name, target=dc)
        return self._urls[dc]

    def _replica_set(self, dc: str) -> ReplicaSet:
        if dc not in self._sets:
            self._sets[dc] = self._ctx.replica_set({dc: self._url(dc)})
        return self._sets[dc]

    def _client(self, dc: str) -> ApiClient:
        self._check_open()
        if dc not in self._clients:
            config = Configuration(host=self._url(dc))
            if self._token is not None:
                config.api_key = {"BearerToken": self._token.get_secret_value()}
                config.api_key_prefix = {"BearerToken": "Bearer"}
                if self._settings.token_file:
                    config.refresh_api_key_hook = self._refresh_token
            if self._settings.ca_file:
                config.ssl_ca_cert = self._settings.ca_file
            if self._settings.insecure_skip_tls_verify:
                config.verify_ssl = False
            self._clients[dc] = ApiClient(config)
        return self._clients[dc]

    def _refresh_token(self, config: Configuration) -> None:
        """Service-account tokens in files are rotated by the kubelet: re-read on change."""
        mtime = self._mtime()
        if mtime == self._token_mtime:
            return
        token = secret(None, self._settings.token_file, what=f"ops tool {self.name}: token")
        self._token, self._token_mtime = token, mtime
        if token is not None:
            config.api_key = {"BearerToken": token.get_secret_value()}

    def _mtime(self) -> float | None:
        if not self._settings.token_file:
            return None
        with contextlib.suppress(OSError):
            return os.stat(self._settings.token_file).st_mtime
        return None

    def _check_open(self) -> None:
        if self._closed:
            raise PermanentOpsError(f"{self.name}: the adapter is closed", tool=self.name)

    def _container(self, dep: V1Deployment, target: _Target) -> V1Container:
        containers: list[V1Container] = (dep.spec.template.spec.containers or []
                                         if dep.spec and dep.spec.template.spec else [])
        wanted = target.settings.container
        for container in containers:
            if wanted is None or container.name == wanted:
                return container
        if wanted is None:
            raise ConflictError(f"{self.name}: {target.where} has no container",
                                tool=self.name, target=target.label)
        raise NotFoundError(
            f"{self.name}: {target.where} has no container {wanted!r} (it has: "
            f"{', '.join(c.name for c in containers)})", tool=self.name, target=target.label)


def _api_failure(exc: ApiException) -> Failure | _Refused:
    """5xx and 429 are the replica's trouble (retry); any other answer is a refusal."""
    status = exc.status or 0
    if status == 429:
        return Failure(f"429 {exc.reason}", exc, counts=False, unsent=True,
                       retry_after=_retry_after(exc))
    if status >= 500:
        return Failure(f"{status} {exc.reason}: {_status_message(exc)}", exc)
    return _Refused(exc)


def _retry_after(exc: ApiException) -> float:
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        return float((exc.headers or {}).get("Retry-After", 0))
    return 0.0


def _status_message(exc: ApiException) -> str:
    """The ``message`` of the API server's Status object, or its reason phrase."""
    with contextlib.suppress(TypeError, ValueError, AttributeError):
        body = json.loads(exc.body)
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    return str(exc.reason or "no message")


def _requests(dep: V1Deployment) -> list[str]:
    raw = (dep.metadata.annotations or {}).get(REQUESTS)
    with contextlib.suppress(TypeError, ValueError):
        found = json.loads(raw) if raw else []
        if isinstance(found, list):
            return [str(x) for x in found]
    return []


def _int_annotation(dep: V1Deployment, key: str) -> int:
    with contextlib.suppress(TypeError, ValueError):
        return max(0, int((dep.metadata.annotations or {}).get(key, 0)))
    return 0


def _rollout_complete(dep: V1Deployment) -> bool:
    """As ``kubectl rollout status`` sees it: the controller saw the latest spec and every
    replica is updated, ready and available, with no old one left."""
    status = dep.status
    if status is None:
        return False
    wanted = dep.spec.replicas if dep.spec.replicas is not None else 1
    counts: Iterable[int | None] = (status.updated_replicas, status.ready_replicas,
                                    status.available_replicas, status.replicas)
    return ((status.observed_generation or 0) >= (dep.metadata.generation or 0)
            and all((n or 0) == wanted for n in counts))


def _ended(dep: V1Deployment) -> float:
    for cond in (dep.status.conditions or []) if dep.status else []:
        if cond.type == "Progressing" and cond.last_update_time is not None:
            return float(cond.last_update_time.timestamp())
    return time.time()


def _split_image(image: str) -> tuple[str, str | None]:
    """``repo`` and its tag (``None`` if untagged); a digest counts as the tag."""
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, digest
    slash, colon = image.rfind("/"), image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1:]
    return image, None


def _version_of(image: str, settings: KubeService) -> str:
    """The version an image stands for: the template's ``{version}`` part, else its tag."""
    if settings.image:
        prefix, suffix = settings.image.split("{version}")
        if (image.startswith(prefix) and image.endswith(suffix)
                and len(image) > len(prefix) + len(suffix)):
            return image[len(prefix):len(image) - len(suffix)]
    if not image:
        return ""
    return _split_image(image)[1] or "latest"


def _image_for(current: str, version: str, settings: KubeService) -> str:
    if settings.image:
        return settings.image.replace("{version}", version)
    return f"{_split_image(current)[0]}:{version}"


def _factory(ctx: ToolContext) -> KubernetesTool:
    return KubernetesTool(ctx)


ADAPTER = Adapter(
    name="kubernetes",
    kinds={ToolKind.deploy: _factory, ToolKind.compute: _factory},
    settings=KubernetesSettings,
    summary="Kubernetes Deployments per DC cluster (deploy, compute) via kubernetes_asyncio",
)
