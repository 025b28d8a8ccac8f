"""The lab's load generator: its pure judgement of the lines, and the real process failing
over between two GSLB "replicas" (two demo services) when the first one dies.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from revive.lab.daemon import Daemon, free_port
from revive.lab.demo import start_demo
from revive.lab.loadgen import (
    LoadgenArgs,
    loadgen_argv,
    p99,
    parse_args,
    parse_rates,
    parse_targets,
    read_lines,
    recovered_at,
    start_loadgen,
    success_ratio,
)
from tests.lab.demo_http import black_hole, get, poll, tiny_server, value
from tests.lab.demo_pg import lab_database

HOST = "127.0.0.1"


def line(t: int, sent: int, ok: int, cls: str = "gold", **extra: Any) -> dict[str, Any]:
    return {"t": t, "class": cls, "sent": sent, "ok": ok, "errors": sent - ok, "timeouts": 0,
            "p99_ms": 5.0, "by_dc": {}, **extra}


# --- pure parts -----------------------------------------------------------------------------


def test_targets_and_rates_are_parsed_and_checked() -> None:
    assert parse_targets(["gold=http://a:1/,http://b:2/", "silver=http://c/"]) == {
        "gold": ["http://a:1/", "http://b:2/"], "silver": ["http://c/"]}
    assert parse_rates(["gold=5", "silver=0.5"]) == {"gold": 5.0, "silver": 0.5}
    for bad in (["gold"], ["=http://a/"], ["gold="], ["gold=ftp://a/"], ["gold=a.b"]):
        with pytest.raises(ValueError, match="--target"):
            parse_targets(bad)
    for bad in (["gold"], ["gold=-1"], ["gold=x"], ["gold=nan"]):
        with pytest.raises(ValueError, match="--rate"):
            parse_rates(bad)


def test_argv_round_trips_through_the_command_line(tmp_path: Path) -> None:
    targets = {"gold": ["http://a:1/", "http://b:2/"], "silver": ["http://c:3/"]}
    argv = loadgen_argv(targets=targets, rates={"gold": 5, "silver": 2.5}, host=HOST, port=9,
                        out=tmp_path / "x.jsonl", timeout_ms=750)
    assert argv[1:3] == ["-m", "revive.lab.loadgen"]
    assert parse_args(argv[3:]) == LoadgenArgs(
        targets=targets, rates={"gold": 5.0, "silver": 2.5}, host=HOST, port=9,
        out=tmp_path / "x.jsonl", timeout_ms=750.0)
    with pytest.raises(ValueError, match="silver"):
        loadgen_argv(targets=targets, rates={"gold": 1}, host=HOST, port=9, out=tmp_path)


def test_p99_is_an_observed_value_by_nearest_rank() -> None:
    assert p99([]) is None
    assert p99([3.0]) == 3.0
    assert p99([float(v) for v in range(1, 101)]) == 99.0
    assert p99([float(v) for v in range(1, 11)]) == 10.0


def test_success_ratio_sums_the_seconds_of_one_class_in_the_window() -> None:
    lines = [line(10, 10, 10), line(11, 10, 5), line(12, 10, 0), line(11, 4, 0, cls="silver")]
    assert success_ratio(lines, "gold", 10, 12) == 15 / 20
    assert success_ratio(lines, "gold") == 15 / 30
    assert success_ratio(lines, "silver", 0, 100) == 0.0
    assert success_ratio(lines, "gold", 13, 20) is None  # nothing sent: unknown, not 0
    assert success_ratio([line(10, 0, 0)], "gold") is None


def test_recovered_at_is_where_the_last_good_run_starts_once_it_holds() -> None:
    outage = [line(t, 10, 10) for t in range(100, 103)]
    outage += [line(t, 10, 0) for t in range(103, 106)]  # the fire
    outage += [line(106, 10, 10), line(107, 10, 4)]  # a flap: not recovered yet
    outage += [line(t, 10, 10) for t in range(108, 115)]
    assert recovered_at(outage, "gold", 1.0) == 108
    assert recovered_at(outage, "gold", 1.0, hold_s=7) == 108
    assert recovered_at(outage, "gold", 1.0, hold_s=8) is None  # not held long enough yet
    assert recovered_at(outage, "gold", 1.0, until=112) is None
    assert recovered_at(outage, "silver", 1.0) is None


def test_recovered_at_tolerates_the_baseline_and_skips_idle_seconds() -> None:
    lines = [line(200, 100, 97), line(201, 100, 50), line(202, 100, 96), line(203, 0, 0)]
    lines += [line(t, 100, 98) for t in range(204, 208)]
    assert recovered_at(lines, "gold", 0.97, tolerance=0.01, hold_s=5) == 202
    assert recovered_at(lines, "gold", 0.98, tolerance=0.01, hold_s=4) == 204
    never_lost = [line(t, 5, 5) for t in range(300, 306)]
    assert recovered_at(never_lost, "gold", 1.0) == 300
    assert recovered_at(never_lost, "gold", 1.0, since=302, hold_s=3) == 302


def test_read_lines_skips_a_line_still_being_written(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"t": 1, "class": "gold", "sent": 1, "ok": 1}\n{"t": 2, "cla')
    assert read_lines(path) == [{"t": 1, "class": "gold", "sent": 1, "ok": 1}]
    assert read_lines(tmp_path / "missing.jsonl") == []


# --- the real process -----------------------------------------------------------------------


@dataclass
class Lab:
    """Two demo services (dc1, dc2) standing in for two GSLB replicas, and the loadgen."""

    dir: Path
    dsn: str
    ports: dict[str, int]
    loadgen_port: int
    out: Path
    daemons: dict[str, Daemon] = field(default_factory=dict)
    stopped: list[Daemon] = field(default_factory=list)

    def url(self, dc: str) -> str:
        return f"http://{HOST}:{self.ports[dc]}/"

    def start_demo(self, dc: str) -> None:
        self.daemons[dc] = start_demo(self.dir, service="web", traffic_class="gold", dc=dc,
                                      host=HOST, port=self.ports[dc], db_dsn=self.dsn,
                                      name=f"demo-{dc}-{len(self.stopped)}", db_cost_ms=1)
        poll(lambda: get(f"{self.url(dc)}healthz").status_code == 200, f"{dc} healthy")

    def kill_demo(self, dc: str) -> None:
        daemon = self.daemons.pop(dc)
        daemon.stop()
        self.stopped.append(daemon)

    def lines(self, cls: str, since: float = 0) -> list[dict[str, Any]]:
        return [x for x in read_lines(self.out) if x["class"] == cls and x["t"] >= since]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    with lab_database() as database:
        lab = Lab(tmp_path, database.dsn, {"dc1": free_port(), "dc2": free_port()},
                  free_port(), tmp_path / "loadgen.jsonl")
        try:
            lab.start_demo("dc1")
            lab.start_demo("dc2")
            lab.daemons["loadgen"] = start_loadgen(
                tmp_path, targets={"gold": [lab.url("dc1"), lab.url("dc2")],
                                   "silver": [lab.url("dc2")]},
                rates={"gold": 10, "silver": 4}, host=HOST, port=lab.loadgen_port)
            yield lab
        finally:
            for daemon in lab.daemons.values():
                daemon.stop()


def test_traffic_fails_over_to_the_next_replica_and_comes_back(lab: Lab) -> None:
    metrics = f"http://{HOST}:{lab.loadgen_port}"

    def both_classes_served() -> bool:
        gold, silver = lab.lines("gold"), lab.lines("silver")
        return (sum(x["ok"] == x["sent"] == x["by_dc"].get("dc1", 0) > 0 for x in gold) >= 2
                and any(x["ok"] and x["by_dc"] == {"dc2": x["ok"]} for x in silver))

    poll(both_classes_served, "gold through dc1 and silver through dc2")
    for x in read_lines(lab.out):
        assert x["sent"] == x["ok"] + x["errors"] + x["timeouts"], x
        assert set(x) == {"t", "class", "sent", "ok", "errors", "timeouts", "p99_ms", "by_dc"}
    gold = lab.lines("gold")
    assert [x["t"] for x in gold] == list(range(gold[0]["t"], gold[-1]["t"] + 1))
    assert value(metrics, "lab_loadgen_replica_up", replica=lab.url("dc1")) == 1

    lab.kill_demo("dc1")
    killed = time.time()

    def served_by_dc2() -> bool:
        after = [x for x in lab.lines("gold", since=killed + 1) if x["sent"]]
        return len(after) >= 3 and all(x["ok"] == x["sent"] == x["by_dc"].get("dc2")
                                       for x in after[-3:])

    poll(served_by_dc2, "gold served through dc2 after dc1 died")
    ok = value(metrics, "lab_loadgen_requests_total", **{"class": "gold", "outcome": "ok"})
    poll(lambda: value(metrics, "lab_loadgen_requests_total",
                       **{"class": "gold", "outcome": "ok"}) > ok, "the ok count to keep rising")
    assert value(metrics, "lab_loadgen_replica_up", replica=lab.url("dc1")) == 0
    assert value(metrics, "lab_loadgen_success_ratio", **{"class": "silver"}) == 1

    lab.start_demo("dc1")  # the preferred replica is back: the traffic returns to it
    back = time.time()
    poll(lambda: any(x["by_dc"].get("dc1") for x in lab.lines("gold", since=back)),
         "gold through dc1 again")
    assert value(metrics, "lab_loadgen_replica_up", replica=lab.url("dc1")) == 1


def test_a_silent_replica_is_passed_over_after_its_connect_timeout(tmp_path: Path) -> None:
    """A partitioned replica does not refuse, it stays silent: after the connect timeout the
    request goes on to the next replica, and the silent one is set aside."""
    port = free_port()
    metrics = f"http://{HOST}:{port}"
    with black_hole() as silent, tiny_server("dc9") as replica:
        daemon = start_loadgen(tmp_path, targets={"gold": [silent, replica]},
                               rates={"gold": 5}, host=HOST, port=port)
        try:
            poll(lambda: value(metrics, "lab_loadgen_replica_up", replica=silent) == 0,
                 "the silent replica set aside")
            out = tmp_path / "loadgen.jsonl"

            def served() -> bool:
                lines = [x for x in read_lines(out) if x["sent"]]
                return len(lines) >= 2 and all(x["ok"] == x["sent"] == x["by_dc"].get("dc9")
                                               for x in lines[-2:])

            poll(served, "every request answered through the second replica")
        finally:
            daemon.stop()
