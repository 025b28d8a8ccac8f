"""Real programs for adapter tests: a skip only where a package cannot be installed.

``.ci/run`` installs every package and sets ``REVIVE_REQUIRE_TOOLS=1``: there, a missing
program fails the test instead of skipping it, so CI never passes by skipping silently.
"""

from __future__ import annotations

import os

import pytest

from revive.lab.daemon import ProgramMissing, program


def require(name: str, package: str | None = None, *, paths: tuple[str, ...] = ()) -> str:
    """The program's path, or skip (fail under ``REVIVE_REQUIRE_TOOLS=1``) naming the package."""
    try:
        return program(name, package, paths=paths)
    except ProgramMissing as exc:
        if os.environ.get("REVIVE_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{exc}: .ci/run installs it", pytrace=False)
        pytest.skip(str(exc))
