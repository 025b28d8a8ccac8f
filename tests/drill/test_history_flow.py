"""A drill, however started, lands in the history: a row in revive's store, its report under
REVIVE_REPORTS_DIR, a Prefect artifact and a final state that say the outcome and where the
report is; the next drill marks the steps slower than their past."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest
from prefect import tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from sqlmodel import select

from flows.drill import ARTIFACT_KEY, DrillParams, drill
from revive.render import mdcode
from revive.runs.drills import REPORTS_DIR_ENV, recent_drills
from revive.runs.origin import origin_tags
from revive.store import db
from revive.store.models import DrillRecord
from tests.conftest import PREFECT_SOCKET
from tests.flows.estates import small, write

# Flows run here as in tests/flows: Prefect's client socket to its test server is collected
# after each test, and only its warning is ignored.
pytestmark = [pytest.mark.usefixtures("prefect_harness"), PREFECT_SOCKET]


@pytest.fixture(autouse=True)
def _collect_prefect_sockets() -> Iterator[None]:
    yield
    gc.collect()


async def _artifact_and_state(flow_run_id: str):
    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[ARTIFACT_KEY]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])))
        run = await client.read_flow_run(UUID(flow_run_id))
    assert len(found) == 1
    return found[0], run.state


def test_drills_leave_a_history_and_the_next_one_marks_slow_steps(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REPORTS_DIR_ENV, str(tmp_path / "reports"))
    _, topology = write(tmp_path, small())

    # A drill with no revive tags (as from the Prefect UI): no directory given, the
    # defaults choose it.
    first = asyncio.run(drill(DrillParams(topology=topology, lost_dc="dc1", judge_for_s=600)))
    out = Path(first["out"])
    assert out.parent == (tmp_path / "reports").resolve()
    assert out.name.endswith(first["drill_id"].replace("-", "")[:8])
    assert Path(first["report_html"]) == out / "report.html" and (out / "report.json").exists()
    assert first["outcome"] in ("recovered", "late") and first["history_kept"] is True
    assert first["slow_steps"] == []  # no history yet

    engine = db.get_engine(store_url)
    try:
        (row,) = recent_drills(engine)
        assert (row.run_id, row.scenario, row.lost_dc, row.trigger, row.outcome) == (
            first["drill_id"], "dc-fire", "dc1", "ui", first["outcome"])
        assert row.rto_s == first["rto_seconds"]
        assert row.target_s == first["rto_target_seconds"]
        assert Path(row.report_dir) == out

        artifact, state = asyncio.run(_artifact_and_state(first["drill_id"]))
        assert state.is_completed()
        assert first["outcome"] in state.message and first["report_html"] in state.message
        text = artifact.data
        assert f"Drill `dc-fire`: {first['outcome'].upper()}" in text
        for tier in first["rto_seconds"]:
            assert f"| tier {tier[4:]} |" in text
        assert "first drill to compare" in text
        assert mdcode(first["report_html"]) in text

        # Three earlier drills in which every step took half the time it takes now.
        with db.session(engine) as session:
            recorded = session.exec(select(DrillRecord)).one()
            seconds = dict(recorded.step_seconds)
            for n in range(1, 4):
                session.add(DrillRecord(**{
                    **recorded.model_dump(), "id": f"earlier-{n}",
                    "started_at": recorded.started_at - timedelta(days=7 * n),
                    "step_seconds": {k: v / 2 for k, v in seconds.items()}}))
            session.commit()
        assert seconds, "the drill recorded no step durations"

        # The same drill from the CLI, into a directory of its own.
        with tags(*origin_tags("cli", "ana")):
            second = asyncio.run(drill(DrillParams(
                topology=topology, lost_dc="dc1", judge_for_s=600,
                out=str(tmp_path / "mine"))))
        slow = {s["key"]: s for s in second["slow_steps"]}
        assert set(slow) == {k for k, v in seconds.items() if v > 0}
        assert all(s["seconds"] > s["p75"] and s["samples"] == 4 for s in slow.values())
        report = json.loads((tmp_path / "mine" / "report.json").read_text())
        assert report["slow_steps"] == second["slow_steps"]
        assert 'class="badge b-slow"' in (tmp_path / "mine" / "report.html").read_text()

        newest = recent_drills(engine, limit=2)
        assert [d.run_id for d in newest] == [second["drill_id"], first["drill_id"]]
        assert (newest[0].trigger, newest[0].report_dir) == (
            "cli", str((tmp_path / "mine").resolve()))
        assert newest[0].triggered_by == "ana"
        assert [s.key for s in newest[0].slow_steps] == [s["key"] for s in second["slow_steps"]]
        artifact, _ = asyncio.run(_artifact_and_state(second["drill_id"]))
        assert "Slower than their history" in artifact.data
    finally:
        engine.dispose()


def test_a_rehearsal_leaves_no_history_and_a_broken_store_loses_only_the_row(
    tmp_path: Path, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, topology = write(tmp_path, small())
    rehearsal = asyncio.run(drill(DrillParams(topology=topology, lost_dc="dc1", judge_for_s=600,
                                              out=str(tmp_path / "r"), history=False)))
    assert rehearsal["history_kept"] is False and (tmp_path / "r" / "report.html").exists()
    engine = db.get_engine(store_url)
    try:
        db.upgrade(engine)
        assert recent_drills(engine) == []
    finally:
        engine.dispose()
    artifact, _ = asyncio.run(_artifact_and_state(rehearsal["drill_id"]))
    assert "not kept (history off" in artifact.data

    # A store that cannot be opened: the drill still reports, and says what it lost.
    monkeypatch.setenv(db.DATABASE_URL_ENV, "postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = asyncio.run(drill(DrillParams(topology=topology, lost_dc="dc1", judge_for_s=600,
                                           out=str(tmp_path / "b"))))
    assert result["history_kept"] is False and (tmp_path / "b" / "report.html").exists()
    artifact, state = asyncio.run(_artifact_and_state(result["drill_id"]))
    assert state.is_completed()
    assert "was not kept" in artifact.data and "127.0.0.1:1" in artifact.data
