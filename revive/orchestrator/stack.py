"""``revive stack up|down|status``: the orchestrator, redundant, on this machine's services.

Layout (docs: README "Running the orchestrator")::

    clients, workers, UI ──► HAProxy :base ──► api-1 :base+1 ┐  prefect server start
                              (GET /api/health)  api-2 :base+2 ┤  --no-services
                                                               ├─► PostgreSQL (one database)
                       services (exactly one loop-services process)┤
                                                               └─► Redis (events, leases, docket)
    worker-<dc> per DC of the topology (process pools) · board (revive serve)

supervisord runs all of it from ``<dir>/supervisord.conf`` (rendered from
``runbooks/templates/stack/``) and restarts what dies. ``up`` checks everything it needs
before starting anything, migrates the database once, starts the programs in order and
returns when the load balancer answers and every DC's worker has registered; if any step
fails it takes down what it started, so nothing is left half-up. Every process of the stack,
the flow runs its workers start included, carries ``REVIVE_STACK=<dir>`` in its environment:
``down`` stops supervisord, then ends whatever still carries the mark, so it leaves no
process behind even after supervisord itself was killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from revive.errors import ReviveError
from revive.lab.daemon import ProgramMissing, pid_alive, port_open, program
from revive.lab.haproxy import MAX_SOCKET_PATH
from revive.lab.supervisor import rpc
from revive.orchestrator.stack_config import (
    StackConfig,
    haproxy_text,
    program_name,
    supervisord_text,
)
from revive.orchestrator.stack_prefect import workers_online

__all__ = ["StackError", "StackStatus", "down", "load_state", "status", "up"]

SERVERS = ("api-1", "api-2", "services", "lb")
MIGRATE_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
Echo = Callable[[str], None]


class StackError(ReviveError):
    """The stack could not be brought up (what and why, in one line) or reached."""


@dataclass
class StackStatus:
    config: StackConfig
    supervisord: bool
    programs: dict[str, str]
    api_healthy: bool
    workers: dict[str, int]


# --- state ---------------------------------------------------------------------------------


def load_state(dir: Path) -> StackConfig | None:
    """The config of the stack last brought up in ``dir``, if its state file is there."""
    path = dir / "stack.json"
    if not path.exists():
        return None
    try:
        return StackConfig.model_validate_json(path.read_text())
    except ValueError as exc:
        raise StackError(f"{path}: unreadable stack state ({exc}); remove it after checking "
                         "no stack process runs") from None


def _save_state(config: StackConfig) -> None:
    config.state_file.write_text(config.model_dump_json(indent=2))
    config.state_file.chmod(0o600)  # it holds supervisord's password


def _supervisord_pid(config: StackConfig) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        pid = int((config.dir / "supervisord.pid").read_text().strip())
        return pid if pid_alive(pid) else None
    return None


def _call(config: StackConfig, method: str, *params: object, timeout_s: float = 10.0) -> object:
    return rpc(config.supervisor_port, config.supervisor_user, config.supervisor_password,
               method, *params, timeout_s=timeout_s)


def _supervisord_answers(config: StackConfig) -> bool:
    with contextlib.suppress(Exception):
        return bool(_call(config, "supervisor.getState", timeout_s=3.0)["statename"]
                    == "RUNNING")
    return False


# --- up --------------------------------------------------------------------------------------


def up(config: StackConfig, *, echo: Echo = lambda _: None,
       timeout_s: float = READY_TIMEOUT_S) -> tuple[StackConfig, bool]:
    """Bring the stack up; returns (the running stack's config, whether it already ran)."""
    running = load_state(config.dir)
    if running is not None and _supervisord_answers(running):
        return running, True
    if running is not None:  # a stack that died without `down`: clear what it left
        _teardown(running)
    _preflight(config)
    config.dir.mkdir(parents=True, exist_ok=True)
    config.logs.mkdir(exist_ok=True)
    config.home.mkdir(exist_ok=True)
    _save_state(config)
    try:
        _bring_up(config, echo, timeout_s)
    except BaseException as exc:
        _teardown(config)
        if isinstance(exc, StackError | KeyboardInterrupt):
            raise
        raise StackError(f"{type(exc).__name__}: {exc}") from exc
    return config, False


def _preflight(config: StackConfig) -> None:
    """Everything ``up`` needs, checked before anything starts."""
    try:
        program("supervisord", "supervisor")
        program("haproxy", paths=("/usr/sbin/haproxy",))
    except ProgramMissing as exc:
        raise StackError(str(exc)) from None
    for name in ("prefect", "revive"):
        if not Path(config.bin(name)).exists():
            raise StackError(f"{config.bin(name)} is missing: install revive into "
                             f"{Path(config.python).parent.parent}")
    taken = [port for port in config.ports if port_open(port)]
    if taken:
        raise StackError(f"port(s) {', '.join(map(str, taken))} already in use on 127.0.0.1 "
                         "(choose another --port-base or --board-port)")
    _check_redis(config)
    _create_database(config)


def _check_redis(config: StackConfig) -> None:
    import redis

    host, port, db = config.redis
    try:
        with redis.Redis(host=host, port=port, db=db, socket_timeout=3,
                         socket_connect_timeout=3) as client:
            client.ping()
    except redis.RedisError as exc:
        raise StackError(f"Redis at {host}:{port} db {db} does not answer ({exc}): start "
                         "redis-server or pass --redis-url") from None


def _create_database(config: StackConfig) -> None:
    import psycopg

    from revive.lab.database import create_database

    try:
        create_database(config.admin_dsn, config.database_name)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        raise StackError(f"PostgreSQL for database {config.database_name!r}: {reason}") from None


def _env(config: StackConfig) -> dict[str, str]:
    """This process's environment without its Prefect settings, plus the stack's."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**base, **config.prefect_env()}


def _run(config: StackConfig, argv: list[str], log: str, timeout_s: float) -> int:
    with (config.logs / log).open("w") as out:
        try:
            return subprocess.run(argv, cwd=config.repo, env=_env(config),
                                  stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, timeout=timeout_s,
                                  check=False).returncode
        except subprocess.TimeoutExpired:
            raise StackError(f"{' '.join(argv[1:3])} took more than {timeout_s:.0f} s "
                             f"(log: {config.logs / log})") from None


def _bring_up(config: StackConfig, echo: Echo, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    echo(f"migrating Prefect's database {config.database_name}")
    if _run(config, [config.bin("prefect"), "server", "database", "upgrade", "-y"],
            "migrate.log", MIGRATE_TIMEOUT_S) != 0:
        raise StackError(f"Prefect's database migration failed: {_tail(config, 'migrate.log')}")
    short_socket = len(str(config.admin_socket.absolute()).encode()) <= MAX_SOCKET_PATH
    config.haproxy_cfg.write_text(haproxy_text(config, admin_socket=short_socket))
    config.supervisor_conf.write_text(supervisord_text(config))
    config.supervisor_conf.chmod(0o600)
    _start_supervisord(config, deadline)
    echo("starting 2 API replicas, the services and the load balancer")
    _start(config, SERVERS, deadline)
    _wait(deadline, "the load balancer answering /api/health",
          lambda: _healthy(config.api_url), config, "lb")
    _deploy(config, echo)
    echo(f"starting a worker per DC ({', '.join(config.pools)}) and the board")
    _start(config, [*(program_name(p) for p in config.pools), "board"], deadline)
    _wait(deadline, "every DC's worker registering",
          lambda: all(workers_online(config.api_url, config.pools).values()), config,
          program_name(config.pools[0]))
    _wait(deadline, "the board answering /healthz",
          lambda: httpx.get(f"{config.board_url}/healthz", timeout=2.0,
                            trust_env=False).status_code == 200, config, "board")


def _start_supervisord(config: StackConfig, deadline: float) -> None:
    (config.dir / "supervisord.pid").unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["REVIVE_STACK"] = str(config.dir)
    with (config.logs / "supervisord.out").open("ab") as out:
        process = subprocess.Popen(
            [program("supervisord", "supervisor"), "-n", "-c", str(config.supervisor_conf)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=config.dir,
            env=env, start_new_session=True)
    while not _supervisord_answers(config):
        if process.poll() is not None:
            raise StackError(f"supervisord exited with {process.returncode}: "
                             f"{_tail(config, 'supervisord.out')}")
        if time.monotonic() > deadline:
            raise StackError("supervisord did not answer on its XML-RPC port")
        time.sleep(0.1)


def _start(config: StackConfig, names: Sequence[str], deadline: float) -> None:
    """Start ``names`` at once, return when all are RUNNING (stayed up ``startsecs``)."""
    import xmlrpc.client

    for name in names:
        try:
            _call(config, "supervisor.startProcess", name, False)
        except xmlrpc.client.Fault as exc:
            if "ALREADY_STARTED" not in exc.faultString:
                raise StackError(f"{name} did not start ({exc.faultString}): "
                                 f"{_tail(config, f'{name}.log')}") from None
    while True:
        states = {p["name"]: p["statename"] for p in _call(config, "supervisor.getAllProcessInfo")}
        failed = [n for n in names if states.get(n) in ("FATAL", "EXITED", "STOPPED")]
        if failed:
            raise StackError(f"{failed[0]} is {states[failed[0]]}: "
                             f"{_tail(config, f'{failed[0]}.log')}")
        if all(states.get(n) == "RUNNING" for n in names):
            return
        if time.monotonic() > deadline:
            late = [n for n in names if states.get(n) != "RUNNING"]
            raise StackError(f"{late[0]} did not start: {_tail(config, f'{late[0]}.log')}")
        time.sleep(0.2)


def _healthy(api_url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{api_url}/health", timeout=2.0, trust_env=False).status_code == 200
    return False


def _wait(deadline: float, what: str, ready: Callable[[], bool], config: StackConfig,
          log_of: str) -> None:
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.2)
    raise StackError(f"timed out waiting for {what}: {_tail(config, f'{log_of}.log')}")


def _deploy(config: StackConfig, echo: Echo) -> None:
    """Pools, deployments and the zombie automation, as an operator makes them:
    ``revive deploy`` of the stack's topology (its environment names it)."""
    echo("revive deploy: work pools and deployments of the topology")
    if _run(config, [config.bin("revive"), "deploy"], "deploy.log", 300.0) != 0:
        raise StackError(f"revive deploy failed: {_tail(config, 'deploy.log')}")


def _tail(config: StackConfig, log: str, lines: int = 3) -> str:
    path = config.logs / log
    with contextlib.suppress(OSError):
        text = " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
        return f"{text} (log: {path})" if text else f"(empty log: {path})"
    return f"(no log: {path})"


# --- down ------------------------------------------------------------------------------------


def down(dir: Path) -> tuple[bool, int]:
    """Stop the stack in ``dir``; returns (whether one was recorded, processes ended)."""
    config = load_state(dir)
    if config is None:
        return False, len(_sweep(dir))
    return True, _teardown(config)


def _teardown(config: StackConfig) -> int:
    """Stop supervisord (it stops its programs), then end whatever still carries the mark."""
    pid = _supervisord_pid(config)
    ended = 0
    if pid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        ended += 1
    ended += len(_sweep(config.dir))
    config.state_file.unlink(missing_ok=True)
    return ended


def stack_pids(dir: Path) -> list[int]:
    """Processes whose environment says they belong to the stack in ``dir``."""
    mark = f"REVIVE_STACK={dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
    return [pid for pid in pids if pid_alive(pid)]


def _sweep(dir: Path, timeout_s: float = 10.0) -> list[int]:
    """SIGTERM every marked process, SIGKILL those left after ``timeout_s``."""
    found = stack_pids(dir)
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        left = [pid for pid in found if pid_alive(pid)]
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(pid_alive(p) for p in left):
            time.sleep(0.05)
    return found


# --- status ----------------------------------------------------------------------------------


def status(dir: Path) -> StackStatus | None:
    """What runs of the stack in ``dir``; None when none was brought up there."""
    config = load_state(dir)
    if config is None:
        return None
    answers = _supervisord_answers(config)
    programs: dict[str, str] = {}
    if answers:
        with contextlib.suppress(Exception):
            programs = {p["name"]: p["statename"]
                        for p in _call(config, "supervisor.getAllProcessInfo")}
    healthy = _healthy(config.api_url)
    workers: dict[str, int] = {}
    if healthy:
        with contextlib.suppress(httpx.HTTPError):
            workers = workers_online(config.api_url, config.pools)
    return StackStatus(config, answers, programs, healthy, workers)
