"""Who started a run comes from the run (tags, Prefect's record), never from a parameter."""

from __future__ import annotations

import asyncio

import pytest
from prefect import flow, tags

from revive.runs.origin import Origin, current_origin, origin_of, origin_tags
from revive.store.models import TriggerSource


def test_tags_round_trip() -> None:
    assert origin_of(origin_tags("slack", "ana (U1)")) == Origin(trigger=TriggerSource.SLACK,
                                                                 by="ana (U1)")
    assert origin_of(["team-x", *origin_tags(TriggerSource.CLI, "os-bob")]).by == "os-bob"


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, Origin(trigger=TriggerSource.UI, by="unknown")),
    ({"created_by_type": "USER", "created_by_name": "ana@example.com"},
     Origin(trigger=TriggerSource.UI, by="ana@example.com")),
    ({"auto_scheduled": True}, Origin(trigger=TriggerSource.SCHEDULE, by="schedule")),
    ({"created_by_type": "AUTOMATION", "created_by_name": "drill on alert"},
     Origin(trigger=TriggerSource.AUTOMATION, by="automation drill on alert")),
])
def test_untagged_runs_are_what_prefect_recorded(kwargs: dict, expected: Origin) -> None:
    assert origin_of(["unrelated"], **kwargs) == expected


def test_a_bogus_trigger_tag_is_not_believed() -> None:
    assert origin_of(["revive-trigger:root", "revive-by:mallory"]).trigger == TriggerSource.UI
    assert len(origin_of(origin_tags("cli", "x" * 5000)).by) == 200


@flow
async def _whose() -> Origin:
    return current_origin()


def test_a_flow_run_in_a_tags_context_knows_its_origin(prefect_harness: None) -> None:
    with tags(*origin_tags(TriggerSource.CLI, "alice")):
        assert asyncio.run(_whose()) == Origin(trigger=TriggerSource.CLI, by="alice")
    assert asyncio.run(_whose()) == Origin(trigger=TriggerSource.UI, by="unknown")
