"""Fault campaigns and fuzzing: the figures behind docs/reliability.md.

``make test`` runs them with few trials; ``make reliability`` runs them at full size and,
when every one passed, rewrites docs/reliability.md from the rows they recorded.
"""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime

import pytest
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from tests.factories import REPO
from tests.reliability.figures import FIGURES, MODE_ENV, full

DOC = REPO / "docs" / "reliability.md"
AREAS = ["crash", "replicas", "chat", "races", "store", "input"]


@pytest.fixture
def record_test(request: pytest.FixtureRequest) -> str:
    """This test's node id, for the row's reproducing command."""
    return request.node.nodeid


def write_doc() -> None:
    env = Environment(loader=FileSystemLoader(str(REPO / "tests" / "reliability")),
                      undefined=StrictUndefined, keep_trailing_newline=True,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["cell"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    rows = sorted(FIGURES.rows, key=lambda r: (AREAS.index(r.area) if r.area in AREAS
                                               else len(AREAS), r.area, r.fault))
    DOC.write_text(env.get_template("reliability.md.j2").render(
        rows=rows, when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=f"{os.cpu_count()} cores, Python {platform.python_version()}",
    ))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not full() or not FIGURES.rows:
        return
    if exitstatus != 0:
        print(f"\nreliability: not all campaigns passed; {DOC} left as it was")
        return
    write_doc()
    print(f"\nreliability: {len(FIGURES.rows)} rows written to {DOC} ({MODE_ENV}=full)")
