"""Random mistakes in a valid topology always give exit 2 and a located message."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from revive.cli import app
from tests.factories import dump, estate, service

runner = CliRunner()
LOCATED = re.compile(r"^(?P<file>\S+\.yaml):(?P<line>\d+) (?P<key>\S+: )?\S")

BASE = estate(
    service("db", group="storage", role="database"),
    service("cache", tier=1, depends_on=["db"]),
    service("app", depends_on=["cache", {"name": "db", "soft": True}], boot_requires=["vault"],
            features=[{"name": "f", "priority": 1, "cost": 0.1}]),
)
INVALID: dict[str, list] = {
    "tier": [-1, 4, "x", 1.5, [1]],
    "group": [None, "", [1], {"k": 1}],
    "redundancy": ["hot", None, 1],
    "instances": [None, "x", {"dc1": -1}, {"dc9": 1}, [1]],
    "capacity_per_instance": [0, -1, "x", None],
    "peak_load": [-1, "x", None],
    "restart_seconds": [0, -5, "x", 1e9],
    "boot_seconds": [0, -1, "x", 1e9],
    "role": ["primary", None, 1],
    "traffic_class": ["", "  ", 5, [1]],
    "caches_dependency_ips": ["maybe", 5, None],
    "depends_on": ["db", None, [5], [{"name": "db", "hard": True}]],
    "boot_requires": ["vault", [None], ["ghost"]],
    "features": [[{"name": "f", "priority": 0, "cost": 0.1}],
                 [{"name": "f", "priority": 1, "cost": 2}], "x"],
}


@st.composite
def broken(draw: st.DrawFn) -> dict:
    data = {**BASE, "services": [dict(s) for s in BASE["services"]]}
    i = draw(st.integers(0, len(data["services"]) - 1))
    kind = draw(st.sampled_from(
        ["bad-value", "drop-key", "unknown-dep", "unknown-dc", "cycle", "duplicate",
         "unknown-tool", "extra-key", "bad-top", "bad-dc", "class-on-backend", "bad-sim"]))
    svc = data["services"][i]
    if kind == "bad-value":
        field = draw(st.sampled_from(sorted(INVALID)))
        value = draw(st.sampled_from(INVALID[field]))
        svc[field] = value
    elif kind == "drop-key":
        svc.pop(draw(st.sampled_from(["name", "tier", "group", "redundancy", "instances",
                                      "capacity_per_instance", "peak_load"])))
    elif kind == "unknown-dep":
        svc["depends_on"] = [*svc.get("depends_on", []), "ghost"]
    elif kind == "unknown-dc":
        svc["instances"] = {**svc["instances"], "dc9": 1}
    elif kind == "cycle":
        data["services"][0] = {**data["services"][0], "depends_on": ["app"]}
    elif kind == "duplicate":
        data["services"].append(dict(svc))
    elif kind == "unknown-tool":
        svc["boot_requires"] = ["ghost-tool"]
    elif kind == "bad-dc":
        data["datacenters"] = [{"name": "dc1", "spare_instances": draw(st.sampled_from(
            [-1, "x", 1.5]))}, {"name": "dc2"}]
    elif kind == "class-on-backend":
        data["services"][0] = {**data["services"][0], "traffic_class": "shop"}
    elif kind == "bad-sim":
        data["simulation"] = draw(st.sampled_from(
            [{"tick_s": 0}, {"boot_s": 90}, {"zipf_alpha": "x"}, 5]))
    elif kind == "extra-key":
        svc[draw(st.sampled_from(["teir", "replicas", "soft"]))] = 1
    else:
        data[draw(st.sampled_from(["datacenters", "services", "environment", "ops_tools"]))] = 5
    return data


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=broken(), command=st.sampled_from(
    [["check"], ["plan", "restart", "--dc", "dc1"], ["plan", "provision", "--dc", "dc2"]]))
def test_invalid_input_always_exits_2_with_a_located_message(data: dict, command: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bad.yaml"
        text = dump(data)
        path.write_text(text)
        result = runner.invoke(app, [*command, "--topology", str(path)])
    assert result.exit_code == 2, (result.output, text)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines
    n_lines = text.count("\n") + 1
    for line in lines:
        match = LOCATED.match(line)
        assert match, line
        assert match["file"] == str(path)
        assert 1 <= int(match["line"]) <= n_lines


def _write(tmp: str, data: dict) -> Path:
    path = Path(tmp) / "estate.yaml"
    path.write_text(dump(data))
    return path


def test_a_drill_on_an_estate_without_a_database_is_invalid_input() -> None:
    """It still loads and checks (with a warning), but nothing can gate its traffic."""
    data = estate(service("orders-db"), service("app", depends_on=["orders-db"]))
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(tmp, data)
        check = runner.invoke(app, ["check", "--topology", str(path)])
        drill = runner.invoke(app, ["drill", "--topology", str(path), "--out", tmp + "/out"])
    assert check.exit_code == 0 and "no-database-declared" in check.stdout
    assert drill.exit_code == 2, drill.output
    assert "role: database" in drill.stderr and str(path) in drill.stderr
    assert "Traceback" not in drill.output
    assert not Path(tmp + "/out").exists()  # nothing was started


def test_a_lost_dc_that_is_not_a_dc_is_invalid_input() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _write(tmp, BASE)
        result = runner.invoke(app, ["drill", "--topology", str(path), "--lost-dc", "dc9"])
    assert result.exit_code == 2
    assert "--lost-dc: unknown datacenter 'dc9' (topology has: dc1, dc2)" in result.stderr
