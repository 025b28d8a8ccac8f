"""Fault campaigns and fuzzing: the figures behind docs/reliability.md.

``make test`` runs them with few trials; ``make reliability`` runs them at full size and,
when every one passed, rewrites docs/reliability.md from the rows they recorded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
from datetime import UTC, datetime

import pytest
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from tests.factories import REPO
from tests.reliability.figures import FIGURES, MODE_ENV, Row, full

DOC = REPO / "docs" / "reliability.md"
AREAS = ["crash", "replicas", "chat", "races", "store", "input", "lab"]


@pytest.fixture
def record_test(request: pytest.FixtureRequest) -> str:
    """This test's node id, for the row's reproducing command."""
    return request.node.nodeid


def write_doc(rows: list[Row]) -> None:
    env = Environment(loader=FileSystemLoader(str(REPO / "tests" / "reliability")),
                      undefined=StrictUndefined, keep_trailing_newline=True,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["cell"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    rows = sorted(rows, key=lambda r: (AREAS.index(r.area) if r.area in AREAS
                                       else len(AREAS), r.area, r.fault))
    DOC.write_text(env.get_template("reliability.md.j2").render(
        rows=rows, when=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        machine=f"{os.cpu_count()} cores, Python {platform.python_version()}",
    ))


#: Set by ``make reliability``: only the whole campaign rewrites the page (a full run of one
#: campaign, as a row's command reproduces it, would leave only its own rows).
WRITE_ENV = "REVIVE_RELIABILITY_WRITE"
#: Where each xdist worker leaves its rows for the controlling process to write the page.
ROWS_DIR = REPO / ".revive" / "reliability-rows"


def _worker(config: pytest.Config) -> str | None:
    return getattr(config, "workerinput", {}).get("workerid")


def _writing(config: pytest.Config) -> bool:
    return full() and os.environ.get(WRITE_ENV) == "1"


def pytest_configure(config: pytest.Config) -> None:
    if _writing(config) and _worker(config) is None:  # before any worker starts
        shutil.rmtree(ROWS_DIR, ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _writing(session.config):
        return
    worker = _worker(session.config)
    if worker is not None:  # a worker hands its rows over; the controller writes the page
        ROWS_DIR.mkdir(parents=True, exist_ok=True)
        (ROWS_DIR / f"{worker}.json").write_text(
            json.dumps([dataclasses.asdict(r) for r in FIGURES.rows]))
        return
    rows = list(FIGURES.rows)
    for path in sorted(ROWS_DIR.glob("*.json")):
        rows += [Row(**r) for r in json.loads(path.read_text())]
    shutil.rmtree(ROWS_DIR, ignore_errors=True)
    if not rows:
        return
    if exitstatus != 0:
        print(f"\nreliability: not all campaigns passed; {DOC} left as it was")
        return
    write_doc(rows)
    print(f"\nreliability: {len(rows)} rows written to {DOC} ({MODE_ENV}=full)")
