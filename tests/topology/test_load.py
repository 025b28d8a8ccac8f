"""Loading topologies: the example is valid, and every kind of bad input is located."""

from __future__ import annotations

from pathlib import Path

import pytest

from revive.errors import TopologyError
from revive.topology import content_hash, load, loads, parse
from tests.factories import EXAMPLE, build, estate, service

VALID = """\
environment: staging
datacenters:
  - name: dc1
  - name: dc2
ops_tools:
  vault:
    kind: secret_store
    replicas: {dc1: "https://vault.dc1.example", dc2: "https://vault.dc2.example"}
services:
  - name: login
    tier: 0
    group: auth
    redundancy: active-active
    depends_on: [user-db, {name: profile-cache, soft: true}]
    boot_requires: [vault]
    instances: {dc1: 12, dc2: 12}
    capacity_per_instance: 800
    peak_load: 15000
    restart_seconds: 45
    caches_dependency_ips: false
    features:
      - {name: login-history, priority: 2, cost: 0.05}
  - name: user-db
    tier: 0
    group: storage
    redundancy: active-active
    instances: {dc1: 3, dc2: 3}
    capacity_per_instance: 6000
    peak_load: 15000
  - name: profile-cache
    tier: 1
    group: storage
    redundancy: active-active
    instances: {dc1: 2, dc2: 2}
    capacity_per_instance: 9000
    peak_load: 15000
"""


def problems(text: str) -> list[str]:
    with pytest.raises(TopologyError) as info:
        loads(text, "runbooks/x.yaml")
    return [str(issue) for issue in info.value.issues]


def test_the_shipped_example_loads_and_is_a_realistic_estate() -> None:
    topo = load(EXAMPLE)
    assert topo.dc_names == ["dc1", "dc2"]
    assert 40 <= len(topo.services) <= 80
    assert {s.tier for s in topo.services} == {0, 1, 2, 3}


def test_the_format_shown_in_the_docs_keeps_its_meaning() -> None:
    topo = loads(VALID)
    login = topo.service("login")
    assert login.hard_dependencies == ["user-db"]
    assert [(d.name, d.soft) for d in login.depends_on] == [
        ("user-db", False),
        ("profile-cache", True),
    ]
    assert login.instances_in("dc2") == 12 and login.restart_seconds == 45
    assert login.features[0].priority == 2
    assert topo.tier_policy[3].rto_target_s == 86400  # defaults fill the policy
    assert topo.service("user-db").restart_seconds == 60  # default


def test_content_hash_ignores_formatting_but_not_meaning() -> None:
    a = loads(VALID)
    b = loads(VALID.replace("    tier: 0\n    group: auth", "    group: auth\n    tier: 0"))
    c = loads(VALID.replace("restart_seconds: 45", "restart_seconds: 46"))
    assert content_hash(a) == content_hash(b) != content_hash(c)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    tier: 0\n    group: auth", "    tier: 7\n    group: auth",
         "runbooks/x.yaml:11 services[0].tier: Input should be less than or equal to 3 (got 7)"),
        ("peak_load: 15000\n    restart", "peak_load: lots\n    restart",
         "runbooks/x.yaml:18 services[0].peak_load: Input should be a valid number"),
        ("instances: {dc1: 12, dc2: 12}", "instances: {dc1: 12, dc9: 12}",
         "runbooks/x.yaml:16 services[0].instances.dc9: unknown datacenter 'dc9'"),
        ("depends_on: [user-db,", "depends_on: [users-db,",
         "runbooks/x.yaml:14 services[0].depends_on[0]: unknown service 'users-db'"),
        ("boot_requires: [vault]", "boot_requires: [vault, zk]",
         "runbooks/x.yaml:15 services[0].boot_requires[1]: unknown ops tool 'zk'"),
        ("  - name: profile-cache", "  - name: user-db",
         "runbooks/x.yaml:30 services[2].name: duplicate service 'user-db'"),
        ("  - name: dc2", "  - name: dc1",
         "runbooks/x.yaml:4 datacenters[1].name: duplicate datacenter 'dc1'"),
        ("    caches_dependency_ips: false", "    caches_dependency_ip: false",
         "runbooks/x.yaml:20 services[0].caches_dependency_ip: unknown key"),
        ("    redundancy: active-active\n    depends_on", "    depends_on",
         "runbooks/x.yaml:10 services[0].redundancy: missing required key"),
        ("redundancy: active-active\n    depends_on", "redundancy: hot\n    depends_on",
         "runbooks/x.yaml:13 services[0].redundancy: Input should be"),
        ("cost: 0.05", "cost: 1.5",
         "runbooks/x.yaml:22 services[0].features[0].cost: Input should be less than"),
        ("environment: staging", "environment: prod",
         "runbooks/x.yaml:1 environment: Input should be 'production', 'staging' or 'drill'"),
        ("    kind: secret_store", "    kind: secrets",
         "runbooks/x.yaml:7 ops_tools.vault.kind: Input should be"),
        ("capacity_per_instance: 800", "capacity_per_instance: 0",
         "runbooks/x.yaml:17 services[0].capacity_per_instance: Input should be greater than "
         "or equal to 0.001"),
    ],
)
def test_each_mistake_names_file_line_and_key(old: str, new: str, expected: str) -> None:
    assert old in VALID
    found = problems(VALID.replace(old, new, 1))
    assert any(p.startswith(expected) for p in found), found


def test_a_duplicate_mapping_key_is_not_silently_dropped() -> None:
    text = VALID.replace("ops_tools:\n", "ops_tools:\n  vault: {kind: registry}\n")
    assert "runbooks/x.yaml:7 ops_tools.vault: duplicate key 'vault'" in problems(text)


def test_a_hard_dependency_cycle_is_reported_as_the_cycle() -> None:
    text = VALID.replace(
        "    capacity_per_instance: 6000",
        "    depends_on: [profile-cache]\n    capacity_per_instance: 6000",
    ).replace(
        "    capacity_per_instance: 9000",
        "    depends_on: [login]\n    capacity_per_instance: 9000",
    )
    found = problems(text)
    cycles = [p for p in found if "dependency cycle" in p]
    assert len(cycles) == 1
    assert cycles[0].endswith("login -> user-db -> profile-cache -> login")


def test_soft_dependencies_may_form_a_cycle() -> None:
    topo = build(
        service("a", depends_on=[{"name": "b", "soft": True}]),
        service("b", depends_on=["a"]),
    )
    assert topo.service("b").hard_dependencies == ["a"]


def test_a_self_dependency_is_a_cycle() -> None:
    with pytest.raises(TopologyError, match=r"dependency cycle: a -> a"):
        parse(estate(service("a", depends_on=["a"])))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "runbooks/x.yaml:1 file is empty"),
        ("# only a comment\n", "runbooks/x.yaml:1 file is empty"),
        ("- a\n- b\n", "runbooks/x.yaml:1 expected a mapping at the top level, got list"),
        ("datacenters: [\n", "runbooks/x.yaml:2 invalid YAML"),
        ("a: 1\n b: 2\n", "runbooks/x.yaml:2 invalid YAML"),
        ("datacenters: []\nservices: []\n",
         "runbooks/x.yaml:1 datacenters: List should have at least 1 item"),
    ],
)
def test_unusable_files_are_located_too(text: str, expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(text)), problems(text)


def test_files_that_cannot_be_read_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read file"):
        load(tmp_path / "missing.yaml")
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"environment: drill\n\xff\xfe\n")
    with pytest.raises(TopologyError, match=r"bin.yaml:2 file is not UTF-8 text"):
        load(binary)


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    text = VALID.replace("[user-db,", "[nobody,").replace("[vault]", "[nothing]")
    found = problems(text)
    assert found == sorted(found, key=lambda p: int(p.split(":")[1].split()[0]))
    assert len(found) == 2


def test_the_dc_ip_caching_callers_point_to_must_be_declared() -> None:
    with pytest.raises(TopologyError, match=r"simulation\.cached_ips_point_to: unknown datac"):
        parse(estate(service("app"), simulation={"cached_ips_point_to": "dc9"}))
