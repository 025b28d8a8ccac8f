"""``revive status`` shows a run whose heartbeat stopped as crashed; ``revive abort`` abandons
it at once (nobody is left to stop it), and says so."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from revive.cli import app
from revive.store import db, service
from revive.store.models import RunOutcome, TriggerSource

runner = CliRunner()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'revive.db'}"
    monkeypatch.setenv("REVIVE_DATABASE_URL", url)
    monkeypatch.delenv("REVIVE_SIM_URL", raising=False)
    return url


def stranded_run(url: str, *, minutes: float) -> str:
    """A failover of dc2 whose process last beat ``minutes`` ago."""
    engine = db.get_engine(url)
    db.upgrade(engine)
    then = (datetime.now(UTC) - timedelta(minutes=minutes)).replace(tzinfo=None)
    try:
        with db.session(engine) as s:
            run = service.create_run(s, runbook="failover", parameters={},
                                     trigger=TriggerSource.SLACK, triggered_by="ana",
                                     target_dc="dc2")
        with engine.begin() as conn:
            conn.execute(text("UPDATE run_record SET heartbeat_at = :t, started_at = :t"),
                         {"t": then})
        return run.id
    finally:
        engine.dispose()


def status_rows() -> list[dict]:
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["runs"]


def test_status_shows_a_run_without_heartbeat_as_crashed_and_abort_abandons_it(
    store: str,
) -> None:
    run_id = stranded_run(store, minutes=10)
    (row,) = status_rows()
    assert (row["id"], row["outcome"], row["crashed"]) == (run_id, "crashed", True)
    table = " ".join(runner.invoke(app, ["status"]).stdout.split())  # cells wrap
    for words in ("crashed (last heartbeat", "10 min ago:", "--resume", "abort it)"):
        assert words in table

    result = runner.invoke(app, ["abort", run_id[:12]])
    assert result.exit_code == 0, result.output
    assert f"failover run {run_id} had crashed (no heartbeat): marked aborted" in " ".join(
        result.stdout.split())
    (row,) = status_rows()
    assert (row["outcome"], row["crashed"], row["abort_requested"]) == ("aborted", False, True)
    engine = db.get_engine(store)
    try:
        with db.session(engine) as s:
            (event,) = service.get_audit_events(s, run_id=run_id)
            assert (event.action, event.outcome) == ("abort", "abandoned")
            assert service.get_run_or_raise(s, run_id).outcome is RunOutcome.ABORTED
    finally:
        engine.dispose()

    again = runner.invoke(app, ["abort", run_id[:12]])
    assert again.exit_code == 2
    assert "is aborted; only a running run can be aborted" in again.stderr


def test_a_run_that_still_beats_is_running_and_abort_only_asks(store: str) -> None:
    run_id = stranded_run(store, minutes=1)  # inside the two minutes: alive
    (row,) = status_rows()
    assert (row["outcome"], row["crashed"]) == ("running", False)
    result = runner.invoke(app, ["abort", run_id])
    assert result.exit_code == 0, result.output
    assert "it stops after its current step" in result.stdout
    (row,) = status_rows()
    assert (row["outcome"], row["abort_requested"]) == ("running", True)
