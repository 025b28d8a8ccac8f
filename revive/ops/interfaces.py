"""One small interface per ops-tool kind; the simulator and real tools implement them.

Each is a Protocol of one to four typed async methods plus ``aclose``. Long-running actions
return an ``ActionRef`` that the runbook waits on through a ``Clock``, never by sleeping;
they take a ``request_id`` so that a resumed run re-sending a step starts nothing new.
Adapters raise ``revive.errors.OpsError`` subclasses: transient ones are retried by tasks,
permanent ones are recorded and reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from revive.ops.models import ActionRef, ActionStatus, RetryPolicy, ServiceState
from revive.ramp import Sample


@runtime_checkable
class Compute(Protocol):
    """Emergency capacity: more instances of a service in a DC, within quota."""

    async def provision(
        self, service: str, dc: str, count: int, *, request_id: str | None = None
    ) -> ActionRef: ...
    async def quota(self, dc: str) -> int | None:
        """Instances the tool still grants in ``dc``; None when it sets no limit."""
        ...
    async def aclose(self) -> None: ...


@runtime_checkable
class ServiceControl(Protocol):
    """Start, restart and version services: the deploy tool and the service manager."""

    async def state(self, service: str, dc: str) -> ServiceState: ...
    async def restart(
        self, service: str, dc: str, *, request_id: str | None = None
    ) -> ActionRef: ...
    async def deploy(
        self, service: str, dc: str, instances: int, version: str, *, request_id: str | None = None
    ) -> ActionRef: ...
    async def set_version(
        self, service: str, dc: str, version: str | None, *, request_id: str | None = None
    ) -> ActionRef: ...
    async def aclose(self) -> None: ...


@runtime_checkable
class Registry(Protocol):
    """Artifacts per DC replica: is it there, copy it from another DC."""

    async def has(self, artifact: str, version: str, dc: str) -> bool: ...
    async def copy(
        self,
        artifact: str,
        version: str,
        src_dc: str,
        dst_dc: str,
        *,
        request_id: str | None = None,
    ) -> ActionRef: ...
    async def aclose(self) -> None: ...


@runtime_checkable
class HealthChecker(Protocol):
    """Healthy instance counts per service in a DC, as a health checker sees them."""

    async def healthy(self, dc: str) -> dict[str, int]: ...
    async def aclose(self) -> None: ...


@runtime_checkable
class Traffic(Protocol):
    """The GSLB: traffic weights per traffic class (a GSLB domain / LB backend) and DC.

    ``weights``/``set_weights`` are the DC-level view (each DC's share of all users; setting
    it moves every class alike); they stay until the runbooks move traffic per class.
    """

    async def weights(self) -> dict[str, float]: ...
    async def set_weights(self, weights: Mapping[str, float]) -> None: ...
    async def class_weights(self) -> dict[str, dict[str, float]]:
        """class -> DC -> weight; each class's weights sum to 1."""
        ...
    async def set_class_weights(self, traffic_class: str, weights: Mapping[str, float]) -> None:
        """Move one class's users (missing DCs get 0; normalised by the GSLB)."""
        ...
    async def aclose(self) -> None: ...


@runtime_checkable
class Metrics(Protocol):
    """The bottleneck's metrics for a DC, as one scrape shows them."""

    async def sample(self, dc: str) -> Sample: ...
    async def class_sample(self, traffic_class: str, dc: str) -> Sample:
        """What one class's users see in ``dc`` (share, errors, p99, hit ratio) with the
        DC's database utilisation and retry ratio, the pool every class shares."""
        ...
    async def aclose(self) -> None: ...


@runtime_checkable
class ConfigStore(Protocol):
    """Run-time configuration: feature flags and the client retry policy."""

    async def flags(self) -> dict[tuple[str, str], bool]: ...
    async def set_flag(self, service: str, feature: str, on: bool) -> None: ...
    async def set_retry_policy(self, policy: RetryPolicy | None) -> None: ...
    async def aclose(self) -> None: ...


@runtime_checkable
class ToolHealth(Protocol):
    """Which replicas of the boot-time tools (secret store, discovery) are reachable."""

    async def replicas(self, tool: str) -> dict[str, bool]: ...
    async def aclose(self) -> None: ...


@runtime_checkable
class Clock(Protocol):
    """Time as the runbook sees it: virtual against the simulator, real against tools.

    ``wait`` returns when ``for_s`` has passed or the actions finished (all, or the first
    one with ``any_action``), whichever comes first; it returns the time then.
    """

    async def now(self) -> float: ...
    async def wait(
        self,
        *,
        for_s: float | None = None,
        actions: Sequence[ActionRef] = (),
        any_action: bool = False,
    ) -> float: ...
    async def status(self, ref: ActionRef) -> ActionStatus: ...
    async def aclose(self) -> None: ...
