"""A real supervisord for the lab and the adapter tests: our own config, address and port.

Why a module of its own: the lab runs one supervisord per DC (the "VMs" a service group runs
on) and the supervisord adapter's tests run two; both need the same thing written the same
way: ``[inet_http_server]`` on one address (127.0.0.1, or in the lab the DC's namespace
address, supervisord started there through ``wrap``) with basic auth, the XML-RPC interface, program
files included from ``<dir>/conf.d/*.conf`` (where the adapter drops new programs), logs and
pidfile inside ``<dir>``, and ``nodaemon=true`` so the ``Daemon`` owns the process and
stopping it stops supervisord, which stops its programs. supervisord hands its own
environment to its programs and offers it as ``%(ENV_<NAME>)s`` in their ``command=``: the
``env`` given at start is how a DC's programs learn which DC they are in.
"""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from revive.lab.daemon import Daemon, DaemonError, port_open, program
from revive.lab.netns import Wrap
from revive.ops.adapters.supervisord import render_program

__all__ = [
    "conf_dir",
    "rpc",
    "start_supervisord",
    "supervisord_conf",
    "supervisord_url",
    "write_program",
]


def conf_dir(dir: Path) -> Path:
    """Where the supervisord started in ``dir`` includes program files from (``*.conf``)."""
    return dir / "conf.d"


def supervisord_url(port: int, host: str = "127.0.0.1") -> str:
    """The replica address to put in a topology's ``replicas:`` for this supervisord."""
    return f"http://{host}:{port}"


def supervisord_conf(dir: Path, *, port: int, username: str, password: str,
                     host: str = "127.0.0.1") -> str:
    """The text of ``supervisord.conf`` for a supervisord whose files all live in ``dir``.

    It listens on ``host``:``port`` only, and ``supervisorctl`` is pointed there.
    """
    for value, what in ((username, "username"), (password, "password")):
        if not value or any(c.isspace() for c in value) or "%" in value:
            raise ValueError(f"supervisord {what} must be non-empty, without spaces or '%'")
    return "\n".join([
        "[inet_http_server]",
        f"port={host}:{port}",
        f"username={username}",
        f"password={password}",
        "",
        "[supervisord]",
        "nodaemon=true",
        f"logfile={dir / 'logs' / 'supervisord.log'}",
        f"pidfile={dir / 'supervisord.pid'}",
        f"childlogdir={dir / 'logs'}",
        f"directory={dir}",
        "loglevel=info",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl={supervisord_url(port, host)}",
        f"username={username}",
        f"password={password}",
        "",
        "[include]",
        f"files={conf_dir(dir)}/*.conf",
        "",
    ])


def rpc(port: int, username: str, password: str, method: str, *params: Any,
        timeout_s: float = 5.0, host: str = "127.0.0.1") -> Any:
    """One synchronous XML-RPC call to the supervisord on ``host``:``port`` (lab and tests).

    Raises ``xmlrpc.client.Fault`` for supervisord's faults, ``httpx`` errors otherwise.
    Never through an HTTP proxy from the environment: it would not reach a lab address.
    """
    response = httpx.post(
        f"{supervisord_url(port, host)}/RPC2",
        content=xmlrpc.client.dumps(params, method, allow_none=False).encode(),
        headers={"Content-Type": "text/xml"},
        auth=(username, password),
        timeout=timeout_s,
        trust_env=False,
    )
    response.raise_for_status()
    answer, _ = xmlrpc.client.loads(response.content, use_builtin_types=True)
    return answer[0]


def start_supervisord(
    dir: Path,
    *,
    port: int,
    username: str,
    password: str,
    name: str = "supervisord",
    host: str = "127.0.0.1",
    wrap: Wrap | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 30.0,
) -> Daemon:
    """Write ``dir/supervisord.conf`` (and ``dir/conf.d``), start supervisord, wait for it.

    Ready when ``supervisor.getState`` answers RUNNING on ``host``:``port``, asked from here.
    ``wrap`` prefixes the command line (``ip netns exec <ns>`` runs supervisord, hence its
    programs, in a DC's namespace, where ``host`` is that DC's address). ``env`` is added to
    supervisord's environment, which its programs inherit and whose ``%(ENV_<NAME>)s`` their
    ``command=`` may use. Refuses a port something else already listens on, so a test never
    drives a supervisord it did not start. Program files already in ``conf_dir(dir)`` are
    started with it (their ``autostart``).
    """
    if port_open(port, host):
        raise DaemonError(f"{name}: port {host}:{port} is already in use by another program")
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "logs").mkdir(exist_ok=True)
    conf_dir(dir).mkdir(exist_ok=True)
    config = dir / "supervisord.conf"
    config.write_text(supervisord_conf(dir, port=port, username=username, password=password,
                                       host=host))
    config.chmod(0o600)  # it holds the password
    argv = [program("supervisord", "supervisor"), "-n", "-c", str(config)]
    daemon = Daemon(name, wrap(argv) if wrap else argv, log=dir / "logs" / "stdout.log",
                    cwd=dir, env=dict(env) if env else None)
    daemon.start()

    def ready() -> bool:
        state = rpc(port, username, password, "supervisor.getState", timeout_s=2.0, host=host)
        return bool(state.get("statename") == "RUNNING")

    try:
        return daemon.wait_ready(ready, timeout_s=timeout_s, what="answering getState RUNNING")
    except BaseException:
        daemon.stop()
        raise


def write_program(
    dir: Path,
    name: str,
    command: str,
    *,
    directory: Path | None = None,
    environment: Mapping[str, str] | None = None,
    numprocs: int = 1,
    autostart: bool = True,
    startsecs: int = 1,
    startretries: int = 3,
    stopwaitsecs: int = 5,
) -> Path:
    """Write ``conf_dir(dir)/<name>.conf`` holding ``[program:<name>]`` (not loaded yet).

    supervisord reads it at start, or after ``reloadConfig`` + ``addProcessGroup(name)``.
    With ``numprocs`` > 1 the processes are ``<name>_00``, ``<name>_01``... of group ``name``.
    """
    conf_dir(dir).mkdir(parents=True, exist_ok=True)
    path = conf_dir(dir) / f"{name}.conf"
    path.write_text(render_program(
        name, command, directory=str(directory) if directory else None,
        environment=environment, numprocs=numprocs, autostart=autostart,
        startsecs=startsecs, startretries=startretries, stopwaitsecs=stopwaitsecs,
    ))
    return path
