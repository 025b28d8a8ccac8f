"""revive: recovery runbooks that execute themselves.

This package holds the plain-Python core (topology, planning, readiness rules, store, CLI).
Nothing under ``revive/`` imports Prefect, so it can be tested fast and replayed exactly;
the Prefect flows and tasks live in the top-level ``flows/`` and ``tasks/`` packages.
"""

__version__ = "0.1.0"
