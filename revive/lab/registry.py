"""A Docker/OCI registry (``docker-registry``, Distribution 2.8) for one DC of the lab.

Why our own configuration: Debian's listens on every interface and wants an htpasswd file;
the lab needs one registry per DC on 127.0.0.1, on a port it picked, storing under a
directory it owns, with deletes enabled so drills can remove an image from one DC.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from revive.lab.daemon import Daemon, DaemonError, port_open, program

__all__ = ["registry_config", "registry_url", "start_registry"]


def registry_url(port: int) -> str:
    """The base URL of a lab registry listening on ``port``."""
    return f"http://127.0.0.1:{port}"


def registry_config(root: Path, port: int) -> str:
    """The registry's YAML config: filesystem storage under ``root``, 127.0.0.1:``port``."""
    return (
        "version: 0.1\n"
        "log:\n"
        "  level: info\n"
        "  accesslog:\n"
        "    disabled: false\n"
        "storage:\n"
        "  filesystem:\n"
        f"    rootdirectory: {root}\n"
        "  delete:\n"
        "    enabled: true\n"
        "http:\n"
        f"  addr: 127.0.0.1:{port}\n"
    )


def start_registry(dir: Path, *, port: int, name: str = "registry") -> Daemon:
    """Start a registry storing under ``dir``/data on 127.0.0.1:``port``; return it ready.

    Writes ``dir``/registry.yml and logs to ``dir``/<name>.log (the access log is there
    too). Ready when ``GET /v2/`` answers 200. Raises ``DaemonError`` if the port is already
    taken (it would not be ours) or the registry does not come up; ``ProgramMissing`` when
    the ``docker-registry`` package is not installed. Stop it with ``.stop()``.
    """
    binary = program("docker-registry", "docker-registry")
    dir.mkdir(parents=True, exist_ok=True)
    data = dir / "data"
    data.mkdir(exist_ok=True)
    config = dir / "registry.yml"
    config.write_text(registry_config(data.resolve(), port))
    if port_open(port):
        raise DaemonError(f"{name}: port {port} is already in use by another program")
    daemon = Daemon(name, [binary, "serve", str(config)], log=dir / f"{name}.log", cwd=dir)
    daemon.start()
    url = f"{registry_url(port)}/v2/"

    def ready() -> bool:
        return httpx.get(url, timeout=1.0).status_code == 200

    try:
        return daemon.wait_ready(ready, timeout_s=30.0, what=f"answering on {url}")
    except BaseException:
        daemon.stop()
        raise
