"""A topology is read within limits: size, depth, nodes, aliases, numbers and names."""

from __future__ import annotations

from pathlib import Path

import pytest

from revive.errors import TopologyError
from revive.topology import load, loads, parse
from revive.topology.source import MAX_ALIAS_NODES, MAX_BYTES, MAX_DEPTH, MAX_NODES
from tests.factories import dump, estate, service

BASE = dump(estate(service("db", role="database"), service("app", depends_on=["db"])))


def problems(text: str) -> list[str]:
    with pytest.raises(TopologyError) as info:
        loads(text, "t.yaml")
    return [str(issue) for issue in info.value.issues]


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as file:
        file.write(BASE.encode())
        file.write(b"#" * MAX_BYTES)
    with pytest.raises(TopologyError, match=r"huge\.yaml:1 file is larger than 10 MB"):
        load(path)


def test_too_many_nodes_are_refused_before_composing() -> None:
    text = BASE + "ramp: [" + "0," * MAX_NODES + "0]\n"
    assert len(text) < MAX_BYTES
    assert any("document has more than" in p and " ramp[" in p for p in problems(text))


def test_nesting_up_to_the_limit_parses_and_one_more_level_is_refused() -> None:
    def nested(levels: int) -> str:  # the document itself is one mapping level
        return BASE + "ramp: " + "[" * (levels - 1) + "]" * (levels - 1) + "\n"

    found = problems(nested(MAX_DEPTH))  # parses: refused only by the ramp's own model
    assert not any("nested" in p for p in found)
    assert any("nested more than 64 levels deep" in p for p in problems(nested(MAX_DEPTH + 1)))


def test_ordinary_anchors_and_merge_keys_still_load() -> None:
    text = BASE.replace("services:\n", "x-defaults: &defaults {tier: 0}\nservices:\n", 1)
    assert "x-defaults" in problems(text)[0]  # an unknown key, but read
    merged = (BASE + "simulation:\n  <<: &sim {tick_s: 2.0, ttl_s: 60}\n")
    assert loads(merged).simulation.tick_s == 2.0


def test_the_alias_budget_counts_expansions_not_aliases() -> None:
    per_alias = 1000
    block = "[" + ",".join(["0"] * (per_alias - 1)) + "]"
    uses = MAX_ALIAS_NODES // per_alias + 1
    text = BASE + f"x: &big {block}\ny: [{', '.join(['*big'] * uses)}]\n"
    assert any("aliases expand to more than" in p and " y[" in p for p in problems(text))


def test_long_strings_are_not_numbers() -> None:
    url = "https://vault.dc1.example/" + "a" * 150
    assert loads(BASE.replace("https://x.dc1.example", url, 1)).ops_tools["vault"]


def test_a_63_character_name_is_the_longest() -> None:
    ok = parse(estate(service("a" * 63)))
    assert ok.services[0].name == "a" * 63
    with pytest.raises(TopologyError, match=r"services\[0\]\.name: not a valid name"):
        parse(estate(service("a" * 64)))


@pytest.mark.parametrize("name", ["svc-001", "dc1", "A.b_c-9", "0zero"])
def test_plain_names_load(name: str) -> None:
    topo = parse(estate(service(name, group=name, traffic_class=name,
                                features=[{"name": name, "priority": 1, "cost": 0.1}])))
    assert topo.services[0].name == name and list(topo.traffic_classes) == [name]


@pytest.mark.parametrize("name", ["", "-lead", ".hidden", "a b", "a/b", "a[/]", "<b>", "é",
                                  "a|b", "a`b", "a\nb"])
def test_other_names_are_refused_naming_the_key(name: str) -> None:
    with pytest.raises(TopologyError, match=r"services\[0\]\.group: not a valid name"):
        parse(estate(service("app", group=name)))


@pytest.mark.parametrize(("text", "line", "message"), [
    ("services: 5\n\x00", 2, "unacceptable character #x0000"),
    ("x: 1\ny: \x07", 2, "unacceptable character #x0007"),
    ("a: !!int abc", 1, "int value cannot be read"),
    ("a: 1\nb: !!timestamp 2020-13-45", 2, "timestamp value cannot be read"),
    ("a: !!bool maybe", 1, "bool value cannot be read"),
])
def test_characters_and_tagged_values_yaml_cannot_read_are_located(
        text: str, line: int, message: str) -> None:
    """Found by tests/reliability/test_fuzz.py: these used to escape as a traceback, or as a
    two-line message on the wrong line."""
    from revive.topology.source import parse_yaml

    with pytest.raises(TopologyError) as caught:
        parse_yaml(text, "t.yaml")
    said = str(caught.value)
    assert said.startswith(f"t.yaml:{line} invalid YAML: {message}") and "\n" not in said
