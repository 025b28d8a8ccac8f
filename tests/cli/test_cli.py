"""The CLI as a person or a script uses it: exit codes, JSON shapes, located errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from revive.cli import app
from tests.factories import EXAMPLE, REPO, dump, estate, service

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def write(tmp_path: Path, data: dict) -> str:
    path = tmp_path / "topology.yaml"
    path.write_text(dump(data))
    return str(path)


def test_check_on_the_example_reports_errors_with_exit_1() -> None:
    result = run("check", "--topology", str(EXAMPLE), "--json")
    assert result.exit_code == 1
    findings = json.loads(result.stdout)["findings"]
    assert findings and all(
        set(f) == {"rule", "severity", "subject", "message", "hint"} for f in findings
    )
    assert {f["severity"] for f in findings} >= {"error", "warning"}


def test_check_without_errors_exits_0_and_prints_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, estate(service("db", role="database"),
                                  service("app", caches_dependency_ips=True)))
    result = run("check", "--topology", path)
    assert result.exit_code == 0, result.output
    assert "caches-dependency-ips" in result.stdout
    assert "1 finding(s): 0 error(s), 1 warning(s)" in result.stdout


def test_plan_restart_json_shape() -> None:
    result = run("plan", "restart", "--dc", "dc1", "--topology", str(EXAMPLE), "--json",
                 "--max-parallel", "4", "--groups", "auth,storage")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert {"dc", "max_parallel", "steps", "makespan_s", "critical_path_s",
            "lower_bound_s"} <= set(plan)
    assert plan["dc"] == "dc1" and plan["max_parallel"] == 4
    assert set(plan["steps"][0]) == {"service", "group", "tier", "start_s", "end_s"}
    assert {s["group"] for s in plan["steps"]} == {"auth", "storage"}
    assert plan["makespan_s"] >= plan["lower_bound_s"]


def test_plan_provision_json_shape() -> None:
    result = run("plan", "provision", "--dc", "dc2", "--share", "1.5",
                 "--topology", str(EXAMPLE), "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["dc"] == "dc2" and plan["share"] == 1.5
    assert {"service", "tier", "have", "need", "add"} <= set(plan["services"][0])
    assert plan["total_add"] == sum(s["add"] for s in plan["services"]) > 0
    tiers = [s["tier"] for s in plan["services"]]
    assert tiers == sorted(tiers)


def test_human_plans_render() -> None:
    restart = run("plan", "restart", "--dc", "dc1", "--topology", str(EXAMPLE))
    assert restart.exit_code == 0 and "critical path" in restart.stdout
    provision = run("plan", "provision", "--dc", "dc2", "--topology", str(EXAMPLE))
    assert provision.exit_code == 0 and "instance(s) to add" in provision.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "restart", "--dc", "dc7"], "unknown datacenter 'dc7'"),
        (["plan", "restart", "--dc", "dc1", "--groups", "nope"], "unknown group 'nope'"),
        (["plan", "restart", "--dc", "dc1", "--max-parallel", "0"], "max_parallel must be"),
        (["plan", "provision", "--dc", "dc2", "--share", "0"], "share must be above 0"),
        (["check", "--topology", "no/such/file.yaml"], "cannot read file"),
    ],
)
def test_bad_parameters_exit_2_with_a_message(args: list[str], message: str) -> None:
    if "--topology" not in args:
        args = [*args, "--topology", str(EXAMPLE)]
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_an_invalid_topology_exits_2_on_every_command(tmp_path: Path) -> None:
    bad = estate(service("a", depends_on=["b"]), service("b", depends_on=["a"]))
    path = write(tmp_path, bad)
    for args in (["check"], ["plan", "restart", "--dc", "dc1"],
                 ["plan", "provision", "--dc", "dc1"]):
        result = run(*args, "--topology", path)
        assert result.exit_code == 2
        assert re.search(r"topology\.yaml:\d+ services\[\d\]\.depends_on\[0\]: "
                         r"dependency cycle: (a -> b -> a|b -> a -> b)", result.stderr)


def test_the_installed_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("revive")
    result = subprocess.run(
        [str(exe), "plan", "restart", "--dc", "dc9"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "unknown datacenter 'dc9' (topology has: dc1, dc2)"
