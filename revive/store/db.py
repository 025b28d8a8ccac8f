"""Opening and migrating the store: where it lives, how to connect, how to bring it to head.

By default the store is a SQLite file, ``.revive/revive.db`` under the current directory, so a
single operator needs nothing set up; ``REVIVE_DATABASE_URL`` points a team at PostgreSQL.
The schema only ever changes through Alembic (``upgrade``), never ``create_all``, so a live
database and a fresh one always have the same shape.

Every failure to reach, migrate or write the database surfaces as ``StoreError`` with the
URL (password masked) and the driver's one-line reason, the original chained as the cause.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlmodel import Session

from revive.errors import StoreError

#: Environment variable that overrides the default SQLite file.
DATABASE_URL_ENV = "REVIVE_DATABASE_URL"

#: Default store location, relative to the current working directory.
DEFAULT_DB_PATH = Path(".revive") / "revive.db"

#: The Alembic scripts shipped inside the package (found next to this file, installed or not).
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def database_url() -> str:
    """The store URL: ``REVIVE_DATABASE_URL`` if set, else ``.revive/revive.db`` under cwd.

    The default is made absolute so that a later ``chdir`` cannot move the store.
    """
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    if url:
        return url
    return f"sqlite:///{(Path.cwd() / DEFAULT_DB_PATH).as_posix()}"


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***``, safe to print and log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def _reason(exc: BaseException) -> str:
    """The driver's own explanation on one line, without SQLAlchemy's SQL and links."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


def store_error(exc: BaseException, url: str | URL | None, doing: str) -> StoreError:
    """A ``StoreError`` saying what was being done, where, and the driver's reason."""
    where = f" at {mask_url(url)}" if url is not None else ""
    return StoreError(f"store: could not {doing}{where}: {_reason(exc)}")


@contextmanager
def translate_errors(url: str | URL | None, doing: str = "use the database") -> Iterator[None]:
    """Turn SQLAlchemy/driver exceptions raised inside into ``StoreError`` (chained)."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise store_error(exc, url, doing) from exc


#: How long a SQLite writer waits for another one before "database is locked".
SQLITE_BUSY_TIMEOUT_S = 30.0


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    """Per connection: enforce foreign keys (SQLite ignores them unless asked), and use the
    write-ahead log so the readers of a busy store (status, Slack) never block its writers
    (runs, the audit trail) and writers queue instead of failing at once.

    WAL is a property of the file, so it is switched on once. The switch needs the file to
    itself and SQLite answers "database is locked" at once, without its busy wait, when
    another connection is opening the same new file; that case is retried here.
    """
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
        delay = 0.005
        while True:
            try:
                mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() in ("wal", "memory"):
                    return
                cursor.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
    finally:
        cursor.close()


def get_engine(url: str | None = None) -> Engine:
    """An engine for ``url`` (default: ``database_url()``); the caller disposes it.

    For a SQLite file the parent directory is created. Nothing connects yet: connection
    failures show up, as ``StoreError``, on first use.
    """
    raw = url or database_url()
    try:
        parsed = make_url(raw)
    except ArgumentError as exc:
        # The raw string is not echoed: it may hold a password.
        raise StoreError(
            "store: invalid database URL (expected e.g. sqlite:///path/revive.db or "
            f"postgresql+psycopg://user@host:5432/revive): {exc}"
        ) from exc
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"store: could not create the directory for {database}: {exc}"
                ) from exc
        # Prefect runs tasks in worker threads; each checks out its own pooled connection.
        kwargs["connect_args"] = {"check_same_thread": False,
                                  "timeout": SQLITE_BUSY_TIMEOUT_S}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(parsed, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise StoreError(f"store: cannot open {mask_url(parsed)}: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _configure_sqlite)
    return engine


@contextmanager
def session(engine: Engine | None = None) -> Iterator[Session]:
    """A session on ``engine`` (default: a new engine on ``database_url()``, disposed after).

    Objects stay readable after commit and after the block (``expire_on_commit=False``), so
    service functions can return them. Database failures inside become ``StoreError``.
    """
    own_engine = engine is None
    bound = get_engine() if engine is None else engine
    try:
        with translate_errors(bound.url), Session(bound, expire_on_commit=False) as db:
            yield db
    finally:
        if own_engine:
            bound.dispose()


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic ``Config`` built in code: no ``alembic.ini`` needed on the user's side."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        # ConfigParser interpolates '%'; percent-encoded passwords must be escaped.
        rendered = make_url(url).render_as_string(hide_password=False)
        cfg.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return cfg


@functools.cache
def head_revision() -> str:
    """The newest revision shipped with this version of revive."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise StoreError(f"store: no migrations found in {MIGRATIONS_DIR}")
    return head


#: Alembic's ``context`` and ``op`` are module-global proxies: two upgrades at once in one
#: process (runs started side by side from Slack) would trample each other.
_UPGRADE_LOCK = threading.Lock()


def upgrade(url_or_engine: str | Engine | None = None) -> str:
    """Migrate the store to head and return the revision it is at.

    Idempotent: at head already, nothing runs. An ``Engine`` passed in is left open; one built
    here from a URL is disposed.
    """
    engine = url_or_engine if isinstance(url_or_engine, Engine) else get_engine(url_or_engine)
    try:
        with translate_errors(engine.url, "read the schema revision"):
            if _current(engine) == head_revision():  # the usual case: nothing to do
                return head_revision()
        with _UPGRADE_LOCK:
            return _upgrade(engine)
    finally:
        if not isinstance(url_or_engine, Engine):
            engine.dispose()


def _upgrade(engine: Engine) -> str:
    cfg = alembic_config()
    with translate_errors(engine.url, "migrate the database"):
        with engine.begin() as connection:
            cfg.attributes["connection"] = connection
            try:
                command.upgrade(cfg, "head")
            except CommandError as exc:
                # Typically a database migrated by a newer revive than this one.
                raise store_error(exc, engine.url, "migrate the database") from exc
        revision = _current(engine)
    if revision is None:  # pragma: no cover - alembic stamps the version table itself
        raise StoreError(f"store: {mask_url(engine.url)} has no revision after upgrading")
    return revision


def _current(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def current_revision(url_or_engine: str | Engine | None = None) -> str | None:
    """The revision the store is at, or ``None`` if it was never migrated."""
    engine = url_or_engine if isinstance(url_or_engine, Engine) else get_engine(url_or_engine)
    try:
        with translate_errors(engine.url, "read the schema revision"):
            return _current(engine)
    finally:
        if not isinstance(url_or_engine, Engine):
            engine.dispose()
