"""The drill report a person reads the morning after: complete, self-contained, reproducible.

The report is built here the way a real drill would fill it (four tiers with one missed
target, a 400-sample ramp, 70 steps, a few findings) so the tests exercise the page at the
size it has in practice, not a toy one.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from revive.drill.charts import downsample, fmt_clock, line_chart, rto_bars, timeline
from revive.drill.models import (
    WALL_CLOCK_FIELDS,
    DrillReport,
    FindingRow,
    RampPoint,
    StepResult,
    TierResult,
)
from revive.drill.report import render_html, to_json, write_report

NASTY = "replica of db-main has <b>& no standby in dc2"
FAULT_AT = 120.0


def _ramp(n: int = 400) -> list[RampPoint]:
    points = []
    for i in range(n):
        t = FAULT_AT + 60 + i * 10.0
        share = 1 / (1 + math.exp(-(i - 150) / 25))
        hit = 0.3 + 0.65 * (1 - math.exp(-i / 80))
        spike = 0.12 if 140 <= i < 146 else 0.0
        db = min(1.2, 0.25 + 0.7 * share * (1 - hit) * 2.2 + spike)
        errors = 0.002 + (0.03 if 140 <= i < 146 else 0.0)
        points.append(RampPoint(t=t, share=share, db_util=db, hit_ratio=hit, error_rate=errors))
    return points


def _steps() -> list[StepResult]:
    plan = [("provision", 20), ("deploy", 25), ("restart", 15), ("patch", 6), ("verify", 4)]
    steps: list[StepResult] = []
    t = FAULT_AT + 5
    for action, count in plan:
        for i in range(count):
            key = f"{action}:svc-{i:02d}@dc2"
            if action == "patch" and i in (4, 5):
                steps.append(
                    StepResult(
                        key=key,
                        action=action,
                        target=f"svc-{i:02d}",
                        state="skipped",
                        started_s=None,
                        ended_s=None,
                        detail="depends on a failed step",
                    )
                )
                continue
            failed = action == "deploy" and i == 7
            steps.append(
                StepResult(
                    key=key,
                    action=action,
                    target=f"svc-{i:02d}",
                    state="failed" if failed else "done",
                    started_s=t,
                    ended_s=t + 30 + (i % 5) * 12,
                    detail="image pull timed out after 3 tries" if failed else "",
                )
            )
            t += 9
    return steps


def make_report(**changes: object) -> DrillReport:
    data: dict[str, object] = {
        "scenario": "dc1-fire",
        "seed": 42,
        "outcome": "degraded",
        "topology": "runbooks/topology.yaml",
        "topology_hash": "3f9a1c0d5e7b2a4968c1d0e3f5a7b9c2d4e6f8a0b1c3d5e7f9a1b3c5d7e9f1a3",
        "environment": "sim",
        "lost_dc": "dc1",
        "target_dcs": ["dc2"],
        "fault_at_s": FAULT_AT,
        "finished_at_s": FAULT_AT + 60 + 400 * 10.0,
        "started_at": "2025-03-14T02:00:00+00:00",
        "wall_seconds": 12.75,
        "tiers": [
            TierResult(tier=0, rto_s=240.0, target_s=300.0, met=True, services=12),
            TierResult(tier=1, rto_s=1090.0, target_s=900.0, met=False, services=18),
            TierResult(tier=2, rto_s=1500.0, target_s=3600.0, met=True, services=9),
            TierResult(tier=3, rto_s=2700.0, target_s=14400.0, met=True, services=1),
        ],
        "peak_db_util": 0.97,
        "breach_seconds": 60,
        "deployed": [f"svc-{i:02d}" for i in range(24)],
        "provisioned": [f"svc-{i:02d}" for i in range(20)],
        "restarted": [f"svc-{i:02d}" for i in range(15)],
        "patched": ["svc-00", "svc-01", "svc-02", "svc-03"],
        "failed": ["svc-07"],
        "steps": _steps(),
        "ramp": _ramp(),
        "findings": [
            FindingRow(rule="tier-redundancy", severity="error", subject="db-main", message=NASTY),
            FindingRow(
                rule="boot-cycle",
                severity="warning",
                subject="vault",
                message="vault needs consul which needs vault to boot",
            ),
            FindingRow(
                rule="capacity",
                severity="info",
                subject="reco",
                message="reco runs at 80% of its peak in dc2",
            ),
        ],
        "notes": ["Tier 1 missed its target: svc-07 failed to deploy and was retried by hand."],
    }
    data.update(changes)
    return DrillReport.model_validate(data)


@pytest.fixture(scope="module")
def report() -> DrillReport:
    return make_report()


def _vertex_counts(svg: str) -> list[int]:
    return [len(p.split()) for p in re.findall(r'<polyline[^>]* points="([^"]*)"', svg)]


def test_write_report_creates_the_directory_and_both_files(
    report: DrillReport, tmp_path: Path
) -> None:
    json_path, html_path = write_report(report, tmp_path / "drills" / "dc1-fire")
    assert json_path == tmp_path / "drills" / "dc1-fire" / "report.json"
    assert html_path == tmp_path / "drills" / "dc1-fire" / "report.html"
    assert json_path.is_file()
    assert html_path.is_file()


def test_json_carries_the_headline_numbers_and_round_trips(
    report: DrillReport, tmp_path: Path
) -> None:
    json_path, _ = write_report(report, tmp_path)
    text = json_path.read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, indent=2) + "\n"
    assert data["scenario"] == "dc1-fire"
    assert data["seed"] == 42
    assert data["outcome"] == "degraded"
    assert data["rto_seconds"] == {
        "tier0": 240.0,
        "tier1": 1090.0,
        "tier2": 1500.0,
        "tier3": 2700.0,
    }
    assert data["rto_target_seconds"] == {
        "tier0": 300.0,
        "tier1": 900.0,
        "tier2": 3600.0,
        "tier3": 14400.0,
    }
    assert data["rto_met"] == {"tier0": True, "tier1": False, "tier2": True, "tier3": True}
    assert data["peak_db_util"] == 0.97
    assert data["breach_seconds"] == 60
    assert len(data["steps"]) == 70
    assert data["steps"][0]["key"] == "provision:svc-00@dc2"
    assert len(data["ramp"]) == 400
    assert DrillReport.model_validate(data) == report
    assert DrillReport.from_json_dict(data) == report


def test_a_tier_that_never_recovered_is_null_in_json() -> None:
    tiers = [TierResult(tier=0, rto_s=None, target_s=300.0, met=False, services=3)]
    data = json.loads(to_json(make_report(tiers=tiers, outcome="failed")))
    assert data["rto_seconds"] == {"tier0": None}
    assert data["rto_met"] == {"tier0": False}


def test_comparable_dict_drops_only_the_wall_clock() -> None:
    early = make_report()
    late = make_report(started_at="2025-03-15T09:30:00+00:00", wall_seconds=99.0)
    assert early.to_json_dict() != late.to_json_dict()
    assert early.comparable_dict() == late.comparable_dict()
    assert set(early.to_json_dict()) - set(early.comparable_dict()) == set(WALL_CLOCK_FIELDS)


def test_html_is_self_contained_and_complete(report: DrillReport, tmp_path: Path) -> None:
    _, html_path = write_report(report, tmp_path)
    html = html_path.read_text(encoding="utf-8")
    assert "http://" not in html
    assert "https://" not in html
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert "@import" not in html
    assert html.count("<svg") >= 3
    assert '<span class="outcome">degraded</span>' in html
    for tier in range(4):
        assert f"tier {tier}" in html
    assert "1 of 4 tiers missed their RTO target" in html
    assert "image pull timed out after 3 tries" in html
    assert "vault needs consul" in html
    assert report.topology_hash in html
    assert "Tier 1 missed its target" in html


def test_html_escapes_every_piece_of_report_text() -> None:
    evil = "<script>alert(1)</script>"
    report = make_report(
        scenario=f"fire {evil}",
        deployed=[f"svc {evil}"],
        notes=[evil],
        steps=[
            StepResult(
                key=evil,
                action=evil,
                target=evil,
                state="failed",
                started_s=130.0,
                ended_s=200.0,
                detail=evil,
            )
        ],
    )
    html = render_html(report)
    assert "<script" not in html
    assert "&lt;script&gt;" in html
    assert NASTY not in html
    assert "replica of db-main has &lt;b&gt;&amp; no standby in dc2" in html


def test_the_same_report_writes_byte_identical_files(report: DrillReport, tmp_path: Path) -> None:
    first = write_report(report, tmp_path / "a")
    second = write_report(make_report(), tmp_path / "b")
    for one, other in zip(first, second, strict=True):
        assert one.read_bytes() == other.read_bytes()


def test_rto_bars_show_never_for_a_tier_that_did_not_recover() -> None:
    svg = rto_bars(
        [
            TierResult(tier=0, rto_s=200.0, target_s=300.0, met=True, services=4),
            TierResult(tier=1, rto_s=None, target_s=900.0, met=False, services=2),
        ]
    )
    assert svg.startswith("<svg")
    assert "never" in svg
    assert "Tier 0" in svg and "Tier 1" in svg
    assert "#2DA44E" in svg  # met: green
    assert "#CF222E" in svg  # missed: red


def test_rto_bars_without_tiers_say_so() -> None:
    assert "no tiers" in rto_bars([])


def test_line_chart_downsamples_long_series_but_keeps_the_spike() -> None:
    calm = [(float(t), 0.5 + 0.01 * math.sin(t / 50)) for t in range(10_000)]
    calm[6_543] = (6_543.0, 0.99)
    svg = line_chart(
        {"db": calm, "share": [(float(t), t / 10_000) for t in range(10_000)]},
        title="DB",
        x_label="time",
        y_label="util",
        y_max=1.0,
        thresholds={"DB limit 0.9": 0.9},
    )
    counts = _vertex_counts(svg)
    assert len(counts) == 2
    assert all(2 <= n <= 600 for n in counts)
    assert (6_543.0, 0.99) in downsample(calm)
    assert "stroke-dasharray" in svg
    assert "DB limit 0.9" in svg


def test_downsample_keeps_short_series_and_their_ends() -> None:
    short = [(float(i), float(i % 7)) for i in range(50)]
    assert downsample(short) == short
    long = [(float(i), float(i % 7)) for i in range(5_000)]
    kept = downsample(long, 100)
    assert len(kept) <= 100
    assert kept[0] == long[0] and kept[-1] == long[-1]
    assert [x for x, _ in kept] == sorted(x for x, _ in kept)


def test_line_chart_escapes_text_and_labels_minutes() -> None:
    svg = line_chart(
        {"a<b>&c": [(0.0, 0.1), (600.0, 0.4)]},
        title='Ramp "<i>"',
        x_label="t",
        y_label="y",
    )
    assert "<b>" not in svg and "<i>" not in svg
    assert "a&lt;b&gt;&amp;c" in svg
    assert 'aria-label="Ramp &quot;&lt;i&gt;&quot;"' in svg
    assert "<title>" in svg
    assert ">10:00<" in svg  # 600 s shown as minutes


def test_line_chart_without_data_renders_a_placeholder() -> None:
    svg = line_chart({"empty": []}, title="Nothing", x_label="t", y_label="y")
    assert svg.startswith("<svg") and "no data" in svg


def test_timeline_has_a_lane_per_step_until_it_groups_by_action() -> None:
    steps = _steps()
    few = timeline(steps[:10], t_max=1000.0)
    assert few.count("<rect") >= 10
    assert "by action" not in few
    many = timeline(steps, t_max=5000.0)
    assert "by action, 70 steps" in many
    assert "deploy (25, 1 failed)" in many
    assert "patch (6, 2 not run)" in many
    assert "#CF222E" in many  # the failed deploy


def test_fmt_clock() -> None:
    assert fmt_clock(0) == "0:00"
    assert fmt_clock(754.4) == "12:34"
    assert fmt_clock(3723) == "1:02:03"
    assert fmt_clock(-30) == "-0:30"


def test_non_finite_numbers_are_refused_when_the_report_is_built() -> None:
    with pytest.raises(ValidationError):
        RampPoint(t=10.0, share=0.5, db_util=math.inf, hit_ratio=0.9, error_rate=0.0)
    with pytest.raises(ValidationError):
        make_report(peak_db_util=math.nan)


@pytest.mark.parametrize(
    ("outcome", "wording"),
    [
        ("recovered", "the failover runbook recovered into dc2"),
        ("failed", "the failover runbook did not recover into dc2"),
        ("aborted", "the drill was aborted"),
    ],
)
def test_the_headline_says_what_happened(outcome: str, wording: str) -> None:
    html = render_html(make_report(outcome=outcome))
    assert f'class="banner outcome-{outcome}"' in html
    assert f'<span class="outcome">{outcome}</span>' in html
    assert wording in html
