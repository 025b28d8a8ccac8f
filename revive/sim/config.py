"""The simulator's knobs: ``SimConfig`` lives with the topology (its ``simulation:`` key)."""

from revive.ops.models import RetryPolicy
from revive.topology.simulation import SimConfig

__all__ = ["RetryPolicy", "SimConfig"]
