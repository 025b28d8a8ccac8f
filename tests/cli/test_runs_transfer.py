"""``revive runs export`` / ``revive runs import``: finished runs, with their steps, gate
decisions, audit events and topology, carried from a local store into a central one (SQLite
and PostgreSQL); runs already there are skipped, unfinished ones refused, and a bad line
stops the import with nothing written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from sqlmodel import select
from typer.testing import CliRunner

from revive.cli import records
from revive.cli.common import whoami
from revive.store import db, service
from revive.store.models import (
    AuditEvent,
    AuditSource,
    RunOutcome,
    RunRecord,
    StepState,
    TopologyVersion,
    TriggerSource,
)
from revive.topology import canonical_json, content_hash, load
from tests.postgres import throwaway_database

app = typer.Typer()
app.add_typer(records.app, name="runs")
runner = CliRunner()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'laptop.db'}"
    engine = db.get_engine(url)
    db.upgrade(engine)
    engine.dispose()
    yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def central(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'central.db'}"
        return
    with throwaway_database("revive_transfer", "the runs transfer tests") as url:
        yield url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def recorded_run(url: str, *, outcome: RunOutcome | None = RunOutcome.SUCCEEDED,
                 dc: str = "dc2") -> str:
    """A failover of ``dc`` with a topology, two steps, an approved gate and audit events;
    finished with ``outcome`` (None: still running)."""
    topology = load("runbooks/topology.yaml")
    engine = db.get_engine(url)
    db.upgrade(engine)
    try:
        with db.session(engine) as s:
            version = service.get_or_create_topology_version(
                s, source="runbooks/topology.yaml", content_hash=content_hash(topology),
                snapshot=json.loads(canonical_json(topology)))
            run = service.create_run(s, runbook="failover", parameters={"target_dcs": [dc]},
                                     trigger=TriggerSource.CLI, triggered_by="ana",
                                     target_dc=dc, topology_version_id=version.id)
            service.start_step(s, run_id=run.id, step_key="approval:traffic",
                               action="approval", detail={"environment": "production"})
            service.finish_step(s, run_id=run.id, step_key="approval:traffic",
                                state=StepState.DONE)
            service.start_step(s, run_id=run.id, step_key=f"restart:login@{dc}",
                               action="restart")
            service.decide_gate(s, run_id=run.id, gate="traffic", decision="approved",
                                by="os:bo", source=AuditSource.CLI, reason="dc1 burned")
            service.create_audit_event(s, actor="os:bo", source=AuditSource.CLI,
                                       action="approve", target=f"failover:{run.id}",
                                       outcome="approved", run_id=run.id)
            if outcome is not None:
                service.finish_step(s, run_id=run.id, step_key=f"restart:login@{dc}",
                                    state=StepState.DONE)
                service.finish_run(s, run.id, outcome=outcome, summary={"outcome": "done"})
            return run.id
    finally:
        engine.dispose()


def cli(url: str, monkeypatch: pytest.MonkeyPatch, *args: str):
    monkeypatch.setenv("REVIVE_DATABASE_URL", url)
    return runner.invoke(app, ["runs", *args])


def history(url: str, run_id: str) -> dict:
    engine = db.get_engine(url)
    try:
        with db.session(engine) as s:
            run = service.get_run(s, run_id)
            topology = s.get(TopologyVersion, run.topology_version_id)
            return {
                "outcome": str(run.outcome), "by": run.triggered_by,
                "topology": topology.content_hash,
                "steps": sorted((x.step_key, str(x.state)) for x in service.get_steps(
                    s, run_id=run_id)),
                "gate": service.get_gate_decision(s, run_id=run_id, gate="traffic").decided_by,
                "audit": sorted((e.action, e.actor) for e in service.get_audit_events(
                    s, run_id=run_id)),
            }
    finally:
        engine.dispose()


def test_finished_runs_travel_with_their_history_and_only_once(
        local, central, tmp_path, monkeypatch) -> None:
    done = recorded_run(local, outcome=RunOutcome.ABORTED)
    running = recorded_run(local, outcome=None, dc="dc1")
    export = tmp_path / "runs.jsonl"
    result = cli(local, monkeypatch, "export", "--out", str(export))
    assert result.exit_code == 0, result.output
    assert "exported 1 finished run(s)" in result.stderr
    assert "left out 1 unfinished run(s)" in result.stderr and running in result.stderr
    (line,) = export.read_text().splitlines()
    assert json.loads(line)["run"]["id"] == done

    first = cli(central, monkeypatch, "import", str(export))
    assert first.exit_code == 0, first.output
    assert "imported 1 run(s)" in first.stdout
    moved = history(central, done)
    assert moved["audit"] == sorted([("approve", "os:bo"), ("import", f"os:{whoami()}")])
    before = history(local, done)
    assert {k: v for k, v in moved.items() if k != "audit"} == {
        k: v for k, v in before.items() if k != "audit"}
    assert moved["outcome"] == "aborted" and moved["gate"] == "os:bo"

    again = cli(central, monkeypatch, "import", str(export))
    assert again.exit_code == 0, again.output
    assert "imported 0 run(s)" in again.stdout and "skipped 1 already there" in again.stdout
    engine = db.get_engine(central)
    with db.session(engine) as s:
        assert len(s.exec(select(RunRecord)).all()) == 1
        assert len(s.exec(select(TopologyVersion)).all()) == 1
        imports = s.exec(select(AuditEvent).where(AuditEvent.action == "import")).all()
        assert len(imports) == 1
    engine.dispose()


def test_a_topology_the_central_store_knows_stays_one_row(local, tmp_path, monkeypatch) -> None:
    central = f"sqlite:///{tmp_path / 'central.db'}"
    recorded_run(central, dc="dc1")  # the central store used the same topology already
    moved = recorded_run(local)
    export = tmp_path / "runs.jsonl"
    assert cli(local, monkeypatch, "export", "--out", str(export)).exit_code == 0
    assert cli(central, monkeypatch, "import", str(export)).exit_code == 0
    engine = db.get_engine(central)
    with db.session(engine) as s:
        assert len(s.exec(select(TopologyVersion)).all()) == 1
        assert service.get_run(s, moved).topology_version_id == \
            s.exec(select(TopologyVersion)).one().id
    engine.dispose()


def test_since_keeps_only_recent_runs(local, monkeypatch) -> None:
    recorded_run(local)
    assert cli(local, monkeypatch, "export", "--since", "1h").stdout.count("\n") == 1
    later = cli(local, monkeypatch, "export", "--since", "2999-01-01")
    assert later.exit_code == 0 and later.stdout == ""
    bad = cli(local, monkeypatch, "export", "--since", "yesterday")
    assert bad.exit_code == 2 and "--since: 'yesterday'" in bad.stderr


def mangled(line: str, change) -> str:
    data = json.loads(line)
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["run"].update(outcome="running"),
     "is running; only finished runs are imported"),
    (lambda d: d["run"].update(outcome="crashed"), "is crashed; only finished runs"),
    (lambda d: d["run"].update(started_at="2026-01-01T10:00:00"), "run.started_at:"),
    (lambda d: d["steps"][0].update(state="half"), "steps.0.state:"),
    (lambda d: d.update(format="revive.run/9"), "format:"),
    (lambda d: d["topology"]["snapshot"].update(environment="drill"),
     "topology.snapshot does not match its content_hash"),
    (lambda d: d["steps"].append(d["steps"][0]), "steps: approval:traffic more than once"),
])
def test_a_bad_line_is_named_and_nothing_is_written(
        local, tmp_path, monkeypatch, change, message) -> None:
    good = recorded_run(local)
    other = recorded_run(local, dc="dc1")
    lines = cli(local, monkeypatch, "export").stdout.splitlines()
    assert len(lines) == 2
    export = tmp_path / "runs.jsonl"
    export.write_text(f"{lines[0]}\n\n{mangled(lines[1], change)}\n")
    central = f"sqlite:///{tmp_path / 'central.db'}"
    result = cli(central, monkeypatch, "import", str(export))
    assert result.exit_code == 2, result.output
    assert f"{export}:3: " in result.stderr and message in result.stderr
    assert "Traceback" not in result.output
    engine = db.get_engine(central)
    db.upgrade(engine)
    with db.session(engine) as s:
        assert s.exec(select(RunRecord)).all() == []
    engine.dispose()
    assert {good, other}


def test_not_json_and_a_missing_file_exit_2(local, tmp_path, monkeypatch) -> None:
    export = tmp_path / "runs.jsonl"
    export.write_text("{not json\n")
    result = cli(local, monkeypatch, "import", str(export))
    assert result.exit_code == 2 and f"{export}:1: " in result.stderr
    missing = cli(local, monkeypatch, "import", str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 2 and "nope.jsonl: cannot read it" in missing.stderr
