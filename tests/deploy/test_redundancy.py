"""The local orchestrator stack is redundant: a run survives losing an API replica.

One stack for the module, brought up and down through the CLI as ``make serve`` does, on
its own PostgreSQL database, ports and Redis db: two API replicas behind HAProxy, one
services process, a worker per DC of a two-DC drill estate. A failover deployed on dc2's
pool acts on a simulator served by this test; the test holds the simulator's virtual clock
(it joins the clock barrier), so the run stays Running, waiting on the clock, while an API
replica is SIGKILLed; then it lets time go and the run must complete through the load
balancer. ``down`` must leave no process of the stack behind.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest

from revive.drill.server import free_port
from revive.lab.daemon import pid_alive, port_open
from revive.lab.supervisor import rpc
from revive.orchestrator.automations import ZOMBIE_AUTOMATION, ensure_zombie_automation
from revive.orchestrator.stack import load_state, stack_pids
from revive.orchestrator.stack_config import StackConfig
from tests.factories import REPO
from tests.flows.estates import small, write
from tests.ops.programs import require
from tests.postgres import throwaway_database

# Prefect's client leaves a socket to the server open after a run (as in
# tests/deploy/test_prefect_deploy.py); only that warning is ignored, only here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")

STACK = [sys.executable, "-c", "from revive.cli.stack import app; app()"]
UP_TIMEOUT_S = 300.0
RUN_TIMEOUT_S = 120.0
#: The worker polls every second; on a busy 2-core machine allow far more.
PICKUP_LIMIT_S = 30.0
REDIS_URL_ENV = "REVIVE_TEST_REDIS_URL"


def _redis_url() -> str:
    """The machine's Redis (CI starts it), on a db of its own for this module."""
    import redis

    base = os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379").rstrip("/")
    try:
        with redis.Redis.from_url(base, socket_connect_timeout=3) as client:
            client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the stack tests need Redis at {base} (set {REDIS_URL_ENV}; CI starts "
                    f"redis-server): {exc}", pytrace=False)
    return f"{base}/{random.randint(2, 15)}"


def _port_base() -> int:
    """A base with its four ports free (load balancer, two replicas, supervisord)."""
    for _ in range(200):
        base = random.randint(20_000, 60_000)
        if not any(port_open(p) for p in range(base, base + 4)):
            return base
    raise AssertionError("no four free consecutive ports")


def stack_cli(*args: str, env: dict[str, str], timeout_s: float = UP_TIMEOUT_S
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*STACK, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StackConfig, str]]:
    """(the running stack's config, the topology path); down and checked at the end."""
    require("supervisord", "supervisor")
    require("haproxy", paths=("/usr/sbin/haproxy",))
    redis_url = _redis_url()
    tmp = tmp_path_factory.mktemp("stack")
    _, topology = write(tmp, small(environment="drill"))
    dir = tmp / "stack"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["REVIVE_DATABASE_URL"] = f"sqlite:///{tmp / 'revive.db'}"  # the runs' store
    with throwaway_database("revive_stack", "the stack tests") as url:
        database = url.set(drivername="postgresql+asyncpg").render_as_string(
            hide_password=False)
        args = ["--topology", topology, "--port-base", str(_port_base()),
                "--board-port", str(free_port()), "--database-url", database,
                "--redis-url", redis_url, "--dir", str(dir)]
        began = time.monotonic()
        done = stack_cli("up", *args, env=env)
        print(f"stack up in {time.monotonic() - began:.1f} s")
        try:
            assert done.returncode == 0, done.stderr + _logs(dir)
            config = load_state(dir)
            assert config is not None
            for url in (config.ui_url, config.api_url, config.board_url):
                assert url in done.stdout
            again = stack_cli("up", *args, env=env)
            assert again.returncode == 0, again.stderr
            assert "already up" in again.stdout
            yield config, topology
        finally:
            stopped = stack_cli("down", "--dir", str(dir), env=env, timeout_s=120)
            assert stopped.returncode == 0, stopped.stderr
            assert stack_pids(dir) == []
            assert not (dir / "stack.json").exists()
            _flush(redis_url)


def _flush(redis_url: str) -> None:
    """Leave the Redis db as found: the streams and keys were this stack's alone."""
    import redis

    with redis.Redis.from_url(redis_url, socket_connect_timeout=3) as client:
        client.flushdb()


def _logs(dir: Path) -> str:
    return "".join(f"\n--- {log.name}\n{log.read_text(errors='replace')[-1500:]}"
                   for log in sorted((dir / "logs").glob("*.log")))


async def _with_client(api_url: str, work: Any) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        async with get_client() as client:
            return await work(client)


def _state(api_url: str, run_id: UUID) -> tuple[str, str]:
    response = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=10.0, trust_env=False)
    response.raise_for_status()
    state = response.json()["state"] or {}
    return state.get("type", ""), state.get("message") or ""


def wait_state(api_url: str, run_id: UUID, wanted: set[str], timeout_s: float) -> float:
    """Wait until the run's state type is one of ``wanted`` (a final state that is not
    wanted fails at once); returns the seconds it took."""
    began = time.monotonic()
    final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
    while True:
        state, message = _state(api_url, run_id)
        if state in wanted:
            return time.monotonic() - began
        assert state not in final, f"run {run_id} ended {state}: {message}"
        assert time.monotonic() - began < timeout_s, f"run {run_id} still {state}"
        time.sleep(0.1)


def _deploy_failover(config: StackConfig, pool: str) -> UUID:
    async def work(client: Any) -> UUID:
        flow_id = await client.create_flow_from_name("failover")
        return await client.create_deployment(
            flow_id=flow_id, name=f"failover-from-{pool}-{secrets.token_hex(3)}",
            work_pool_name=pool, entrypoint="flows/failover.py:failover",
            pull_steps=[{"prefect.deployments.steps.set_working_directory":
                         {"directory": str(REPO)}}],
            enforce_parameter_schema=False)

    return asyncio.run(_with_client(config.api_url, work))


def _start_run(config: StackConfig, deployment: UUID, params: dict[str, Any]) -> UUID:
    async def work(client: Any) -> UUID:
        run = await client.create_flow_run_from_deployment(
            deployment, parameters={"params": params})
        return run.id

    return asyncio.run(_with_client(config.api_url, work))


def _kill_replica(config: StackConfig, name: str) -> int:
    info = rpc(config.supervisor_port, config.supervisor_user, config.supervisor_password,
               "supervisor.getProcessInfo", name)
    pid = int(info["pid"])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"{name} (pid {pid}) survived SIGKILL"
        time.sleep(0.05)
    return pid


def test_a_run_completes_through_the_load_balancer_after_an_api_replica_is_killed(
        stack: tuple[StackConfig, str], serve: Any) -> None:
    config, topology_path = stack
    from revive.topology import load

    sim, sim_url = serve(load(topology_path))
    sim.estate.power_loss("dc1")
    deployment = _deploy_failover(config, "dc2")
    with httpx.Client(base_url=sim_url, timeout=10.0, trust_env=False) as http:
        holder = http.post("/clock/join").json()["participant"]  # virtual time stops here
        run_id = _start_run(config, deployment, {
            "topology": topology_path, "target_dc": "dc2", "lost_dc": "dc1",
            "sim_url": sim_url, "run_from_dc": "dc2"})
        pickup = wait_state(config.api_url, run_id, {"PENDING", "RUNNING"}, PICKUP_LIMIT_S)
        print(f"worker picked the run up {pickup:.2f} s after it was created (goal: 2 s)")
        wait_state(config.api_url, run_id, {"RUNNING"}, RUN_TIMEOUT_S)
        killed = _kill_replica(config, "api-1")
        print(f"SIGKILLed api-1 (pid {killed}) while run {run_id} was Running")
        http.post(f"/clock/leave/{holder}")  # time goes on: the failover proceeds
    took = wait_state(config.api_url, run_id, {"COMPLETED"}, RUN_TIMEOUT_S)
    print(f"run completed {took:.1f} s after the replica was killed")
    assert sim.estate.weights["dc2"] == 1.0  # the failover really moved dc1's users


def test_the_zombie_automation_is_one_whatever_how_many_times_it_is_ensured(
        stack: tuple[StackConfig, str]) -> None:
    config, _ = stack

    async def work(client: Any) -> tuple[str, str, list[Any]]:
        first = await ensure_zombie_automation(client)
        second = await ensure_zombie_automation(client)
        return first, second, await client.read_automations_by_name(ZOMBIE_AUTOMATION)

    first, second, found = asyncio.run(_with_client(config.api_url, work))
    assert first == second
    (automation,) = found  # `up` ensured it already: still exactly one
    assert str(automation.id) == first
    trigger = automation.trigger
    assert trigger.posture == "Proactive"
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert "prefect.flow-run.heartbeat" in trigger.expect
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.within.total_seconds() == 90
    (action,) = automation.actions
    assert action.type == "change-flow-run-state" and action.state == "CRASHED"
