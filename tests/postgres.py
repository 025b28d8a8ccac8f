"""Throwaway PostgreSQL databases on the server CI starts (127.0.0.1:5432, trust auth).

Tests that need PostgreSQL never skip: if the server is down they fail and say so, because
CI starts it and a silent skip would hide a broken backend. Set ``REVIVE_TEST_POSTGRES_URL``
to use another server (a libpq URL to its admin database).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import URL, make_url

from revive.store import db as store_db

ADMIN_URL_ENV = "REVIVE_TEST_POSTGRES_URL"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_url() -> str:
    return os.environ.get(ADMIN_URL_ENV) or DEFAULT_ADMIN_URL


def admin_connection(purpose: str) -> psycopg.Connection:
    url = admin_url()
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
    pytest.fail(
        f"{purpose} need PostgreSQL at {store_db.mask_url(url)} "
        f"(set {ADMIN_URL_ENV} to use another server; CI starts one): {reason}",
        pytrace=False,
    )


@contextmanager
def throwaway_database(prefix: str, purpose: str) -> Iterator[URL]:
    """A uniquely named database (``<prefix>_<pid>_<random>``), dropped on exit."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with admin_connection(purpose) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(admin_url()).set(database=name)
    finally:
        with admin_connection(purpose) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
