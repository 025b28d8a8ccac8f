"""Behaviour of the store on SQLite and PostgreSQL: migrating, runs, steps, audit, errors, CLI."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, inspect, make_url, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from typer.testing import CliRunner

from revive.cli.db import app as db_app
from revive.errors import InputError, StoreError
from revive.store import db as store_db
from revive.store import service
from revive.store.models import (
    AuditEvent,
    AuditSource,
    RunOutcome,
    RunRecord,
    StepRecord,
    StepState,
    TriggerSource,
)

if TYPE_CHECKING:
    from .conftest import Clock

STORE_TABLES = {"topology_version", "run_record", "step_record", "audit_event"}
UNREACHABLE = "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/x"


def sha(text_: str) -> str:
    return hashlib.sha256(text_.encode()).hexdigest()


def new_run(db: Session, **overrides: object) -> RunRecord:
    args: dict[str, object] = {
        "runbook": "failover",
        "parameters": {"group": "payments"},
        "trigger": TriggerSource.CLI,
        "triggered_by": "alice",
        "target_dc": "dc2",
    }
    args.update(overrides)
    return service.create_run(db, **args)  # type: ignore[arg-type]


# --- migrating ------------------------------------------------------------------------------


def test_upgrade_creates_tables_and_is_idempotent(store_url: str) -> None:
    assert store_db.current_revision(store_url) is None
    revision = store_db.upgrade(store_url)
    assert revision == store_db.head_revision()
    engine = store_db.get_engine(store_url)
    try:
        assert STORE_TABLES | {"alembic_version"} <= set(inspect(engine).get_table_names())
        assert store_db.upgrade(engine) == revision  # second run: nothing to do
        assert store_db.current_revision(engine) == revision
        with engine.connect() as conn:  # the engine passed in is still usable
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    finally:
        engine.dispose()


def test_enum_columns_are_plain_strings(engine: Engine) -> None:
    columns = {
        (table, column["name"]): column["type"]
        for table in STORE_TABLES
        for column in inspect(engine).get_columns(table)
    }
    for key in [
        ("run_record", "trigger"),
        ("run_record", "outcome"),
        ("step_record", "state"),
        ("audit_event", "source"),
    ]:
        assert type(columns[key]).__name__.upper() == "VARCHAR", key
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            enums = conn.execute(text("SELECT count(*) FROM pg_type WHERE typtype = 'e'"))
            assert enums.scalar_one() == 0


def test_newer_database_than_code_is_a_store_error(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(StoreError, match="9999"):
        store_db.upgrade(engine)


# --- topology versions ----------------------------------------------------------------------


def test_topology_version_dedup_by_hash(db: Session) -> None:
    first = service.get_or_create_topology_version(
        db, source="topo.yaml", content_hash=sha("a"), snapshot={"dcs": ["dc1", "dc2"]}
    )
    again = service.get_or_create_topology_version(
        db, source="elsewhere.yaml", content_hash=sha("a").upper(), snapshot={"other": 1}
    )
    other = service.get_or_create_topology_version(
        db, source="topo.yaml", content_hash=sha("b"), snapshot={"dcs": ["dc1"]}
    )
    assert first.id is not None
    assert again.id == first.id
    assert again.source == "topo.yaml"
    assert again.snapshot == {"dcs": ["dc1", "dc2"]}
    assert other.id != first.id
    assert first.created_at.tzinfo is not None


def test_topology_version_rejects_non_sha256(db: Session) -> None:
    with pytest.raises(ValueError, match="sha256"):
        service.get_or_create_topology_version(db, source="t", content_hash="abc", snapshot={})


# --- runs -----------------------------------------------------------------------------------


def test_run_lifecycle(engine: Engine, db: Session) -> None:
    version = service.get_or_create_topology_version(
        db, source="topo.yaml", content_hash=sha("t"), snapshot={"dcs": []}
    )
    run = new_run(db, topology_version_id=version.id, parameters={"n": 3, "tags": ["a"]})
    assert len(run.id) == 32
    assert run.outcome is RunOutcome.RUNNING
    assert run.ended_at is None

    finished = service.finish_run(
        db, run.id, outcome=RunOutcome.SUCCEEDED, summary={"steps": 4, "ok": True}
    )
    assert finished.outcome is RunOutcome.SUCCEEDED

    with store_db.session(engine) as fresh:  # read back what was committed
        stored = service.get_run_or_raise(fresh, run.id)
        assert stored.outcome is RunOutcome.SUCCEEDED
        assert stored.trigger is TriggerSource.CLI
        assert stored.parameters == {"n": 3, "tags": ["a"]}
        assert stored.summary == {"steps": 4, "ok": True}
        assert stored.topology_version_id == version.id
        assert stored.dry_run is False
        assert stored.started_at.tzinfo == UTC
        assert stored.ended_at is not None
        assert stored.ended_at.tzinfo == UTC
        assert stored.ended_at >= stored.started_at


def test_resume_and_link_flow_run(db: Session) -> None:
    run = new_run(db)
    linked = service.set_prefect_flow_run_id(db, run.id, prefect_flow_run_id="flow-123")
    assert linked.prefect_flow_run_id == "flow-123"

    service.finish_run(db, run.id, outcome=RunOutcome.FAILED)
    assert service.get_active_run(db, runbook="failover", target_dc="dc2") is None
    resumed = service.resume_run(db, run.id)
    assert resumed.outcome is RunOutcome.RUNNING
    assert resumed.ended_at is None
    active = service.get_active_run(db, runbook="failover", target_dc="dc2")
    assert active is not None
    assert active.id == run.id

    service.finish_run(db, run.id, outcome=RunOutcome.SUCCEEDED)
    with pytest.raises(InputError, match="nothing to resume"):
        service.resume_run(db, run.id)


def test_unknown_run(db: Session) -> None:
    assert service.get_run(db, "0" * 32) is None
    with pytest.raises(InputError, match="no run"):
        service.get_run_or_raise(db, "0" * 32)
    with pytest.raises(InputError):
        service.finish_run(db, "0" * 32, outcome="failed")


def test_finish_run_needs_a_final_outcome(db: Session) -> None:
    run = new_run(db)
    with pytest.raises(ValueError, match="final outcome"):
        service.finish_run(db, run.id, outcome=RunOutcome.RUNNING)
    with pytest.raises(ValueError):
        service.finish_run(db, run.id, outcome="exploded")


def test_create_run_validates_trigger(db: Session) -> None:
    run = new_run(db, trigger="slack")
    assert run.trigger is TriggerSource.SLACK
    with pytest.raises(ValueError):
        new_run(db, trigger="telepathy")


def test_active_run_lookup(db: Session) -> None:
    assert service.get_active_run(db, runbook="failover", target_dc="dc2") is None

    new_run(db, dry_run=True)
    assert service.get_active_run(db, runbook="failover", target_dc="dc2") is None

    finished = new_run(db)
    service.finish_run(db, finished.id, outcome=RunOutcome.ABORTED)
    assert service.get_active_run(db, runbook="failover", target_dc="dc2") is None

    new_run(db, target_dc="dc3")
    new_run(db, runbook="failback")
    assert service.get_active_run(db, runbook="failover", target_dc="dc2") is None

    active = new_run(db)
    found = service.get_active_run(db, runbook="failover", target_dc="dc2")
    assert found is not None
    assert found.id == active.id

    no_dc = new_run(db, runbook="rotate", target_dc=None)
    found = service.get_active_run(db, runbook="rotate", target_dc=None)
    assert found is not None
    assert found.id == no_dc.id


def test_all_runs_newest_first(db: Session, clock: Clock) -> None:
    ids = []
    for n in range(5):  # one active run per (runbook, DC): each of another DC
        ids.append(new_run(db, target_dc=f"dc{n}").id)
        clock.advance(1)
    assert [r.id for r in service.get_all_runs(db)] == ids[::-1]
    assert [r.id for r in service.get_all_runs(db, limit=2)] == ids[:-3:-1]


# --- steps ----------------------------------------------------------------------------------


def test_step_start_finish_and_resume(db: Session, clock: Clock) -> None:
    run = new_run(db)
    step = service.start_step(db, run_id=run.id, step_key="stop-app", action="stop")
    assert step.state is StepState.STARTED
    assert not service.is_step_done(db, run_id=run.id, step_key="stop-app")

    clock.advance(2)
    done = service.finish_step(
        db, run_id=run.id, step_key="stop-app", state=StepState.DONE, detail={"rc": 0}
    )
    assert done.state is StepState.DONE
    assert service.is_step_done(db, run_id=run.id, step_key="stop-app")

    # A resumed run starting it again leaves it exactly as it was.
    clock.advance(10)
    again = service.start_step(db, run_id=run.id, step_key="stop-app", action="stop-v2")
    assert again.id == step.id
    assert again.state is StepState.DONE
    assert again.action == "stop"
    assert again.detail == {"rc": 0}
    assert again.ended_at is not None
    assert (again.ended_at - again.started_at).total_seconds() == 2


def test_failed_or_interrupted_step_starts_again(db: Session, clock: Clock) -> None:
    run = new_run(db)
    first = service.start_step(db, run_id=run.id, step_key="promote", action="promote")
    clock.advance(1)
    service.finish_step(db, run_id=run.id, step_key="promote", state="failed", detail={"e": 1})

    clock.advance(5)
    retried = service.start_step(db, run_id=run.id, step_key="promote", action="promote")
    assert retried.id == first.id
    assert retried.state is StepState.STARTED
    assert retried.started_at == clock.now
    assert retried.ended_at is None
    assert retried.detail == {"e": 1}  # kept unless new detail is given

    clock.advance(5)  # interrupted (left "started"): started once more
    again = service.start_step(
        db, run_id=run.id, step_key="promote", action="promote", detail={"try": 3}
    )
    assert again.state is StepState.STARTED
    assert again.started_at == clock.now
    assert again.detail == {"try": 3}
    assert len(service.get_steps(db, run_id=run.id)) == 1


def test_step_unique_per_run(db: Session) -> None:
    run = new_run(db)
    other = new_run(db, target_dc="dc3")
    service.start_step(db, run_id=run.id, step_key="s1", action="a")
    service.start_step(db, run_id=other.id, step_key="s1", action="a")  # other run: fine
    db.add(StepRecord(run_id=run.id, step_key="s1", action="a"))
    with pytest.raises(IntegrityError):
        db.commit()
    db.rollback()
    assert len(service.get_steps(db, run_id=run.id)) == 1


def test_step_needs_an_existing_run(db: Session) -> None:
    with pytest.raises(StoreError, match="start step"):
        service.start_step(db, run_id="f" * 32, step_key="s", action="a")
    # The session was rolled back and is usable again.
    assert service.get_all_runs(db) == []


def test_finish_step_errors(db: Session) -> None:
    run = new_run(db)
    with pytest.raises(InputError, match="no step"):
        service.finish_step(db, run_id=run.id, step_key="nope", state="done")
    service.start_step(db, run_id=run.id, step_key="s", action="a")
    with pytest.raises(ValueError, match="final state"):
        service.finish_step(db, run_id=run.id, step_key="s", state=StepState.STARTED)


def test_steps_in_start_order_with_timings(db: Session, clock: Clock) -> None:
    run = new_run(db)
    for key, seconds in [("c-first", 1.5), ("a-second", 0.25)]:
        service.start_step(db, run_id=run.id, step_key=key, action=f"do {key}")
        clock.advance(seconds)
        service.finish_step(db, run_id=run.id, step_key=key, state=StepState.DONE)
    service.start_step(db, run_id=run.id, step_key="b-running", action="wait")

    assert [s.step_key for s in service.get_steps(db, run_id=run.id)] == [
        "c-first",
        "a-second",
        "b-running",
    ]
    assert service.get_step_timings(db, run_id=run.id) == [
        {"step_key": "c-first", "action": "do c-first", "state": "done", "seconds": 1.5},
        {"step_key": "a-second", "action": "do a-second", "state": "done", "seconds": 0.25},
        {"step_key": "b-running", "action": "wait", "state": "started", "seconds": None},
    ]
    assert service.get_steps(db, run_id=new_run(db, dry_run=True).id) == []


# --- audit ----------------------------------------------------------------------------------


def test_audit_events(db: Session, clock: Clock) -> None:
    run = new_run(db)
    service.create_audit_event(
        db,
        actor="alice",
        source="cli",
        action="failover",
        target="dc2",
        outcome="ok",
        run_id=run.id,
        detail={"dry_run": False},
    )
    clock.advance(1)
    service.create_audit_event(
        db,
        actor="bob",
        source=AuditSource.SLACK,
        action="failover",
        target="dc2",
        outcome="refused",
        detail={"reason": "run already active"},
    )
    clock.advance(1)
    service.create_audit_event(
        db,
        actor="revive",
        source=AuditSource.SYSTEM,
        action="step",
        target="stop-app",
        outcome="failed",
        run_id=run.id,
    )

    events = service.get_audit_events(db)
    assert [e.actor for e in events] == ["revive", "bob", "alice"]
    assert events[1].source is AuditSource.SLACK
    assert events[1].detail == {"reason": "run already active"}
    assert events[1].run_id is None
    assert all(e.at.tzinfo == UTC for e in events)

    of_run = service.get_audit_events(db, run_id=run.id)
    assert [(e.action, e.outcome) for e in of_run] == [("step", "failed"), ("failover", "ok")]
    assert [e.actor for e in service.get_audit_events(db, limit=1)] == ["revive"]

    with pytest.raises(ValueError):
        service.create_audit_event(
            db, actor="x", source="carrier-pigeon", action="a", target="t", outcome="ok"
        )


def test_naive_timestamps_are_refused(db: Session) -> None:
    db.add(
        AuditEvent(
            at=datetime(2030, 1, 1),  # naive on purpose
            actor="a",
            source=AuditSource.CLI,
            action="a",
            target="t",
            outcome="ok",
        )
    )
    with pytest.raises(StoreError, match="naive"), store_db.translate_errors(None):
        db.commit()
    db.rollback()


# --- where the store is, and what happens when it cannot be reached ----------------------------


def test_default_database_is_under_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    expected = tmp_path / ".revive" / "revive.db"
    assert make_url(store_db.database_url()).database == str(expected)
    assert store_db.upgrade() == store_db.head_revision()
    assert expected.is_file()


def test_database_url_env_is_respected(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(store_db.DATABASE_URL_ENV, store_url)
    assert store_db.database_url() == store_url
    assert store_db.upgrade() == store_db.head_revision()
    with store_db.session() as db:  # default engine: from the environment
        run = new_run(db)
    engine = store_db.get_engine(store_url)
    try:
        with store_db.session(engine) as db:
            assert service.get_run(db, run.id) is not None
    finally:
        engine.dispose()
    assert not (tmp_path / ".revive").exists()


def test_unreachable_database_is_a_store_error() -> None:
    with pytest.raises(StoreError) as info:
        store_db.upgrade(UNREACHABLE)
    message = str(info.value)
    assert "127.0.0.1:1" in message
    assert "hunter2" not in message
    assert "\n" not in message
    assert info.value.__cause__ is not None

    engine = store_db.get_engine(UNREACHABLE)
    try:
        with pytest.raises(StoreError), store_db.session(engine) as db:
            service.get_all_runs(db)
        with pytest.raises(StoreError):
            store_db.current_revision(engine)
    finally:
        engine.dispose()


def test_unmigrated_database_is_a_store_error(store_url: str) -> None:
    engine = store_db.get_engine(store_url)
    try:
        with pytest.raises(StoreError, match="get all runs"), store_db.session(engine) as db:
            service.get_all_runs(db)
    finally:
        engine.dispose()


def test_bad_urls_are_store_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="invalid database URL"):
        store_db.get_engine("not a url")
    with pytest.raises(StoreError):
        store_db.get_engine("nosuchdialect://x/y")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="directory"):
        store_db.upgrade(f"sqlite:///{blocker / 'revive.db'}")


# --- revive db ------------------------------------------------------------------------------


def test_cli_upgrade_and_current(store_url: str) -> None:
    url = make_url(store_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(password="hunter2")  # trust auth ignores it; it must not be printed
    target = url.render_as_string(hide_password=False)
    runner = CliRunner()

    before = runner.invoke(db_app, ["current", "--url", target])
    assert before.exit_code == 0, before.output
    assert "revision none" in before.stdout

    result = runner.invoke(db_app, ["upgrade", "--url", target])
    assert result.exit_code == 0, result.output
    head = store_db.head_revision()
    assert f"at revision {head}" in result.stdout
    assert "hunter2" not in result.output

    again = runner.invoke(db_app, ["upgrade", "--url", target])
    assert again.exit_code == 0
    assert again.stdout == result.stdout

    after = runner.invoke(db_app, ["current", "--url", target])
    assert after.exit_code == 0
    assert f"at revision {head} (head)" in after.stdout


def test_cli_uses_the_environment(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(store_db.DATABASE_URL_ENV, store_url)
    result = CliRunner().invoke(db_app, ["upgrade"])
    assert result.exit_code == 0, result.output
    assert store_db.current_revision(store_url) == store_db.head_revision()


@pytest.mark.parametrize("command", ["upgrade", "current"])
def test_cli_unreachable_database(command: str) -> None:
    result = CliRunner().invoke(db_app, [command, "--url", UNREACHABLE])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: store: could not")
    assert "Traceback" not in result.output
    assert "hunter2" not in result.output
