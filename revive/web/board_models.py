"""What the status board shows, as data: the page and ``/board.json`` render the same ``Board``.

``None`` always means "unknown" (a tool that did not answer, a store that could not be read);
each section that could not be had says why in ``problems``, so the page never pretends.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, computed_field

__all__ = ["Board", "DcRow", "DrillRow", "FindingRow", "RunRow", "ServiceRow", "TierDrills",
           "TierRow"]


class DcRow(BaseModel):
    """One DC: its state, its share of all users and of each traffic class, its services."""

    name: str
    state: str = Field(description="up | degraded | down | drained | unknown")
    share: float | None = None
    class_shares: dict[str, float | None] = Field(default_factory=dict)
    services: int = 0
    services_up: int | None = None
    problem: str | None = None


class ServiceRow(BaseModel):
    """A service and, per DC it is meant to run in, healthy instances of the expected."""

    name: str
    group: str
    traffic_class: str | None
    role: str
    expected: dict[str, int] = Field(default_factory=dict)
    healthy: dict[str, int | None] = Field(default_factory=dict)

    def health(self, dc: str) -> str:
        """ok | partial | down | unknown | absent: what one cell of the page says."""
        expected = self.expected.get(dc, 0)
        seen = self.healthy.get(dc)
        if expected == 0 and not seen:
            return "absent"
        if seen is None:
            return "unknown"
        if seen == 0:
            return "down"
        return "ok" if seen >= expected else "partial"


class TierRow(BaseModel):
    tier: int
    rto_target_s: float
    services: list[ServiceRow]


class RunRow(BaseModel):
    """A run as the board shows it: the ``revive status`` row plus its current step."""

    id: str
    runbook: str
    target_dc: str | None
    by: str
    trigger: str
    started_at: datetime
    ago: str
    outcome: str
    dry_run: bool
    steps_done: int
    steps: int
    current_step: str | None = None
    waiting_for: str | None = None
    abort_requested: bool = False
    heartbeat_ago: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def percent(self) -> int:
        return round(100 * self.steps_done / self.steps) if self.steps else 0


class DrillRow(BaseModel):
    run_id: str
    started_at: datetime
    scenario: str
    lost_dc: str
    trigger: str
    outcome: str
    report_dir: str


class TierDrills(BaseModel):
    """One tier over the last drills, oldest first: RTO seconds, None = never back."""

    tier: str
    target_s: float | None
    rto_s: list[float | None]
    trend: str = Field("", description="The newest RTO against the earlier drills' median.")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def last(self) -> float | None:
        return self.rto_s[-1] if self.rto_s else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def met(self) -> bool | None:
        """Whether the newest drill brought the tier back within its target."""
        if not self.rto_s:
            return None
        return self.last is not None and (self.target_s is None or self.last <= self.target_s)


class FindingRow(BaseModel):
    rule: str
    severity: str
    subject: str
    message: str
    hint: str


class Board(BaseModel):
    generated_at: datetime
    topology: str
    environment: str | None = None
    dcs: list[DcRow] = Field(default_factory=list)
    traffic_classes: list[str] = Field(default_factory=list)
    tiers: list[TierRow] = Field(default_factory=list)
    running: list[RunRow] = Field(default_factory=list)
    recent: list[RunRow] = Field(default_factory=list)
    drills: list[DrillRow] = Field(default_factory=list)
    drill_tiers: list[TierDrills] = Field(default_factory=list)
    findings: list[FindingRow] = Field(default_factory=list)
    findings_checked_on: str | None = None
    problems: dict[str, str] = Field(
        default_factory=dict, description="Section -> why it is (partly) unknown.")
