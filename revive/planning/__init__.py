"""Recovery plans computed from a topology: plain functions, no Prefect, no I/O.

``plan_restart`` orders a DC's restarts (dependencies first, then effective tier, under a
concurrency cap) on the one scheduler, ``revive.planning.graph``; ``restart_steps`` hands
the same steps to whoever runs them; ``plan_capacity`` sizes a DC to carry a share of global
peak, and ``plan_failover_capacity`` sizes every survivor of a DC loss for the traffic it
receives.
"""

from revive.planning.capacity import (
    CapacityLine,
    CapacityPlan,
    FailoverLine,
    FailoverPlan,
    SurvivorPlan,
    plan_capacity,
    plan_failover_capacity,
)
from revive.planning.restart import (
    RestartPlan,
    RestartStep,
    effective_tiers,
    plan_restart,
    restart_steps,
)
from revive.planning.scope import check_dc

__all__ = [
    "CapacityLine",
    "CapacityPlan",
    "FailoverLine",
    "FailoverPlan",
    "RestartPlan",
    "RestartStep",
    "SurvivorPlan",
    "check_dc",
    "effective_tiers",
    "plan_capacity",
    "plan_failover_capacity",
    "plan_restart",
    "restart_steps",
]
