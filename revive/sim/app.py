"""The simulator over HTTP: the same kind of API the runbooks' adapters call on real tools.

Runbooks reach ops tools through adapters that speak HTTP; pointing those adapters at this
app instead of production is what makes a drill exercise the real code path. The surface is
small and regular: reads are ``GET``, instant changes ``PUT``/``POST`` answering 200, actions
answer 202 with an action id to poll, and every simulator error is one JSON shape
``{"error": message, "kind": class name}`` with a status an adapter can map (404 unknown
name, 409 conflict or quota, 422 bad argument, 424 something the action needs is down; 503
only from ``ReplicaRouting``, when the addressed replica itself is unreachable).

Time: nothing here sleeps on the wall clock. ``/clock/wait`` blocks on the ``ClockBarrier``,
which moves virtual time only when every joined participant waits. Every handler is
``async`` so all of them run on the event loop's thread, one at a time, never in a pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from revive.sim.barrier import ClockBarrier
from revive.sim.config import RetryPolicy
from revive.sim.engine import Simulator
from revive.sim.estate import (
    ActionState,
    BadRequest,
    SimError,
)
from revive.sim.http import (
    ACCEPTED,
    CopyBody,
    DeployBody,
    FailRestartsBody,
    FlagBody,
    PatchBody,
    ProvisionBody,
    PushBody,
    ReplicaRouting,
    RequestId,
    SlowBody,
    WaitBody,
    WeightsBody,
    status_of,
)
from revive.sim.metrics import render

__all__ = ["METRICS_CONTENT_TYPE", "create_app", "status_of"]

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def create_app(sim: Simulator) -> FastAPI:
    """An ASGI app serving ``sim``; the app keeps it (and its barrier) in ``app.state``."""
    app = FastAPI(title="revive simulator", docs_url=None, redoc_url=None)
    estate = sim.estate
    barrier = ClockBarrier(
        sim.clock,
        finished=lambda aid: estate.action(aid).state in (ActionState.done, ActionState.failed),
    )
    app.state.sim, app.state.barrier = sim, barrier
    app.add_middleware(ReplicaRouting, estate=estate)

    @app.exception_handler(SimError)
    async def sim_error(request: Request, exc: SimError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "kind": type(exc).__name__}, status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        where = [".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors()]
        return JSONResponse({"error": "; ".join(where), "kind": "BadRequest"}, status_code=422)

    def ok() -> dict[str, Any]:
        return {"ok": True, "time": sim.clock.now}

    started: dict[str, str] = {}  # request_id -> action id: a resent action starts nothing

    def once(request_id: str | None, start: Callable[[], str]) -> dict[str, str]:
        """Start an action, unless this request id already started one: then return that."""
        if request_id is not None and request_id in started:
            return {"action": started[request_id]}
        action = start()
        if request_id is not None:
            started[request_id] = action
        return {"action": action}

    app.state.started = started

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return ok()

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        names = request.query_params.getlist("name[]")
        return Response(render(sim, names), media_type=METRICS_CONTENT_TYPE)

    @app.get("/state")
    async def state() -> dict[str, Any]:
        policy = estate.retry_policy
        return {
            "time": sim.clock.now,
            "dcs": {dc: estate.dc_up(dc) for dc in sim.dcs},
            "weights": estate.weights,
            "class_weights": estate.class_weights,
            "quotas": {dc: estate.quota(dc) for dc in sim.dcs},
            "retry_policy": None if policy is None else policy.model_dump(),
            "services": {
                s.name: {dc: asdict(estate.state(s.name, dc)) for dc in sim.dcs}
                for s in sim.topology.services
            },
        }

    @app.get("/log")
    async def log() -> dict[str, Any]:
        """Every change applied so far, in order: what a drill or a test audits."""
        return {"log": [asdict(entry) for entry in estate.log]}

    @app.get("/tools")
    async def tools() -> dict[str, Any]:
        """Reachability of every ops-tool replica: {tool: {dc: reachable}}."""
        return {
            "tools": {
                name: {dc: estate.replica(name, dc).reachable for dc in tool.replicas}
                for name, tool in sim.topology.ops_tools.items()
            }
        }

    # --- services, compute, actions --------------------------------------------------------

    @app.get("/services/{dc}/{service}")
    async def service_view(dc: str, service: str) -> dict[str, Any]:
        return asdict(estate.state(service, dc))

    @app.post("/services/{dc}/{service}/restart", status_code=ACCEPTED)
    async def restart(dc: str, service: str, request_id: RequestId = None) -> dict[str, str]:
        return once(request_id, lambda: estate.restart(service, dc))

    @app.post("/services/{dc}/{service}/patch", status_code=ACCEPTED)
    async def patch(
        dc: str, service: str, body: PatchBody, request_id: RequestId = None
    ) -> dict[str, str]:
        return once(request_id, lambda: estate.patch(service, dc, body.version))

    @app.post("/services/{dc}/{service}/rollback", status_code=ACCEPTED)
    async def rollback(dc: str, service: str, request_id: RequestId = None) -> dict[str, str]:
        return once(request_id, lambda: estate.rollback(service, dc))

    @app.post("/services/{dc}/{service}/deploy", status_code=ACCEPTED)
    async def deploy(
        dc: str, service: str, body: DeployBody, request_id: RequestId = None
    ) -> dict[str, str]:
        return once(request_id, lambda: estate.deploy(service, dc, body.instances, body.version))

    @app.post("/compute/{dc}/provision", status_code=ACCEPTED)
    async def provision(
        dc: str, body: ProvisionBody, request_id: RequestId = None
    ) -> dict[str, str]:
        return once(request_id, lambda: estate.provision(body.service, dc, body.count))

    @app.get("/actions")
    async def actions() -> dict[str, Any]:
        return {"actions": [asdict(a) for a in estate.actions()]}

    @app.get("/actions/{action_id}")
    async def action(action_id: str) -> dict[str, Any]:
        return asdict(estate.action(action_id))

    # --- registry, GSLB, config store, health checker ---------------------------------------

    @app.get("/registry/{dc}")
    async def registry(dc: str) -> dict[str, Any]:
        held = sorted(estate.artifacts(dc))
        return {"dc": dc, "artifacts": [{"artifact": a, "version": v} for a, v in held]}

    @app.post("/registry/copy", status_code=ACCEPTED)
    async def copy(body: CopyBody, request_id: RequestId = None) -> dict[str, str]:
        b = body
        return once(
            request_id, lambda: estate.copy_artifact(b.artifact, b.version, b.src_dc, b.dst_dc)
        )

    @app.post("/registry/{dc}/push")
    async def push(dc: str, body: PushBody) -> dict[str, Any]:
        estate.push_artifact(body.artifact, body.version, dc)
        return ok()

    @app.get("/gslb/weights")
    async def weights() -> dict[str, Any]:
        """DC-level weights (each DC's share of all users) and each traffic class's."""
        return {"weights": estate.weights, "classes": estate.class_weights}

    @app.put("/gslb/weights")
    async def set_weights(body: WeightsBody) -> dict[str, Any]:
        """Every traffic class to these DC weights (kept for callers without classes)."""
        estate.set_weights(body.weights)
        return {"weights": estate.weights}

    @app.put("/gslb/weights/{traffic_class}")
    async def set_class_weights(traffic_class: str, body: WeightsBody) -> dict[str, Any]:
        """One traffic class's weights: the unit in which traffic moves."""
        estate.set_class_weights(traffic_class, body.weights)
        return {"class": traffic_class, "weights": estate.class_weights[traffic_class]}

    @app.get("/config/flags")
    async def flags() -> dict[str, Any]:
        nested: dict[str, dict[str, bool]] = {}
        for (service, feature), on in estate.flags.items():
            nested.setdefault(service, {})[feature] = on
        return {"flags": nested}

    @app.put("/config/flags/{service}/{feature}")
    async def set_flag(service: str, feature: str, body: FlagBody) -> dict[str, Any]:
        estate.set_flag(service, feature, body.on)
        return {"service": service, "feature": feature, "on": estate.flag(service, feature)}

    @app.get("/config/retry-policy")
    async def retry_policy() -> RetryPolicy | None:
        return estate.retry_policy

    @app.put("/config/retry-policy")
    async def set_retry_policy(
        policy: Annotated[RetryPolicy | None, Body()] = None,
    ) -> RetryPolicy | None:
        estate.set_retry_policy(policy)
        return estate.retry_policy

    @app.get("/health/{dc}")
    async def health(dc: str) -> dict[str, Any]:
        view = estate.health_view(dc)
        return {"dc": dc, "checked_at": estate.health_checked_at, "healthy": view}

    _fault_routes(app, sim, ok)
    _clock_routes(app, sim, barrier)
    return app


def _fault_routes(app: FastAPI, sim: Simulator, ok: Callable[[], dict[str, Any]]) -> None:
    """Fault injection: instant, logged, answered with ``{"ok": true, "time": now}``."""
    estate = sim.estate

    @app.post("/faults/power-loss/{dc}")
    async def power_loss(dc: str) -> dict[str, Any]:
        estate.power_loss(dc)
        return ok()

    @app.post("/faults/power-restore/{dc}")
    async def power_restore(dc: str) -> dict[str, Any]:
        estate.power_restore(dc)
        return ok()

    @app.post("/faults/tool-down/{tool}/{dc}")
    async def tool_down(tool: str, dc: str) -> dict[str, Any]:
        estate.tool_down(tool, dc)
        return ok()

    @app.post("/faults/tool-slow/{tool}/{dc}")
    async def tool_slow(tool: str, dc: str, body: SlowBody) -> dict[str, Any]:
        estate.tool_slow(tool, dc, body.extra_latency_s)
        return ok()

    @app.post("/faults/tool-restore/{tool}/{dc}")
    async def tool_restore(tool: str, dc: str) -> dict[str, Any]:
        estate.tool_restore(tool, dc)
        return ok()

    @app.post("/faults/fail-restarts/{dc}/{service}")
    async def fail_restarts(dc: str, service: str, body: FailRestartsBody) -> dict[str, Any]:
        estate.fail_next_restarts(service, dc, body.count)
        return ok()

    @app.post("/faults/exhaust-quota/{dc}")
    async def exhaust_quota(dc: str) -> dict[str, Any]:
        estate.exhaust_quota(dc)
        return ok()


def _clock_routes(app: FastAPI, sim: Simulator, barrier: ClockBarrier) -> None:
    """Virtual time: read it, join or leave the barrier, wait on it."""

    @app.get("/clock")
    async def clock() -> dict[str, Any]:
        return {"now": sim.clock.now}

    @app.post("/clock/join")
    async def join() -> dict[str, Any]:
        return {"participant": barrier.join()}

    @app.post("/clock/leave/{pid}")
    async def leave(pid: str) -> dict[str, Any]:
        barrier.leave(pid)
        return {"now": sim.clock.now}

    @app.post("/clock/wait")
    async def wait(body: WaitBody) -> dict[str, Any]:
        if body.until is not None and body.for_s is not None:
            raise BadRequest("give until or for_s, not both")
        until = body.until if body.for_s is None else sim.clock.now + body.for_s
        now = await barrier.wait(
            body.participant, until=until, actions=body.actions, any_action=body.any
        )
        return {"now": now}
