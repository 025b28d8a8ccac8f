"""The drill's result as data, and the two files a drill publishes from it.

A DR drill is judged the morning after by someone who was not watching it. ``report.json``
is for machines (dashboards, regression checks, the next drill's comparison) and
``report.html`` is for that person: one self-contained page, readable offline or printed.

Both are pure functions of the :class:`DrillReport`: the same report writes byte-identical
files, so a drill replayed from the same seed can be compared with ``cmp``. The only values
that legitimately differ between two runs of the same drill are the wall-clock ones listed in
:data:`WALL_CLOCK_FIELDS`; :meth:`DrillReport.comparable_dict` drops them.

All ``*_s`` times (``fault_at_s``, step starts and ends, ramp ``t``) are simulated seconds on
one clock; RTOs and targets are durations in seconds measured from the fault. NaN and
infinity are refused when a model is built: strict JSON cannot carry them, and a report that
only fails when it is written would fail at the worst moment. A tier that never recovered has
``rto_s=None``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from revive.drill import charts
from revive.ramp import RampPolicy
from revive.render import render
from revive.verdict import OUTCOMES

WALL_CLOCK_FIELDS = ("started_at", "wall_seconds")
"""Fields that depend on when and how fast the drill ran, not on what happened in it."""

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
TEMPLATE = "drill/report.html.j2"
DB_LIMIT = RampPolicy().db_util_limit
"""The DB utilisation line drawn on the ramp chart unless the caller passes another."""
CHART_WIDTH = 840
"""Chart width in SVG units: the page scales charts to its column (laptop or A4)."""
LONG_LIST = 12
"""Lists longer than this are collapsed behind ``<details>`` in the HTML."""


class _Model(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)


class TierResult(_Model):
    """How long a tier took to be serving again in the target DC, against its target."""

    tier: int
    rto_s: float | None
    """Seconds from the fault until every service of the tier served; ``None``: never."""
    target_s: float
    met: bool
    services: int


class StepResult(_Model):
    """One runbook step as it ran: ``state`` is ``done``, ``failed`` or ``skipped``."""

    key: str
    action: str
    target: str
    state: str
    started_s: float | None
    ended_s: float | None
    detail: str = ""


class RampPoint(_Model):
    """One sample of the warm-up ramp in the target DC (all ratios are 0..1)."""

    t: float
    share: float
    db_util: float
    hit_ratio: float
    error_rate: float


class GraphStep(_Model):
    """One step of the failover's recovery graph: what it waited for, when it ran
    (seconds after the fault; ``None`` if it never started)."""

    key: str
    action: str
    target: str
    after: list[str]
    start_s: float | None
    end_s: float | None


class FindingRow(_Model):
    """A readiness finding as it stood when the drill ran."""

    rule: str
    severity: str
    subject: str
    message: str


class DrillReport(_Model):
    """Everything a drill publishes. ``outcome`` is one of :data:`OUTCOMES`."""

    scenario: str
    seed: int
    outcome: str
    headline: str = ""
    """One sentence: which tiers missed their target, by how much, and what held them up."""
    topology: str
    topology_hash: str
    environment: str
    lost_dc: str
    target_dcs: list[str]
    fault_at_s: float
    finished_at_s: float
    started_at: str
    wall_seconds: float
    tiers: list[TierResult]
    peak_db_util: float
    breach_seconds: int
    deployed: list[str]
    provisioned: list[str]
    restarted: list[str]
    patched: list[str]
    failed: list[str]
    steps: list[StepResult]
    graph: list[GraphStep] = []
    ramp: list[RampPoint]
    findings: list[FindingRow]
    notes: list[str] = []
    final_weights: dict[str, dict[str, float]] = {}
    """GSLB weights per traffic class and DC when the drill ended."""
    simulation: dict[str, Any] = {}
    """Every simulator knob in force (the topology's ``simulation:`` with defaults filled)."""
    target: str = "simulator"
    """What the drill ran on: ``simulator``, or ``lab`` (real processes, real adapters)."""
    ramp_holds: int | None = None
    """Holds the ramp made on the metrics it read (a lab drill: at least one shows the gate
    worked on real numbers)."""

    @property
    def targets(self) -> str:
        """The DCs recovered into, for sentences and titles."""
        return ", ".join(self.target_dcs)

    def to_json_dict(self) -> dict[str, Any]:
        """Every field, plus per-tier ``rto_seconds``, ``rto_target_seconds`` and ``rto_met``.

        The derived maps are keyed ``tier0``, ``tier1``... so a dashboard or a regression
        check can read one number without walking the tier list. The extra keys are ignored
        when the dict is validated back into a :class:`DrillReport`.
        """
        data = self.model_dump(mode="json")
        tiers = sorted(self.tiers, key=lambda t: t.tier)
        data["rto_seconds"] = {f"tier{t.tier}": t.rto_s for t in tiers}
        data["rto_target_seconds"] = {f"tier{t.tier}": t.target_s for t in tiers}
        data["rto_met"] = {f"tier{t.tier}": t.met for t in tiers}
        return data

    def comparable_dict(self) -> dict[str, Any]:
        """:meth:`to_json_dict` without :data:`WALL_CLOCK_FIELDS`: equal for equal drills."""
        data = self.to_json_dict()
        for name in WALL_CLOCK_FIELDS:
            data.pop(name, None)
        return data

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> DrillReport:
        """Read back what :meth:`to_json_dict` wrote (derived keys are recomputed, not read)."""
        return cls.model_validate(data)


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
