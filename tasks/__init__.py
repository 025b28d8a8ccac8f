"""Prefect tasks: thin wrappers around ``revive/`` adapters, one module per ops-tool kind."""
