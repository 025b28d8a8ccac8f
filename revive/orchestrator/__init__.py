"""Running revive's orchestrator: the Prefect API replicas, their services, workers per DC.

``stack`` brings the local redundant layout up and down (``revive stack up|down|status``);
``automations`` holds the Prefect automations every orchestrator needs (zombie runs).
"""
