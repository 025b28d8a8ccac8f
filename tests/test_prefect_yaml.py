"""prefect.yaml points at flows that exist and parameters they accept."""

from __future__ import annotations

import importlib.util

import yaml
from prefect import Flow

from tests.factories import REPO


def _load_flow(entrypoint: str) -> Flow:
    path, name = entrypoint.split(":")
    spec = importlib.util.spec_from_file_location(f"_entry_{name}", REPO / path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def test_every_deployment_entrypoint_is_a_flow_accepting_its_parameters() -> None:
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    assert config["deployments"]
    for deployment in config["deployments"]:
        flow = _load_flow(deployment["entrypoint"])
        assert isinstance(flow, Flow)
        flow.validate_parameters(deployment.get("parameters") or {})
        for schedule in deployment.get("schedules", []):
            assert len(schedule["cron"].split()) == 5
