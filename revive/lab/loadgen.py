"""The lab's load generator: a steady request rate per traffic class, and what users saw.

Why it exists: the lab measures recovery (RTO per tier) by what users experience, not by
what the tools say. Each class gets an open-loop rate (a request that has not finished never
delays the next) sent to that class's GSLB address. Several addresses per class are the
GSLB's replicas (one HAProxy per DC): like a DNS client, each request goes to the first that
answers and fails over to the next on a connection error, so losing a DC's HAProxy does not
stop the traffic; a replica marked down is probed (TCP connect) every second and used again
as soon as it accepts connections.

Every second, one JSON line per class is appended to the output file and flushed::

    {"t": 1767225600, "class": "gold", "sent": 5, "ok": 5, "errors": 0, "timeouts": 0,
     "p99_ms": 7.4, "by_dc": {"dc2": 5}}

``t`` is the wall-clock second the requests were *sent* in; a line is written once all of
them finished (at most the timeout later), so ``sent == ok + errors + timeouts``. ``by_dc``
counts 2xx answers per ``X-DC`` header (set by the demo service). ``GET /metrics`` exposes
``lab_loadgen_requests_total{class,outcome}`` and ``lab_loadgen_success_ratio{class}``.

``success_ratio`` and ``recovered_at`` are pure functions over those lines: the lab's RTO per
tier is ``recovered_at(...) - <time of the fire>``. ``start_loadgen`` runs it as a ``Daemon``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from revive.lab.daemon import Daemon, DaemonError, port_open

if TYPE_CHECKING:
    import aiohttp
    from aiohttp import web

__all__ = [
    "OUTCOMES",
    "LoadgenArgs",
    "loadgen_argv",
    "main",
    "p99",
    "parse_args",
    "parse_rates",
    "parse_targets",
    "read_lines",
    "recovered_at",
    "start_loadgen",
    "success_ratio",
]

log = logging.getLogger("revive.lab.loadgen")

OUTCOMES = ("ok", "error", "timeout")
#: How long a connection attempt to one GSLB replica may take before trying the next.
CONNECT_TIMEOUT_S = 0.3
#: A down replica is probed this often (TCP connect) and used again once it accepts.
PROBE_EVERY_S = 1.0
#: A second whose requests are still unfinished this long after the timeout is written anyway
#: (the stragglers count as timeouts): the file must keep moving.
FLUSH_GRACE_S = 2.0
HARD_EXIT_AFTER_S = 0.9
DEFAULT_OUT = "loadgen.jsonl"


# --- the pure part: parsing flags, reading and judging the lines --------------------------


def parse_targets(items: Iterable[str]) -> dict[str, list[str]]:
    """``CLASS=URL[,URL2...]`` flags -> class -> GSLB replica URLs, in preference order."""
    targets: dict[str, list[str]] = {}
    for item in items:
        name, sep, urls = item.partition("=")
        replicas = [u.strip() for u in urls.split(",") if u.strip()]
        if not sep or not name.strip() or not replicas:
            raise ValueError(f"--target {item!r}: expected CLASS=URL[,URL2...]")
        for url in replicas:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"--target {item!r}: {url!r} is not an http(s) URL")
        targets.setdefault(name.strip(), []).extend(replicas)
    return targets


def parse_rates(items: Iterable[str]) -> dict[str, float]:
    """``CLASS=RPS`` flags -> class -> requests per second (0 allowed: lines, no traffic)."""
    rates: dict[str, float] = {}
    for item in items:
        name, sep, text = item.partition("=")
        try:
            rate = float(text)
        except ValueError:
            rate = -1.0
        if not sep or not name.strip() or not math.isfinite(rate) or rate < 0:
            raise ValueError(f"--rate {item!r}: expected CLASS=RPS with RPS >= 0")
        rates[name.strip()] = rate
    return rates


def p99(values: Sequence[float]) -> float | None:
    """The 99th percentile by nearest rank (an observed value; None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def read_lines(path: Path) -> list[dict[str, Any]]:
    """The lines of a loadgen output file; a line still being written (torn) is skipped."""
    lines = []
    with contextlib.suppress(FileNotFoundError), open(path) as f:
        for text in f:
            with contextlib.suppress(ValueError):
                value = json.loads(text)
                if isinstance(value, dict):
                    lines.append(value)
    return lines


def _of_class(lines: Iterable[Mapping[str, Any]], traffic_class: str,
              since: float | None, until: float | None) -> list[Mapping[str, Any]]:
    chosen = [
        line for line in lines
        if line.get("class") == traffic_class
        and (since is None or line["t"] >= since) and (until is None or line["t"] < until)
    ]
    return sorted(chosen, key=lambda line: line["t"])


def success_ratio(lines: Iterable[Mapping[str, Any]], traffic_class: str,
                  since: float | None = None, until: float | None = None) -> float | None:
    """ok / sent of ``traffic_class`` over the seconds ``since <= t < until`` (None: nothing
    was sent then). The baseline before a fire, or the quality during a recovery."""
    chosen = _of_class(lines, traffic_class, since, until)
    sent = sum(int(line["sent"]) for line in chosen)
    return sum(int(line["ok"]) for line in chosen) / sent if sent else None


def recovered_at(
    lines: Iterable[Mapping[str, Any]],
    traffic_class: str,
    baseline_ratio: float,
    tolerance: float = 0.01,
    hold_s: int = 5,
    *,
    since: float | None = None,
    until: float | None = None,
) -> float | None:
    """The second from which ``traffic_class`` stayed recovered: the start of the last run
    of good seconds, if that run lasts ``hold_s`` seconds or more; None if not (yet).

    A second is good when its success ratio is at least ``baseline_ratio - tolerance``; a
    second with nothing sent neither breaks nor extends a run. "Stayed" is deliberate: a
    recovery that flaps is only over once it holds, and RTO is measured to that point. If no
    second in [since, until) is bad, it is the first second (nothing was lost).
    """
    threshold = baseline_ratio - tolerance
    start: float | None = None
    good = 0
    for line in _of_class(lines, traffic_class, since, until):
        sent = int(line["sent"])
        if sent == 0:
            continue
        if int(line["ok"]) / sent >= threshold:
            if start is None:
                start = float(line["t"])
            good += 1
        else:
            start, good = None, 0
    return start if start is not None and good >= hold_s else None


# --- starting it from the lab -------------------------------------------------------------


def loadgen_argv(
    *,
    targets: Mapping[str, Sequence[str]],
    rates: Mapping[str, float],
    host: str,
    port: int,
    out: Path,
    timeout_ms: float = 1000.0,
    python: str | None = None,
) -> list[str]:
    """The load generator's command line, run by ``python`` (default: this interpreter)."""
    missing = sorted(set(rates) ^ set(targets))
    if missing:
        raise ValueError(f"every class needs both a target and a rate: {', '.join(missing)}")
    argv = [python or sys.executable, "-m", "revive.lab.loadgen", "--host", host,
            "--port", str(port), "--out", str(out), "--timeout-ms", format(timeout_ms, "g")]
    for name, urls in targets.items():
        argv += ["--target", f"{name}={','.join(urls)}"]
    for name, rate in rates.items():
        argv += ["--rate", f"{name}={format(rate, 'g')}"]
    return argv


def start_loadgen(
    dir: Path,
    *,
    targets: Mapping[str, Sequence[str]],
    rates: Mapping[str, float],
    host: str,
    port: int,
    wrap: Callable[[list[str]], list[str]] | None = None,
    out: Path | None = None,
    timeout_ms: float = 1000.0,
    name: str = "loadgen",
    timeout_s: float = 30.0,
) -> Daemon:
    """Start the load generator as a ``Daemon``; return once its ``/metrics`` answers.

    Lines go to ``out`` (default ``dir/loadgen.jsonl``), its log to ``dir/<name>.log``;
    ``wrap`` prefixes the command line (``ip netns exec <ns>``). The caller stops it.
    """
    if port_open(port, host):
        raise DaemonError(f"{name}: {host}:{port} is already in use")
    out = out or dir / DEFAULT_OUT
    argv = loadgen_argv(targets=targets, rates=rates, host=host, port=port, out=out,
                        timeout_ms=timeout_ms)
    daemon = Daemon(name, wrap(argv) if wrap else argv, log=dir / f"{name}.log", cwd=dir)
    daemon.start()

    def ready() -> bool:
        url = f"http://{host}:{port}/metrics"
        return httpx.get(url, timeout=2.0, trust_env=False).status_code == 200

    try:
        daemon.wait_ready(ready, timeout_s=timeout_s, what=f"serving /metrics on {host}:{port}")
    except BaseException:
        daemon.stop()
        raise
    return daemon


# --- the running load generator -----------------------------------------------------------


@dataclass
class Second:
    """One class's requests sent during one wall-clock second, and how they ended."""

    sent: int = 0
    ok: int = 0
    errors: int = 0
    timeouts: int = 0
    pending: int = 0
    closed: bool = False
    latencies_ms: list[float] = field(default_factory=list)
    by_dc: Counter[str] = field(default_factory=Counter)

    def record(self, outcome: str, ms: float, dc: str | None) -> None:
        if self.closed:  # written already: this straggler was counted as a timeout
            return
        self.pending -= 1
        self.latencies_ms.append(ms)
        if outcome == "ok":
            self.ok += 1
            if dc:
                self.by_dc[dc] += 1
        elif outcome == "timeout":
            self.timeouts += 1
        else:
            self.errors += 1

    def line(self, t: int, traffic_class: str) -> dict[str, Any]:
        worst = p99(self.latencies_ms)
        return {
            "t": t, "class": traffic_class, "sent": self.sent, "ok": self.ok,
            "errors": self.errors, "timeouts": self.timeouts,
            "p99_ms": None if worst is None else round(worst, 1),
            "by_dc": dict(sorted(self.by_dc.items())),
        }


class Replicas:
    """A class's GSLB replicas in preference order, with the ones seen down set aside."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.urls = list(urls)
        self.down: dict[str, str] = {}

    def order(self) -> list[str]:
        """The replicas to try, in order: the up ones, or all of them when none is up."""
        return [u for u in self.urls if u not in self.down] or list(self.urls)

    def mark_down(self, url: str, reason: str) -> None:
        if url not in self.down:
            log.warning("replica %s is down (%s): failing over", url, reason)
        self.down[url] = reason

    def mark_up(self, url: str) -> None:
        if self.down.pop(url, None) is not None:
            log.info("replica %s accepts connections again", url)

    async def probe(self) -> None:
        """Try each down replica once (TCP connect): the traffic goes back when it accepts."""
        await asyncio.gather(*(self._probe(url) for url in list(self.down)))

    async def _probe(self, url: str) -> None:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname, port), CONNECT_TIMEOUT_S * 2)
        except (OSError, TimeoutError):
            return
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        self.mark_up(url)


@dataclass
class ClassLoad:
    """One traffic class: its rate, its replicas, its seconds not yet written."""

    name: str
    rate: float
    replicas: Replicas
    next_t: int
    seconds: dict[int, Second] = field(default_factory=dict)

    def second(self, t: int) -> Second:
        return self.seconds.setdefault(t, Second())


class LoadMetrics:
    """``lab_loadgen_*`` metrics in a registry of their own."""

    def __init__(self, classes: Sequence[ClassLoad]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics

        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("lab_loadgen_requests", "Requests sent, by how they ended",
                                ("class", "outcome"), registry=self.registry)
        self.success = Gauge("lab_loadgen_success_ratio",
                             "ok / sent over the last second written (per class)",
                             ("class",), registry=self.registry)
        rate = Gauge("lab_loadgen_rate", "Requests per second sent (--rate)", ("class",),
                     registry=self.registry)
        self.replica_up = Gauge("lab_loadgen_replica_up",
                                "1 while a GSLB replica is used, 0 while it is seen down",
                                ("class", "replica"), registry=self.registry)
        for c in classes:
            for outcome in OUTCOMES:
                self.requests.labels(c.name, outcome)
            rate.labels(c.name).set(c.rate)
            for url in c.replicas.urls:
                self.replica_up.labels(c.name, url).set_function(
                    lambda r=c.replicas, u=url: 0.0 if u in r.down else 1.0)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class LoadGen:
    """Sends each class's rate, writes one line per class per second, serves /metrics."""

    def __init__(self, targets: Mapping[str, Sequence[str]], rates: Mapping[str, float],
                 out: IO[str], *, timeout_s: float, poisson: bool = False,
                 rng: random.Random | None = None) -> None:
        now = int(time.time())
        self.classes = [ClassLoad(name, rates[name], Replicas(urls), next_t=now)
                        for name, urls in targets.items()]
        self.out, self.timeout_s, self.poisson = out, timeout_s, poisson
        self.rng = rng or random.Random()
        self.metrics = LoadMetrics(self.classes)
        self._requests: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def run(self, stop: asyncio.Event) -> None:
        import aiohttp

        # A new connection per request: like a client resolving the GSLB, and no stale
        # keep-alive connection to a replica that has gone.
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            self._session = session
            loops = [asyncio.create_task(self._drive(c)) for c in self.classes if c.rate > 0]
            loops += [asyncio.create_task(self._flush_every_second()),
                      asyncio.create_task(self._probe_every_second())]
            await stop.wait()
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            if self._requests:  # let the last ones finish briefly, then write what is whole
                await asyncio.wait(list(self._requests), timeout=0.4)
            self.flush(final=True)
            for task in list(self._requests):
                task.cancel()

    async def _drive(self, c: ClassLoad) -> None:
        """Open loop: requests start on a schedule, whether or not earlier ones finished."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -1.0:  # the machine stalled: resume the rate, do not burst to catch up
                next_at = loop.time()
            second = c.second(int(time.time()))
            second.sent += 1
            second.pending += 1
            task = asyncio.create_task(self._request(c, second))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
            next_at += self.rng.expovariate(c.rate) if self.poisson else 1.0 / c.rate

    async def _request(self, c: ClassLoad, second: Second) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome, dc = await self._send(c, started + self.timeout_s)
        second.record(outcome, (loop.time() - started) * 1000.0, dc)
        self.metrics.requests.labels(c.name, outcome).inc()

    async def _send(self, c: ClassLoad, deadline: float) -> tuple[str, str | None]:
        """One request through the first replica that answers: (outcome, X-DC)."""
        import aiohttp

        assert self._session is not None
        loop = asyncio.get_running_loop()
        order = c.replicas.order()
        failed = "error"
        for i, url in enumerate(order):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return "timeout", None
            # Short connects while another replica is left to try; the last one gets it all.
            connect = remaining if i == len(order) - 1 else min(CONNECT_TIMEOUT_S, remaining)
            timeout = aiohttp.ClientTimeout(total=remaining, sock_connect=connect)
            try:
                async with self._session.get(url, timeout=timeout) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        return "ok", response.headers.get("X-DC")
                    return "error", None
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError,
                    aiohttp.ServerDisconnectedError) as exc:
                # The replica did not take the request: it is gone or cut off. Next one.
                c.replicas.mark_down(url, type(exc).__name__)
                failed = "timeout" if isinstance(exc, TimeoutError) else "error"
            except TimeoutError:
                return "timeout", None
            except aiohttp.ClientError:
                return "error", None
        return failed, None

    async def _flush_every_second(self) -> None:
        while True:
            await asyncio.sleep(1.0 - time.time() % 1.0 + 0.01)
            self.flush()

    async def _probe_every_second(self) -> None:
        while True:
            await asyncio.sleep(PROBE_EVERY_S)
            await asyncio.gather(*(c.replicas.probe() for c in self.classes))

    def flush(self, *, final: bool = False) -> None:
        """Write every whole second not written yet, in order, one line per class."""
        now = time.time()
        for c in self.classes:
            while c.next_t < int(now):
                second = c.seconds.get(c.next_t) or Second()
                if second.pending:
                    if final or now < c.next_t + 1 + self.timeout_s + FLUSH_GRACE_S:
                        break
                    second.timeouts += second.pending  # stragglers: late is a timeout
                    second.pending = 0
                second.closed = True
                line = second.line(c.next_t, c.name)
                self.out.write(json.dumps(line) + "\n")
                if second.sent:
                    self.metrics.success.labels(c.name).set(second.ok / second.sent)
                c.seconds.pop(c.next_t, None)
                c.next_t += 1
        self.out.flush()


# --- the process --------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m revive.lab.loadgen", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", action="append", required=True, metavar="CLASS=URL[,URL2...]",
                   help="a class's GSLB replicas, in preference order (repeat per class)")
    p.add_argument("--rate", action="append", required=True, metavar="CLASS=RPS",
                   help="a class's requests per second (repeat per class)")
    p.add_argument("--host", required=True, help="address of the /metrics endpoint")
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--out", required=True, type=Path, help="JSON lines, appended")
    p.add_argument("--timeout-ms", type=float, default=1000.0,
                   help="a request's whole budget, failovers included")
    p.add_argument("--poisson", action="store_true",
                   help="Poisson arrivals instead of a fixed interval")
    return p


def _hard_exit() -> None:
    log.warning("stopping took too long: exiting now")
    logging.shutdown()
    os._exit(0)


async def serve(targets: Mapping[str, Sequence[str]], rates: Mapping[str, float], *,
                host: str, port: int, out: Path, timeout_s: float, poisson: bool) -> None:
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST

    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
        gen = LoadGen(targets, rates, f, timeout_s=timeout_s, poisson=poisson)

        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=gen.metrics.render(),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("sending %s; lines to %s; metrics on http://%s:%d/metrics",
                 ", ".join(f"{name}={rate:g}/s" for name, rate in rates.items()), out, host, port)
        running = asyncio.create_task(gen.run(stop))
        await stop.wait()
        watchdog = threading.Timer(HARD_EXIT_AFTER_S, _hard_exit)
        watchdog.daemon = True
        watchdog.start()
        await running
        await runner.cleanup()
        log.info("stopped")
        watchdog.cancel()


@dataclass(frozen=True)
class LoadgenArgs:
    """The command line, checked: every class has replicas and a rate."""

    targets: dict[str, list[str]]
    rates: dict[str, float]
    host: str
    port: int
    out: Path
    timeout_ms: float = 1000.0
    poisson: bool = False


def parse_args(argv: Sequence[str] | None = None) -> LoadgenArgs:
    parser = _parser()
    ns = parser.parse_args(argv)
    try:
        targets, rates = parse_targets(ns.target), parse_rates(ns.rate)
    except ValueError as exc:
        parser.error(str(exc))
    missing = sorted(set(targets) ^ set(rates))
    if missing:
        parser.error(f"every class needs both --target and --rate: {', '.join(missing)}")
    if ns.timeout_ms <= 0:
        parser.error("--timeout-ms must be > 0")
    return LoadgenArgs(targets, rates, ns.host, ns.port, ns.out, ns.timeout_ms, ns.poisson)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s loadgen: %(message)s")
    try:
        asyncio.run(serve(args.targets, args.rates, host=args.host, port=args.port,
                          out=args.out, timeout_s=args.timeout_ms / 1000.0,
                          poisson=args.poisson))
    except OSError as exc:
        log.error("cannot serve /metrics on %s:%d or write %s: %s", args.host, args.port,
                  args.out, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
