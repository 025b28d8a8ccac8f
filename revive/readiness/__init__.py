"""The readiness check: the seed's checklist of known DC-loss problems, automated."""

from __future__ import annotations

from revive.readiness.models import Finding, Report, Severity
from revive.readiness.rules import RULES
from revive.topology import Topology

__all__ = ["Finding", "Report", "Severity", "run_check"]


def run_check(topology: Topology, extra: list[Finding] | None = None) -> Report:
    """Run every rule (plus ``extra``, e.g. the probe's); sorted by severity, rule, subject."""
    findings = [finding for rule in RULES for finding in rule(topology)] + list(extra or [])
    findings.sort(key=lambda f: (f.severity.rank, f.rule, f.subject))
    return Report(findings=findings)
