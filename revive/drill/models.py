"""The drill's result as data: what a drill measured, in the shape its report publishes.

All ``*_s`` times (``fault_at_s``, step starts and ends, ramp ``t``) are simulated seconds on
one clock; RTOs and targets are durations in seconds measured from the fault. NaN and
infinity are refused when a model is built: strict JSON cannot carry them, and a report that
only fails when it is written would fail at the worst moment. A tier that never recovered has
``rto_s=None``.

The models know nothing of how they are drawn or written (``charts`` and ``report`` import
them, never the other way round).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

WALL_CLOCK_FIELDS = ("started_at", "wall_seconds")
"""Fields that depend on when and how fast the drill ran, not on what happened in it."""


class _Model(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)


class TierResult(_Model):
    """How long a tier took to be serving again in the target DC, against its target."""

    tier: int
    rto_s: float | None
    """Seconds from the fault until every service of the tier served; ``None``: never."""
    target_s: float
    met: bool
    services: int


class StepResult(_Model):
    """One runbook step as it ran: ``state`` is ``done``, ``failed`` or ``skipped``."""

    key: str
    action: str
    target: str
    state: str
    started_s: float | None
    ended_s: float | None
    detail: str = ""


class RampPoint(_Model):
    """One sample of the warm-up ramp in the target DC (all ratios are 0..1)."""

    t: float
    share: float
    db_util: float
    hit_ratio: float
    error_rate: float


class GraphStep(_Model):
    """One step of the failover's recovery graph: what it waited for, when it ran
    (seconds after the fault; ``None`` if it never started)."""

    key: str
    action: str
    target: str
    after: list[str]
    start_s: float | None
    end_s: float | None


class FindingRow(_Model):
    """A readiness finding as it stood when the drill ran."""

    rule: str
    severity: str
    subject: str
    message: str


class SlowStep(_Model):
    """A step that took longer than the 75th percentile of its own history: the same step
    key in the drills before this one (the way Facebook's Maelstrom flags a stuck step)."""

    key: str
    seconds: float
    p75: float
    samples: int = 0
    """How many earlier runs of the step the percentile was taken over."""


class DrillReport(_Model):
    """Everything a drill publishes. ``outcome`` is one of :data:`OUTCOMES`."""

    scenario: str
    seed: int
    outcome: str
    headline: str = ""
    """One sentence: which tiers missed their target, by how much, and what held them up."""
    topology: str
    topology_hash: str
    environment: str
    lost_dc: str
    target_dcs: list[str]
    fault_at_s: float
    finished_at_s: float
    started_at: str
    wall_seconds: float
    tiers: list[TierResult]
    peak_db_util: float
    breach_seconds: int
    deployed: list[str]
    provisioned: list[str]
    restarted: list[str]
    patched: list[str]
    failed: list[str]
    steps: list[StepResult]
    graph: list[GraphStep] = []
    ramp: list[RampPoint]
    findings: list[FindingRow]
    notes: list[str] = []
    final_weights: dict[str, dict[str, float]] = {}
    """GSLB weights per traffic class and DC when the drill ended."""
    simulation: dict[str, Any] = {}
    """Every simulator knob in force (the topology's ``simulation:`` with defaults filled)."""
    target: str = "simulator"
    """What the drill ran on: ``simulator``, or ``lab`` (real processes, real adapters)."""
    ramp_holds: int | None = None
    """Holds the ramp made on the metrics it read (a lab drill: at least one shows the gate
    worked on real numbers)."""
    slow_steps: list[SlowStep] = []
    """Steps slower than their own history (see :class:`SlowStep`); empty without one."""

    @property
    def targets(self) -> str:
        """The DCs recovered into, for sentences and titles."""
        return ", ".join(self.target_dcs)

    def to_json_dict(self) -> dict[str, Any]:
        """Every field, plus per-tier ``rto_seconds``, ``rto_target_seconds`` and ``rto_met``.

        The derived maps are keyed ``tier0``, ``tier1``... so a dashboard or a regression
        check can read one number without walking the tier list. The extra keys are ignored
        when the dict is validated back into a :class:`DrillReport`.
        """
        data = self.model_dump(mode="json")
        tiers = sorted(self.tiers, key=lambda t: t.tier)
        data["rto_seconds"] = {f"tier{t.tier}": t.rto_s for t in tiers}
        data["rto_target_seconds"] = {f"tier{t.tier}": t.target_s for t in tiers}
        data["rto_met"] = {f"tier{t.tier}": t.met for t in tiers}
        return data

    def comparable_dict(self) -> dict[str, Any]:
        """:meth:`to_json_dict` without :data:`WALL_CLOCK_FIELDS`: equal for equal drills."""
        data = self.to_json_dict()
        for name in WALL_CLOCK_FIELDS:
            data.pop(name, None)
        return data

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> DrillReport:
        """Read back what :meth:`to_json_dict` wrote (derived keys are recomputed, not read)."""
        return cls.model_validate(data)
