"""Names and text from the topology, people and tools print as written, never as Rich markup.

The topology loader refuses such names, but a renderer must not depend on that: every one
here is fed hostile strings directly. "[/]" would make Rich raise (a traceback instead of a
report), "[bold]..." or a link would restyle the output, ":fire:" would become a picture.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from revive.cli import app, check, common, plan, runs
from revive.cli.live import live_progress
from revive.planning import CapacityPlan, FailoverPlan, RestartPlan, SurvivorPlan
from revive.planning.capacity import CapacityLine, FailoverLine
from revive.planning.restart import RestartStep
from revive.readiness import Report, Severity
from revive.readiness.models import Finding
from revive.runs import session
from revive.runs.session import Progress
from revive.store import db, service
from revive.store.models import TriggerSource

HOSTILE = ["a[/]b", "[bold]svc[/bold]", "[link=https://evil.example]x[/link]", "db:fire:",
           "[red]", "[/red]"]
DC = "dc[/]1"
SERVICE = "[bold]svc[/bold]"
GROUP = "g[/]"
OTHER = "[/red]"
LINK = "[link=https://evil.example]x[/link]"
EMOJI = "db:fire:"


def printed(render, *args, console=common.out, **kwargs) -> str:
    with console.capture() as captured:
        render(*args, **kwargs)
    return captured.get()


def assert_literal(text: str, *names: str) -> None:
    for name in names:
        assert name in text, f"{name!r} not printed as written:\n{text}"


def test_check_findings() -> None:
    report = Report(findings=[
        Finding(rule="R1", severity=Severity.error, subject=name, message=f"{name} is down",
                hint=f"restart {name}") for name in HOSTILE])
    text = printed(check.render, report, "topo[/]logy.yaml")
    assert_literal(text, "Readiness of topo[/]logy.yaml", *HOSTILE,
                   *(f"{n} is down" for n in HOSTILE), *(f"fix: restart {n}" for n in HOSTILE))


def test_plan_restart() -> None:
    steps = [RestartStep(service=name, group=GROUP, tier=0, start_s=0, end_s=60)
             for name in HOSTILE]
    restart = RestartPlan(dc=DC, max_parallel=2, groups=[GROUP], steps=steps, makespan_s=60,
                          critical_path_s=60, critical_path=[SERVICE, OTHER],
                          lower_bound_s=60, assumed_healthy=[LINK, EMOJI])
    text = printed(plan.render_restart, restart)
    assert_literal(text, f"Restart plan for {DC}", *HOSTILE, GROUP, f"{SERVICE} -> {OTHER}",
                   f"assumed healthy (outside this plan): {LINK}, {EMOJI}")


def test_plan_provision() -> None:
    lines = [CapacityLine(service=name, tier=0, share=1.2, have=1, need=3, add=2)
             for name in HOSTILE]
    text = printed(plan.render_capacity, CapacityPlan(dc=DC, share=None, services=lines,
                                                      total_add=12), show_all=True)
    assert_literal(text, f"Capacity plan for {DC}", *HOSTILE)


def test_plan_provision_for_a_lost_dc() -> None:
    lines = [FailoverLine(service=name, tier=0, have=1, need=3, add=2) for name in HOSTILE]
    survivor = SurvivorPlan(dc=OTHER, share=1.0, services=lines, total_add=12)
    text = printed(plan.render_failover, FailoverPlan(lost_dc=DC, survivors=[survivor]),
                   share=None, show_all=True)
    assert_literal(text, f"Failover capacity if {DC} is lost", f"{OTHER} without {DC}",
                   *HOSTILE, f"losing {DC}: 12 instance(s)")


def hostile_report() -> dict:
    row = {"id": "0123456789ab[/]", "runbook": SERVICE, "dry_run": False, "target_dc": DC,
           "by": EMOJI, "trigger": "cli", "ago": "1 min", "outcome": "failed",
           "abort_requested": False, "waiting_for": GROUP, "crashed": False,
           "heartbeat_ago": "-", "steps_done": 1, "steps": 2}
    dc = {"dc": DC, "traffic": 0.5, "services_up": 1, "services": 2,
          "problem": f"tool said: [/] {LINK}"}
    return {"runs": [row], "dcs": [dc], "dc_problem": None}


def test_status_tables() -> None:
    text = printed(runs.render_status, hostile_report())
    assert_literal(text, DC, SERVICE, f"{EMOJI} via cli", "0123456789ab",
                   f"tool said: [/] {LINK}", "failed (waiting for", f"approval: {GROUP})")


def test_status_with_no_dcs_and_no_runs() -> None:
    text = printed(runs.render_status, {"runs": [], "dcs": [],
                                        "dc_problem": "topology unreadable: [/]x.yaml"})
    assert_literal(text, "datacenters: unknown (topology unreadable: [/]x.yaml)", "no runs yet")


def test_status_command_with_hostile_run_records(tmp_path: Path, monkeypatch) -> None:
    url = f"sqlite:///{tmp_path / 'revive.db'}"
    monkeypatch.setenv("REVIVE_DATABASE_URL", url)
    monkeypatch.delenv("REVIVE_SIM_URL", raising=False)
    engine = db.get_engine(url)
    db.upgrade(engine)
    with db.session(engine) as s:
        service.create_run(s, runbook="[bold]x[/bold]", parameters={}, trigger=TriggerSource.CLI,
                           triggered_by="eve[/]", target_dc="[red]")
    engine.dispose()
    result = CliRunner().invoke(app, ["status", "--topology", str(tmp_path / "[/]nope.yaml")])
    assert result.exit_code == 0, result.output
    assert_literal(result.stdout, "[bold]x[/bold]", "eve[/] via cli", "[red]", "[/]nope.yaml")
    raw = json.loads(CliRunner().invoke(app, ["status", "--json"]).stdout)
    assert raw["runs"][0]["by"] == "eve[/]"


@pytest.mark.parametrize("current", ["restart:a[/]b@dc1", "restart:[bold]x[/bold]@dc:fire:"])
def test_live_progress_shows_the_current_step_as_written(current: str) -> None:
    def feed() -> None:
        with live_progress("[red]run"):
            for listener in session.PROGRESS_LISTENERS:
                listener(Progress(total=2, done=1, current=current))

    text = printed(feed, console=common.err)
    assert_literal(text, "[red]run", current)
