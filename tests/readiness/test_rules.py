"""Each readiness rule fires on the flaw it encodes and stays quiet on a healthy estate."""

from __future__ import annotations

import pytest

from revive.readiness import Severity, run_check
from revive.topology import load
from tests.factories import EXAMPLE, build, service, tools

HEALTHY = [
    service("db", role="database"),
    service("app", depends_on=["db"], boot_requires=["vault"]),
    service("reco", tier=3, redundancy="single-dc", instances={"dc1": 1}, peak_load=50),
]


def findings(*services, **fields):
    return [(f.rule, f.severity, f.subject) for f in run_check(build(*services, **fields)).findings]


def test_an_estate_without_a_declared_database_is_warned_not_guessed() -> None:
    """A service named like a database is not taken for one: only role: database counts."""
    named_like_a_db = [service("user-db"), service("app", depends_on=["user-db"])]
    assert findings(*named_like_a_db) == [
        ("no-database-declared", Severity.warning, "services")]
    assert findings(service("orders", role="database"), service("app")) == []


def test_a_healthy_estate_has_no_findings() -> None:
    report = run_check(build(*HEALTHY))
    assert report.findings == []
    assert not report.has_errors


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"redundancy": "active-standby"},
            ("tier-redundancy", Severity.error, "app"),
        ),
        (
            {"tier": 2, "redundancy": "single-dc", "instances": {"dc1": 2}},
            ("tier-redundancy", Severity.warning, "app"),
        ),
        (
            {"instances": {"dc1": 2}},
            ("redundancy-unmet", Severity.error, "app"),
        ),
        (
            {"instances": {"dc1": 2, "dc2": 1}},
            ("dc-capacity", Severity.error, "app@dc2"),
        ),
        (
            {"caches_dependency_ips": True},
            ("caches-dependency-ips", Severity.warning, "app"),
        ),
        (
            {"depends_on": ["reco"]},
            ("dependency-on-lower-tier", Severity.warning, "app"),
        ),
    ],
)
def test_service_rules(change: dict, expected: tuple) -> None:
    app = {**HEALTHY[1], **change}
    assert expected in findings(HEALTHY[0], app, HEALTHY[2])


def test_a_soft_dependency_on_a_lower_tier_is_fine() -> None:
    app = {**HEALTHY[1], "depends_on": [{"name": "reco", "soft": True}]}
    assert findings(HEALTHY[0], app, HEALTHY[2]) == []


def test_capacity_gap_is_quantified() -> None:
    app = {**HEALTHY[1], "instances": {"dc1": 2, "dc2": 1}}
    report = run_check(build(HEALTHY[0], app))
    (finding,) = [f for f in report.findings if f.rule == "dc-capacity"]
    assert "dc2 carries 100 of 200 req/s peak (50%); gap 100 req/s" in finding.message
    assert "add 1 instance(s) of app in dc2" in finding.hint


def test_tool_rules() -> None:
    one_dc = {"dc1": "https://a.dc1.example"}
    got = findings(
        *HEALTHY,
        ops_tools=tools(
            vault={"kind": "secret_store", "replicas": one_dc},
            health={"kind": "health_checker", "replicas": one_dc},
        ),
    )
    assert ("ops-tool-replicas", Severity.error, "vault") in got
    assert ("health-checker-replicas", Severity.error, "health") in got
    assert ("boot-tool-reachable", Severity.error, "app@dc2") in got
    # the health checker is reported once, by its own rule
    assert [r for r in got if r[2] == "health"] == [
        ("health-checker-replicas", Severity.error, "health")
    ]


def test_no_health_checker_at_all_is_an_error() -> None:
    got = findings(*HEALTHY, ops_tools={"vault": tools()["vault"]})
    assert ("health-checker-replicas", Severity.error, "health_checker") in got


def test_findings_come_errors_first() -> None:
    app = {**HEALTHY[1], "caches_dependency_ips": True, "instances": {"dc1": 2, "dc2": 1}}
    report = run_check(build(HEALTHY[0], app))
    ranks = [f.severity.rank for f in report.findings]
    assert ranks == sorted(ranks) and report.has_errors


def test_the_example_has_every_flaw_the_seed_describes() -> None:
    got = {(f.rule, f.subject) for f in run_check(load(EXAMPLE)).findings}
    assert ("tier-redundancy", "config-server") in got
    assert ("tier-redundancy", "status-server") in got
    assert any(rule == "caches-dependency-ips" for rule, _ in got)
    assert ("dependency-on-lower-tier", "messaging-app") in got
    assert ("health-checker-replicas", "health-checker") in got
    assert ("ops-tool-replicas", "pager") in got
    assert any(rule == "dc-capacity" for rule, _ in got)
