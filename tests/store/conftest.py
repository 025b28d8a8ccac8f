"""Fixtures that run every store test against both backends revive supports.

SQLite: a fresh file under ``tmp_path``. PostgreSQL: one throwaway database for the whole
test session (``revive_test_<pid>_<random>``) on the server at 127.0.0.1:5432, emptied before
each test and dropped at the end. PostgreSQL tests never skip: if the server is down they fail
and say so, because CI starts it and a silent skip would hide a broken backend.
Set ``REVIVE_TEST_POSTGRES_URL`` to use another server (a libpq URL to its admin database).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, make_url
from sqlmodel import Session

from revive.store import db as store_db
from revive.store import service

ADMIN_URL_ENV = "REVIVE_TEST_POSTGRES_URL"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _admin_url() -> str:
    return os.environ.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL


def _admin_connection() -> psycopg.Connection:
    url = _admin_url()
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
    pytest.fail(
        f"the store tests need PostgreSQL at {store_db.mask_url(url)} "
        f"(set {ADMIN_URL_ENV} to use another server; CI starts one): {reason}",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """SQLAlchemy URL of a uniquely named, throwaway PostgreSQL database for this session."""
    name = f"revive_test_{os.getpid()}_{secrets.token_hex(4)}"
    with _admin_connection() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_url(_admin_url()).set(drivername="postgresql+psycopg", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with _admin_connection() as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


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
