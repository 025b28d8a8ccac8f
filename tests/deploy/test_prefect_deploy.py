"""`prefect deploy --all` against a real Prefect server creates what prefect.yaml says.

One local server (SQLite in a temporary PREFECT_HOME) for the module: the two DC pools are
created with the CLI as prefect.yaml's header says, every deployment is deployed, then read
back over the REST API by ``<flow>/<deployment>`` name, as a trigger would look it up.
"""

from __future__ import annotations

import gc
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from tests.factories import REPO
from tests.prefect_server import PREFECT, prefect_server, tail

CONFIG = yaml.safe_load((REPO / "prefect.yaml").read_text())
DEPLOYMENTS: list[dict[str, Any]] = CONFIG["deployments"]
POOLS = sorted({d["work_pool"]["name"] for d in DEPLOYMENTS})
COMMAND_TIMEOUT_S = 120.0


def _run(args: list[str], env: dict[str, str], log: Path, cwd: Path = REPO) -> None:
    with log.open("w") as out:
        result = subprocess.run(
            args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT_S, check=False,
        )
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{tail(log)}"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A running server; yields the environment that points the CLI at it."""
    with prefect_server(tmp_path_factory.mktemp("prefect-home")) as env:
        yield env


@pytest.fixture(scope="module")
def deployed(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """Pools created and prefect.yaml deployed; returns the API URL."""
    logs = tmp_path_factory.mktemp("prefect-cli")
    for pool in POOLS:
        _run([PREFECT, "work-pool", "create", pool, "--type", "process"], env,
             logs / f"pool-{pool}.log")
    before = (REPO / "prefect.yaml").read_bytes()
    _run([PREFECT, "--no-prompt", "deploy", "--all"], env, logs / "deploy.log")
    assert (REPO / "prefect.yaml").read_bytes() == before, "prefect deploy rewrote prefect.yaml"
    return env["PREFECT_API_URL"]


def _get(api: str, path: str) -> Any:
    response = httpx.get(f"{api}{path}", timeout=10.0)
    response.raise_for_status()
    return response.json()


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["name"])
def test_deployment_exists_on_its_pool_with_its_parameters(
    deployed: str, deployment: dict[str, Any]
) -> None:
    flow = load_flow_from_entrypoint(str(REPO / deployment["entrypoint"]))
    found = _get(deployed, f"/deployments/name/{flow.name}/{deployment['name']}")
    assert found["work_pool_name"] == deployment["work_pool"]["name"]
    assert found["parameters"] == deployment.get("parameters", {})
    assert found["entrypoint"] == deployment["entrypoint"]
    assert found["paused"] is False
    assert found["enforce_parameter_schema"] is True
    assert "params" in found["parameter_openapi_schema"]["properties"]
    # REVIVE_HOME set at deploy time is written into the deployment
    assert found["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
    ]
    expected = [(s["cron"], s["timezone"]) for s in deployment.get("schedules") or []]
    schedules = [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in found["schedules"]]
    assert schedules == expected
    assert all(s["active"] for s in found["schedules"])


def test_pools_are_process_pools(deployed: str) -> None:
    for pool in POOLS:
        assert _get(deployed, f"/work_pools/{pool}")["type"] == "process"


def test_drill_weekly_and_readiness_daily_are_scheduled(deployed: str) -> None:
    response = httpx.post(f"{deployed}/deployments/filter", json={"limit": 200}, timeout=10.0)
    response.raise_for_status()
    scheduled = {
        d["name"]: [s["schedule"]["cron"] for s in d["schedules"] if s["active"]]
        for d in response.json()
        if d["schedules"]
    }
    assert len(scheduled) == 2, scheduled
    (drill,) = [c for n, c in scheduled.items() if n.startswith("drill-from-")]
    (readiness,) = [c for n, c in scheduled.items() if n.startswith("readiness-check-from-")]
    assert readiness == ["0 6 * * *"]
    assert len(drill) == 1 and drill[0].split()[2:4] == ["*", "*"]
    assert drill[0].split()[4].isdigit(), "once a week"


# Prefect's client leaves a socket to the server open after ``run_deployment`` (as in
# tests/flows/conftest.py); only that warning is ignored, only here.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")
def test_a_run_started_from_slack_becomes_a_run_of_the_dc_deployment(
    deployed: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a Prefect server, Slack's ``run`` creates a deployment run on the target DC's pool
    without waiting for it. Slack delivering the same request again (the same trigger id)
    is answered with the same flow run: the request's idempotency key names it. (One active
    run per DC is the store's rule, applied when the worker opens the run's record.)"""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from pydantic import SecretStr

    from flows.failover import FailoverParams, failover
    from revive.store import db
    from revive.web.access import Access
    from revive.web.replies import Caller, Job
    from revive.web.runner import BackgroundRunner
    from revive.web.settings import WebSettings

    monkeypatch.setenv("REVIVE_DATABASE_URL", f"sqlite:///{tmp_path / 'revive.db'}")
    engine = db.get_engine()
    db.upgrade(engine)
    settings = WebSettings(slack_signing_secret=SecretStr("s"), start_mode="deployment")
    posted: list[str] = []

    def slack(request: httpx.Request) -> httpx.Response:
        posted.append(request.content.decode())
        return httpx.Response(200)

    runner = BackgroundRunner(settings, Access(settings, engine),
                              httpx.Client(transport=httpx.MockTransport(slack)))
    params = FailoverParams(target_dc="dc2")
    caller = Caller("U1", "ana", "C1", "https://hooks.slack.test/r", request_id="TRIG1")
    job = Job("run", "failover", params, caller, ("failover", "dc2"), failover)
    with temporary_settings({PREFECT_API_URL: deployed}):
        runner.execute_deployment(job)
        runner.execute_deployment(job)
    engine.dispose()
    gc.collect()  # let the leaked socket be reported here, where it is ignored
    deployment = _get(deployed, "/deployments/name/failover/failover-from-dc2")
    response = httpx.post(f"{deployed}/flow_runs/filter", timeout=10.0, json={
        "deployments": {"id": {"any_": [deployment["id"]]}}})
    response.raise_for_status()
    (run,) = response.json()
    assert run["state"]["type"] == "SCHEDULED"  # queued for dc2's workers, not waited for
    assert {"revive-trigger:slack", "revive-by:ana (U1)"} <= set(run["tags"])
    assert "triggered_by" not in run["parameters"]["params"]
    assert run["parameters"]["params"]["target_dc"] == "dc2"
    assert "queued on `failover/failover-from-dc2`" in posted[0]
    assert "queued on `failover/failover-from-dc2`" in posted[1] and run["id"] in posted[1]
