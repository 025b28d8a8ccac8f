"""Every drill leaves a history: a summary row in the store, read back newest first, shown
with its trend by ``revive drills``, and compared step by step with the next drill."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from sqlalchemy import Engine
from typer.testing import CliRunner

from revive.cli.drills import drills
from revive.drill.models import SlowStep, StepResult
from revive.drill.report import write_report
from revive.drill.trend import FASTER, SLOWER, slow_steps, step_seconds
from revive.runs.drills import (
    REPORTS_DIR_ENV,
    DrillSummary,
    earlier_drills,
    recent_drills,
    record_drill,
    report_dir_name,
    reports_dir,
    step_history,
)
from revive.store import db
from tests.drill.test_report import make_report

T0 = datetime(2030, 1, 6, 10, 0, tzinfo=UTC)


def summary(n: int, *, rto0: float | None = 240.0, rto1: float | None = 900.0,
            scenario: str = "dc-fire", target: str = "simulator", **fields: object
            ) -> DrillSummary:
    data: dict[str, object] = {
        "run_id": f"drill-{n}", "started_at": T0 + timedelta(days=7 * n),
        "finished_at": T0 + timedelta(days=7 * n, seconds=40), "scenario": scenario,
        "lost_dc": "dc1", "trigger": "schedule", "triggered_by": "drill", "outcome": "late",
        "rto_s": {"tier0": rto0, "tier1": rto1}, "target_s": {"tier0": 600.0, "tier1": 1800.0},
        "report_dir": f"/reports/{n}", "target": target,
    }
    data.update(fields)
    return DrillSummary.model_validate(data)


def test_drills_are_read_back_newest_first_and_limited(history_engine: Engine) -> None:
    for n in (2, 0, 3, 1):  # recorded out of order: the history sorts by start time
        record_drill(history_engine, summary(n, rto0=None if n == 3 else 240.0 + n),
                     step_seconds={"restart:api@dc2": 60.0 + n})
    got = recent_drills(history_engine, limit=3)
    assert [d.run_id for d in got] == ["drill-3", "drill-2", "drill-1"]
    newest = got[0]
    assert newest.rto_s == {"tier0": None, "tier1": 900.0}
    assert newest.target_s == {"tier0": 600.0, "tier1": 1800.0}
    assert newest.started_at == T0 + timedelta(days=21)  # aware UTC on both backends
    assert (newest.scenario, newest.lost_dc, newest.trigger, newest.outcome) == (
        "dc-fire", "dc1", "schedule", "late")
    assert len(recent_drills(history_engine)) == 4


def test_recording_a_drill_again_replaces_its_row(history_engine: Engine) -> None:
    record_drill(history_engine, summary(1, outcome="degraded"), step_seconds={})
    record_drill(history_engine, summary(1, outcome="recovered"), step_seconds={"k": 1.0})
    (only,) = recent_drills(history_engine)
    assert only.outcome == "recovered"


def test_step_history_is_per_scenario_and_target_newest_first(history_engine: Engine) -> None:
    record_drill(history_engine, summary(0), step_seconds={"restart:api@dc2": 50.0})
    record_drill(history_engine, summary(1), step_seconds={"restart:api@dc2": 70.0, "x": 1.0})
    record_drill(history_engine, summary(2, scenario="health-checker-down"),
                 step_seconds={"restart:api@dc2": 900.0})
    record_drill(history_engine, summary(3, target="lab"), step_seconds={"restart:api@dc2": 5.0})
    assert step_history(history_engine, scenario="dc-fire", target="simulator") == {
        "restart:api@dc2": [70.0, 50.0], "x": [1.0]}
    assert step_history(history_engine)["restart:api@dc2"] == [5.0, 900.0, 70.0, 50.0]
    earlier = earlier_drills(history_engine, scenario="dc-fire", target="simulator", limit=1)
    assert [d.run_id for d in earlier.drills] == ["drill-1"]
    assert earlier.steps == {"restart:api@dc2": [70.0], "x": [1.0]}


def test_slow_steps_are_kept_with_the_summary(history_engine: Engine) -> None:
    slow = [SlowStep(key="restart:api@dc2", seconds=95.0, p75=61.25, samples=4)]
    record_drill(history_engine, summary(0, slow_steps=slow), step_seconds={})
    assert recent_drills(history_engine)[0].slow_steps == slow


def test_the_reports_directory_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(REPORTS_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert reports_dir() == (tmp_path / ".revive" / "drills").resolve()
    monkeypatch.setenv(REPORTS_DIR_ENV, str(tmp_path / "shared"))
    assert reports_dir() == (tmp_path / "shared").resolve()
    name = report_dir_name(T0, "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0")
    assert name == "20300106T100000Z-0b1c2d3e"


def test_a_report_marks_the_steps_slower_than_their_history(tmp_path: Path) -> None:
    report = make_report()
    seconds = step_seconds(report.steps)
    key = next(iter(seconds))
    history = {k: [v] * 4 for k, v in seconds.items()}
    history[key] = [seconds[key] / 2] * 4  # this step used to take half the time
    slow = slow_steps(seconds, history)
    assert [s.key for s in slow] == [key]
    json_path, html_path = write_report(report.model_copy(update={"slow_steps": slow}), tmp_path)
    data = json.loads(json_path.read_text())
    assert data["slow_steps"] == [{"key": key, "seconds": seconds[key],
                                   "p75": seconds[key] / 2, "samples": 4}]
    html = html_path.read_text()
    assert html.count('<tr class="slow">') == 2  # in the slow-steps table and in all steps
    assert html.count('class="badge b-slow"') == 1 and 'id="slow-steps"' in html
    plain = write_report(report, tmp_path / "plain")[1].read_text()
    assert "b-slow" not in plain.split("</style>")[1] and 'id="slow-steps"' not in plain


def test_a_step_that_failed_is_not_called_slow() -> None:
    failed = StepResult(key="k", action="restart", target="x", state="failed", started_s=0.0,
                        ended_s=999.0)
    assert slow_steps(step_seconds([failed]), {"k": [1.0] * 5}) == []


# --- revive drills -------------------------------------------------------------------------


@pytest.fixture
def cli_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    url = f"sqlite:///{tmp_path / 'revive.db'}"
    monkeypatch.setenv(db.DATABASE_URL_ENV, url)
    db.upgrade(url)
    engine = db.get_engine(url)
    yield engine
    engine.dispose()


def invoke(*args: str):
    app = typer.Typer()
    app.command("drills")(drills)
    app.command("unused")(lambda: None)  # two commands: `drills` stays a sub-command
    return CliRunner().invoke(app, ["drills", *args], env={"COLUMNS": "200"})


def test_revive_drills_shows_each_tier_against_its_target_with_a_trend(cli_store: Engine) -> None:
    rtos = [(240.0, 900.0), (250.0, 910.0), (300.0, 2000.0), (120.0, None)]
    for n, (t0, t1) in enumerate(rtos):
        targets = {"tier0": 300.0 if n == 0 else 600.0, "tier1": 1800.0}  # tier 0's moved
        record_drill(cli_store, summary(n, rto0=t0, rto1=t1, target_s=targets,
                                        trigger="slack" if n == 3 else "schedule",
                                        outcome="degraded" if t1 is None else "late"),
                     step_seconds={})
    result = invoke()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(line for line in lines if "tier0 RTO" in line)
    assert "tier1 RTO" in header
    assert "≤ 10:00" in lines[lines.index(header) + 1]  # the newest drill's targets
    rows = [line for line in lines if line.lstrip().startswith("2030-")]
    assert len(rows) == 4
    newest, before, oldest = rows[0], rows[1], rows[3]
    assert "2030-01-27 10:00" in newest and "slack" in newest and "degraded" in newest
    assert f"2:00 {FASTER}" in newest  # tier 0 faster than the earlier median
    assert f"never {SLOWER}" in newest  # tier 1 never came back
    assert f"33:20 {SLOWER}" in before
    assert "4:00 / 5:00 ·" in oldest  # its target differed from today's: shown
    (footer,) = [line for line in lines if "trend" in line]
    assert "▆▆█▁" in footer and "▁▁█!" in footer  # oldest to newest; "!": never back


def test_revive_drills_json_lists_the_summaries(cli_store: Engine) -> None:
    for n in range(3):
        record_drill(cli_store, summary(n), step_seconds={})
    result = invoke("--json", "--limit", "2")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [d["run_id"] for d in data] == ["drill-2", "drill-1"]
    assert data[0]["rto_s"] == {"tier0": 240.0, "tier1": 900.0}
    assert DrillSummary.model_validate(data[0]) == recent_drills(cli_store, 1)[0]


def test_revive_drills_without_history_says_so(cli_store: Engine) -> None:
    result = invoke()
    assert result.exit_code == 0 and "no drills yet" in result.output
    assert json.loads(invoke("--json").output) == []


def test_revive_drills_limit_is_checked(cli_store: Engine) -> None:
    result = invoke("--limit", "0")
    assert result.exit_code == 2 and "Traceback" not in result.output
