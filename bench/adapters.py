"""Benchmark the adapters' own cost over the wire they speak, on loopback.

Two real programs, started here: a Prometheus (scraping itself) and an HAProxy (one backend,
one server per DC). For each, the median per call of

* the adapter: ``PrometheusMetrics.query`` (a PromQL instant query through the replica
  rules: breaker, retry budget, failover, parsing and checks) and ``HAProxyTraffic``'s
  read of one weight (``class_weights`` with one class and one DC: one ``get weight``);
* the same request made bare, in the same run: an ``httpx`` GET on a kept-alive client for
  Prometheus, a raw unix-socket write and read to EOF for HAProxy.

Goals: each adapter call within 2x its bare request, and under 5 ms. Reported as PASS/FAIL;
the exit code is 0 unless ``--check`` is given and a goal fails. ``--json`` prints
``{"rows": [{"name", "adapter_ms", "bare_ms", "ratio"}]}`` on stdout, tables to stderr.

    .venv/bin/python bench/adapters.py [--calls N] [--check] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make `revive` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from rich.console import Console
from rich.table import Table

from revive.lab.daemon import free_port
from revive.lab.haproxy import start_haproxy
from revive.lab.prometheus import prometheus_url, start_prometheus, wait_for_series
from revive.ops.plugins import ToolContext, adapter, settings_of
from revive.topology import OpsTool, ToolKind

RATIO_GOAL = 2.0
ABSOLUTE_GOAL_MS = 5.0
QUERY = 'up{job="revive"}'


async def _median_ms(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    for _ in range(max(3, calls // 10)):  # warm up: connections, caches, the JIT-less paths
        await call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _build(name: str, kind: ToolKind, adapter_name: str, replicas: dict[str, str],
           settings: dict[str, Any]) -> Any:
    tool = OpsTool(kind=kind, adapter=adapter_name, replicas=replicas, settings=settings)
    ctx = ToolContext(name, tool, settings_of(name, tool), run_dc="dc1", timeout_s=5.0)
    make = adapter(adapter_name).factory(kind)
    assert make is not None
    return make(ctx)


async def bench_prometheus(url: str, calls: int) -> dict[str, float]:
    metrics = _build("prometheus", ToolKind.metrics, "prometheus", {"dc1": url}, {
        "queries": {field: QUERY for field in ("share", "db_util", "p99_ms", "error_rate")}})
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5.0) as bare:
            async def bare_call() -> None:
                response = await bare.get("/api/v1/query", params={"query": QUERY})
                response.raise_for_status()
                response.json()

            bare_ms = await _median_ms(bare_call, calls)
            adapter_ms = await _median_ms(lambda: metrics.query(QUERY), calls)
            bare_ms = min(bare_ms, await _median_ms(bare_call, calls))  # both orders
    finally:
        await metrics.aclose()
    return {"adapter_ms": adapter_ms, "bare_ms": bare_ms}


async def bench_haproxy(socket: Path, calls: int) -> dict[str, float]:
    traffic = _build("gslb", ToolKind.traffic, "haproxy", {"dc1": f"unix://{socket}"}, {
        "backends": {"web": "be_web"}, "servers": {"dc1": "dc1"}})

    async def bare_call() -> None:
        reader, writer = await asyncio.open_unix_connection(str(socket))
        writer.write(b"get weight be_web/dc1\n")
        await writer.drain()
        await reader.read()
        writer.close()
        await writer.wait_closed()

    try:
        bare_ms = await _median_ms(bare_call, calls)
        adapter_ms = await _median_ms(traffic.class_weights, calls)
        bare_ms = min(bare_ms, await _median_ms(bare_call, calls))
    finally:
        await traffic.aclose()
    return {"adapter_ms": adapter_ms, "bare_ms": bare_ms}


def run(calls: int) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="revive-bench-") as tmp:
        root = Path(tmp)
        port = free_port()
        prom = start_prometheus(root / "prometheus", port=port,
                                scrape_targets=[f"127.0.0.1:{port}"], scrape_interval_s=1.0)
        try:
            wait_for_series(prometheus_url(port), QUERY, timeout_s=60)
            result = asyncio.run(bench_prometheus(prometheus_url(port), calls))
            rows.append({"name": "prometheus query", **result})
        finally:
            prom.stop()
        backend_port = free_port()
        haproxy = start_haproxy(root / "haproxy", name="gslb", frontends={"web": free_port()},
                                backends={"web": {"dc1": f"127.0.0.1:{backend_port}"}},
                                admin_socket=root / "haproxy" / "admin.sock")
        try:
            sock = root / "haproxy" / "admin.sock"
            rows.append({"name": "haproxy get weight", **asyncio.run(bench_haproxy(sock, calls))})
        finally:
            haproxy.stop()
    for row in rows:
        row["ratio"] = row["adapter_ms"] / row["bare_ms"] if row["bare_ms"] else float("inf")
    return rows


def report(rows: list[dict[str, Any]], console: Console) -> bool:
    table = Table(title="Adapters vs the bare request (median per call, loopback)")
    for column in ("call", "adapter ms", "bare ms", "ratio vs bare"):
        table.add_column(column, justify="left" if column == "call" else "right")
    for row in rows:
        table.add_row(row["name"], f"{row['adapter_ms']:.3f}", f"{row['bare_ms']:.3f}",
                      f"{row['ratio']:.2f}x")
    console.print(table)
    ok = True
    for row in rows:
        for label, passed in (
            (f"{row['name']} within {RATIO_GOAL:g}x bare", row["ratio"] <= RATIO_GOAL),
            (f"{row['name']} under {ABSOLUTE_GOAL_MS:g} ms", row["adapter_ms"] < ABSOLUTE_GOAL_MS),
        ):
            console.print(f"{label}: {'PASS' if passed else 'FAIL'} (ratio {row['ratio']:.2f}, "
                          f"{row['adapter_ms']:.3f} ms)")
            ok = ok and passed
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal fails")
    parser.add_argument("--json", action="store_true", help="JSON on stdout, tables on stderr")
    args = parser.parse_args(argv)
    rows = run(args.calls)
    console = Console(stderr=args.json)
    ok = report(rows, console)
    if args.json:
        print(json.dumps({"rows": rows}))
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
