"""What adapters return, whatever tool is behind them: small pydantic models at the edge."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class RetryPolicy(BaseModel):
    """Client retry rules pushed through the config store (the seed's anti-self-DDoS rule).

    ``budget`` caps retries as a share of first attempts (gRPC/Finagle-style retry budget);
    ``max_attempts`` counts the first try; backoff is full-jitter exponential.
    """

    model_config = ConfigDict(frozen=True)

    budget: float = Field(0.1, ge=0, le=1)
    max_attempts: int = Field(3, ge=1, le=10)
    base_backoff_s: float = Field(0.1, gt=0)
    max_backoff_s: float = Field(5.0, gt=0)


class ActionRef(BaseModel):
    """A long-running action started on a tool; wait on it through the clock."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: str
    target: str
    tool: str = ""
    """The ops tool that started it (the clock asks that tool's adapter); empty: simulator."""


class ActionState(StrEnum):
    running = "running"
    done = "done"
    failed = "failed"


class ActionStatus(BaseModel):
    ref: ActionRef
    state: ActionState
    error: str | None = None
    ended_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.state != ActionState.running


class ServiceState(BaseModel):
    """One service in one DC as the deploy/service tool sees it."""

    service: str
    dc: str
    exists: bool
    instances: int
    healthy: int
    version: str
    busy: bool = False
