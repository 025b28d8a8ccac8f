"""Alembic environment for revive's store.

Used two ways: programmatically by ``revive.store.db.upgrade`` (which hands over an open
connection in ``config.attributes["connection"]``), and by developers running the ``alembic``
command with ``revive/store/alembic.ini`` to write new revisions. Without a URL in the config,
``REVIVE_DATABASE_URL`` / the default SQLite file is used, exactly as revive itself does.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, TypeDecorator

from revive.store.db import database_url, get_engine
from revive.store.models import metadata

config = context.config
target_metadata = metadata

if config.config_file_name is not None and "connection" not in config.attributes:
    # The alembic command line: log what runs. revive's own upgrade() stays quiet.
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or database_url()


def _render_item(kind: str, obj: Any, _ctx: AutogenContext) -> str | Literal[False]:
    """Render the store's Python-side types as the plain types they store, in new revisions.

    ``UTCDateTime``, ``StrEnumType`` and sqlmodel's ``AutoString`` only convert values; the
    column is a ``DateTime``/``String``. Migrations must not import revive or sqlmodel.
    """
    if kind == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl_instance!r}"
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
    )


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade --sql``) instead of running it."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run against a live database: the caller's connection if given, else our own engine."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = get_engine(_url())
    try:
        with engine.connect() as own:
            _configure(own)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
