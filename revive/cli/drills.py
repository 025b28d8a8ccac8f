"""``revive drills``: the history of drills, with the trend of each tier's RTO."""

from __future__ import annotations
