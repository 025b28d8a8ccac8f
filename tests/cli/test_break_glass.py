"""Break glass: ``revive run --local`` needs no Prefect server (PREFECT_API_URL points
nowhere here) and no central store; it records in the local store, says how to approve when
it waits at a gate, and takes the decision ``revive approve`` stores from another process
(another operating-system user). A dry run whose tools do not answer plans from the topology
alone and says so."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from revive.cli import app
from revive.cli.live import GateHint, local_mode
from revive.cli.runs import NO_TOOL_ANSWERED
from revive.drill.server import free_port
from revive.runs.approvals import open_gate
from revive.runs.session import Progress
from revive.store import db, service
from revive.store.models import StepState, TriggerSource
from tests.factories import REPO
from tests.flows.estates import small, write

runner = CliRunner()
CAP_S = 600  # a cap on a hung process, not a measurement
DEAD_API = "http://127.0.0.1:9/api"  # nothing listens on the discard port here


def revive_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of an operator's shell: a Prefect server configured (and down), no
    store configured (the local file), a Prefect home of the test's own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "REVIVE_", "COV_"))}
    env.update(PREFECT_API_URL=DEAD_API, PREFECT_UI_URL="http://127.0.0.1:9",
               PREFECT_HOME=str(tmp_path / "prefect"), PREFECT_LOGGING_TO_API_ENABLED="false",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(REPO), **extra)
    return env


def revive(*args: str) -> list[str]:
    return [sys.executable, "-c", "from revive.cli import main; main()", *args]


def wait_for(what: str, check, process: subprocess.Popen, log: Path, cap_s: float = CAP_S):
    deadline = time.monotonic() + cap_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        if process.poll() is not None:
            break
        time.sleep(0.5)
    pytest.fail(f"{what} never happened (exit {process.poll()}):\n{log.read_text()[-3000:]}")


def test_a_local_run_is_approved_by_revive_approve_from_another_process(
        tmp_path: Path, serve) -> None:
    topology, path = write(tmp_path, small(environment="production"))
    sim, sim_url = serve(topology)
    sim.estate.power_loss("dc1")
    work = tmp_path / "laptop"
    work.mkdir()
    store = f"sqlite:///{(work / '.revive' / 'revive.db').as_posix()}"
    log = tmp_path / "run.stderr"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            revive("run", "failover", f"topology={path}", "target_dc=dc2", "lost_dc=dc1",
                   f"sim_url={sim_url}", "approval_timeout_s=600", "--local"),
            cwd=work, env=revive_env(tmp_path, USER="ana", LOGNAME="ana"),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        engine = db.get_engine(store)

        def waiting() -> tuple[str, str] | None:
            if not (work / ".revive" / "revive.db").exists():
                return None
            with db.session(engine) as s:
                runs = service.get_all_runs(s) if db.current_revision(engine) else []
            gate = open_gate(engine, runs[0].id) if runs else None
            return (runs[0].id, gate[0]) if gate else None

        run_id, gate = wait_for("the gate", waiting, process, log)
        assert gate == "traffic"
        hint = f"approve: REVIVE_DATABASE_URL={store} revive approve {run_id} --gate traffic"
        wait_for("the hint", lambda: hint in log.read_text(), process, log, cap_s=30)
        assert "local run takes its decision from `revive approve` only" in log.read_text()
        assert sim.estate.class_weights["tier0"]["dc2"] == 0.5  # nothing moved yet

        roles = json.dumps({"production": {"os:bo": "approver", "os:ana": "approver"}})
        own = subprocess.run(revive("approve", run_id, "--gate", "traffic"), cwd=work,
                             env=revive_env(tmp_path, USER="ana", LOGNAME="ana",
                                            REVIVE_ROLES=roles),
                             capture_output=True, text=True, timeout=CAP_S)
        assert own.returncode == 2 and "two-person rule" in own.stderr
        approve = subprocess.run(
            revive("approve", run_id, "--gate", "traffic", "--reason", "dc1 is gone"),
            cwd=work, env=revive_env(tmp_path, USER="bo", LOGNAME="bo", REVIVE_ROLES=roles),
            capture_output=True, text=True, timeout=CAP_S)
        assert approve.returncode == 0, approve.stderr
        assert "approved by os:bo" in approve.stdout
        stdout, _ = process.communicate(timeout=CAP_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "failover: " in stdout and run_id in stdout, log.read_text()[-3000:]
    with db.session(engine) as s:
        run = service.get_run(s, run_id)
        gate_step = service.get_step(s, run_id=run_id, step_key="approval:traffic")
        decision = service.get_gate_decision(s, run_id=run_id, gate="traffic")
    engine.dispose()
    assert (run.triggered_by, str(run.trigger)) == ("ana", "cli")
    assert str(run.outcome) != "running" and gate_step.state == StepState.DONE
    assert (decision.decided_by, decision.reason) == ("os:bo", "dc1 is gone")
    assert sim.estate.class_weights["tier0"]["dc2"] > 0.5  # traffic moved once approved


def test_local_mode_drops_the_shared_prefect_settings_and_restores_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", DEAD_API)
    monkeypatch.setenv("REVIVE_DATABASE_URL", "postgresql+psycopg://revive@central:5432/r")
    with temporary_settings(updates={PREFECT_API_URL: DEAD_API, PREFECT_UI_URL: "http://x"}):
        with local_mode() as store:
            assert PREFECT_API_URL.value() is None and PREFECT_UI_URL.value() is None
            assert "PREFECT_API_URL" not in os.environ
            assert store == f"sqlite:///{(tmp_path / '.revive' / 'revive.db').as_posix()}"
            assert os.environ["REVIVE_DATABASE_URL"] == store
        assert PREFECT_API_URL.value() == DEAD_API
    assert os.environ["PREFECT_API_URL"] == DEAD_API
    assert os.environ["REVIVE_DATABASE_URL"].startswith("postgresql")
    own = f"sqlite:///{tmp_path / 'mine.db'}"  # a SQLite store of one's own is kept
    monkeypatch.setenv("REVIVE_DATABASE_URL", own)
    with local_mode() as store:
        assert store == own


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    url = f"sqlite:///{tmp_path / 'revive.db'}"
    monkeypatch.setenv("REVIVE_DATABASE_URL", url)
    engine = db.get_engine(url)
    db.upgrade(engine)
    yield engine
    engine.dispose()


def gate_run(engine, environment: str) -> str:
    with db.session(engine) as s:
        run = service.create_run(s, runbook="deploy_patch", parameters={},
                                 trigger=TriggerSource.CLI, triggered_by="ana", target_dc="dc2")
        service.set_prefect_flow_run_id(s, run.id, prefect_flow_run_id="f-1")
        service.start_step(s, run_id=run.id, step_key="approval:patch", action="approval",
                           detail={"question": "ship?", "environment": environment})
        return run.id


def test_a_waiting_run_says_every_way_to_approve_once(store, monkeypatch, capsys) -> None:
    monkeypatch.setenv("REVIVE_SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("REVIVE_SLACK_CHANNEL", "#incident")
    monkeypatch.setenv("PREFECT_UI_URL", "http://prefect.example/")
    run_id = gate_run(store, "production")
    hint = GateHint(["f-1"])
    hint(Progress(current="restart:api@dc2"))
    hint(Progress(current="approval:patch"))
    hint(Progress(current="approval:patch"))
    said = capsys.readouterr().err
    assert said.splitlines() == [
        f"approve: revive approve {run_id} --gate patch",
        "or in Slack: the approval message in #incident",
        "or in the Prefect UI: http://prefect.example/runs/flow-run/f-1"]


def test_a_gate_that_approves_itself_says_nothing(store, capsys) -> None:
    gate_run(store, "staging")
    GateHint(["f-1"])(Progress(current="approval:patch"))
    assert capsys.readouterr().err == ""


@pytest.fixture
def flow_sockets() -> Iterator[None]:
    """Prefect 3.9 leaves one API-client socket open per async flow run (see
    tests/conftest.py, which ignores it in the flow tests); collected here, after the test."""
    yield
    gc.collect()


@pytest.mark.usefixtures("prefect_harness", "flow_sockets")
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("args", [
    ["provision", "target_dc=dc2"],
    ["restart", "target_dc=dc2"],
    ["warm_up_ramp", "target_dc=dc2", "lost_dc=dc1"],
    ["deploy_patch", "target_dc=dc2", "services=api", "version=v2"],
])
def test_a_dry_run_with_no_tool_answering_plans_from_the_topology(
        args: list[str], tmp_path: Path, store, monkeypatch) -> None:
    monkeypatch.delenv("REVIVE_SIM_URL", raising=False)
    _, path = write(tmp_path, small(environment="production"))
    dead = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["run", *args, f"topology={path}", f"sim_url={dead}",
                                 "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == NO_TOOL_ANSWERED
    assert lines[1].startswith(f"{args[0]}: done (run ")
