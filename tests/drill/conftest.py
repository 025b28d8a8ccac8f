"""A migrated store for the drill-history tests, once per backend revive supports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from revive.store import db
from tests.postgres import throwaway_database


@pytest.fixture(params=["sqlite", "postgresql"])
def history_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a freshly migrated store: a SQLite file, or a throwaway PostgreSQL DB."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'revive.db'}"
        db.upgrade(url)
        engine = db.get_engine(url)
        yield engine
        engine.dispose()
        return
    with throwaway_database("revive_drills", "the drill-history tests") as raw:
        url = raw.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        db.upgrade(url)
        engine = db.get_engine(url)
        yield engine
        engine.dispose()
