"""Markdown artifacts show names and tool messages as text: no raw HTML, no broken tables.

The Prefect UI renders an artifact's markdown, HTML included; a path, a name or a tool's
error message with ``<img src=x onerror=...>`` in it would run in every viewer's browser.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import SimpleNamespace as Obj
from typing import Any

import pytest

import flows.readiness_check as readiness_flow
from revive.render import PACKAGED, md, mdcode, render
from tests.factories import EXAMPLE

H = "<img src=x onerror=alert(1)> | `*_[x](y)\\|\n| <script>alert(1)</script>\r\n# x"


def _findings() -> list[Obj]:
    return [Obj(severity="error", rule=H, subject=H, message=H, hint=H)]


CONTEXTS: dict[str, dict[str, Any]] = {
    "readiness_check/report.md.j2": dict(
        source=H, topology_hash="0123456789abcdef", services=3, datacenters=[H, "dc2"],
        counts={"error": 1, "warning": 0, "info": 0}, findings=_findings()),
    "deploy_patch/plan.md.j2": dict(
        dc=H, version=H, batches=[(H, [H, "svc-1"]), ("batch 1", [H])], sources={H: H},
        missing={H: H}, gate_s=30.0, max_error_rate_increase=0.01),
    "deploy_patch/summary.md.j2": dict(
        dc=H, version=H, outcome=H, reason=H, copied=[H], already=[H], patched=[H],
        rolled_back=[H], failed={H: H}, not_started=[H]),
    "failover/graph.md.j2": dict(
        lost=H, targets=[H, "dc3"],
        steps=[Obj(key=H, after=[H], after_end=[H], priority=1),
               Obj(key="restart:svc-1", after=[], after_end=[], priority=2)],
        timings={H: Obj(start_s=0.0, end_s=12.0)}),
    "failover/summary.md.j2": dict(
        lost_dc=H, target_dcs=[H], outcome=H, headline=H, findings=[{}], deployed=[H],
        provisioned=[H], restarted=[H], failed=[H], rto_s={H: 30.0, "tier1": None},
        ramp={"result": H, "share": 0.5, "seconds": 60.0}, final_weights={H: {H: 0.5}}),
    "restart/plan.md.j2": dict(
        plan=Obj(dc=H, max_parallel=2, makespan_s=60.0, lower_bound_s=30.0,
                 critical_path=[H, "b"],
                 steps=[Obj(start_s=0.0, end_s=1.0, tier=0, service=H, group=H)]),
        order=[H]),
    "restart/summary.md.j2": dict(dc=H, up=[H], failed={H: H}, blocked={H: H}),
    "drill/summary.md.j2": dict(
        r=Obj(scenario=H, outcome=H, headline=H, lost_dc=H, target_dcs=[H, "dc3"], target=H,
              seed=1, slow_steps=[Obj(key=H, seconds=90.0, p75=30.0, samples=4)]),
        tiers=[Obj(tier=0, rto_s=300.0, target_s=600.0, met=True),
               Obj(tier=1, rto_s=None, target_s=1800.0, met=False)],
        trends={0: H, 1: H}, trigger=H, triggered_by=H, json_path=H, html_path=H,
        duration=lambda s: "never" if s is None else f"{s:.0f} s", history_note=H,
        failed_steps=1),
}


def _cells(row: str) -> int:
    """Unescaped ``|`` in a table row (a backslash escapes the next character)."""
    count, i = 0, 0
    while i < len(row):
        if row[i] == "\\":
            i += 2
            continue
        count += row[i] == "|"
        i += 1
    return count


def _assert_safe(markdown: str) -> None:
    lowered = markdown.lower()
    assert "<img" not in lowered and "<script" not in lowered, markdown
    lines = markdown.splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            continue
        assert line.endswith("|") and not line.endswith("\\|"), line
        header = i
        while header > 0 and lines[header - 1].startswith("|"):
            header -= 1
        assert _cells(line) == _cells(lines[header]), (lines[header], line)
        following = lines[i + 1] if i + 1 < len(lines) else ""
        assert following == "" or following.startswith("|"), (line, following)
    assert not any(line.startswith(("# x", "#x")) for line in lines), markdown


def test_every_markdown_artifact_template_is_covered() -> None:
    artifacts = {str(p.relative_to(PACKAGED)) for p in PACKAGED.glob("*/*.md.j2")
                 if p.parent.name not in ("chat", "slack")}  # those two are Slack mrkdwn
    assert artifacts == set(CONTEXTS)


@pytest.mark.parametrize("template", sorted(CONTEXTS))
def test_hostile_text_is_shown_not_run(template: str) -> None:
    _assert_safe(render(template, **CONTEXTS[template]))


def test_md_keeps_the_text_readable() -> None:
    assert md("svc-001") == "svc-001"
    assert md("a<b & c>d") == "a&lt;b &amp; c&gt;d"
    assert md("a|b\nc") == "a\\|b c"
    assert md("12. done") == "12\\. done"
    assert mdcode("runbooks/topology.yaml") == "`runbooks/topology.yaml`"
    assert mdcode("a`b<c>") == "a\\`b&lt;c&gt;"


def test_the_readiness_report_artifact_escapes_a_hostile_topology_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "<img src=x onerror=alert(1)>|x.yaml"
    path.write_text(EXAMPLE.read_text())
    published: dict[str, Any] = {}
    monkeypatch.setattr(readiness_flow, "create_markdown_artifact",
                        lambda **kw: published.update(kw))
    monkeypatch.setattr(readiness_flow, "create_table_artifact", lambda **kw: None)
    monkeypatch.setattr(readiness_flow, "get_run_logger", lambda: logging.getLogger(__name__))
    readiness_flow.readiness_check.fn(readiness_flow.ReadinessCheckParams(topology=str(path)))
    assert published["key"] == "readiness-report"
    _assert_safe(published["markdown"])
    assert re.search(r"&lt;img src=x onerror=alert\(1\)&gt;\\\|x\.yaml", published["markdown"])
