"""How commands end when something goes wrong: README's exit status and one line, never a
traceback.

Each command runs as a person runs it, in its own process, so what is checked is exactly
what lands on stdout and stderr. Runs go to one Prefect server for the module (a temporary
server per process would cost each test its start-up); the runbooks of
``tests.cli.fake_runbooks`` end the ways real ones do (a refused gate, an abort, an
unexpected error) without minutes of recovery first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from revive.store import db, service
from tests.factories import REPO
from tests.flows.estates import small, write
from tests.prefect_server import prefect_server

#: A PostgreSQL URL nothing listens on: the store is unreachable.
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/revive"
RUN_TIMEOUT_S = 600  # a cap on a hung process, not a measurement


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with prefect_server(tmp_path_factory.mktemp("prefect")) as env:
        yield env


@pytest.fixture
def estate(tmp_path: Path) -> str:
    return write(tmp_path, small())[1]


def revive(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``revive ARGS`` (knowing the fake runbooks too), as a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "tests.cli.fake_cli", *args], cwd=REPO, env=env,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        check=False,
    )


def store_env(base: dict[str, str], tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("REVIVE_")}
    return {**env, "REVIVE_DATABASE_URL": f"sqlite:///{tmp_path / 'revive.db'}"}


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def recorded(env: dict[str, str]) -> list:
    engine = db.get_engine(env["REVIVE_DATABASE_URL"])
    try:
        with db.session(engine) as s:
            return service.get_all_runs(s)
    finally:
        engine.dispose()


def test_a_refused_gate_ends_in_one_line_and_exit_1(prefect_env, estate, tmp_path) -> None:
    env = store_env(prefect_env, tmp_path)
    result = revive("run", "gate", "target_dc=dc1", f"topology={estate}",
                    "sim_url=http://127.0.0.1:9", env=env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    (run,) = recorded(env)
    assert error_lines(result.stderr) == [
        f"error: gate (run {run.id}): traffic timed out (no answer within 1 s); nothing was "
        "changed by the gated step"]
    assert result.stdout == f"gate: failed (run {run.id})\n"


def test_an_aborted_run_says_aborted_and_exits_1(prefect_env, estate, tmp_path) -> None:
    env = store_env(prefect_env, tmp_path)
    result = revive("run", "aborted", "target_dc=dc1", f"topology={estate}",
                    "sim_url=http://127.0.0.1:9", env=env)
    (run,) = recorded(env)
    assert str(run.outcome) == "aborted"
    assert result.stdout == f"aborted: aborted (run {run.id})\n"
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_an_unexpected_error_in_a_run_is_one_line_and_exit_1(prefect_env, estate,
                                                              tmp_path) -> None:
    result = revive("run", "broken", "target_dc=dc1", f"topology={estate}",
                    "sim_url=http://127.0.0.1:9", env=store_env(prefect_env, tmp_path))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert error_lines(result.stderr) == [
        "error: broken: RuntimeError: the tool answered something nobody expected"]


def test_an_unknown_dc_is_exit_2_and_one_line(tmp_path) -> None:
    env = {**os.environ, "REVIVE_DATABASE_URL": f"sqlite:///{tmp_path / 'revive.db'}"}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("revive")), "run", "failover", "target_dc=dc9"],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=RUN_TIMEOUT_S, check=False)
    assert result.returncode == 2
    assert result.stderr == "target_dc: unknown datacenter 'dc9' (topology has: dc1, dc2)\n"
    assert not (tmp_path / "revive.db").exists()  # nothing started, nothing recorded


@pytest.mark.parametrize("command", [
    ["status"],
    ["status", "--json"],
    ["abort", "0123456789ab"],
    ["run", "restart", "target_dc=dc1", "sim_url=http://127.0.0.1:9"],
    ["serve", "--port", "1"],
    ["db", "current"],
], ids=lambda c: " ".join(c))
def test_an_unreachable_database_is_one_line_and_exit_1(command: list[str], estate) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVIVE_", "PREFECT_API"))}
    env.update(REVIVE_DATABASE_URL=UNREACHABLE, REVIVE_SLACK_SIGNING_SECRET="s3cret",
               REVIVE_TOPOLOGY=estate)
    if command[0] == "run":
        command = [*command, f"topology={estate}"]
    result = revive(*command, env=env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and "127.0.0.1:1" in line, line
    assert "Connection refused" in line or "connection failed" in line, line
