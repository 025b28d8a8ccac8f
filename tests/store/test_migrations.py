"""The migrations produce exactly the schema the models describe, on both backends."""

from __future__ import annotations

import ast
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from revive.store import db as store_db
from revive.store.models import metadata

VERSIONS_DIR = store_db.MIGRATIONS_DIR / "versions"


def _differences(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_migrated_schema_matches_models(engine: Engine) -> None:
    assert _differences(engine) == []


def test_downgrade_to_base_and_back(engine: Engine) -> None:
    cfg = store_db.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    assert store_db.current_revision(engine) is None

    assert store_db.upgrade(engine) == store_db.head_revision()
    assert _differences(engine) == []


def test_migrations_are_self_contained() -> None:
    """A migration must keep meaning what it meant: no imports from revive or sqlmodel."""
    scripts = sorted(VERSIONS_DIR.glob("*.py"))
    assert scripts, f"no migrations in {VERSIONS_DIR}"
    for script in scripts:
        tree = ast.parse(Path(script).read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            (node.module or "").split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
        }
        assert not imported & {"revive", "sqlmodel"}, script.name


def test_one_linear_history() -> None:
    """Two heads would make ``upgrade`` ambiguous; a merge revision is needed first."""
    scripts = ScriptDirectory.from_config(store_db.alembic_config())
    assert scripts.get_heads() == [store_db.head_revision()]


def test_upgrades_started_together_in_one_process_all_succeed(tmp_path: Path) -> None:
    """Runs started side by side from Slack each upgrade the store when they open; Alembic's
    module-global proxies must not let those upgrades trample each other."""
    from concurrent.futures import ThreadPoolExecutor

    # The race is on a new file (switching it to WAL); a few fresh files make it likely.
    for attempt in range(10):
        url = f"sqlite:///{tmp_path / f'revive-{attempt}.db'}"
        with ThreadPoolExecutor(max_workers=8) as pool:
            revisions = list(pool.map(lambda _, url=url: store_db.upgrade(url), range(16)))
        assert revisions == [store_db.head_revision()] * 16
        assert store_db.current_revision(url) == store_db.head_revision()
