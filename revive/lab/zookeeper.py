"""Run a real ZooKeeper 3.8 as one DC's config-store node: standalone, on the DC's address.

The lab runs ONE standalone node per DC (not an ensemble: an ensemble spread over DCs is
what a burning DC would take down with it), and the ``zookeeper`` adapter writes to every
node. Debian's ``zkServer.sh`` cannot be used: it has no SLF4J binding (so no log at all) and
its admin server (Jetty) crashes at start. ``start_zookeeper`` therefore starts the server
class itself with ``slf4j-simple`` on the class path, the admin server off and the
four-letter words the adapter's probe needs whitelisted, and returns once ``ruok`` answers
``imok`` and ``srvr`` says the node serves. It listens on 127.0.0.1 unless given a ``host``
(in the lab, the DC's namespace address, started there through ``wrap``).
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from revive.lab.daemon import Daemon, DaemonError, ProgramMissing, port_open, program
from revive.lab.netns import Wrap

#: Where Debian's ``zookeeper`` package puts the server (its manifest names the other jars).
ZOOKEEPER_JAR = Path("/usr/share/java/zookeeper.jar")
#: An SLF4J binding that logs to stderr (Debian's ``libslf4j-java``, a zookeeper dependency).
SLF4J_SIMPLE_JAR = Path("/usr/share/java/slf4j-simple.jar")
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
FOUR_LETTER_WORDS = ("ruok", "srvr", "mntr", "stat", "envi")


def zookeeper_config(*, data_dir: Path, port: int, tick_ms: int = 2000,
                     host: str = "127.0.0.1") -> str:
    """The text of ``zoo.cfg`` for one standalone node listening on ``host``:``port`` only."""
    return "\n".join([
        "# standalone ZooKeeper node, written by revive.lab.zookeeper",
        f"tickTime={tick_ms}",
        f"dataDir={data_dir}",
        f"clientPort={port}",
        f"clientPortAddress={host}",
        "maxClientCnxns=100",
        # The Jetty admin server crashes with Debian's jars, and nothing here needs it.
        "admin.enableServer=false",
        f"4lw.commands.whitelist={','.join(FOUR_LETTER_WORDS)}",
        # Keep a long-running lab's snapshots and logs from filling the disk.
        "autopurge.snapRetainCount=3",
        "autopurge.purgeInterval=1",
        "",
    ])


def four_letter(port: int, word: str, *, host: str = "127.0.0.1", timeout_s: float = 2.0) -> str:
    """Send a four-letter word (``ruok``, ``srvr``...) and return the whole reply.

    The server answers and closes the connection, so the reply is read to EOF.
    """
    chunks: list[bytes] = []
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(word.encode("ascii"))
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def serving(port: int, *, host: str = "127.0.0.1", timeout_s: float = 2.0) -> bool:
    """True when the node says ``imok`` and ``srvr`` shows it serving (a ``Mode:`` line)."""
    with contextlib.suppress(OSError):
        return (four_letter(port, "ruok", host=host, timeout_s=timeout_s) == "imok"
                and "Mode:" in four_letter(port, "srvr", host=host, timeout_s=timeout_s))
    return False


def start_zookeeper(
    dir: Path,
    *,
    port: int,
    name: str = "zookeeper",
    host: str = "127.0.0.1",
    wrap: Wrap | None = None,
    heap_mb: int = 256,
    timeout_s: float = 60.0,
) -> Daemon:
    """Start one standalone node with its config, data and log in ``dir``; return it ready.

    It listens on ``host``:``port``; ``wrap`` prefixes its command line (``ip netns exec
    <ns>`` runs it in a DC's namespace, where ``host`` is that DC's address), and readiness
    is asked from here at ``host``. Restarting with the same ``dir`` and ``port`` brings the
    node back with its data (a DC coming back). Raises ``ProgramMissing`` when java or the
    jars are not installed, and ``DaemonError`` when ``host``:``port`` is already taken or
    the node is not serving in time.
    """
    java = program("java", "default-jre-headless")
    for jar in (ZOOKEEPER_JAR, SLF4J_SIMPLE_JAR):
        if not jar.exists():
            raise ProgramMissing(str(jar), "zookeeper")
    if port_open(port, host):
        raise DaemonError(f"{name}: port {host}:{port} is already in use; it would not be ours")
    dir.mkdir(parents=True, exist_ok=True)
    data_dir = dir / "data"
    data_dir.mkdir(exist_ok=True)
    config = dir / "zoo.cfg"
    config.write_text(zookeeper_config(data_dir=data_dir, port=port, host=host))
    argv = [
        java,
        f"-Xmx{heap_mb}m",
        "-XX:+UseSerialGC",  # one GC thread set: two nodes on a 2-core CI machine
        "-XX:TieredStopAtLevel=1",  # C1 only: starts faster; a test node needs no C2
        "-cp",
        f"{ZOOKEEPER_JAR}:{SLF4J_SIMPLE_JAR}",
        MAIN_CLASS,
        str(config),
    ]
    daemon = Daemon(name, wrap(argv) if wrap else argv, log=dir / f"{name}.log",
                    cwd=dir).start()
    try:
        daemon.wait_ready(lambda: serving(port, host=host), timeout_s=timeout_s,
                          what=f"serving on {host}:{port}")
    except BaseException:
        daemon.stop()
        raise
    return daemon
