"""The two files a drill publishes from its :class:`~revive.drill.models.DrillReport`.

A DR drill is judged the morning after by someone who was not watching it. ``report.json``
is for machines (dashboards, regression checks, the next drill's comparison) and
``report.html`` is for that person: one self-contained page, readable offline or printed.

Both are pure functions of the :class:`DrillReport`: the same report writes byte-identical
files, so a drill replayed from the same seed can be compared with ``cmp``. The only values
that legitimately differ between two runs of the same drill are the wall-clock ones listed in
:data:`~revive.drill.models.WALL_CLOCK_FIELDS`; :meth:`DrillReport.comparable_dict` drops
them.
"""

from __future__ import annotations

import json
from pathlib import Path

from revive.drill import charts
from revive.drill.models import DrillReport
from revive.ramp import RampPolicy
from revive.render import render
from revive.verdict import OUTCOMES

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
TEMPLATE = "drill/report.html.j2"
DB_LIMIT = RampPolicy().db_util_limit
"""The DB utilisation line drawn on the ramp chart unless the caller passes another."""
CHART_WIDTH = 840
"""Chart width in SVG units: the page scales charts to its column (laptop or A4)."""
LONG_LIST = 12
"""Lists longer than this are collapsed behind ``<details>`` in the HTML."""


def to_json(report: DrillReport) -> str:
    """The ``report.json`` text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(report.to_json_dict(), sort_keys=True, indent=2, allow_nan=False) + "\n"


def charts_for(report: DrillReport, *, db_limit: float = DB_LIMIT) -> dict[str, str]:
    """The inline SVG charts of the HTML page, keyed by the name the template uses."""
    markers = {"fault": report.fault_at_s, "finished": report.finished_at_s}
    ramp = sorted(report.ramp, key=lambda p: p.t)
    peak = max([p.db_util for p in ramp], default=0.0)
    ends = [s.ended_s for s in report.steps if s.ended_s is not None]
    starts = [s.started_s for s in report.steps if s.started_s is not None]
    # The timeline is zoomed on the steps: the ramp after them has a chart of its own.
    t_min = min([report.fault_at_s, *starts])
    t_max = max(ends, default=report.finished_at_s)
    t_max += 0.02 * (t_max - t_min)
    return {
        "rto": charts.rto_bars(report.tiers, width=CHART_WIDTH),
        "ramp": charts.line_chart(
            {
                f"traffic share in {report.targets}": [(p.t, p.share) for p in ramp],
                "DB utilisation": [(p.t, p.db_util) for p in ramp],
                "cache hit ratio": [(p.t, p.hit_ratio) for p in ramp],
            },
            title=f"Warm-up ramp in {report.targets}",
            x_label="simulated time (m:ss)",
            y_label="fraction",
            height=300,
            y_max=max(1.0, charts.nice_ceiling(peak * 1.05)),
            thresholds={f"DB limit {db_limit:g}": db_limit},
            markers=markers,
            percent=True,
            width=CHART_WIDTH,
        ),
        "errors": charts.line_chart(
            {"error rate": [(p.t, p.error_rate) for p in ramp]},
            title=f"Error rate in {report.targets}",
            x_label="simulated time (m:ss)",
            y_label="error rate",
            markers=markers,
            percent=True,
            width=CHART_WIDTH,
            height=200,
        ),
        "timeline": charts.timeline(
            report.steps,
            t_min=t_min,
            t_max=t_max,
            markers=markers,
            width=CHART_WIDTH,
        ),
    }


def _duration(seconds: float | None) -> str:
    return "never" if seconds is None else charts.fmt_clock(seconds)


def _percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def render_html(report: DrillReport, *, db_limit: float = DB_LIMIT) -> str:
    """The ``report.html`` text; ``db_limit`` is the ramp policy's DB utilisation limit."""
    state_counts: dict[str, int] = {}
    for step in report.steps:
        state_counts[step.state] = state_counts.get(step.state, 0) + 1
    severity_counts: dict[str, int] = {}
    for finding in report.findings:
        severity_counts[finding.severity] = severity_counts.get(finding.severity, 0) + 1
    tiers = sorted(report.tiers, key=lambda t: t.tier)
    lists = [
        ("Failed", "failed", report.failed),
        ("Deployed", "deployed", report.deployed),
        ("Provisioned", "provisioned", report.provisioned),
        ("Restarted", "restarted", report.restarted),
        ("Patched", "patched", report.patched),
    ]
    return render(
        TEMPLATE,
        r=report,
        outcome=report.outcome if report.outcome in OUTCOMES else "unknown",
        tiers=tiers,
        tiers_missed=[t for t in tiers if not t.met],
        charts=charts_for(report, db_limit=db_limit),
        db_limit=db_limit,
        lists=lists,
        long_list=LONG_LIST,
        failed_steps=[s for s in report.steps if s.state == "failed"],
        slow={s.key: s for s in report.slow_steps},
        state_counts=state_counts,
        findings=sorted(report.findings, key=lambda f: SEVERITY_ORDER.get(f.severity, 9)),
        severity_counts=severity_counts,
        recovery_s=report.finished_at_s - report.fault_at_s,
        duration=_duration,
        percent=_percent,
    )


def write_report(
    report: DrillReport, out_dir: Path, *, db_limit: float = DB_LIMIT
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir`` (created if missing)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    html_path = out_dir / "report.html"
    json_path.write_text(to_json(report), encoding="utf-8", newline="\n")
    html_path.write_text(render_html(report, db_limit=db_limit), encoding="utf-8", newline="\n")
    return json_path, html_path
