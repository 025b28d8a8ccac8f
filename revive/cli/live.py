"""Runs started from the CLI: executed here, with Rich live progress (steps, current step,
real and simulated time) on stderr, so stdout stays for results."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from revive.cli.common import err
from revive.runs import session
from revive.runs.session import Progress as RunProgress


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


@contextmanager
def live_progress(title: str) -> Iterator[None]:
    """A progress line fed by every run of this process. The current step names services
    and DCs from the topology: no column reads its text as Rich markup."""
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("sim {task.fields[sim]}", markup=False),
        TextColumn("{task.fields[current]}", markup=False),
        console=err,
        refresh_per_second=4,
    )
    task = bar.add_task(title, total=None, current="starting", sim="-")

    def listener(p: RunProgress) -> None:
        bar.update(task, completed=p.done, total=max(p.total, p.done) or None,
                   current=p.current[:70], sim=_clock(p.sim_time))

    session.PROGRESS_LISTENERS.append(listener)
    try:
        with bar:
            yield
    finally:
        session.PROGRESS_LISTENERS.remove(listener)


@dataclass(frozen=True)
class Finished:
    """How a flow run here ended: its Prefect id, and what it returned or raised."""

    flow_run_id: str | None
    result: Any = None
    error: BaseException | None = None


def execute(title: str, flow: Any, params: Any) -> Finished:
    """Run ``flow(params)`` here, with live progress, to its end.

    What the flow raised is kept, not re-raised, together with the Prefect flow run it
    ran as, so the caller can find revive's run record (an aborted run's outcome, its id)
    even when the flow failed. It is the flow's own exception, not Prefect's summary of
    the run's state: a gate that timed out leaves a Failed state saying only "never
    resumed", while the flow says which gate and why. An error before the flow started
    (Prefect unreachable) raises."""
    started: list[str] = []

    def note(_flow: Any, flow_run: Any, _state: Any) -> None:
        started.append(str(flow_run.id))

    from prefect import tags

    from revive.cli.common import whoami
    from revive.runs.origin import origin_tags
    from revive.store.models import TriggerSource

    watched = flow.with_options(on_running=[*flow.on_running_hooks, note])
    with live_progress(title), tags(*origin_tags(TriggerSource.CLI, whoami())):
        try:
            result = asyncio.run(watched(params))
        except Exception as exc:
            if not started:
                raise
            return Finished(started[0], error=exc)
    return Finished(started[0] if started else None, result)
