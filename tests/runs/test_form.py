"""Runbook parameters as a form: decision order, the advanced group, the DCs as choices."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.failover import FailoverParams
from flows.restart_service_groups import RestartParams
from revive.runs.form import ADVANCED, lift, with_choices


def _order(schema: dict) -> list[str]:
    props = schema["properties"]
    return sorted(props, key=lambda name: props[name]["position"])


def test_failover_reads_in_the_order_a_person_decides() -> None:
    schema = FailoverParams.model_json_schema()
    order = _order(schema)
    assert order[:4] == ["lost_dc", "target_dcs", "target_dc", "dry_run"]
    assert order[-1] == ADVANCED
    group = schema["properties"][ADVANCED]["properties"]
    assert {"policy", "retry_policy", "max_parallel", "share", "approval_timeout_s"} <= set(group)
    assert not {"trigger", "triggered_by"} & set(schema["properties"])
    assert "additionalProperties" not in schema  # flat keys (CLI, Slack) stay valid


def test_the_advanced_group_and_flat_keys_mean_the_same() -> None:
    grouped = FailoverParams.model_validate({"lost_dc": "dc1", ADVANCED: {"max_parallel": 3}})
    flat = FailoverParams.model_validate({"lost_dc": "dc1", "max_parallel": 3})
    assert grouped == flat and grouped.max_parallel == 3
    default = FailoverParams.model_fields["max_parallel"].default
    assert FailoverParams.model_validate({ADVANCED: None}).max_parallel == default
    with pytest.raises(ValidationError, match="given twice"):
        FailoverParams.model_validate({"max_parallel": 2, ADVANCED: {"max_parallel": 3}})
    with pytest.raises(ValidationError, match="mapping"):
        RestartParams.model_validate({ADVANCED: "max_parallel=3"})
    with pytest.raises(ValidationError, match="max_parallel"):
        RestartParams.model_validate({ADVANCED: {"max_parallel": 0}})
    assert lift([1, 2]) == [1, 2]


def test_dc_fields_become_plain_lists_of_the_topology_dcs() -> None:
    """Not "str or None" behind a type switch: a list, which left empty is not sent."""
    schema = FailoverParams.model_json_schema()
    with_choices(schema, ["ams", "fra", "lhr"])
    props = schema["properties"]
    assert props["lost_dc"] == {
        "title": "Lost DC", "description": props["lost_dc"]["description"], "position": 0,
        "type": "string", "enum": ["ams", "fra", "lhr"]}
    assert props["target_dcs"]["items"] == {"type": "string", "enum": ["ams", "fra", "lhr"]}
    assert props["target_dcs"]["type"] == "array" and "anyOf" not in props["target_dcs"]
    run_from = props[ADVANCED]["properties"]["run_from_dc"]
    assert run_from["enum"] == ["ams", "fra", "lhr"] and "default" not in run_from
    # what the form sends back validates: a choice, or nothing at all
    assert FailoverParams.model_validate({"lost_dc": "ams"}).lost_dc == "ams"
    assert FailoverParams.model_validate({}).lost_dc is None
