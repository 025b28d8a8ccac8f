"""Benchmark how fast ``revive serve`` acknowledges a burst of Slack ``/revive run`` commands.

Slack gives a slash command 3 seconds to be answered. Here ``--commands`` (50) signed
``/revive run failover target_dc=dc2 --dry-run`` commands arrive at once, and
each one really starts a dry run: ``revive serve`` runs in its own process, configured
from the environment as deployed, with ``REVIVE_START_MODE=process`` (each dry run is a
flow run in that process; at most ``REVIVE_MAX_PARALLEL_DRY_RUNS`` at once, the rest wait
their turn). Everyone is an operator; user groups are not looked up. What is measured:

* acknowledgement latency: from sending a command until its HTTP answer is back, per
  command, with ``httpx.AsyncClient`` (every command signed as Slack signs it:
  HMAC-SHA256 of ``v0:timestamp:body``, so the signature check is part of the cost);
* ``/healthz`` latency, the baseline: idle (``--idle-probes`` one after another, before
  the burst), under the same load (``--probers`` loops probing while the burst is being
  answered) and while the dry runs it started run (until they have all finished).

Every command's ``response_url`` points at a small local receiver (a second uvicorn), so
the outcome the runner posts when a dry run ends is received; the benchmark waits up to
``--wait-s`` for all of them (Rich progress bar on stderr) and reports how many finished,
how many succeeded and when. The dry runs act on the built-in simulator, served over HTTP
(``revive.drill.server.SimServer``), on ``--topology``.

Isolation and warm-up: the store is a SQLite file and ``PREFECT_HOME`` a directory, both
temporary; ``PREFECT_API_URL`` and the Slack bot settings are unset for the server (the dry
runs use Prefect's ephemeral server and post progress nowhere); API logging and analytics
are off and Prefect logs at WARNING unless ``PREFECT_LOGGING_LEVEL`` says otherwise. The
server's output goes to ``--log``; its warnings and errors are counted in the report. The first
flow run starts the ephemeral server, which takes seconds, and the first ``run`` command
imports the runbooks: one dry run is sent and waited for (up to ``--warmup-s``) before
anything is measured, and reported on its own line.

Percentiles are nearest-rank: with 50 commands the p99 is the slowest one. The server
shares its process with the dry runs' threads, as the ``/healthz`` probes of the same
server do, so those are the fair comparison; client, receiver and simulator live in this
process, on the same 2 cores.

Goals, reported as PASS/FAIL (exit code 0 unless ``--check`` is given and a goal fails):
p99 acknowledgement under 500 ms; every command answered 200 with "Accepted"; every dry
run finished and succeeded within ``--wait-s``.

    .venv/bin/python bench/slack_ack.py [--commands 50] [--probers 4] [--wait-s 240]
        [--log .revive/bench/slack_ack.log] [--json] [--check]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

if __name__ == "__main__":  # run as a script: make `revive` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from revive.drill.server import SimServer, free_port
from revive.sim import Simulator
from revive.topology import load

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "runbooks" / "topology.yaml"
LOG = REPO / ".revive" / "bench" / "slack_ack.log"
COMMANDS = 50
PROBERS = 4
IDLE_PROBES = 50
WAIT_S = 240.0
WARMUP_S = 120.0
TARGET_DC = "dc2"
ACK_GOAL_MS = 500.0
SLACK_DEADLINE_MS = 3000.0
RUN_PROBE_PAUSE_S = 0.05  # between probes of one prober while the dry runs run
SECRET = "bench-signing-secret-0123456789abcdef"
CHANNEL = "CBENCH"
SUCCESS_ICON = ":white_check_mark:"


# --- serving ------------------------------------------------------------------------------


class Served:
    """``with Served(app, name) as s:`` serves an ASGI app at ``s.url`` from a thread."""

    def __init__(self, app: Any, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=name, daemon=True)

    def __enter__(self) -> Served:
        self._thread.start()
        deadline = time.monotonic() + 20.0
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self._thread.name} did not start on {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10.0)


class Receiver:
    """Stands in for Slack's ``response_url``s: ``POST /response/{key}`` is recorded."""

    def __init__(self) -> None:
        self.posts: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route("/response/{key}", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> PlainTextResponse:
        payload = await request.json()
        with self._lock:
            self.posts.setdefault(request.path_params["key"], (time.perf_counter(), payload))
        return PlainTextResponse("ok")

    def get(self, key: str) -> tuple[float, dict[str, Any]] | None:
        with self._lock:
            return self.posts.get(key)

    def count(self, keys: list[str]) -> int:
        with self._lock:
            return sum(key in self.posts for key in keys)


#: Unset while the benchmark runs: its dry runs use their own Prefect server and post
#: progress nowhere (a bot token here would make every dry run post to a real channel).
UNSET = ("PREFECT_API_URL", "REVIVE_SLACK_BOT_TOKEN", "REVIVE_SLACK_CHANNEL",
         "REVIVE_SLACK_API_URL")


@contextmanager
def isolated(tmp: Path) -> Iterator[None]:
    """A temporary store and ``PREFECT_HOME`` for the benchmark, restored afterwards.

    Prefect reads its settings when it is imported; if it already is (under pytest), its
    global settings are refreshed so flow runs in new threads see these values.
    """
    updates = {
        "REVIVE_DATABASE_URL": f"sqlite:///{tmp / 'revive.db'}",
        "PREFECT_HOME": str(tmp / "prefect"),
        "PREFECT_LOGGING_TO_API_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "WARNING"),
    }
    saved = {key: os.environ.get(key) for key in (*updates, *UNSET)}
    for key in UNSET:
        os.environ.pop(key, None)
    os.environ.update(updates)
    _refresh_prefect_settings()
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _refresh_prefect_settings()


def _refresh_prefect_settings() -> None:
    context = sys.modules.get("prefect.context")
    if context is not None:
        context.refresh_global_settings_context()


LEVELS = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|^Traceback")
STAMP = re.compile(r"^[\d:. -]+\|?\s*")


def log_summary(path: Path) -> dict[str, Any]:
    """Warnings, errors and tracebacks the server wrote, counted by message."""
    counts: Counter[str] = Counter()
    text = path.read_text(errors="replace") if path.exists() else ""
    for line in text.splitlines():
        if LEVELS.search(line):
            counts[STAMP.sub("", line)[:100]] += 1
    return {"path": str(path), "records": sum(counts.values()),
            "top": [{"message": m, "count": n} for m, n in counts.most_common(5)]}


class ServeProcess:
    """``revive serve`` in its own process, as deployed: the load generator, the receiver
    and the simulator in this process do not share its interpreter lock."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServeProcess:
        revive = Path(sys.executable).with_name("revive")
        command = [str(revive), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self._process = subprocess.Popen(command, env=self.env, stdout=out,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60.0
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"revive serve exited {self._process.returncode}; see "
                                   f"{self.log}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"revive serve did not answer on {self.url}; see {self.log}")
            time.sleep(0.1)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


# --- Slack requests -----------------------------------------------------------------------


def signed(form: dict[str, str], secret: str = SECRET) -> tuple[str, dict[str, str]]:
    """The form-encoded body and the headers Slack would send with it."""
    body = urlencode(form)
    timestamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256)
    return body, {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": "v0=" + digest.hexdigest(),
        "Content-Type": "application/x-www-form-urlencoded",
    }


def command_form(key: str, text: str, receiver_url: str) -> dict[str, str]:
    return {
        "token": "unused", "team_id": "TBENCH", "team_domain": "bench",
        "channel_id": CHANNEL, "channel_name": "incident", "user_id": f"U{key.upper()}",
        "user_name": f"bench-{key}", "command": "/revive", "text": text,
        "response_url": f"{receiver_url}/response/{key}", "trigger_id": f"trigger.{key}",
    }


# --- statistics ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def summary(seconds: list[float]) -> dict[str, Any]:
    """n, p50, p99 and max in ms; the latencies are None when nothing was measured."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 2),
            "p99_ms": round(percentile(ms, 99), 2), "max_ms": round(max(ms), 2)}


# --- the measurement -------------------------------------------------------------------------


async def measure(app_url: str, receiver: Receiver, receiver_url: str, text: str,
                  args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=app_url, limits=limits,
                                 timeout=httpx.Timeout(60.0)) as client:

        async def send(key: str) -> dict[str, Any]:
            body, headers = signed(command_form(key, text, receiver_url))
            began = time.perf_counter()
            response = await client.post("/slack/commands", content=body, headers=headers)
            elapsed = time.perf_counter() - began
            answer = response.json().get("text", "") if response.status_code == 200 else ""
            return {"key": key, "status": response.status_code, "s": elapsed, "sent": began,
                    "accepted": "Accepted" in answer, "answer": answer}

        # Warm-up: the first run command imports the runbooks, its flow run starts Prefect.
        began = time.perf_counter()
        first = await send("warmup")
        done = await _wait_for(receiver, ["warmup"], args.warmup_s, "warm-up dry run")
        post = receiver.get("warmup")
        warmup = {
            "status": first["status"], "accepted": first["accepted"],
            "ack_ms": round(first["s"] * 1000, 2),
            "finished_s": round(post[0] - began, 2) if post else None,
            "succeeded": bool(post and _succeeded(post[1])), "limit_s": args.warmup_s,
            "finished": bool(done),
        }

        idle: list[float] = []
        for _ in range(args.idle_probes):
            t0 = time.perf_counter()
            response = await client.get("/healthz")
            idle.append(time.perf_counter() - t0)
            response.raise_for_status()

        phase = ["acks"]
        probes: dict[str, list[float]] = {"acks": [], "runs": []}
        failed_probes = [0]
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                during = phase[0]
                t0 = time.perf_counter()
                try:
                    response = await client.get("/healthz")
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                probes[during].append(time.perf_counter() - t0)
                failed_probes[0] += not ok
                await asyncio.sleep(RUN_PROBE_PAUSE_S if during == "runs" else 0)

        keys = [f"c{i:03d}" for i in range(args.commands)]
        probers = [asyncio.create_task(probe()) for _ in range(args.probers)]
        burst_began = time.perf_counter()
        acks = await asyncio.gather(*(send(key) for key in keys))
        burst_s = time.perf_counter() - burst_began
        phase[0] = "runs"
        started = [a["key"] for a in acks if a["accepted"]]
        waited = time.perf_counter()
        if args.wait_s > 0 and started:
            await _wait_for(receiver, started, args.wait_s, "dry runs")
        waited_s = time.perf_counter() - waited
        stop.set()
        await asyncio.gather(*probers)

    sent = {a["key"]: a["sent"] for a in acks}
    finished = {k: receiver.get(k) for k in started}
    ends = {k: p[0] - sent[k] for k, p in finished.items() if p is not None}
    failures = [p[1].get("text", "") for p in finished.values()
                if p is not None and not _succeeded(p[1])]
    statuses: dict[str, int] = {}
    for a in acks:
        statuses[str(a["status"])] = statuses.get(str(a["status"]), 0) + 1
    last_answer = next((a["answer"] for a in acks if not a["accepted"]), None)
    return {
        "commands": args.commands,
        "probers": args.probers,
        "text": text,
        "warmup": warmup,
        "ack": {**summary([a["s"] for a in acks]), "statuses": statuses,
                "accepted": sum(a["accepted"] for a in acks), "burst_s": round(burst_s, 3),
                "not_accepted_example": last_answer},
        "healthz": {
            "idle": summary(idle),
            "acks": summary(probes["acks"]),
            "runs": summary(probes["runs"]),
            "failed": failed_probes[0],
        },
        "runs": {
            "started": len(started),
            "finished": len(ends),
            "succeeded": len(ends) - len(failures),
            "limit_s": args.wait_s,
            "waited_s": round(waited_s, 2),
            "median_s": round(statistics.median(ends.values()), 2) if ends else None,
            "last_s": round(max(ends.values()), 2) if ends else None,
            "failure_example": failures[0] if failures else None,
        },
    }


def _succeeded(payload: dict[str, Any]) -> bool:
    return str(payload.get("text", "")).startswith(SUCCESS_ICON)


async def _wait_for(receiver: Receiver, keys: list[str], limit_s: float, what: str) -> bool:
    """Wait (at most ``limit_s``) until every key's outcome was posted; a bar on stderr."""
    deadline = time.monotonic() + limit_s
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"{what} finished", total=len(keys))
        while True:
            done = receiver.count(keys)
            progress.update(task, completed=done)
            if done == len(keys):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Serve the simulator and a response_url receiver here, start ``revive serve`` in its
    own process, measure, stop them all."""
    topology_path = str(Path(args.topology).resolve())
    log_path = Path(args.log).resolve()
    with tempfile.TemporaryDirectory(prefix="revive-bench-slack-",
                                     ignore_cleanup_errors=True) as tmp, isolated(Path(tmp)):
        sim = Simulator(load(topology_path), seed=args.seed)
        sim.advance(5)
        receiver = Receiver()
        with SimServer(sim) as sim_server, Served(receiver.app, "bench-receiver") as hook:
            env = {**os.environ,  # the estate is the server's configuration, not a command's
                   "REVIVE_SLACK_SIGNING_SECRET": SECRET, "REVIVE_TOPOLOGY": topology_path,
                   "REVIVE_SIM_URL": sim_server.url,
                   "REVIVE_ROLES": json.dumps({"*": {"*": "operator"}}),
                   "REVIVE_START_MODE": "process"}  # each dry run: a thread of revive serve
            with ServeProcess(env, log_path) as served:
                text = f"run failover target_dc={args.target_dc} --dry-run"
                report = asyncio.run(measure(served.url, receiver, hook.url, text, args))
        report["log"] = log_summary(log_path)
    return report


# --- report -----------------------------------------------------------------------------------


def _goals(report: dict[str, Any]) -> list[dict[str, Any]]:
    ack, runs = report["ack"], report["runs"]
    p99 = ack["p99_ms"]
    return [
        {"goal": f"p99 acknowledgement under {ACK_GOAL_MS:.0f} ms",
         "ok": p99 is not None and p99 < ACK_GOAL_MS,
         "value": None if p99 is None else f"{p99:.0f} ms"},
        {"goal": "every command answered 200 \"Accepted\"",
         "ok": ack["accepted"] == report["commands"] and ack["statuses"].get("200") ==
         report["commands"],
         "value": f"{ack['accepted']}/{report['commands']}"},
    ] + ([{"goal": f"every dry run succeeded within {runs['limit_s']:g} s",
           "ok": runs["succeeded"] == report["commands"],
           "value": f"{runs['succeeded']}/{report['commands']}"}] if runs["limit_s"] > 0 else [])


def _print(report: dict[str, Any], goals: list[dict[str, Any]], wall: float) -> None:
    console = Console(width=120)

    def plain(text: str) -> None:  # Slack mrkdwn and log text: no Rich markup or emoji
        console.print(text, markup=False, emoji=False, highlight=False)

    n = report["commands"]
    h = report["healthz"]
    table = Table(title=f"revive serve: {n} concurrent signed `/revive run failover --dry-run`"
                  " commands (ms)")
    for col in ("request", "while", "n", "p50", "p99", "max", "p50 x idle /healthz"):
        table.add_column(col, justify="left" if col in ("request", "while") else "right")
    idle_p50 = h["idle"]["p50_ms"]
    rows = [
        ("/healthz", "idle (baseline)", h["idle"]),
        ("/slack/commands ack", f"{n} arrive at once", report["ack"]),
        ("/healthz", f"the {n} are answered", h["acks"]),
        ("/healthz", f"the {n} dry runs run", h["runs"]),
    ]
    for request, during, s in rows:
        ratio = f"{s['p50_ms'] / idle_p50:.1f}" if s["n"] and idle_p50 else "-"
        table.add_row(request, during, str(s["n"]), _ms(s["p50_ms"]), _ms(s["p99_ms"]),
                      _ms(s["max_ms"]), ratio)
    console.print(table)
    w = report["warmup"]
    finished = f"finished in {w['finished_s']:.1f} s" if w["finished_s"] is not None else \
        f"not finished within {w['limit_s']:g} s"
    console.print(f"warm-up, not measured: one dry run first (imports the runbooks, starts "
                  f"Prefect's ephemeral server): acknowledged in {w['ack_ms']:.0f} ms, "
                  f"{finished}{'' if w['succeeded'] else ' (did not succeed)'}")
    ack = report["ack"]
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(ack["statuses"].items()))
    console.print(f"acknowledged: {ack['accepted']}/{n} \"Accepted\" (HTTP {statuses}); the "
                  f"last answer came {ack['burst_s'] * 1000:.0f} ms after the burst began "
                  f"(Slack allows {SLACK_DEADLINE_MS:.0f} ms)")
    if ack["not_accepted_example"]:
        plain(f"  not accepted, e.g.: {ack['not_accepted_example']}")
    if h["failed"]:
        console.print(f"/healthz probes that failed: {h['failed']}")
    r = report["runs"]
    if r["limit_s"] > 0:
        timing = (f"; from its command: median {r['median_s']:.1f} s, last {r['last_s']:.1f} s"
                  if r["finished"] else "")
        console.print(f"dry runs: {r['finished']}/{r['started']} started finished within "
                      f"{r['limit_s']:g} s, {r['succeeded']} succeeded{timing}")
        if r["failure_example"]:
            plain(f"  failed, e.g.: {r['failure_example']}")
        if r["finished"] < r["started"]:
            console.print(f"  {r['started'] - r['finished']} still running were left to the "
                          "process's exit")
    else:
        console.print(f"dry runs: {r['started']} started, not waited for (--wait-s 0)")
    log = report["log"]
    console.print(f"server log: {log['records']} warnings/errors in {log['path']}")
    for entry in log["top"]:
        plain(f"  {entry['count']:>4} x {entry['message']}")
    for g in goals:
        console.print(f"{'PASS' if g['ok'] else 'FAIL'}  {g['goal']} ({g['value']})")
    console.print(f"wall time {wall:.1f} s")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=COMMANDS, help="concurrent commands")
    parser.add_argument("--probers", type=int, default=PROBERS,
                        help="concurrent /healthz probe loops under load")
    parser.add_argument("--idle-probes", type=int, default=IDLE_PROBES,
                        help="/healthz probes before the load (the baseline)")
    parser.add_argument("--wait-s", type=float, default=WAIT_S,
                        help="longest wait for the dry runs to finish (0: do not wait)")
    parser.add_argument("--warmup-s", type=float, default=WARMUP_S,
                        help="longest wait for the warm-up dry run")
    parser.add_argument("--topology", default=str(EXAMPLE))
    parser.add_argument("--target-dc", default=TARGET_DC)
    parser.add_argument("--seed", type=int, default=1, help="simulator seed")
    parser.add_argument("--log", default=str(LOG), help="where warnings and errors go")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--check", action="store_true", help="exit 1 if a goal fails")
    args = parser.parse_args(argv)
    if args.commands < 1 or args.probers < 1 or args.idle_probes < 1:
        parser.error("--commands, --probers and --idle-probes must be at least 1")
    if args.wait_s < 0 or args.warmup_s <= 0:
        parser.error("--wait-s must be at least 0 and --warmup-s more than 0")
    began = time.perf_counter()
    report = run(args)
    wall = time.perf_counter() - began
    goals = _goals(report)
    if args.json:
        sys.stdout.write(json.dumps({**report, "goals": goals, "wall_s": round(wall, 1)}) + "\n")
    else:
        _print(report, goals, wall)
    return 1 if args.check and not all(g["ok"] for g in goals) else 0


if __name__ == "__main__":
    sys.exit(main())
