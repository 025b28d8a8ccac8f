"""The plug-in point: adapters are found by entry point, and a topology's tools are checked
against them (adapter exists, serves the kind, accepts the settings) with file, line and key."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from revive.cli import app
from revive.errors import InputError, TopologyError
from revive.ops import plugins
from revive.ops.toolbox import build_toolbox
from revive.topology import loads
from tests.factories import dump, estate, service

runner = CliRunner()


def _with_tool(**tool: object) -> str:
    data = estate(service("app"))
    data["ops_tools"]["gslb"] = {"kind": "traffic", "replicas": {"dc1": "x", "dc2": "y"}, **tool}
    return dump(data)


def test_the_built_in_adapters_are_found_by_entry_point() -> None:
    found = plugins.adapters()
    assert {"sim", "slack"} <= set(found)
    assert plugins.adapter("sim").name == "sim"


def test_an_unknown_adapter_is_invalid_input_naming_the_installed_ones() -> None:
    with pytest.raises(TopologyError) as err:
        loads(_with_tool(adapter="f5-magic"), "estate.yaml")
    text = str(err.value)
    assert "estate.yaml:" in text and "ops_tools.gslb.adapter: unknown adapter 'f5-magic'" in text
    assert "sim" in text


def test_an_adapter_that_does_not_serve_the_kind_is_refused() -> None:
    with pytest.raises(TopologyError, match=r"ops_tools.gslb.adapter: adapter 'slack' does "
                                            r"not serve kind traffic"):
        loads(_with_tool(adapter="slack"))


def test_settings_an_adapter_does_not_know_are_refused_with_their_key() -> None:
    with pytest.raises(TopologyError, match=r"ops_tools.gslb.settings.colour: unknown setting"):
        loads(_with_tool(adapter="sim", settings={"colour": "blue"}))


def test_check_exits_2_with_the_line_of_the_bad_adapter(tmp_path: Path) -> None:
    path = tmp_path / "estate.yaml"
    text = _with_tool(adapter="nope")
    path.write_text(text)
    result = runner.invoke(app, ["check", "--topology", str(path)])
    assert result.exit_code == 2, result.output
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "adapter: nope" in row)
    assert f"{path}:{line} ops_tools.gslb.adapter: unknown adapter 'nope'" in result.stderr
    assert "Traceback" not in result.output


def test_a_run_without_a_simulator_or_a_declared_tool_is_refused_before_anything_starts() -> None:
    topology = loads(dump(estate(service("app"))))
    with pytest.raises(InputError, match=r"vault.adapter: sim acts on the built-in simulator"):
        build_toolbox(topology, sim_url=None, run_dc="dc1")
    bare = estate(service("app"))
    bare["ops_tools"] = {}
    with pytest.raises(InputError, match=r"no ops tool of kind compute, deploy, registry"):
        build_toolbox(loads(dump(bare)), sim_url=None, run_dc="dc1")


def test_secrets_come_from_the_environment_or_a_file_and_never_show(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REVIVE_TEST_TOKEN", "s3cr3t")
    token = plugins.secret(env="REVIVE_TEST_TOKEN", what="ops_tools.x.settings.token_env")
    assert token is not None and token.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(token) and "s3cr3t" not in str(token)
    (tmp_path / "pw").write_text("hunter2\n")
    assert plugins.secret(file=str(tmp_path / "pw"), what="x").get_secret_value() == "hunter2"
    with pytest.raises(InputError, match="environment variable NOPE_NOT_SET is not set"):
        plugins.secret(env="NOPE_NOT_SET", what="ops_tools.x.settings.token_env")
    with pytest.raises(InputError, match="cannot read"):
        plugins.secret(file=str(tmp_path / "missing"), what="x")


PLUGIN = '''
from pydantic import Field
from revive.ops.plugins import Adapter, AdapterSettings
from revive.topology.models import ToolKind


class Settings(AdapterSettings):
    zone: str = Field(min_length=1)


class MyGslb:
    def __init__(self, ctx):
        self.zone = ctx.settings.zone

    async def class_weights(self):
        return {"tier0": {"dc1": 1.0, "dc2": 0.0}}

    async def aclose(self):
        pass


ADAPTER = Adapter(name="my-gslb", kinds={ToolKind.traffic: MyGslb}, settings=Settings)
'''


def test_a_teams_own_package_adds_an_adapter_without_editing_revive(tmp_path: Path) -> None:
    """A package installed beside revive declares ``revive.adapters``; revive finds it."""
    site = tmp_path / "site"
    (site / "my_gslb").mkdir(parents=True)
    (site / "my_gslb" / "__init__.py").write_text(PLUGIN)
    dist = site / "my_gslb-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-gslb\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text('[revive.adapters]\nmy-gslb = my_gslb:ADAPTER\n')
    good = tmp_path / "good.yaml"
    good.write_text(_with_tool(adapter="my-gslb", settings={"zone": "eu"}))
    bad = tmp_path / "bad.yaml"
    bad.write_text(_with_tool(adapter="my-gslb", settings={}))
    script = textwrap.dedent(f"""
        import asyncio, sys
        from revive.topology import load
        from revive.ops.toolbox import build_toolbox
        from revive.errors import TopologyError
        t = load({str(good)!r})
        box = build_toolbox(t, sim_url="http://127.0.0.1:9", run_dc="dc1")
        print(type(box.traffic).__name__, box.traffic.zone, box.simulated)
        print(asyncio.run(box.traffic.class_weights()))
        try:
            load({str(bad)!r})
        except TopologyError as exc:
            print(exc)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.getcwd()])}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, check=True, timeout=120).stdout
    assert "MyGslb eu False" in out
    assert "{'tier0': {'dc1': 1.0, 'dc2': 0.0}}" in out
    assert "ops_tools.gslb.settings.zone: required" in out


def test_revive_run_refuses_a_run_whose_tools_cannot_be_had_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REVIVE_SIM_URL", raising=False)
    store = tmp_path / "revive.db"
    monkeypatch.setenv("REVIVE_DATABASE_URL", f"sqlite:///{store}")
    result = runner.invoke(app, ["run", "failover", "lost_dc=dc1"])
    assert result.exit_code == 2, result.output
    assert "ops_tools.vault.adapter: sim acts on the built-in simulator" in result.stderr
    assert "Traceback" not in result.output
    assert not store.exists()  # no run was recorded
