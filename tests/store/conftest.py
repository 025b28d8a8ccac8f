"""Fixtures that run every store test against both backends revive supports.

SQLite: a fresh file under ``tmp_path``. PostgreSQL: one throwaway database for the whole
test session (see ``tests.postgres``), emptied before each test and dropped at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, make_url
from sqlmodel import Session

from revive.store import db as store_db
from revive.store import service
from tests.postgres import throwaway_database


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """SQLAlchemy URL of a uniquely named, throwaway PostgreSQL database for this session."""
    with throwaway_database("revive_test", "the store tests") as url:
        yield url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _empty_postgres(url: str) -> None:
    """Drop everything a previous test created, so each test starts from an empty database."""
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(autouse=True)
def _no_database_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A REVIVE_DATABASE_URL in the developer's shell or CI must not leak into the tests."""
    monkeypatch.delenv(store_db.DATABASE_URL_ENV, raising=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty, never-migrated database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'revive.db'}"
    url: str = request.getfixturevalue("postgres_database")
    _empty_postgres(url)
    return url


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to head; disposed after the test."""
    store_db.upgrade(store_url)
    eng = store_db.get_engine(store_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def db(engine: Engine) -> Iterator[Session]:
    """A session on the migrated database."""
    with store_db.session(engine) as session:
        yield session


class Clock:
    """A fake ``utcnow`` that only moves when told, so timings are exact."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Replace the service's clock with a controllable one."""
    fake = Clock()
    monkeypatch.setattr(service, "utcnow", fake)
    return fake
