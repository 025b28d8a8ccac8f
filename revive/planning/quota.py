"""The one rule for emergency capacity against a DC's quota, for every provisioning step.

A step takes what the quota still grants and escalates the rest: a shortfall for one service
never fails the others, and the instances one step took are not granted twice.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Quota:
    """What a DC's compute tool still grants in this run; ``left=None`` means no limit."""

    left: int | None

    def grant(self, want: int) -> int:
        """How many of ``want`` instances to ask for (0: the quota is exhausted)."""
        return want if self.left is None else max(0, min(want, self.left))

    def spend(self, count: int) -> None:
        if self.left is not None:
            self.left = max(0, self.left - count)


def shortfall_note(service: str, dc: str, want: int, got: int) -> str:
    """The escalation people see in chat and the log."""
    if got <= 0:
        return f"ESCALATE quota: {service} needs {want} in {dc}"
    return f"ESCALATE quota: {service} got {got} of {want} in {dc}"
