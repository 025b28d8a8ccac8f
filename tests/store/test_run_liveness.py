"""One active run per (runbook, DC) is one atomic rule of the store, and a run whose heartbeat
stopped is crashed: it holds nothing, it can be resumed or abandoned. On both backends."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text
from sqlmodel import Session

from revive.errors import InputError
from revive.runs import ActiveRunError, RunSession
from revive.runs.status import recent_runs
from revive.store import db as store_db
from revive.store import service
from revive.store.models import RunOutcome, RunRecord, TriggerSource
from tests.factories import build
from tests.store.conftest import Clock

STALE = service.STALE_AFTER_S


def new_run(db: Session, **overrides: object) -> RunRecord:
    args: dict[str, object] = {"runbook": "failover", "parameters": {},
                               "trigger": TriggerSource.CLI, "triggered_by": "alice",
                               "target_dc": "dc2"}
    args.update(overrides)
    return service.create_run(db, **args)  # type: ignore[arg-type]


def outcome_of(engine: Engine, run_id: str) -> RunRecord:
    with store_db.session(engine) as fresh:
        return service.get_run_or_raise(fresh, run_id)


# --- one active run per (runbook, DC) --------------------------------------------------------


def test_a_second_active_run_of_a_dc_is_refused_naming_the_first(db: Session) -> None:
    first = new_run(db)
    with pytest.raises(ActiveRunError) as info:
        new_run(db, triggered_by="bob")
    assert info.value.run_id == first.id
    assert f"failover for dc2 is already running as run {first.id}" in str(info.value)
    # the session is usable, and nothing was recorded
    assert [r.id for r in service.get_all_runs(db)] == [first.id]
    # other DCs, other runbooks and dry runs are not held by it
    new_run(db, target_dc="dc3")
    new_run(db, runbook="provision")
    new_run(db, dry_run=True)
    new_run(db, dry_run=True)
    service.finish_run(db, first.id, outcome=RunOutcome.FAILED)
    assert new_run(db).id != first.id  # a finished run holds nothing


def in_store(eng: Engine, dc: str) -> str:
    with store_db.session(eng) as s:
        return new_run(s, target_dc=dc).id


def through_a_session(eng: Engine, dc: str) -> str:
    """As the CLI, Slack and the flows open a run."""
    return RunSession.start(runbook="failover", parameters={}, trigger=TriggerSource.CLI,
                            triggered_by="alice", target_dc=dc, topology=build(),
                            topology_source="t.yaml", engine=eng).run_id


def race(engines: list[Engine], dc: str, open_run: Callable[[Engine, str], str]
         ) -> tuple[list[str], list[str], list[BaseException]]:
    """Each engine opens a run of ``dc``, all released at once: (won, refused, errors)."""
    barrier = threading.Barrier(len(engines))
    won: list[str] = []
    refused: list[str] = []
    errors: list[BaseException] = []

    def create(eng: Engine) -> None:
        barrier.wait()
        try:
            won.append(open_run(eng, dc))
        except ActiveRunError as exc:
            refused.append(exc.run_id)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, refused, errors


@pytest.mark.parametrize("open_run", [in_store, through_a_session])
def test_runs_created_together_by_many_writers_exactly_one_wins(
    store_url: str, engine: Engine, open_run: Callable[[Engine, str], str]
) -> None:
    """Writers with their own engines (own connections), released together by a barrier:
    the database's unique index decides, whatever the interleaving."""
    writers = 6
    engines = [store_db.get_engine(store_url) for _ in range(writers)]
    try:
        for round_ in range(5):
            won, refused, errors = race(engines, f"dc{round_}", open_run)
            assert errors == [], f"round {round_}: {errors!r}"
            assert len(won) == 1, f"round {round_}: {len(won)} runs of one DC started"
            assert refused == won * (writers - 1)  # each refusal names the winner
    finally:
        for e in engines:
            e.dispose()


def test_migration_resolves_runs_that_already_break_the_rule(engine: Engine) -> None:
    """A store written before the rule may hold two running runs of one DC: the older is
    marked crashed, so the index can be built and the newer keeps the DC."""
    cfg = store_db.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004_request_replay")
    rows = [("old", "2030-01-01 00:00:00"), ("new", "2030-01-01 00:05:00"),
            ("dry", "2030-01-01 00:06:00")]
    with engine.begin() as conn:
        for run_id, started in rows:
            conn.execute(text(
                "INSERT INTO run_record (id, runbook, parameters, trigger, triggered_by, "
                "target_dc, dry_run, started_at, outcome) VALUES (:id, 'failover', '{}', "
                "'cli', 'alice', 'dc2', :dry, :started, 'running')"),
                {"id": run_id, "dry": run_id == "dry", "started": started})
    assert store_db.upgrade(engine) == store_db.head_revision()
    assert "ux_run_record_one_active" in {i["name"] for i in inspect(engine).get_indexes(
        "run_record")}
    assert outcome_of(engine, "old").outcome is RunOutcome.CRASHED
    assert outcome_of(engine, "new").outcome is RunOutcome.RUNNING
    assert outcome_of(engine, "dry").outcome is RunOutcome.RUNNING


# --- heartbeats and crashed runs -----------------------------------------------------------


def test_a_run_whose_heartbeat_stopped_is_crashed_and_frees_its_dc(
    engine: Engine, db: Session, clock: Clock
) -> None:
    stranded = new_run(db)
    clock.advance(STALE - 20)
    assert service.beat_run(db, stranded.id) is True  # alive: the clock starts again
    clock.advance(STALE - 1)
    assert service.get_active_run(db, runbook="failover", target_dc="dc2").id == stranded.id
    with pytest.raises(ActiveRunError):
        new_run(db)
    (row,) = recent_runs(engine)
    assert (row["outcome"], row["crashed"]) == ("running", False)

    clock.advance(2)  # no heartbeat for longer than the threshold: its process is gone
    assert service.get_active_run(db, runbook="failover", target_dc="dc2") is None
    (row,) = recent_runs(engine)
    assert (row["outcome"], row["crashed"], row["heartbeat_ago"]) == ("crashed", True,
                                                                      "2 min ago")
    fresh = new_run(db, triggered_by="bob")  # the DC is not blocked by the crashed run
    assert service.get_active_run(db, runbook="failover", target_dc="dc2").id == fresh.id
    crashed = outcome_of(engine, stranded.id)
    assert crashed.outcome is RunOutcome.CRASHED and crashed.ended_at == clock.now
    assert service.beat_run(db, stranded.id) is False  # its process, if alive, must stop
    assert [r["outcome"] for r in recent_runs(engine)] == ["running", "crashed"]


def test_the_threshold_is_a_parameter(db: Session, clock: Clock) -> None:
    run = new_run(db)
    clock.advance(11)
    assert service.get_active_run(db, runbook="failover", target_dc="dc2").id == run.id
    assert service.get_active_run(db, runbook="failover", target_dc="dc2",
                                  stale_after_s=10) is None
    assert service.is_crashed(run, stale_after_s=10) and not service.is_crashed(run)
    assert new_run(db, stale_after_s=10).id != run.id


def test_a_crashed_run_is_abandoned_by_abort(engine: Engine, db: Session, clock: Clock) -> None:
    stranded = new_run(db)
    clock.advance(STALE + 1)
    aborted = service.request_abort(db, stranded.id, by="oncall")
    assert aborted.outcome is RunOutcome.ABORTED and aborted.ended_at == clock.now
    assert aborted.abort_requested_by == "oncall"
    assert aborted.summary is not None and aborted.summary["abandoned_by"] == "oncall"
    with pytest.raises(InputError, match="only a running run"):
        service.request_abort(db, stranded.id, by="oncall")

    # one already marked crashed (by the next run of its DC) is abandoned the same way
    other = new_run(db, target_dc="dc3")
    clock.advance(STALE + 1)
    new_run(db, target_dc="dc3")
    assert outcome_of(engine, other.id).outcome is RunOutcome.CRASHED
    assert service.request_abort(db, other.id, by="oncall").outcome is RunOutcome.ABORTED

    # a live run is only asked to stop: it stops itself after its current step
    live = new_run(db, target_dc="dc4")
    asked = service.request_abort(db, live.id, by="oncall")
    assert asked.outcome is RunOutcome.RUNNING and asked.abort_requested_at is not None


def test_a_crashed_run_can_be_resumed_unless_its_dc_is_taken(
    engine: Engine, db: Session, clock: Clock
) -> None:
    stranded = new_run(db)
    clock.advance(STALE + 1)
    resumed = service.resume_run(db, stranded.id)  # nobody else took the DC: resume it
    assert resumed.outcome is RunOutcome.RUNNING and resumed.heartbeat_at == clock.now
    assert service.get_active_run(db, runbook="failover", target_dc="dc2").id == stranded.id

    clock.advance(STALE + 1)
    taken = new_run(db, triggered_by="bob")
    with pytest.raises(ActiveRunError) as info:
        service.resume_run(db, stranded.id)
    assert info.value.run_id == taken.id
    assert outcome_of(engine, stranded.id).outcome is RunOutcome.CRASHED  # unchanged
    service.finish_run(db, taken.id, outcome=RunOutcome.SUCCEEDED)
    assert service.resume_run(db, stranded.id).outcome is RunOutcome.RUNNING


def test_runs_from_before_heartbeats_count_from_their_start(
    engine: Engine, db: Session, clock: Clock
) -> None:
    run = new_run(db)
    with engine.begin() as conn:
        conn.execute(text("UPDATE run_record SET heartbeat_at = NULL"))
    clock.advance(STALE - 1)
    assert service.get_active_run(db, runbook="failover", target_dc="dc2") is not None
    clock.advance(2)
    assert service.get_active_run(db, runbook="failover", target_dc="dc2") is None
    assert new_run(db).id != run.id

