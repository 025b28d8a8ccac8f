"""``revive plan provision --lost-dc``: every survivor's plan, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from revive.cli import app
from tests.factories import EXAMPLE, dump, estate, service

runner = CliRunner()
DCS = ("east", "west", "north")


def run(*args: str):
    return runner.invoke(app, list(args))


def three_dc_topology(tmp_path: Path) -> str:
    data = estate(
        service("web", traffic_class="web", peak_load=3000, capacity_per_instance=100,
                instances=dict.fromkeys(DCS, 10)),
        service("db", role="database", peak_load=1000, capacity_per_instance=100,
                instances=dict.fromkeys(DCS, 4)),
        datacenters=[{"name": dc} for dc in DCS],
        ops_tools={},
    )
    path = tmp_path / "topology.yaml"
    path.write_text(dump(data))
    return str(path)


def test_lost_dc_json_shape(tmp_path: Path) -> None:
    result = run("plan", "provision", "--lost-dc", "east", "--json",
                 "--topology", three_dc_topology(tmp_path))
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert set(plan) == {"lost_dc", "survivors"} and plan["lost_dc"] == "east"
    assert [s["dc"] for s in plan["survivors"]] == ["west", "north"]
    for survivor in plan["survivors"]:
        assert set(survivor) == {"dc", "share", "services", "total_add"}
        assert survivor["share"] == 0.5
        assert [set(line) for line in survivor["services"]] == [
            {"service", "tier", "have", "need", "add"}] * 2
        # web: 1.2 x 1,500 / 100 = 18 (have 10); db: 1.2 x 500 / 100 = 6 (have 4)
        assert [(s["service"], s["need"], s["add"]) for s in survivor["services"]] == [
            ("db", 6, 2), ("web", 18, 8)]
        assert survivor["total_add"] == 10


def test_lost_dc_share_applies_to_every_survivor(tmp_path: Path) -> None:
    result = run("plan", "provision", "--lost-dc", "east", "--share", "2", "--json",
                 "--topology", three_dc_topology(tmp_path))
    assert result.exit_code == 0, result.output
    needs = {(s["dc"], line["service"]): line["need"]
             for s in json.loads(result.stdout)["survivors"] for line in s["services"]}
    assert needs == {("west", "db"): 10, ("west", "web"): 30,
                     ("north", "db"): 10, ("north", "web"): 30}


def test_lost_dc_renders_a_table_per_survivor(tmp_path: Path) -> None:
    result = run("plan", "provision", "--lost-dc", "east",
                 "--topology", three_dc_topology(tmp_path))
    assert result.exit_code == 0, result.output
    assert "west without east: 50% of load" in result.stdout
    assert "north without east: 50% of load" in result.stdout
    assert "west: 10 instance(s) to add across 2 service(s)" in result.stdout
    assert "losing east: 20 instance(s) to add across 2 surviving DC(s)" in result.stdout


def test_on_the_example_losing_dc1_plans_what_dc2_alone_would() -> None:
    failover = run("plan", "provision", "--lost-dc", "dc1", "--json", "--topology", str(EXAMPLE))
    single = run("plan", "provision", "--dc", "dc2", "--json", "--topology", str(EXAMPLE))
    assert failover.exit_code == single.exit_code == 0
    (survivor,) = json.loads(failover.stdout)["survivors"]
    assert survivor["total_add"] == json.loads(single.stdout)["total_add"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lost-dc", "dc9"], "unknown datacenter 'dc9' (topology has: dc1, dc2)"),
        (["--lost-dc", "dc9", "--json"], "unknown datacenter 'dc9'"),
        (["--dc", "dc1", "--lost-dc", "dc2"], "give exactly one of --dc DC"),
        ([], "give exactly one of --dc DC"),
        (["--lost-dc", "dc1", "--share", "0"], "share must be above 0"),
    ],
)
def test_bad_requests_exit_2_with_a_message(args: list[str], message: str) -> None:
    result = run("plan", "provision", *args, "--topology", str(EXAMPLE))
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""
