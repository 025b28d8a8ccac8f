"""A Docker/OCI registry (``docker-registry``, Distribution 2.8) for one DC of the lab.

Why our own configuration: Debian's listens on every interface and wants an htpasswd file;
the lab needs one registry per DC on that DC's own address (127.0.0.1 by default, the DC's
namespace address in the lab), on a port it picked, storing under a directory it owns, with
deletes enabled so drills can remove an image from one DC.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from revive.lab.daemon import Daemon, DaemonError, port_open, program
from revive.lab.netns import Wrap

__all__ = ["registry_config", "registry_url", "start_registry"]


def registry_url(port: int, host: str = "127.0.0.1") -> str:
    """The base URL of a lab registry listening on ``host``:``port``."""
    return f"http://{host}:{port}"


def registry_config(root: Path, port: int, host: str = "127.0.0.1") -> str:
    """The registry's YAML config: filesystem storage under ``root``, ``host``:``port``."""
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
        f"  addr: {host}:{port}\n"
    )


def start_registry(
    dir: Path,
    *,
    port: int,
    name: str = "registry",
    host: str = "127.0.0.1",
    wrap: Wrap | None = None,
) -> Daemon:
    """Start a registry storing under ``dir``/data on ``host``:``port``; return it ready.

    Writes ``dir``/registry.yml and logs to ``dir``/<name>.log (the access log is there
    too). ``wrap`` prefixes the command line (``ip netns exec <ns>`` runs it in a DC's
    namespace, where ``host`` is that DC's address). Ready when ``GET /v2/`` on
    ``host``:``port`` answers 200 from here. Raises ``DaemonError`` if the port is already
    taken (it would not be ours) or the registry does not come up; ``ProgramMissing`` when
    the ``docker-registry`` package is not installed. Stop it with ``.stop()``.
    """
    binary = program("docker-registry", "docker-registry")
    dir.mkdir(parents=True, exist_ok=True)
    data = dir / "data"
    data.mkdir(exist_ok=True)
    config = dir / "registry.yml"
    config.write_text(registry_config(data.resolve(), port, host))
    if port_open(port, host):
        raise DaemonError(f"{name}: port {host}:{port} is already in use by another program")
    argv = [binary, "serve", str(config)]
    daemon = Daemon(name, wrap(argv) if wrap else argv, log=dir / f"{name}.log", cwd=dir)
    daemon.start()
    url = f"{registry_url(port, host)}/v2/"

    def ready() -> bool:
        # Never through an HTTP proxy from the environment: it would not reach a lab address.
        return httpx.get(url, timeout=1.0, trust_env=False).status_code == 200

    try:
        return daemon.wait_ready(ready, timeout_s=30.0, what=f"answering on {url}")
    except BaseException:
        daemon.stop()
        raise
