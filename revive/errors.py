"""revive's exceptions.

One base class, a shallow tree. Errors a user can cause (a topology file, a CLI parameter)
derive from ``InputError`` and make the CLI exit with status 2 and a located message::

    ReviveError
    ├── InputError            bad input from a person: exit 2, nothing changed
    │   ├── TopologyError     the topology file is invalid (carries every located issue)
    │   └── PlanningError     a plan was asked for something the topology does not have
    ├── StoreError            the database could not be reached or migrated
    └── OpsError              an ops tool failed or refused; carries the tool and target
        ├── TransientOpsError     worth retrying: timeouts, 5xx, every replica unreachable
        │   └── NoDataError           a metric has no series yet: hold, never read it as 0
        └── PermanentOpsError     retrying will not help: the tool said no
            ├── NotFoundError         unknown service, DC, artifact or action
            ├── QuotaError            the compute API has no quota left
            ├── ConflictError         busy, or not possible in the current state
            └── DependencyError       something the action needs is gone (tool, artifact)
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


class OpsError(ReviveError):
    """An ops tool failed or refused. ``tool`` and ``target`` say which and on what."""

    def __init__(self, message: str, *, tool: str = "", target: str = "") -> None:
        super().__init__(message)
        self.tool = tool
        self.target = target


class TransientOpsError(OpsError):
    """Worth retrying later: a timeout, a 5xx, every replica unreachable."""


class NoDataError(TransientOpsError):
    """The metrics tool has no series for what was asked (yet): hold, never read it as 0."""


class PermanentOpsError(OpsError):
    """The tool understood and said no; retrying the same request will not help."""


class NotFoundError(PermanentOpsError):
    """Unknown service, DC, artifact or action."""


class QuotaError(PermanentOpsError):
    """The compute API has no quota left for the request."""


class ConflictError(PermanentOpsError):
    """Busy, or not possible in the current state (e.g. restart of a missing component)."""


class DependencyError(PermanentOpsError):
    """Something the action needs is gone: a boot-time tool, an artifact, a registry."""
