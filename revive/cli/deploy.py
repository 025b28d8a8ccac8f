"""``revive deploy``: Prefect work pools and deployments made from the topology."""

from __future__ import annotations
