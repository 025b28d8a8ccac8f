"""prefect.yaml deploys every flow on both DC pools, with parameters the flows accept.

Fast and offline: flows are loaded the way a worker loads them (Prefect's entrypoint
loader), parameters are checked against the flows, nothing talks to a server. The
deployments on a real server are checked in tests/deploy/.
"""

from __future__ import annotations

import types
import typing
from typing import Any

import pytest
import yaml
from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule
from prefect.flows import load_flow_from_entrypoint
from pydantic import BaseModel, ValidationError

from revive.runs.form import lift
from revive.topology import load
from tests.factories import EXAMPLE, REPO

CONFIG = yaml.safe_load((REPO / "prefect.yaml").read_text())
DEPLOYMENTS: list[dict[str, Any]] = CONFIG["deployments"]
POOLS = set(load(EXAMPLE).dc_names)  # one process work pool per data center


def _path(deployment: dict[str, Any]) -> str:
    return deployment["entrypoint"].split(":", 1)[0]


def _flow(deployment: dict[str, Any]) -> Flow:
    return load_flow_from_entrypoint(
        str(REPO / deployment["entrypoint"]), use_placeholder_flow=False
    )


def _params_model(flow: Flow) -> type[BaseModel]:
    """The pydantic model of the flow's ``params`` argument (``X | None`` unwrapped)."""
    hint = typing.get_type_hints(flow.fn)["params"]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    assert isinstance(hint, type) and issubclass(hint, BaseModel), hint
    return hint


def _pool(deployment: dict[str, Any]) -> str:
    return deployment["work_pool"]["name"]


def _by_id(deployment: dict[str, Any]) -> str:
    return deployment["name"]


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=_by_id)
def test_entrypoint_is_a_flow_named_for_its_pool(deployment: dict[str, Any]) -> None:
    flow = _flow(deployment)
    assert isinstance(flow, Flow)
    assert _pool(deployment) in POOLS
    assert deployment["name"] == f"{flow.name}-from-{_pool(deployment)}"


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=_by_id)
def test_parameters_validate_and_default_to_the_pools_dc(deployment: dict[str, Any]) -> None:
    flow = _flow(deployment)
    parameters = deployment.get("parameters") or {}
    params = lift(parameters.get("params") or {})  # the form's advanced group, flat
    model = _params_model(flow)
    fields = model.model_fields
    per_run = {n for n, f in fields.items() if f.is_required() and n not in params}
    if not per_run:
        flow.validate_parameters(parameters)
    else:  # fields no default can fill (what to patch): each run gives them
        try:
            model.model_validate(params)
        except ValidationError as exc:
            errors = [
                e for e in exc.errors() if not (e["type"] == "missing" and e["loc"][0] in per_run)
            ]
            assert not errors, errors
    # pydantic ignores unknown keys: a misspelt default would vanish without an error
    assert set(params) <= set(fields), f"not parameters of {flow.name}: {set(params) - set(fields)}"
    dc = _pool(deployment)
    if "run_from_dc" in fields:
        assert params.get("run_from_dc") == dc
    if "target_dc" in fields and "lost_dc" not in fields:  # acts on one DC: this one
        assert params.get("target_dc") == dc
    elif "target_dc" in fields:  # moves a lost DC's users: into every survivor unless told
        assert "target_dc" not in params
    if "lost_dc" in params:
        assert params["lost_dc"] in POOLS - {dc}


def test_every_flow_module_is_deployed_on_every_pool() -> None:
    modules = {  # every module that defines a flow, whatever helpers sit beside them
        f"flows/{p.name}" for p in (REPO / "flows").glob("*.py")
        if "\n@flow(" in p.read_text()
    }
    assert len(modules) >= 7
    pools: dict[str, list[str]] = {}
    for deployment in DEPLOYMENTS:
        pools.setdefault(_path(deployment), []).append(_pool(deployment))
    assert modules <= set(pools), f"flows without deployments: {modules - set(pools)}"
    for path, on in pools.items():
        assert sorted(on) == sorted(POOLS), f"{path} is deployed on {on}"


def test_names_are_unique() -> None:
    names = [d["name"] for d in DEPLOYMENTS]
    assert len(names) == len(set(names))


def test_workers_run_in_the_checkout() -> None:
    assert CONFIG["pull"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $REVIVE_HOME }}"}}
    ]


def _schedules(path: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (_pool(d), s)
        for d in DEPLOYMENTS
        if _path(d) == path
        for s in d.get("schedules") or []
    ]


def test_cron_strings_are_valid() -> None:
    schedules = [s for d in DEPLOYMENTS for s in d.get("schedules") or []]
    assert schedules
    for schedule in schedules:
        assert len(schedule["cron"].split()) == 5, schedule
        CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
        assert schedule.get("timezone") == "UTC"
        assert schedule.get("active", True) is True


def test_readiness_check_runs_daily_at_six_utc_from_one_pool() -> None:
    schedules = _schedules("flows/readiness_check.py")
    assert len(schedules) == 1, schedules
    assert schedules[0][1]["cron"] == "0 6 * * *"


def test_drill_runs_weekly_from_one_pool() -> None:
    schedules = _schedules("flows/drill.py")
    assert len(schedules) == 1, schedules
    minute, hour, day, month, weekday = schedules[0][1]["cron"].split()
    assert (day, month) == ("*", "*")
    assert minute.isdigit() and hour.isdigit() and weekday.isdigit(), "once a week"

