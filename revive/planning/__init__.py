"""Recovery plans computed from a topology: plain functions, no Prefect, no I/O.

``plan_restart`` orders a DC's restarts (dependencies first, then tier, under a concurrency
cap); ``plan_capacity`` sizes a DC to carry a share of global peak.
"""

from revive.planning.capacity import CapacityLine, CapacityPlan, plan_capacity
from revive.planning.restart import RestartPlan, RestartStep, plan_restart
from revive.planning.scope import check_dc

__all__ = [
    "CapacityLine",
    "CapacityPlan",
    "RestartPlan",
    "RestartStep",
    "check_dc",
    "plan_capacity",
    "plan_restart",
]
