"""``revive stack``'s input and refusal paths: one line, the documented exit code, nothing
started and nothing left. (Bringing a stack up and down is tests/deploy/test_redundancy.py.)"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from revive.cli.stack import app
from revive.orchestrator.stack import stack_pids
from revive.orchestrator.stack_config import StackConfig, supervisord_text
from tests.factories import REPO
from tests.flows.estates import small, write

runner = CliRunner()


@pytest.fixture
def topology(tmp_path: Path) -> str:
    return write(tmp_path, small())[1]


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something else already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _one_line_error(result: object) -> str:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    return stderr


def test_an_invalid_topology_is_exit_2_and_starts_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "topology.yaml"
    bad.write_text("dcs: [\n")
    result = runner.invoke(app, ["up", "--topology", str(bad), "--dir", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert str(bad) in _one_line_error(result)
    assert not (tmp_path / "s").exists()


def test_a_database_that_is_not_postgresql_is_exit_2(tmp_path: Path, topology: str) -> None:
    result = runner.invoke(app, ["up", "--topology", topology, "--dir", str(tmp_path / "s"),
                                 "--database-url", "sqlite:///x.db"])
    assert result.exit_code == 2
    assert "database_url" in _one_line_error(result)
    assert not (tmp_path / "s").exists()


def test_a_port_in_use_refuses_up_before_anything_starts(
        tmp_path: Path, topology: str, listening: int) -> None:
    dir = tmp_path / "s"
    result = runner.invoke(app, ["up", "--topology", topology, "--dir", str(dir),
                                 "--board-port", str(listening)])
    assert result.exit_code == 1
    assert f"{listening} already in use" in _one_line_error(result)
    assert not (dir / "stack.json").exists()
    assert stack_pids(dir) == []


def test_status_and_down_without_a_stack(tmp_path: Path) -> None:
    dir = str(tmp_path / "none")
    status = runner.invoke(app, ["status", "--dir", dir])
    assert status.exit_code == 1 and "no stack" in _one_line_error(status)
    down = runner.invoke(app, ["down", "--dir", dir])
    assert down.exit_code == 0 and "no stack" in down.stdout


def test_every_process_shares_the_redis_and_postgres_state_of_the_stack(tmp_path: Path) -> None:
    """Anything left on an in-memory default would silently become per-replica."""
    config = StackConfig(dir=tmp_path, repo=REPO, topology=REPO / "runbooks/topology.yaml",
                         pools=["dc1", "dc2"], redis_url="redis://127.0.0.1:6379/3")
    env = config.prefect_env()
    assert env["PREFECT_MESSAGING_BROKER"] == env["PREFECT_MESSAGING_CACHE"] == \
        "prefect_redis.messaging"
    assert env["PREFECT_SERVER_EVENTS_CAUSAL_ORDERING"] == "prefect_redis.ordering"
    assert env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] == "prefect_redis.lease_storage"
    assert env["PREFECT_SERVER_DOCKET_URL"] == "redis://127.0.0.1:6379/3"
    assert env["PREFECT_REDIS_MESSAGING_DB"] == "3"
    assert env["PREFECT_API_DATABASE_MIGRATE_ON_START"] == "false"
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    text = supervisord_text(config)
    assert text.count("--no-services") == 2
    assert text.count("server services start") == 1
    assert "worker start --pool dc1" in text and "worker start --pool dc2" in text
