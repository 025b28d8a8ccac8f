"""The few OCI distribution (registry HTTP API v2) calls revive needs, shared by its adapters.

Why a module of its own: the registry adapter copies images between DC replicas, the
supervisord adapter's emergency deploy fetches a build from a DC's registry, and the lab
pushes builds into each DC's registry. They all speak the same handful of requests, and the
traps are the same everywhere: the ``Accept`` header a manifest needs, the upload
``Location`` whose query carries the upload state, and a registry that stores a descriptor
whose size is wrong. Everything here verifies what it reads (size and digest) itself.

The functions take a ``ReplicatedEndpoint`` (the adapters' replica rules) or a plain
``httpx.AsyncClient`` whose ``base_url`` is one registry (the lab, scripts). A registry's DC
replicas are separate stores: hand these functions an endpoint over the ONE replica to act
on, never one that could fail over to another DC's registry half-way through an upload.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from revive.errors import NotFoundError, PermanentOpsError, TransientOpsError
from revive.ops.endpoint import ReplicatedEndpoint

__all__ = [
    "MANIFEST_ACCEPT",
    "OCI_CONFIG_EMPTY",
    "OCI_LAYER_GZIP",
    "OCI_MANIFEST",
    "Descriptor",
    "Endpoint",
    "Manifest",
    "blob_exists",
    "blob_size",
    "digest_of",
    "fetch_blob",
    "fetch_layer",
    "get_manifest",
    "make_tarball",
    "manifest_digest",
    "push_artifact",
    "push_blob",
    "put_manifest",
    "verify",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# Without one of these in Accept, a registry answers 404 for a manifest it has.
MANIFEST_ACCEPT = f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"
_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
_EMPTY_CONFIG = b"{}"
_DIGEST = re.compile(r"^(sha256|sha512):([a-f0-9]+)$")
_HEX_LEN = {"sha256": 64, "sha512": 128}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

Endpoint = ReplicatedEndpoint | httpx.AsyncClient
"""One registry: an endpoint over one DC's replica, or a client with that ``base_url``."""


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a manifest says a blob is (type, digest, size)."""

    media_type: str
    digest: str
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    """A manifest as the registry served it: the raw bytes (pushed as-is to keep the digest)."""

    raw: bytes
    media_type: str
    digest: str
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Every blob the manifest references: config first, then the layers."""
        return (self.config, *self.layers)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    """The content digest of ``data`` (``sha256:<hex>``)."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verify(data: bytes, descriptor: Descriptor, *, what: str) -> None:
    """Refuse bytes whose size or digest is not the descriptor's (``PermanentOpsError``).

    A registry stores a manifest whose descriptor sizes are wrong, and a copy that trusted
    it would spread a broken image to every DC: check every blob before using or pushing it.
    """
    if len(data) != descriptor.size:
        raise PermanentOpsError(
            f"{what}: blob {descriptor.digest} is {len(data)} bytes, "
            f"its descriptor says {descriptor.size}", target=what)
    algorithm = _check_digest(descriptor.digest, what=what)
    actual = digest_of(data, algorithm)
    if actual != descriptor.digest:
        raise PermanentOpsError(
            f"{what}: blob content has digest {actual}, its descriptor says {descriptor.digest}",
            target=what)


def make_tarball(files: Mapping[str, bytes]) -> bytes:
    """A gzip tarball of ``files`` (path -> content), byte-identical for identical input.

    Fixed order, times and owners: the same build pushed twice has the same digest, so a
    second push (or copy) finds every blob already there.
    """
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


async def push_artifact(
    endpoint: Endpoint, repository: str, tag: str, tarball: bytes | Mapping[str, bytes]
) -> str:
    """Push an OCI artifact whose single layer is ``tarball``; return the manifest digest.

    ``tarball`` is a gzip tarball (see ``make_tarball``) or a mapping of files to pack. The
    config is the empty JSON config. Blobs already present are not uploaded again.
    """
    layer_bytes = tarball if isinstance(tarball, bytes) else make_tarball(tarball)
    config = Descriptor(OCI_CONFIG_EMPTY, digest_of(_EMPTY_CONFIG), len(_EMPTY_CONFIG))
    layer = Descriptor(OCI_LAYER_GZIP, digest_of(layer_bytes), len(layer_bytes))
    for descriptor, data in ((config, _EMPTY_CONFIG), (layer, layer_bytes)):
        if not await blob_exists(endpoint, repository, descriptor.digest):
            await push_blob(endpoint, repository, data, descriptor.digest)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.as_json(),
        "layers": [layer.as_json()],
    }
    raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
    return await put_manifest(endpoint, repository, tag, raw, OCI_MANIFEST)


async def fetch_layer(endpoint: Endpoint, repository: str, reference: str) -> bytes:
    """The first layer of ``repository:reference`` (a tag or digest), size- and digest-checked.

    Raises ``NotFoundError`` when the manifest or the blob is not in this registry,
    ``PermanentOpsError`` when the manifest has no layer or the bytes do not match it.
    """
    manifest = await get_manifest(endpoint, repository, reference)
    if manifest is None:
        raise NotFoundError(f"{repository}:{reference} is not in the registry",
                            target=f"{repository}:{reference}")
    if not manifest.layers:
        raise PermanentOpsError(f"{repository}:{reference} has no layer",
                                target=f"{repository}:{reference}")
    return await fetch_blob(endpoint, repository, manifest.layers[0])


async def get_manifest(endpoint: Endpoint, repository: str, reference: str) -> Manifest | None:
    """The manifest of ``repository:reference``, or None when the registry does not have it.

    The raw bytes are kept as served: re-serialising would change the digest. When the
    reference is a digest, the bytes are checked against it.
    """
    what = f"manifest {repository}:{reference}"
    response = await _send(endpoint, "GET", _path(repository, "manifests", reference),
                           headers={"Accept": MANIFEST_ACCEPT}, what=what)
    if response.status_code == 404:
        return None
    _raise_for(response, what)
    raw = response.content
    digest = digest_of(raw)
    if _DIGEST.match(reference) and digest_of(raw, reference.split(":", 1)[0]) != reference:
        raise PermanentOpsError(f"{what}: content does not match the digest asked for",
                                target=what)
    served = response.headers.get("Docker-Content-Digest")
    if served and served.startswith("sha256:") and served != digest:
        raise PermanentOpsError(f"{what}: content has digest {digest}, registry says {served}",
                                target=what)
    return _parse_manifest(raw, response.headers.get("Content-Type", ""), digest, what=what)


async def manifest_digest(endpoint: Endpoint, repository: str, reference: str) -> str | None:
    """The digest of ``repository:reference`` as the registry reports it (HEAD), None if absent.

    An empty string when the registry has it but sends no ``Docker-Content-Digest``.
    """
    what = f"manifest {repository}:{reference}"
    response = await _send(endpoint, "HEAD", _path(repository, "manifests", reference),
                           headers={"Accept": MANIFEST_ACCEPT}, what=what)
    if response.status_code == 404:
        return None
    _raise_for(response, what)
    return response.headers.get("Docker-Content-Digest", "")


async def put_manifest(
    endpoint: Endpoint, repository: str, tag: str, raw: bytes, media_type: str
) -> str:
    """Store ``raw`` as ``repository:tag`` (PUT is idempotent); return its digest."""
    what = f"manifest {repository}:{tag}"
    response = await _send(endpoint, "PUT", _path(repository, "manifests", tag),
                           headers={"Content-Type": media_type}, content=raw, what=what)
    _raise_for(response, what)
    digest = digest_of(raw)
    stored = response.headers.get("Docker-Content-Digest")
    if stored and stored.startswith("sha256:") and stored != digest:
        raise PermanentOpsError(f"{what}: pushed {digest}, the registry stored {stored}",
                                target=what)
    return digest


async def blob_exists(endpoint: Endpoint, repository: str, digest: str) -> bool:
    """Whether the registry holds blob ``digest`` in ``repository`` (HEAD: 200 or 404)."""
    return await blob_size(endpoint, repository, digest) is not None


async def blob_size(endpoint: Endpoint, repository: str, digest: str) -> int | None:
    """The stored size of blob ``digest`` (-1 when the registry does not say), None if absent.

    Blobs are stored under their digest, which the registry checked on upload; the size is
    what a descriptor can still get wrong, so callers compare it with the descriptor's.
    """
    what = f"blob {repository}@{digest}"
    response = await _send(endpoint, "HEAD", _path(repository, "blobs", digest), what=what)
    if response.status_code == 404:
        return None
    if response.status_code in _REDIRECTS:
        return -1  # on object storage: present, size known only by fetching it
    _raise_for(response, what)
    length = response.headers.get("Content-Length", "")
    return int(length) if length.isdigit() else -1


async def fetch_blob(endpoint: Endpoint, repository: str, descriptor: Descriptor) -> bytes:
    """The blob ``descriptor`` names, checked against its size and digest.

    Registries on object storage answer with a redirect to it: that one is followed without
    the registry's credentials (a pre-signed URL carries its own).
    """
    what = f"blob {repository}@{descriptor.digest}"
    response = await _send(endpoint, "GET", _path(repository, "blobs", descriptor.digest),
                           what=what)
    if response.status_code in _REDIRECTS and "Location" in response.headers:
        response = await _follow(response, what)
    if response.status_code == 404:
        raise NotFoundError(f"{what} is not in the registry", target=what)
    _raise_for(response, what)
    data = response.content
    verify(data, descriptor, what=what)
    return data


async def push_blob(endpoint: Endpoint, repository: str, data: bytes, digest: str) -> None:
    """Monolithic upload: POST an upload session, then PUT the bytes to its ``Location``.

    The digest is merged into the Location's own query: that query carries the upload's
    state, and replacing it (``params=``) makes the registry answer 404.
    """
    what = f"blob {repository}@{digest}"
    # Opening an upload session twice only leaves an unused session for the registry to reap.
    started = await _send(endpoint, "POST", _path(repository, "blobs", "uploads") + "/",
                          what=what, idempotent=True)
    if started.status_code != 202 or "Location" not in started.headers:
        _raise_for(started, what)
        raise PermanentOpsError(f"{what}: upload not started (HTTP {started.status_code}, "
                                "no Location)", target=what)
    location = httpx.URL(started.headers["Location"]).copy_merge_params({"digest": digest})
    # Not resent when its outcome is unknown: the first PUT may have closed the session, and a
    # resend's 404 would read as "not found". Retrying the whole push finds the blob there.
    done = await _send(endpoint, "PUT", str(location), what=what, content=data,
                       headers={"Content-Type": "application/octet-stream"}, idempotent=False)
    _raise_for(done, what)


def _path(repository: str, kind: str, reference: str) -> str:
    return f"/v2/{repository}/{kind}/{reference}"


def _check_digest(digest: str, *, what: str) -> str:
    match = _DIGEST.match(digest)
    if not match or len(match.group(2)) != _HEX_LEN[match.group(1)]:
        raise PermanentOpsError(f"{what}: unsupported or malformed digest {digest!r}",
                                target=what)
    return match.group(1)


def _parse_manifest(raw: bytes, content_type: str, digest: str, *, what: str) -> Manifest:
    try:
        body = json.loads(raw)
        media_type = body.get("mediaType") or content_type.split(";")[0].strip()
        config = _descriptor(body["config"], what=what)
        layers = tuple(_descriptor(d, what=what) for d in body.get("layers") or ())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PermanentOpsError(f"{what}: not an image manifest ({exc})", target=what) from exc
    if media_type not in _MANIFEST_TYPES:
        raise PermanentOpsError(f"{what}: unsupported manifest type {media_type!r}",
                                target=what)
    return Manifest(raw, media_type, digest, config, layers)


def _descriptor(value: Mapping[str, Any], *, what: str) -> Descriptor:
    size = value["size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise PermanentOpsError(f"{what}: descriptor size {size!r} is not a byte count",
                                target=what)
    digest = str(value["digest"])
    _check_digest(digest, what=what)
    return Descriptor(str(value.get("mediaType", "")), digest, size)


async def _send(
    endpoint: Endpoint,
    method: str,
    url: str,
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    idempotent: bool | None = None,
) -> httpx.Response:
    """One request through the endpoint's replica rules, or through a plain client.

    With a plain client, transport errors and 5xx become ``TransientOpsError`` here (the
    endpoint raises its own ``EndpointError``, also transient).
    """
    if isinstance(endpoint, ReplicatedEndpoint):
        return await endpoint.request(method, url, headers=headers, content=content,
                                      idempotent=idempotent)
    try:
        response = await endpoint.request(method, url, headers=headers, content=content)
    except httpx.TransportError as exc:
        raise TransientOpsError(f"registry: {method} {what} failed: "
                                f"{type(exc).__name__}: {exc}", target=what) from exc
    if response.status_code >= 500 or response.status_code in (408, 429):
        raise TransientOpsError(f"registry: {method} {what}: HTTP {response.status_code}",
                                target=what)
    return response


async def _follow(response: httpx.Response, what: str) -> httpx.Response:
    location = response.request.url.join(response.headers["Location"])
    timeout = response.request.extensions.get("timeout")
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(**timeout) if timeout else 30.0,
                                     follow_redirects=True) as client:
            followed = await client.get(location)
    except httpx.TransportError as exc:
        raise TransientOpsError(f"registry: GET {what} (redirected) failed: "
                                f"{type(exc).__name__}: {exc}", target=what) from exc
    if followed.status_code >= 500:
        raise TransientOpsError(f"registry: GET {what} (redirected): HTTP "
                                f"{followed.status_code}", target=what)
    return followed


def _raise_for(response: httpx.Response, what: str) -> None:
    """Map a registry's refusal to a typed error; 2xx passes."""
    status = response.status_code
    if 200 <= status < 300:
        return
    detail = _error_detail(response)
    message = f"registry: {response.request.method} {what}: HTTP {status}{detail}"
    if status in (401, 403):
        raise PermanentOpsError(f"{message} (check the registry credentials)", target=what)
    if status == 404:
        raise NotFoundError(message, target=what)
    if status >= 500 or status in (408, 429):
        raise TransientOpsError(message, target=what)
    raise PermanentOpsError(message, target=what)


def _error_detail(response: httpx.Response) -> str:
    """The registry's ``{"errors": [{"code", "message"}]}`` as a short suffix."""
    try:
        errors = response.json().get("errors") or []
        parts = [f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors]
    except (ValueError, AttributeError):
        return ""
    return f" ({'; '.join(p for p in parts if p)})" if parts else ""
