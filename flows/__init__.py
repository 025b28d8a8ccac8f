"""Prefect flows, one module per runbook. Flows orchestrate; ``revive/`` computes."""
