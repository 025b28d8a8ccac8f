"""The reliability figures: each campaign records one row per fault or input class.

``make reliability`` runs every campaign at full size (``REVIVE_RELIABILITY=full``) and,
when all of them pass, rewrites ``docs/reliability.md`` from these rows. ``make test`` runs
the same campaigns with fewer trials, as a fast subset, and writes nothing.

A row says what was done (``trials``), what held and what was lost, measured, never typed
in: a campaign records what it counted, then asserts the goal (nothing lost), so the table
cannot claim more than the run showed.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

#: ``full`` in ``make reliability``; anything else is the fast subset of ``make test``.
MODE_ENV = "REVIVE_RELIABILITY"


def full() -> bool:
    return os.environ.get(MODE_ENV, "").strip().lower() == "full"


def trials(fast: int, full_size: int) -> int:
    """How many trials (or cases) a campaign runs in this mode."""
    return full_size if full() else fast


@dataclass(frozen=True)
class Row:
    """One line of the table in docs/reliability.md."""

    area: str
    """The group it belongs to: crash, replicas, chat, races, store, input."""
    fault: str
    """The fault or input class, as an SRE would name it."""
    trials: int
    held: str
    """What held, with the figure that shows it (e.g. "20/20 runs recovered")."""
    lost: str
    """What was lost or done twice, counted (the goal: "nothing")."""
    command: str
    """The command that reproduces the row."""
    added: str = ""
    """Time the fault added, where that is the question (e.g. "+0.4 s per step, max 1.2 s")."""


@dataclass
class Figures:
    rows: list[Row] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, row: Row) -> None:
        with self._lock:
            self.rows.append(row)


FIGURES = Figures()


def record(area: str, fault: str, *, trials: int, held: str, lost: str, test: str,
           added: str = "") -> None:
    """Record a row; ``test`` is the test's node id (``tests/reliability/x.py::test_y``),
    from which the reproducing command is made."""
    command = f"REVIVE_RELIABILITY=full .venv/bin/pytest '{test}'"
    FIGURES.record(Row(area=area, fault=fault, trials=trials, held=held, lost=lost,
                       command=command, added=added))


def nothing_or(count: int, what: str) -> str:
    """"nothing" for 0, else "3 <what>": the *lost* column."""
    return "nothing" if count == 0 else f"{count} {what}"
