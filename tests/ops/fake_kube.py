"""A small Kubernetes API server for the kubernetes adapter's tests: no cluster runs here.

It answers the few requests the adapter makes (``GET /version``, ``GET``/``PATCH
/apis/apps/v1/namespaces/{ns}/deployments/{name}``) on 127.0.0.1 over real HTTP/1.1, with
objects built from kubernetes_asyncio's own models (``V1Deployment``, ``V1Status``...)
serialised the way the client library serialises them, so what the adapter parses is what
the client expects from a real API server. It checks the bearer token (401 otherwise),
applies strategic merge patches (``containers`` merged by name) and JSON merge patches,
honours ``metadata.resourceVersion`` preconditions (409), bumps ``metadata.generation`` on a
spec change, and records every request. No controller runs: a test finishes a rollout with
``finish_rollout`` or stalls it with ``stall_rollout``, so tests wait on states.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes_asyncio.client import (
    ApiClient,
    V1Container,
    V1Deployment,
    V1DeploymentCondition,
    V1DeploymentSpec,
    V1DeploymentStatus,
    V1LabelSelector,
    V1ObjectMeta,
    V1PodSpec,
    V1PodTemplateSpec,
    V1Status,
    VersionInfo,
)

__all__ = ["FakeKube", "KubeRequest"]

HOST = "127.0.0.1"
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
#: Lists a strategic merge patch merges by their elements' ``name`` (as the API server does).
MERGE_BY_NAME = frozenset({"containers", "initContainers", "env", "volumes"})
_REASONS = {400: "BadRequest", 403: "Forbidden", 422: "Invalid", 429: "TooManyRequests"}
_DEPLOYMENT = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/?]+)$")


def serialise(model: Any) -> Any:
    """A model as the API server's JSON, through the client's own serialiser.

    ``ApiClient.__init__`` opens an aiohttp session (and needs a running loop); the
    serialiser uses nothing of that, so it is called on an instance never initialised.
    """
    return ApiClient.sanitize_for_serialization(object.__new__(ApiClient), model)


@dataclass(frozen=True)
class KubeRequest:
    """One request the fake received."""

    method: str
    path: str
    content_type: str
    authorization: str
    body: Any


@dataclass
class _Mode:
    kind: str = "ok"  # ok | error | hang
    status: int = 503
    seconds: float = 0.0
    release: threading.Event = field(default_factory=threading.Event)


def status_object(code: int, reason: str, message: str) -> dict[str, Any]:
    """A ``Status`` answer, as the API server sends with every error."""
    return serialise(V1Status(api_version="v1", kind="Status", status="Failure", code=code,
                              reason=reason, message=message))


def merge(target: dict[str, Any], patch: dict[str, Any], *, strategic: bool) -> None:
    """Apply a merge patch in place: null deletes, dicts merge, lists are replaced, except
    lists of named things under a strategic merge, which are merged by ``name``."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value, strategic=strategic)
        elif (strategic and key in MERGE_BY_NAME and isinstance(value, list)
              and isinstance(target.get(key), list)):
            by_name = {item.get("name"): item for item in target[key]}
            for item in value:
                if item.get("name") in by_name:
                    merge(by_name[item["name"]], item, strategic=True)
                else:
                    target[key].append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, kube: FakeKube, port: int) -> None:
        self.kube = kube
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((HOST, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
            super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients time out and hang up on purpose in these tests."""

    def cut_connections(self) -> None:
        with self.connections_lock:
            for sock in self.connections:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 10
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read ``FakeKube.requests``."""

    def do_GET(self) -> None:
        self._serve()

    do_PATCH = do_GET

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        request = KubeRequest(self.command, self.path, self.headers.get("Content-Type", ""),
                              self.headers.get("Authorization", ""), body)
        status, payload = self.server.kube.handle(request)
        if status == 0:  # hung and then released: no answer at all
            self.close_connection = True
            return
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True


class FakeKube:
    """One DC's cluster API: deployments by (namespace, name), switchable ok/error/hang/down."""

    def __init__(self, name: str, token: str | None = "t0ken") -> None:
        self.name = name
        self.token = token
        self.port = 0
        self.requests: list[KubeRequest] = []
        self.deployments: dict[tuple[str, str], dict[str, Any]] = {}
        #: Patches to refuse with 409 as if another writer had just changed the object.
        self.conflicts = 0
        self._lock = threading.Lock()
        self._mode = _Mode()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # Objects

    def add_deployment(
        self, namespace: str, name: str, *, image: str, replicas: int = 2,
        container: str = "app", sidecar: str | None = None,
    ) -> dict[str, Any]:
        """A Deployment whose last rollout is complete (built from the client's models)."""
        containers = [V1Container(name=container, image=image)]
        if sidecar:
            containers.append(V1Container(name="sidecar", image=sidecar))
        labels = {"app": name}
        model = V1Deployment(
            api_version="apps/v1", kind="Deployment",
            metadata=V1ObjectMeta(name=name, namespace=namespace, generation=1,
                                  resource_version="1", annotations={}),
            spec=V1DeploymentSpec(
                replicas=replicas, selector=V1LabelSelector(match_labels=labels),
                template=V1PodTemplateSpec(metadata=V1ObjectMeta(labels=labels),
                                           spec=V1PodSpec(containers=containers))),
            status=V1DeploymentStatus(observed_generation=1),
        )
        with self._lock:
            self.deployments[(namespace, name)] = serialise(model)
        return self.finish_rollout(namespace, name)

    def deployment(self, namespace: str, name: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self.deployments[(namespace, name)])

    def finish_rollout(self, namespace: str, name: str) -> dict[str, Any]:
        """What the controller does once every new pod is up: status matches the spec."""
        replicas = self.deployment(namespace, name)["spec"]["replicas"]
        return self._set_status(namespace, name, V1DeploymentStatus(
            replicas=replicas, updated_replicas=replicas, ready_replicas=replicas,
            available_replicas=replicas,
            conditions=[self._progressing("True", "NewReplicaSetAvailable",
                                          f'ReplicaSet "{name}" has successfully progressed.')]))

    def observe(self, namespace: str, name: str, *, ready: int) -> dict[str, Any]:
        """A rollout under way: the controller saw the new spec, ``ready`` new pods are up."""
        replicas = self.deployment(namespace, name)["spec"]["replicas"]
        return self._set_status(namespace, name, V1DeploymentStatus(
            replicas=replicas, updated_replicas=ready, ready_replicas=ready,
            available_replicas=ready,
            conditions=[self._progressing("True", "ReplicaSetUpdated",
                                          f'ReplicaSet "{name}" is progressing.')]))

    def stall_rollout(self, namespace: str, name: str) -> dict[str, Any]:
        """The new pods never became ready within progressDeadlineSeconds."""
        replicas = self.deployment(namespace, name)["spec"]["replicas"]
        return self._set_status(namespace, name, V1DeploymentStatus(
            replicas=replicas, updated_replicas=1, ready_replicas=0, available_replicas=0,
            conditions=[self._progressing("False", "ProgressDeadlineExceeded",
                                          f'ReplicaSet "{name}" has timed out progressing.')]))

    def _progressing(self, status: str, reason: str, message: str) -> V1DeploymentCondition:
        now = datetime.now(UTC)
        return V1DeploymentCondition(type="Progressing", status=status, reason=reason,
                                     message=message, last_update_time=now,
                                     last_transition_time=now)

    def _set_status(self, namespace: str, name: str, status: V1DeploymentStatus
                    ) -> dict[str, Any]:
        with self._lock:
            dep = self.deployments[(namespace, name)]
            status.observed_generation = dep["metadata"]["generation"]
            dep["status"] = serialise(status)
            self._bump(dep)
            return copy.deepcopy(dep)

    @staticmethod
    def _bump(dep: dict[str, Any]) -> None:
        dep["metadata"]["resourceVersion"] = str(int(dep["metadata"]["resourceVersion"]) + 1)

    # Faults

    def ok(self) -> None:
        self._switch(_Mode())

    def error(self, status: int = 503) -> None:
        self._switch(_Mode("error", status=status))

    def hang(self, seconds: float = 5.0) -> None:
        """Answer nothing for ``seconds`` (then as usual), or until down/switched."""
        self._switch(_Mode("hang", seconds=seconds))

    def _switch(self, mode: _Mode) -> None:
        with self._lock:
            old, self._mode = self._mode, mode
        old.release.set()

    # Requests

    def patches(self) -> list[KubeRequest]:
        with self._lock:
            return [r for r in self.requests if r.method == "PATCH"]

    def handle(self, request: KubeRequest) -> tuple[int, Any]:
        """The status and JSON answer to one request (status 0: hang up without one)."""
        with self._lock:
            self.requests.append(request)
            mode = self._mode
        if mode.kind == "hang":
            if mode.release.wait(mode.seconds):
                return 0, None
        elif mode.kind == "error":
            reason = _REASONS.get(mode.status, "InternalError")
            return mode.status, status_object(mode.status, reason,
                                              f"{self.name}: the API server says {reason}")
        if self.token is not None and request.authorization != f"Bearer {self.token}":
            return 401, status_object(401, "Unauthorized", "Unauthorized")
        path = request.path.split("?", 1)[0]
        if request.method == "GET" and path.rstrip("/") == "/version":  # client asks /version/
            return 200, serialise(VersionInfo(
                major="1", minor="30", git_version="v1.30.0", git_commit="0" * 40,
                git_tree_state="clean", build_date="2024-04-17T00:00:00Z", go_version="go1.22",
                compiler="gc", platform="linux/amd64"))
        match = _DEPLOYMENT.match(path)
        if match is None:
            return 404, status_object(404, "NotFound", "the server could not find the "
                                                       "requested resource")
        namespace, name = match.groups()
        with self._lock:
            dep = self.deployments.get((namespace, name))
            if dep is None:
                return 404, status_object(404, "NotFound",
                                          f'deployments.apps "{name}" not found')
            if request.method == "GET":
                return 200, copy.deepcopy(dep)
            return self._patch(dep, request)

    def _patch(self, dep: dict[str, Any], request: KubeRequest) -> tuple[int, Any]:
        content_type = request.content_type.split(";", 1)[0].strip()
        if content_type not in (STRATEGIC, MERGE):
            return 415, status_object(415, "UnsupportedMediaType",
                                      f"the body of the request was in an unknown format: "
                                      f"{content_type}")
        patch = request.body
        if not isinstance(patch, dict):
            return 400, status_object(400, "BadRequest", "the patch is not a JSON object")
        if self.conflicts > 0:
            self.conflicts -= 1
            self._bump(dep)  # another writer got there first
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        current = dep["metadata"]["resourceVersion"]
        if wanted is not None and wanted != current:
            return 409, status_object(
                409, "Conflict", f'Operation cannot be fulfilled on deployments.apps '
                                 f'"{dep["metadata"]["name"]}": the object has been modified; '
                                 "please apply your changes to the latest version and try again")
        before = copy.deepcopy(dep["spec"])
        patch = copy.deepcopy(patch)
        patch.get("metadata", {}).pop("resourceVersion", None)
        merge(dep, patch, strategic=content_type == STRATEGIC)
        if dep["spec"] != before:
            dep["metadata"]["generation"] += 1
        self._bump(dep)
        return 200, copy.deepcopy(dep)

    # Life cycle

    def up(self) -> FakeKube:
        """Serve (again, on the same port once one was chosen)."""
        if self._httpd is not None:
            return self
        httpd = _Server(self, self.port)
        self.port = int(httpd.server_address[1])
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever,
                                        kwargs={"poll_interval": 0.01},
                                        name=f"fake-kube-{self.name}", daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        """Stop accepting (connections are refused) and cut every open connection."""
        httpd, thread = self._httpd, self._thread
        if httpd is None or thread is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        self._switch(_Mode(self._mode.kind, self._mode.status, self._mode.seconds))
        httpd.cut_connections()
        httpd.server_close()
        thread.join()
