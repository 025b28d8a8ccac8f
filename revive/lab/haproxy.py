"""Run a real HAProxy 2.6 as one DC's GSLB replica: our config, 127.0.0.1, an admin socket.

The lab runs one HAProxy per DC and the ``haproxy`` adapter's tests run two; both need the
same thing: a config with one frontend and one backend per traffic class, one server per DC
in each backend (``check inter 1s``, a dynamic balance algorithm so run-time weights act),
and a runtime API at ``level admin`` on a unix socket and/or a TCP port. ``start_haproxy``
writes that config into a directory it is given, starts ``haproxy -f cfg -db`` (foreground,
so stopping the process group stops it) and returns once the admin socket answers.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from revive.lab.daemon import Daemon, DaemonError, port_open, program

#: Longest unix socket path the kernel takes (sun_path is 108 bytes with its NUL).
MAX_SOCKET_PATH = 107

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def haproxy_name(text: str) -> str:
    """``text`` as an HAProxy proxy/server name (letters, digits, ``_.:-``; others -> ``_``)."""
    return _UNSAFE.sub("_", text) or "_"


def backend_name(traffic_class: str) -> str:
    """The backend that serves ``traffic_class`` in configs written here."""
    return f"be_{haproxy_name(traffic_class)}"


def server_name(dc: str) -> str:
    """The server that stands for ``dc`` in every backend written here."""
    return haproxy_name(dc)


def haproxy_config(
    *,
    name: str,
    frontends: Mapping[str, int],
    backends: Mapping[str, Mapping[str, str]],
    admin_socket: Path | None,
    admin_port: int | None,
    weight: int = 100,
    check_inter: str = "1s",
) -> str:
    """The text of an HAProxy config for one GSLB replica (see ``start_haproxy``)."""
    unknown = sorted(set(frontends) - set(backends))
    if unknown:
        raise ValueError(f"frontends without a backend: {', '.join(unknown)}")
    if admin_socket is None and admin_port is None:
        raise ValueError("give admin_socket, admin_port or both: the runtime API needs one")
    lines = [
        f"# HAProxy GSLB replica {name!r}, written by revive.lab.haproxy",
        "global",
        "    maxconn 256",
        # HAProxy binds with SO_REUSEPORT by default: another process's listener on one of
        # our ports would then share it silently instead of failing the start.
        "    noreuseport",
    ]
    if admin_socket is not None:
        lines.append(f"    stats socket {admin_socket} mode 600 level admin")
    if admin_port is not None:
        lines.append(f"    stats socket ipv4@127.0.0.1:{admin_port} level admin")
    lines += [
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 10s",
        "    timeout server 10s",
    ]
    for traffic_class, port in frontends.items():
        lines += [
            "",
            f"frontend fe_{haproxy_name(traffic_class)}",
            f"    bind 127.0.0.1:{port}",
            f"    default_backend {backend_name(traffic_class)}",
        ]
    for traffic_class, servers in backends.items():
        # roundrobin is dynamic: `set weight` acts at once (static-rr only takes 0% or 100%).
        lines += ["", f"backend {backend_name(traffic_class)}", "    balance roundrobin"]
        lines += [
            f"    server {server_name(dc)} {address} weight {weight} check inter {check_inter}"
            for dc, address in servers.items()
        ]
    return "\n".join(lines) + "\n"


@dataclass
class HAProxyInstance:
    """One running HAProxy: its process, config, admin endpoints and the names it uses."""

    name: str
    daemon: Daemon
    config: Path
    admin_socket: Path | None
    admin_port: int | None
    frontends: dict[str, int]
    backends: dict[str, str] = field(default_factory=dict)
    """Traffic class -> backend name (the adapter's ``backends`` setting)."""
    servers: dict[str, str] = field(default_factory=dict)
    """DC -> server name in every backend (the adapter's ``servers`` setting)."""

    @property
    def replica_url(self) -> str:
        """This replica's address for a topology's ``replicas:`` (the unix socket first)."""
        if self.admin_socket is not None:
            return f"unix://{self.admin_socket}"
        return f"tcp://127.0.0.1:{self.admin_port}"

    def adapter_settings(self) -> dict[str, dict[str, str]]:
        """The ``settings:`` the ``haproxy`` adapter needs for configs written here."""
        return {"backends": dict(self.backends), "servers": dict(self.servers)}

    def command(self, line: str, timeout_s: float = 5.0) -> str:
        """One runtime API command, answered in full (for the lab and tests; blocking)."""
        return runtime_command(line, socket_path=self.admin_socket, port=self.admin_port,
                               timeout_s=timeout_s)

    def stop(self) -> None:
        self.daemon.stop()


def runtime_command(
    line: str, *, socket_path: Path | None = None, port: int | None = None,
    timeout_s: float = 5.0,
) -> str:
    """Send one command to an HAProxy runtime API and read the reply to EOF (blocking)."""
    if socket_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: str | tuple[str, int] = str(socket_path)
    elif port is not None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = ("127.0.0.1", port)
    else:
        raise ValueError("give socket_path or port")
    with sock:
        sock.settimeout(timeout_s)
        sock.connect(target)
        sock.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def start_haproxy(
    dir: Path,
    *,
    name: str,
    frontends: Mapping[str, int],
    backends: Mapping[str, Mapping[str, str]],
    admin_socket: Path | None = None,
    admin_port: int | None = None,
    weight: int = 100,
    check_inter: str = "1s",
    ready_timeout_s: float = 30.0,
) -> HAProxyInstance:
    """Write ``dir/<name>.cfg``, start ``haproxy -f cfg -db``, wait for the runtime API.

    ``frontends``: traffic class -> port on 127.0.0.1; ``backends``: traffic class -> DC ->
    ``host:port`` of that DC's server. Backends are ``backend_name(class)``, servers
    ``server_name(dc)``, each at initial ``weight``. With neither ``admin_socket`` nor
    ``admin_port``, the admin socket is ``dir/<name>.sock``. The caller stops the returned
    instance (``.stop()``); ``DaemonError`` (with the log tail) if it does not come up.
    """
    dir.mkdir(parents=True, exist_ok=True)
    taken = [p for p in [*frontends.values(), admin_port] if p is not None and port_open(p)]
    if taken:
        raise DaemonError(f"haproxy {name}: port(s) already in use: {taken}")
    if admin_socket is None and admin_port is None:
        admin_socket = dir / f"{haproxy_name(name)}.sock"
    if admin_socket is not None:
        admin_socket = admin_socket.absolute()
        if len(str(admin_socket).encode()) > MAX_SOCKET_PATH:
            raise DaemonError(f"haproxy {name}: admin socket path is longer than "
                              f"{MAX_SOCKET_PATH} bytes (a unix socket limit): {admin_socket}")
        admin_socket.unlink(missing_ok=True)  # a stale one from an earlier run
    config = dir / f"{haproxy_name(name)}.cfg"
    config.write_text(haproxy_config(
        name=name, frontends=frontends, backends=backends, admin_socket=admin_socket,
        admin_port=admin_port, weight=weight, check_inter=check_inter,
    ))
    daemon = Daemon(f"haproxy {name}", [program("haproxy"), "-f", str(config), "-db"],
                    log=dir / f"{haproxy_name(name)}.log", cwd=dir)
    instance = HAProxyInstance(
        name=name, daemon=daemon, config=config, admin_socket=admin_socket,
        admin_port=admin_port, frontends=dict(frontends),
        backends={c: backend_name(c) for c in backends},
        servers={dc: server_name(dc) for servers in backends.values() for dc in servers},
    )
    daemon.start()
    try:
        daemon.wait_ready(lambda: instance.command("show info", 2.0).startswith("Name:"),
                          timeout_s=ready_timeout_s, what="answering on its admin socket")
    except BaseException:
        daemon.stop()
        raise
    return instance
