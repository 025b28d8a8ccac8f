"""Who or what started a run, from the run itself rather than from its parameters.

A parameter anyone can type into the Prefect form (``triggered_by``) recorded a CLI run as
"newbie-sre via ui". Slack and the CLI instead tag the runs they create; a run without
those tags was started in the UI or by the API (recorded with Prefect's ``created_by`` when
the server knows who), by a schedule, or by an automation.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel

from revive.store.models import TriggerSource

TRIGGER_TAG = "revive-trigger:"
BY_TAG = "revive-by:"
UNKNOWN = "unknown"
#: Longest name kept from a tag (tags are free text anyone with API access can set).
MAX_BY = 200


class Origin(BaseModel):
    trigger: TriggerSource
    by: str


def origin_tags(trigger: TriggerSource | str, by: str) -> list[str]:
    """The tags Slack and the CLI put on the runs they create."""
    return [f"{TRIGGER_TAG}{TriggerSource(trigger)}", f"{BY_TAG}{by}"]


def origin_of(tags: Iterable[str], *, created_by_type: str | None = None,
              created_by_name: str | None = None, auto_scheduled: bool = False) -> Origin:
    """The run's origin: its revive tags first, then what Prefect recorded."""
    trigger: TriggerSource | None = None
    by: str | None = None
    for tag in tags:
        if tag.startswith(TRIGGER_TAG):
            try:
                trigger = TriggerSource(tag.removeprefix(TRIGGER_TAG))
            except ValueError:
                continue
        elif tag.startswith(BY_TAG):
            by = tag.removeprefix(BY_TAG).strip()[:MAX_BY] or None
    if trigger is not None:
        return Origin(trigger=trigger, by=by or UNKNOWN)
    if auto_scheduled:
        return Origin(trigger=TriggerSource.SCHEDULE, by="schedule")
    if (created_by_type or "").upper() == "AUTOMATION":
        return Origin(trigger=TriggerSource.AUTOMATION,
                      by=f"automation {created_by_name}" if created_by_name else "automation")
    return Origin(trigger=TriggerSource.UI, by=created_by_name or UNKNOWN)


def current_origin() -> Origin:
    """The origin of the flow run this code runs in (a subflow: of its first tagged or
    scheduled ancestor, as far as this process can see), or the tags in force here."""
    from prefect.context import FlowRunContext, TagsContext

    context = FlowRunContext.get()
    run = context.flow_run if context else None
    tags = list(TagsContext.get().current_tags)
    if run is None:
        return origin_of(tags)
    created = run.created_by
    return origin_of([*run.tags, *tags],
                     created_by_type=created.type if created else None,
                     created_by_name=created.display_value if created else None,
                     auto_scheduled=bool(run.auto_scheduled))
