"""Run a real Prometheus on a DC's address: our own config and data directory, never Debian's.

A DC's metrics replica in the lab (and in the adapter's tests) is one ``prometheus`` process
scraping every DC's exporters, as a real estate replicates its metrics per DC for
availability. ``start_prometheus`` writes ``prometheus.yml`` into the directory it is given,
keeps the TSDB under it, listens on the address and port it is given (127.0.0.1 by default;
in the lab, the DC's namespace address, started there through ``wrap``) and returns once that
port is answered by *this* process (a package's own Prometheus on the same port would be
someone else's data). Prometheus is ready in a fraction of a second but its first sample only
becomes queryable after a scrape or two (5-6 s here): ``wait_for_series`` polls for it with a
deadline.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from revive.lab.daemon import Daemon, DaemonError, port_open, program
from revive.lab.netns import Wrap

__all__ = ["prometheus_url", "start_prometheus", "wait_for_series", "write_config"]

HOST = "127.0.0.1"
CONFIG_FILE = "prometheus.yml"
DATA_DIR = "data"
LOG_FILE = "prometheus.log"


def prometheus_url(port: int, host: str = HOST) -> str:
    """The base URL of a lab Prometheus on ``host``:``port`` (a topology replica address)."""
    return f"http://{host}:{port}"


def write_config(
    directory: Path,
    *,
    scrape_targets: Sequence[str],
    scrape_interval_s: float = 1.0,
    job: str = "revive",
    external_labels: Mapping[str, str] | None = None,
) -> Path:
    """Write ``prometheus.yml`` scraping ``scrape_targets`` (``host:port``) as one job.

    ``honor_labels`` keeps the exporters' own labels (their ``dc`` and ``class`` are the
    truth, not the scraping Prometheus's view of them).
    """
    interval = _duration(scrape_interval_s)
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": job,
                "honor_labels": True,
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "static_configs": [{"targets": list(scrape_targets)}],
            }
        ],
    }
    if external_labels:
        config["global"]["external_labels"] = dict(external_labels)
    path = directory / CONFIG_FILE
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _duration(seconds: float) -> str:
    """A Prometheus duration: ``1s``, or ``1500ms`` when not a whole number of seconds."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def start_prometheus(
    directory: Path,
    *,
    port: int,
    scrape_targets: Sequence[str],
    scrape_interval_s: float = 1.0,
    job: str = "revive",
    external_labels: Mapping[str, str] | None = None,
    name: str = "prometheus",
    extra_args: Sequence[str] = (),
    timeout_s: float = 30.0,
    host: str = HOST,
    wrap: Wrap | None = None,
) -> Daemon:
    """Start Prometheus with its config, TSDB and log in ``directory``; return it once ready.

    It listens on ``host``:``port`` only; ``wrap`` prefixes its command line (``ip netns exec
    <ns>`` runs it in a DC's namespace, where ``host`` is that DC's address), and readiness
    is checked from here at ``host``. Raises ``DaemonError`` when ``host``:``port`` is
    already taken (it would not be ours), and ``ProgramMissing`` (a ``DaemonError``) when the
    ``prometheus`` package is not installed. The caller stops it with ``Daemon.stop()``.
    """
    binary = program("prometheus", "prometheus")
    if port_open(port, host):
        raise DaemonError(f"{name}: port {host}:{port} is already in use; not ours to query")
    directory.mkdir(parents=True, exist_ok=True)
    config = write_config(directory, scrape_targets=scrape_targets,
                          scrape_interval_s=scrape_interval_s, job=job,
                          external_labels=external_labels)
    data = directory / DATA_DIR
    argv = [
        binary,
        f"--config.file={config}",
        f"--web.listen-address={host}:{port}",
        f"--storage.tsdb.path={data}",
        *extra_args,
    ]
    daemon = Daemon(name, wrap(argv) if wrap else argv, log=directory / LOG_FILE,
                    cwd=directory).start()
    url = prometheus_url(port, host)
    try:
        daemon.wait_ready(lambda: _is_ours(url, data), timeout_s=timeout_s,
                          what=f"ready on {url}")
    except BaseException:
        daemon.stop()
        raise
    return daemon


def _is_ours(url: str, data: Path) -> bool:
    """Ready, and the Prometheus on that port keeps its TSDB in our directory."""
    # Never through an HTTP proxy from the environment: it would not reach a lab address.
    with httpx.Client(base_url=url, timeout=2.0, trust_env=False) as client:
        if client.get("/-/ready").status_code != 200:
            return False
        flags = client.get("/api/v1/status/flags").json()["data"]
    return Path(flags["storage.tsdb.path"]) == data


def wait_for_series(
    url: str,
    query: str,
    timeout_s: float = 30.0,
    *,
    until: Callable[[float], bool] | None = None,
    interval_s: float = 0.2,
) -> float:
    """Poll the instant ``query`` until it returns one finite value (that ``until`` accepts).

    Returns that value; ``DaemonError`` with the last answer after ``timeout_s``. For tests
    and the lab, which must not act on a Prometheus that has not scraped yet.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with httpx.Client(base_url=url, timeout=5.0) as client:
        while True:
            try:
                response = client.get("/api/v1/query", params={"query": query})
                result = response.json()["data"]["result"]
                last = f"HTTP {response.status_code}: {result}"
                if len(result) == 1:
                    value = float(result[0]["value"][1])
                    if math.isfinite(value) and (until is None or until(value)):
                        return value
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise DaemonError(
                    f"prometheus at {url}: no series for {query!r} after {timeout_s:.0f} s "
                    f"(last: {last})"
                )
            time.sleep(interval_s)
