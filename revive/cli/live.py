"""Rich live progress for runs started from the CLI: steps, current step, real and
simulated time. It writes to stderr, so stdout stays for results."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
    bar = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("sim {task.fields[sim]}"),
        TextColumn("{task.fields[current]}"),
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
