"""revive's exceptions.

One base class, a shallow tree. Errors a user can cause (a topology file, a CLI parameter)
derive from ``InputError`` and make the CLI exit with status 2 and a located message::

    ReviveError
    ├── InputError            bad input from a person: exit 2, nothing changed
    │   ├── TopologyError     the topology file is invalid (carries every located issue)
    │   └── PlanningError     a plan was asked for something the topology does not have
    └── StoreError            the database could not be reached or migrated
"""

from __future__ import annotations

from dataclasses import dataclass


class ReviveError(Exception):
    """Base class of every error revive raises on purpose."""


class InputError(ReviveError):
    """Input a person gave is wrong; the message says what and where."""


@dataclass(frozen=True, order=True)
class Issue:
    """One problem found in a topology file, located by line and key path."""

    line: int
    key: str
    message: str
    path: str = ""

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        key = f" {self.key}:" if self.key else ""
        return f"{where}{key} {self.message}"


class TopologyError(InputError):
    """The topology is invalid; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = sorted(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class PlanningError(InputError):
    """A plan was requested for a DC, group or share the topology cannot satisfy."""


class StoreError(ReviveError):
    """The store could not be opened, migrated or written."""
