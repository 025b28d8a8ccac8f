"""Adapters for the built-in simulator: the in-memory twin of every real adapter.

They speak to the simulator's HTTP API (``revive sim serve`` or a drill's in-process
server) through the same ``ReplicatedEndpoint`` a real tool gets, one replica per DC under
``/r/{tool}/{dc}``, so failover, breakers and retries run for real in every drill.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from revive.errors import (
    ConflictError,
    DependencyError,
    InputError,
    NotFoundError,
    PermanentOpsError,
    QuotaError,
    TransientOpsError,
)
from revive.ops.endpoint import ReplicatedEndpoint
from revive.ops.models import ActionRef, ActionState, ActionStatus, RetryPolicy, ServiceState
from revive.ops.plugins import Adapter, Factory, ToolContext
from revive.ramp import Sample
from revive.sim.metrics import SAMPLE_METRICS, read_sample
from revive.topology.models import ToolKind

_ERRORS: dict[str, type[PermanentOpsError]] = {
    "UnknownTarget": NotFoundError,
    "QuotaExceeded": QuotaError,
    "Conflict": ConflictError,
    "Unavailable": DependencyError,
    "ArtifactMissing": DependencyError,
}


def _checked(response: httpx.Response, *, tool: str, target: str) -> Any:
    """The JSON of a successful response; a typed OpsError for anything else."""
    if response.is_success:
        return response.json() if response.content else None
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:200]}
    message = f"{tool}: {body.get('error', response.reason_phrase)}"
    if response.status_code >= 500:
        raise TransientOpsError(message, tool=tool, target=target)
    raise _ERRORS.get(body.get("kind", ""), PermanentOpsError)(message, tool=tool, target=target)


class _SimAdapter:
    kind = "tool"

    def __init__(self, endpoint: ReplicatedEndpoint) -> None:
        self.endpoint = endpoint

    async def _call(
        self, method: str, path: str, *, target: str, json: Any = None, idempotent: bool = False
    ) -> Any:
        response = await self.endpoint.request(method, path, json=json, idempotent=idempotent)
        return _checked(response, tool=self.endpoint.tool, target=target)

    async def _action(
        self, path: str, kind: str, target: str, json: Any = None, request_id: str | None = None
    ) -> ActionRef:
        """Start an action; with a request id the call is safe to resend (idempotent)."""
        params = {"request_id": request_id} if request_id else None
        response = await self.endpoint.request(
            "POST", path, json=json, params=params, idempotent=request_id is not None
        )
        body = _checked(response, tool=self.endpoint.tool, target=target)
        return ActionRef(id=body["action"], kind=kind, target=target)

    async def probe(self) -> dict[str, bool]:
        """Which of this tool's replicas answer, as the simulated estate has them."""
        body = await self._call("GET", "/tools", target=self.endpoint.tool, idempotent=True)
        return dict(body["tools"].get(self.endpoint.tool, {}))

    async def aclose(self) -> None:
        await self.endpoint.aclose()


class SimCompute(_SimAdapter):
    """Compute API twin: provision instances within the DC's quota."""

    async def provision(
        self, service: str, dc: str, count: int, *, request_id: str | None = None
    ) -> ActionRef:
        return await self._action(
            f"/compute/{dc}/provision", "provision", f"{service}@{dc}",
            {"service": service, "count": count}, request_id,
        )

    async def quota(self, dc: str) -> int | None:
        state = await self._call("GET", "/state", target=dc, idempotent=True)
        left = state["quotas"][dc]
        return None if left is None else int(left)


class SimServiceControl(_SimAdapter):
    """Deploy tool and service manager twin."""

    async def state(self, service: str, dc: str) -> ServiceState:
        body = await self._call("GET", f"/services/{dc}/{service}", target=f"{service}@{dc}",
                                idempotent=True)
        return ServiceState(**{k: body[k] for k in ServiceState.model_fields})

    async def restart(
        self, service: str, dc: str, *, request_id: str | None = None
    ) -> ActionRef:
        return await self._action(
            f"/services/{dc}/{service}/restart", "restart", f"{service}@{dc}", None, request_id
        )

    async def deploy(
        self, service: str, dc: str, instances: int, version: str, *, request_id: str | None = None
    ) -> ActionRef:
        return await self._action(
            f"/services/{dc}/{service}/deploy", "deploy", f"{service}@{dc}",
            {"instances": instances, "version": version}, request_id,
        )

    async def set_version(
        self, service: str, dc: str, version: str | None, *, request_id: str | None = None
    ) -> ActionRef:
        """Patch to ``version``, or roll back to the previous one when ``version`` is None."""
        if version is None:
            return await self._action(
                f"/services/{dc}/{service}/rollback", "rollback", f"{service}@{dc}", None,
                request_id,
            )
        return await self._action(
            f"/services/{dc}/{service}/patch", "patch", f"{service}@{dc}", {"version": version},
            request_id,
        )


class SimRegistry(_SimAdapter):
    """Container registry twin, one replica per DC."""

    async def has(self, artifact: str, version: str, dc: str) -> bool:
        body = await self._call("GET", f"/registry/{dc}", target=dc, idempotent=True)
        return {"artifact": artifact, "version": version} in body["artifacts"]

    async def copy(
        self,
        artifact: str,
        version: str,
        src_dc: str,
        dst_dc: str,
        *,
        request_id: str | None = None,
    ) -> ActionRef:
        return await self._action(
            "/registry/copy", "copy_artifact", f"{artifact}:{version}@{dst_dc}",
            {"artifact": artifact, "version": version, "src_dc": src_dc, "dst_dc": dst_dc},
            request_id,
        )


class SimHealthChecker(_SimAdapter):
    async def healthy(self, dc: str) -> dict[str, int]:
        body = await self._call("GET", f"/health/{dc}", target=dc, idempotent=True)
        return {name: int(count) for name, count in body["healthy"].items()}


class SimTraffic(_SimAdapter):
    """GSLB twin."""

    async def weights(self) -> dict[str, float]:
        body = await self._call("GET", "/gslb/weights", target="gslb", idempotent=True)
        return dict(body["weights"])

    async def set_weights(self, weights: Mapping[str, float]) -> None:
        await self._call("PUT", "/gslb/weights", target="gslb", json={"weights": dict(weights)},
                         idempotent=True)

    async def class_weights(self) -> dict[str, dict[str, float]]:
        body = await self._call("GET", "/gslb/weights", target="gslb", idempotent=True)
        return {name: dict(per_dc) for name, per_dc in body["classes"].items()}

    async def set_class_weights(self, traffic_class: str, weights: Mapping[str, float]) -> None:
        await self._call(
            "PUT", f"/gslb/weights/{quote(traffic_class, safe='')}", target=traffic_class,
            json={"weights": dict(weights)}, idempotent=True,
        )


class SimMetrics(_SimAdapter):
    """Prometheus twin: one scrape of /metrics."""

    async def sample(self, dc: str) -> Sample:
        return read_sample(await self._scrape(dc), dc)

    async def class_sample(self, traffic_class: str, dc: str) -> Sample:
        return read_sample(await self._scrape(dc), dc, traffic_class)

    async def _scrape(self, target: str) -> str:
        response = await self.endpoint.request(
            "GET", "/metrics", params={"name[]": list(SAMPLE_METRICS)}, idempotent=True)
        if not response.is_success:
            _checked(response, tool=self.endpoint.tool, target=target)
        return response.text


class SimConfigStore(_SimAdapter):
    """Config store twin: feature flags and the client retry policy."""

    async def flags(self) -> dict[tuple[str, str], bool]:
        body = await self._call("GET", "/config/flags", target="flags", idempotent=True)
        return {(svc, f): on for svc, feats in body["flags"].items() for f, on in feats.items()}

    async def set_flag(self, service: str, feature: str, on: bool) -> None:
        await self._call("PUT", f"/config/flags/{service}/{feature}", target=f"{service}/{feature}",
                         json={"on": on}, idempotent=True)

    async def set_retry_policy(self, policy: RetryPolicy | None) -> None:
        await self._call("PUT", "/config/retry-policy", target="retry-policy",
                         json=None if policy is None else policy.model_dump(), idempotent=True)


class SimToolHealth(_SimAdapter):
    async def replicas(self, tool: str) -> dict[str, bool]:
        body = await self._call("GET", "/tools", target=tool, idempotent=True)
        if tool not in body["tools"]:
            raise NotFoundError(f"unknown ops tool {tool!r}", tool=tool, target=tool)
        return dict(body["tools"][tool])


class SimClock(_SimAdapter):
    """Virtual time: waits block on the simulator's clock barrier, never on the wall."""

    async def now(self) -> float:
        return float((await self._call("GET", "/clock", target="clock", idempotent=True))["now"])

    async def wait(
        self,
        *,
        for_s: float | None = None,
        actions: Sequence[ActionRef] = (),
        any_action: bool = False,
    ) -> float:
        body: dict[str, Any] = {"actions": [a.id for a in actions] or None, "any": any_action}
        if for_s is not None:
            body["for_s"] = max(0.0, for_s)
        result = await self._call("POST", "/clock/wait", target="clock", json=body,
                                  idempotent=True)
        return float(result["now"])

    async def status(self, ref: ActionRef) -> ActionStatus:
        body = await self._call("GET", f"/actions/{ref.id}", target=ref.target, idempotent=True)
        state = {"done": ActionState.done, "failed": ActionState.failed}.get(
            body["state"], ActionState.running
        )
        ended = body.get("ends_at") if state != ActionState.running else None
        return ActionStatus(ref=ref, state=state, error=body.get("error"), ended_at=ended)


SIM_KINDS: dict[ToolKind, type[_SimAdapter]] = {
    ToolKind.compute: SimCompute,
    ToolKind.deploy: SimServiceControl,
    ToolKind.registry: SimRegistry,
    ToolKind.health_checker: SimHealthChecker,
    ToolKind.traffic: SimTraffic,
    ToolKind.metrics: SimMetrics,
    ToolKind.config_store: SimConfigStore,
    ToolKind.secret_store: SimToolHealth,
    ToolKind.discovery: SimToolHealth,
}

#: Set by the run (``sim_url`` or ``$REVIVE_SIM_URL``); named here so messages can say it.
SIM_URL_ENV = "REVIVE_SIM_URL"


def _factory(kind: ToolKind) -> Factory:
    def make(ctx: ToolContext) -> _SimAdapter:
        if not ctx.sim_url:
            raise InputError(
                f"ops_tools.{ctx.name}.adapter: sim acts on the built-in simulator: set "
                f"sim_url or ${SIM_URL_ENV}, or choose the adapter of the real tool"
            )
        # The simulator routes /r/{tool}/{dc} to that DC's replica of the tool, so failover,
        # breakers and retries run for real in every drill.
        replicas = {dc: f"{ctx.sim_url}/r/{ctx.name}/{dc}" for dc in ctx.tool.replicas}
        return SIM_KINDS[kind](ctx.endpoint(replicas or {"sim": ctx.sim_url}))

    return make


ADAPTER = Adapter(
    name="sim",
    kinds={**{kind: _factory(kind) for kind in SIM_KINDS}, ToolKind.chat: None},
    summary="the built-in simulator (drills): every kind, virtual time",
)
