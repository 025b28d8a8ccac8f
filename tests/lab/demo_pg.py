"""A throwaway PostgreSQL database (and login role) for the demo service's tests.

The server at 127.0.0.1:5432 (trust auth, CI starts it; ``REVIVE_TEST_POSTGRES_URL`` names
another admin database) gets ``revive_lab_test_<random>`` and a role of the same name that
owns nothing. Why a role of its own: a superuser ignores ``REVOKE CONNECT``, so the demo
service must log in as an ordinary role for a test to cut it off from its database.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.postgres import admin_connection, admin_url


def admin() -> psycopg.Connection:
    """An autocommit connection to the admin database; fails the test if the server is down."""
    return admin_connection("the lab tests")


@dataclass(frozen=True)
class LabDatabase:
    """One test database and the ordinary role the demo service logs in as."""

    name: str

    @property
    def dsn(self) -> str:
        params = conninfo_to_dict(admin_url())
        params.pop("password", None)
        return make_conninfo(**{**params, "dbname": self.name, "user": self.name})

    def cut_off(self) -> int:
        """Take the database away from its clients, as an outage does: no new connections
        (``REVOKE CONNECT``), and every open one terminated. Returns how many were."""
        with admin() as conn:
            conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC")
                         .format(sql.Identifier(self.name)))
            row = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()", (self.name,)).fetchone()
        return int(row[0]) if row else 0

    def seed_items(self, rows: int) -> None:
        """``items(id, name, stock)`` as the lab seeds it, readable by the demo's role."""
        with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute("CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, "
                         "stock integer NOT NULL)")
            conn.execute("INSERT INTO items SELECT g, 'item-' || g, g %% 100 "
                         "FROM generate_series(1, %s) AS g", (rows,))
            conn.execute(sql.SQL("GRANT SELECT ON items TO {}")
                         .format(sql.Identifier(self.name)))

    @property
    def admin_dsn(self) -> str:
        """The admin role, in this database."""
        return make_conninfo(admin_url(), dbname=self.name)

    def restore(self) -> None:
        with admin() as conn:
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO PUBLIC")
                         .format(sql.Identifier(self.name)))


@contextmanager
def lab_database() -> Iterator[LabDatabase]:
    """Create the database and its role; drop both at the end, whatever the test left."""
    db = LabDatabase(f"revive_lab_test_{os.getpid()}_{secrets.token_hex(4)}")
    name = sql.Identifier(db.name)
    with admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    try:
        yield db
    finally:
        with admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(name))
