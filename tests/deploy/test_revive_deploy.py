"""`revive deploy` makes the pools and deployments of any topology on a real Prefect server.

The plan is checked offline on estates of other DC names and counts; then the CLI applies
the 3-DC example to a local server twice (the second time changes nothing it should not),
and the deployments are read back over the REST API, as the UI and a trigger see them.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from revive.orchestrator.automations import ZOMBIE_AUTOMATION
from revive.orchestrator.deploy import plan, prefect_yaml
from revive.runs.catalog import DEPLOYABLES
from revive.topology import load, parse
from tests.factories import EXAMPLE, REPO
from tests.prefect_server import prefect_server

THREE_DC = REPO / "runbooks" / "examples" / "three-dc.yaml"
REVIVE = str(Path(sys.executable).parent / "revive")


def _renamed(names: list[str]) -> Any:
    """The 3-DC example with its DCs renamed (and so, any names and count)."""
    text = THREE_DC.read_text()
    for old, new in zip(load(THREE_DC).dc_names, names, strict=False):
        text = text.replace(old, new)
    return parse(yaml.safe_load(text), "renamed.yaml")


@pytest.mark.parametrize("names", [["ams", "fra", "lhr"], ["a-1", "b-2", "c-3"]])
def test_every_flow_on_every_pool_with_schedules_on_different_dcs(names: list[str]) -> None:
    made = plan(_renamed(names), topology_path="estate.yaml", home="/opt/revive")
    assert made.pools == names
    assert len(made.deployments) == len(DEPLOYABLES) * len(names)
    for dc in names:
        mine = [d for d in made.deployments if d.pool == dc]
        assert {d.name for d in mine} == {f"{item.flow}-from-{dc}" for item in DEPLOYABLES}
    scheduled = {d.flow: d for d in made.deployments if d.schedules}
    assert set(scheduled) == {"readiness-check", "drill"}
    drill = scheduled["drill"]
    assert drill.pool != scheduled["readiness-check"].pool
    assert drill.parameters["params"]["lost_dc"] != drill.pool  # a drill never runs from
    failover = next(d for d in made.deployments if d.name == f"failover-from-{names[2]}")
    assert failover.parameters == {"params": {"topology": "estate.yaml",
                                              "advanced": {"run_from_dc": names[2]}}}
    assert "dc1" not in prefect_yaml(made) and "dc2" not in prefect_yaml(made)


def test_checked_in_prefect_yaml_is_the_one_revive_deploy_writes(tmp_path: Path) -> None:
    target = tmp_path / "prefect.yaml"
    result = subprocess.run([REVIVE, "deploy", "--topology", "runbooks/topology.yaml",
                             "--write-prefect-yaml", str(target)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

    def body(text: str) -> list[str]:  # the Prefect version is the installed one
        return [line for line in text.splitlines() if not line.startswith("prefect-version")]

    assert body(target.read_text()) == body((REPO / "prefect.yaml").read_text()), (
        "prefect.yaml is stale: revive deploy --write-prefect-yaml prefect.yaml")
    assert {d["work_pool"]["name"] for d in yaml.safe_load(target.read_text())[
        "deployments"]} == set(load(EXAMPLE).dc_names)


def test_without_a_server_it_says_so_and_changes_nothing(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([REVIVE, "deploy", "--topology", str(THREE_DC)], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "PREFECT_API_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("datacenters: [{name: east}]\nservices: 3\n")
    result = subprocess.run([REVIVE, "deploy", "--dry-run", "--topology", str(bad)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "bad.yaml" in result.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as env:
        yield env


def _deploy(env: dict[str, str]) -> str:
    result = subprocess.run([REVIVE, "deploy", "--topology", "runbooks/examples/three-dc.yaml"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _post(api: str, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{api}{path}", json=body, timeout=10.0)
    response.raise_for_status()
    return response.json()


def test_applied_twice_pools_deployments_schedules_and_automation(
        server: dict[str, str]) -> None:
    api = server["PREFECT_API_URL"]
    first = _deploy(server)
    assert "work pool east: created" in first and "failover/failover-from-north: created" in first
    again = _deploy(server)
    assert "created" not in again.replace("automation", "")
    assert "failover/failover-from-north: updated" in again
    dcs = load(THREE_DC).dc_names
    pools = {p["name"]: p["type"] for p in _post(api, "/work_pools/filter", {})}
    assert {dc: "process" for dc in dcs}.items() <= pools.items()
    deployments = _post(api, "/deployments/filter", {"limit": 200})
    assert len(deployments) == len(DEPLOYABLES) * len(dcs)
    scheduled = {d["name"]: [s["schedule"]["cron"] for s in d["schedules"]]
                 for d in deployments if d["schedules"]}
    assert scheduled == {"readiness-check-from-east": ["0 6 * * *"],
                         "drill-from-west": ["0 10 * * 1"]}
    automations = _post(api, "/automations/filter", {})
    assert [a["name"] for a in automations].count(ZOMBIE_AUTOMATION) == 1


def test_the_form_offers_the_topology_dcs_in_the_order_a_person_decides(
        server: dict[str, str]) -> None:
    api = server["PREFECT_API_URL"]
    _deploy(server)
    response = httpx.get(f"{api}/deployments/name/failover/failover-from-west", timeout=10.0)
    response.raise_for_status()
    found = response.json()
    assert found["parameters"]["params"]["advanced"] == {"run_from_dc": "west"}
    schema = found["parameter_openapi_schema"]
    params = schema["definitions"]["FailoverParams"]["properties"]
    order = sorted(params, key=lambda name: params[name]["position"])
    assert order[:4] == ["lost_dc", "target_dcs", "target_dc", "dry_run"]
    assert order[-1] == "advanced"
    assert "trigger" not in params and "triggered_by" not in params
    assert {"policy", "max_parallel", "share"} <= set(params["advanced"]["properties"])
    assert params["lost_dc"]["enum"] == list(load(THREE_DC).dc_names)
    assert params["target_dcs"]["items"]["enum"] == list(load(THREE_DC).dc_names)


# Prefect's client leaves a socket to the server open after ``run_deployment`` (as in
# tests/deploy/test_prefect_deploy.py); only that warning is ignored, only here.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")
def test_a_run_from_slack_fits_the_form_the_deployment_enforces(
        server: dict[str, str]) -> None:
    """Prefect checks a deployment run's parameters against the form's schema: what the
    Slack runner sends passes it (an unset DC is left out), and a DC not in the topology
    is refused by the server before any worker sees it."""
    import asyncio

    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.failover import FailoverParams, failover
    from revive.web.replies import Caller, Job
    from revive.web.runner import deployment_parameters

    _deploy(server)
    params = FailoverParams(topology="runbooks/examples/three-dc.yaml", lost_dc="east",
                            dry_run=True, max_parallel=3)
    job = Job("run", "failover", params, Caller("U1", "ana", "C1", "https://hooks.test/r"),
              ("failover", "east"), failover)
    sent = deployment_parameters(job)
    assert "target_dc" not in sent["params"] and sent["params"]["max_parallel"] == 3

    async def start(parameters: dict[str, Any]) -> Any:
        return await run_deployment("failover/failover-from-west", parameters=parameters,
                                    timeout=0)

    with temporary_settings({PREFECT_API_URL: server["PREFECT_API_URL"]}):
        run = asyncio.run(start(sent))
        assert run.parameters["params"]["lost_dc"] == "east"
        with pytest.raises(Exception, match=r"(?i)valid|422|enum|atlantis"):
            asyncio.run(start({"params": {**sent["params"], "lost_dc": "atlantis"}}))
    gc.collect()  # let the leaked socket be reported here, where it is ignored
