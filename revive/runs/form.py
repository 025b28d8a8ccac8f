"""How a runbook's parameters read as a form (the Prefect UI renders the JSON schema).

A person decides in this order: which DC was lost and where to recover, whether to rehearse
first (dry run), then the rest; limits and pacing sit in one "advanced" group with their
defaults. The UI orders fields by each property's ``position`` (PostgreSQL's JSONB does
not keep key order), so every property gets one. The group is a form shape only: a model
accepts ``advanced: {...}`` and lifts its keys to the top level, where the CLI and Slack
set them by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

ADVANCED = "advanced"
#: What a person decides first, in this order (those a runbook has).
FIRST = ("lost_dc", "target_dcs", "target_dc", "dry_run")
#: Limits, pacing and plumbing: grouped under ``advanced``.
GROUPED = (
    "share", "max_parallel", "policy", "retry_policy", "approval_timeout_s", "max_ramp_s",
    "scrape_interval_s", "max_duration_s", "artifact_version", "sim_url", "run_from_dc",
    "canary", "batch_size", "max_error_rate_increase", "gate_s",
)


def shape(schema: dict[str, Any], *, first: Sequence[str] = FIRST,
          grouped: Sequence[str] = GROUPED) -> dict[str, Any]:
    """``schema`` (a model's object schema) with ordered positions and the advanced group."""
    props: dict[str, Any] = schema.get("properties", {})
    names = list(props)
    order = [n for n in first if n in props] + [n for n in names if n not in first]
    advanced = {n: props.pop(n) for n in order if n in grouped}
    ordered = [n for n in order if n not in advanced]
    for position, name in enumerate(ordered):
        props[name]["position"] = position
    if advanced:
        for position, name in enumerate(advanced):
            advanced[name]["position"] = position
        props[ADVANCED] = {
            "title": "Advanced", "type": "object", "position": len(ordered),
            "description": "Limits and pacing; leave them to use the defaults shown.",
            "properties": advanced,
        }
        required = schema.get("required", [])
        if any(n in required for n in advanced):
            schema["required"] = [n for n in required if n not in advanced]
            props[ADVANCED]["required"] = [n for n in required if n in advanced]
    schema.pop("additionalProperties", None)
    return schema


def lift(data: Any) -> Any:
    """Input with an ``advanced`` group has its keys lifted to the top level; a key given
    at both levels is an error, never a silent choice."""
    if not isinstance(data, dict) or ADVANCED not in data:
        return data
    group = data[ADVANCED]
    if group is None:
        return {k: v for k, v in data.items() if k != ADVANCED}
    if not isinstance(group, dict):
        raise ValueError(f"{ADVANCED}: expected a mapping of parameters")
    both = sorted(set(group) & (set(data) - {ADVANCED}))
    if both:
        raise ValueError(f"{ADVANCED}: {', '.join(both)} given twice (at the top level too)")
    return {**{k: v for k, v in data.items() if k != ADVANCED}, **group}


def with_choices(schema: dict[str, Any], dcs: Sequence[str],
                 fields: Sequence[str] = ("lost_dc", "target_dc", "run_from_dc",
                                          "source_dc")) -> None:
    """DC fields of a model's schema offered as lists of the topology's DCs (in place).

    An optional DC (``str | None``) becomes a plain list: left empty it is not sent, and
    the model's default (None) applies. Offered as "str or None" instead, the form would
    open on None and hide the list behind a type switch."""
    props = schema.get("properties", {})
    group = props.get(ADVANCED, {}).get("properties", {})
    for name in fields:
        for where in (props, group):
            if name in where:
                where[name] = _choice(where[name], {"type": "string", "enum": list(dcs)})
    if "target_dcs" in props:
        props["target_dcs"] = _choice(props["target_dcs"], {
            "type": "array", "items": {"type": "string", "enum": list(dcs)},
            "uniqueItems": True})


def _choice(prop: dict[str, Any], offered: dict[str, Any]) -> dict[str, Any]:
    """``prop`` as ``offered``, keeping what the form shows about it (title, help,
    position) and a default only when it is a real value."""
    kept = {k: prop[k] for k in ("title", "description", "position") if k in prop}
    if prop.get("default") is not None:
        kept["default"] = prop["default"]
    return {**kept, **offered}


class FormModel(BaseModel):
    """A runbook's parameters: shaped as a form in their JSON schema, and accepting the
    form's ``advanced`` group as input. An unknown key is an error, never ignored: a
    misspelt limit, or a ``triggered_by`` claiming to be someone, must not pass silently."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _lift_advanced(cls, data: Any) -> Any:
        return lift(data)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        shape(handler.resolve_ref_schema(schema))
        return schema
