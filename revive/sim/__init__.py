"""A deterministic multi-DC simulator that fails the way the seed's data centers did.

``Simulator`` (engine.py) ties together the estate's state machine (estate.py), the load
model of caches, databases and reconnect surges (load.py, cache.py; caches, users and
surges per traffic class and DC, the database per DC) and one virtual clock (clock.py).
It is reached in-process or over HTTP (app.py) exactly like real ops tools.
"""

from revive.sim.config import RetryPolicy, SimConfig
from revive.sim.engine import Simulator

__all__ = ["RetryPolicy", "SimConfig", "Simulator"]
