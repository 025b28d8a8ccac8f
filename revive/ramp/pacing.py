"""An estate's own ramp pacing, from the topology's ``ramp:`` section.

A lab of a few processes warms in seconds and scrapes every second; a real estate warms in
minutes. The defaults suit the latter; ``ramp:`` lets an estate say otherwise, once, for
every run on it. A run's explicit ``policy`` parameter still wins.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, Field

from revive.ramp.controller import RampPolicy


class RampPacing(RampPolicy):
    """``RampPolicy``'s fields plus how often the ramp scrapes; unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scrape_interval_s: float | None = Field(
        None, gt=0, le=300, description="Seconds between scrapes (default: the runbook's).")

    def policy(self) -> RampPolicy:
        return RampPolicy(**self.model_dump(exclude={"scrape_interval_s"}))


def pacing(section: Mapping[str, Any]) -> RampPacing:
    """The pacing a topology's ``ramp:`` section gives (validated when it was loaded)."""
    return RampPacing.model_validate(dict(section))
