"""The verdict of a recovery, derived from its RTO per tier, never beside it.

``recovered``: every tier back within its RTO target; ``late``: every tier back, some after
their target; ``degraded``: a tier not fully back, or a step failed; ``failed``: nobody is
served in the surviving DCs. The drill and the failover runbook judge by this one rule.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

OUTCOMES = ("recovered", "late", "degraded", "failed", "aborted")


class TierRto(BaseModel):
    """When one tier was back, against its target; ``rto_s`` None: not back."""

    tier: int
    rto_s: float | None
    target_s: float

    @property
    def met(self) -> bool:
        return self.rto_s is not None and self.rto_s <= self.target_s


def outcome(tiers: Sequence[TierRto], *, failed_steps: int = 0, serving: bool = True) -> str:
    """The verdict (see the module docstring)."""
    if not serving:
        return "failed"
    if failed_steps or any(t.rto_s is None for t in tiers):
        return "degraded"
    if any(not t.met for t in tiers):
        return "late"
    return "recovered"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def headline(tiers: Sequence[TierRto], verdict: str, *, failed_steps: int = 0,
             critical: dict[int, str] | None = None) -> str:
    """One sentence for people: which tiers missed, by how much, and what held them up
    (``critical``: per tier, the last step on its path)."""
    missed = []
    for t in sorted(tiers, key=lambda t: t.tier):
        why = f" (last step: {critical[t.tier]})" if critical and t.tier in critical else ""
        if t.rto_s is None:
            missed.append(f"tier {t.tier} not back{why}")
        elif not t.met:
            missed.append(f"tier {t.tier} back at {_clock(t.rto_s)}, "
                          f"{_clock(t.rto_s - t.target_s)} over its {_clock(t.target_s)} "
                          f"target{why}")
    parts = [verdict.upper()]
    if missed:
        parts.append("; ".join(missed))
    elif tiers:
        parts.append("every tier back within its target (" + ", ".join(
            f"tier {t.tier} {_clock(t.rto_s or 0)}" for t in sorted(tiers, key=lambda t: t.tier))
            + ")")
    if failed_steps:
        parts.append(f"{failed_steps} step(s) failed")
    return ": ".join(parts[:2]) + ("; " + "; ".join(parts[2:]) if len(parts) > 2 else "")
