"""Hostile topology files: every one is exit 2 with a located message, never a traceback,
a hang or an exhausted machine, from ``check``, ``plan provision`` and ``plan restart``."""

from __future__ import annotations

import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from revive.cli import app
from tests.factories import dump, estate, service

runner = CliRunner()
COMMANDS = [["check"], ["plan", "provision", "--dc", "dc2"], ["plan", "restart", "--dc", "dc1"]]
LOCATED = re.compile(r"^(?P<file>\S+\.yaml):(?P<line>\d+) (?P<key>\S+): (?P<message>.+)$")

BASE = dump(estate(
    service("db", group="storage", role="database"),
    service("app", depends_on=["db"], peak_load=150,
            features=[{"name": "history", "priority": 1, "cost": 0.1}]),
))

BOMB = 'lol0: &lol0 "lol"\n' + "".join(
    f"lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 9)}]\n" for i in range(1, 10))
"""A "billion laughs": nine levels of nine aliases, 702 bytes that expand to 9**9 strings."""
DEEP = "[" * 20_000 + "]" * 20_000


def _edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


# (file text, key the message names, words it contains)
HOSTILE = {
    "peak-load-inf": (_edit("peak_load: 150", "peak_load: .inf"),
                      "services[1].peak_load", "finite number"),
    "peak-load-nan": (_edit("peak_load: 150", "peak_load: .nan"),
                      "services[1].peak_load", "finite number"),
    "peak-load-1e308": (_edit("peak_load: 150", "peak_load: 1.0e+308"),
                        "services[1].peak_load", "less than or equal to 1000000000"),
    "instances-4000-digits": (_edit("dc1: 2", "dc1: " + "9" * 4000),
                              "services[0].instances.dc1", "4000 characters"),
    "instances-5000-digits": (_edit("dc1: 2", "dc1: " + "9" * 5000),
                              "services[0].instances.dc1", "5000 characters"),
    "instances-quoted-digits": (_edit("dc1: 2", "dc1: '" + "9" * 5000 + "'"),
                                "services[0].instances.dc1", "integer"),
    "instances-million-plus": (_edit("dc1: 2", "dc1: 1000001"),
                               "services[0].instances.dc1", "less than or equal to 1000000"),
    "tiny-capacity": (_edit("capacity_per_instance: 100", "capacity_per_instance: 5.0e-324"),
                      "services[0].capacity_per_instance", "greater than or equal to 0.001"),
    "rto-too-long": (BASE + "tier_policy:\n  0: {redundancy: [active-active], "
                     "rto_target_s: 100000000}\n",
                     "tier_policy[0].rto_target_s", "less than or equal to 10000000"),
    "sim-tick-tiny": (BASE + "simulation: {tick_s: 1.0e-300}\n",
                      "simulation.tick_s", "greater than or equal to 0.01"),
    "sim-ttl-inf": (BASE + "simulation: {ttl_s: .inf}\n", "simulation.ttl_s", "finite number"),
    "ramp-settle-inf": (BASE + "ramp: {settle_s: .inf}\n", "ramp.settle_s", "finite number"),
    "ramp-cooldown-1e300": (BASE + "ramp: {cooldown_s: 1e300}\n", "ramp.cooldown_s",
                            "between"),
    "service-markup": (_edit("name: app", "name: 'a[/]pp'"), "services[1].name",
                       "not a valid name"),
    "dc-html": (_edit("name: dc2", "name: '<img src=x onerror=alert(1)>'"),
                "datacenters[1].name", "not a valid name"),
    "group-space": (_edit("group: storage", "group: 'sto rage'"), "services[0].group",
                    "not a valid name"),
    "feature-slash": (_edit("name: history", "name: ../history"),
                      "services[1].features[0].name", "not a valid name"),
    "tool-key": (_edit("  vault:", "  'va|ult':"), "ops_tools.va|ult", "not a valid name"),
    "class-unicode": (_edit("name: app", "name: app\n  traffic_class: café"),
                      "services[1].traffic_class", "not a valid name"),
    "name-64-chars": (_edit("name: app", "name: " + "a" * 64), "services[1].name",
                      "not a valid name"),
}


def _assert_located(output: str, path: Path, key: str, words: str) -> None:
    assert "Traceback" not in output
    lines = output.strip().splitlines()
    assert lines, output
    matches = [LOCATED.match(line) for line in lines]
    assert all(matches), lines
    assert all(m["file"] == str(path) for m in matches if m)
    assert any(m["key"] == key and words in m["message"] for m in matches if m), lines


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c[:2]))
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_values_and_names_are_exit_2_naming_the_key(
    tmp_path: Path, case: str, command: list[str]
) -> None:
    text, key, words = HOSTILE[case]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    result = runner.invoke(app, [*command, "--topology", str(path)])
    assert result.exit_code == 2, result.output
    _assert_located(result.stderr, path, key, words)


def _limit_memory() -> None:
    """1 GiB of address space: a bomb that expands must fail the test, not the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: "-".join(c[:2]))
@pytest.mark.parametrize(("case", "text", "key", "words"), [
    pytest.param(case, text, key, words, id=case) for case, text, key, words in [
        ("alias-bomb", BOMB, "lol6[0]", "aliases expand to more than"),
        ("alias-bomb-inside", BASE + "ramp:\n" + "".join(f"  {line}\n" for line in
                                                          BOMB.splitlines()),
         "ramp.lol6[0]", "aliases expand to more than"),
        ("deep-flow-sequences", BASE + "simulation: " + DEEP + "\n", "simulation[0][0][0]...",
         "nested more than 64 levels deep"),
        ("deep-flow-mappings", BASE + "ramp: " + "{a: " * 20_000 + "1" + "}" * 20_000 + "\n",
         "ramp.a.a.a...", "nested more than 64 levels deep"),
    ]
])
def test_bombs_and_deep_nesting_are_refused_within_a_memory_limit(
    tmp_path: Path, command: list[str], case: str, text: str, key: str, words: str
) -> None:
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    if case == "alias-bomb":
        assert len(text.encode()) < 1024
    proc = subprocess.run(
        [sys.executable, "-c", "from revive.cli import main; main()", *command,
         "--topology", str(path)],
        capture_output=True, text=True, timeout=300, preexec_fn=_limit_memory, check=False,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr[-2000:])
    _assert_located(proc.stderr, path, key, words)
