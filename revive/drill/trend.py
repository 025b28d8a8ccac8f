"""How a drill compares with the drills before it: its slow steps, and each tier's RTO trend.

A step is slow when it took longer than the 75th percentile of the same step key's
durations in earlier drills, as Facebook's Maelstrom flags a stuck task against its own
history rather than against a fixed timeout: a restart that always takes ten minutes is not
news, one that took twice its usual time is. Fewer than :data:`MIN_HISTORY` earlier runs of a
step are not a history yet, so a new step is never called slow.

The RTO trend compares each tier's RTO with the median of the drills before it: a rising RTO
is a regression even while it is still inside its target. Pure functions of the numbers,
so the CLI, the status board and the tests read the same verdicts.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence

from revive.drill.charts import fmt_clock
from revive.drill.models import SlowStep, StepResult

MIN_HISTORY = 3
"""Earlier runs of a step needed before it can be called slow."""
TREND_WINDOW = 5
"""How many earlier drills a tier's RTO is compared with (their median)."""
STEADY = 0.05
"""An RTO within this fraction of the earlier median is steady, not a trend."""

SLOWER, FASTER, STEADY_MARK, NEW = "▲", "▼", "=", "·"
"""Trend marks: RTO up (worse), down (better), steady, nothing to compare with."""
BARS = "▁▂▃▄▅▆▇█"
NEVER_BAR = "!"
"""A sparkline's mark for a drill in which the tier never came back."""


def step_seconds(steps: Iterable[StepResult]) -> dict[str, float]:
    """Per step key, how long the step took; only steps that finished (``done``) count,
    a failed one is reported as failed, not as slow."""
    out: dict[str, float] = {}
    for step in steps:
        if step.state == "done" and step.started_s is not None and step.ended_s is not None:
            out[step.key] = round(max(0.0, step.ended_s - step.started_s), 3)
    return out


def p75(values: Sequence[float]) -> float:
    """The 75th percentile, linear between the closest ranks (numpy's default)."""
    if not values:
        raise ValueError("p75 of no values")
    ordered = sorted(values)
    rank = 0.75 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def slow_steps(seconds: Mapping[str, float],
               history: Mapping[str, Sequence[float]]) -> list[SlowStep]:
    """The steps of ``seconds`` that took longer than the p75 of their ``history`` (earlier
    durations of the same key), slowest against its history first."""
    out = []
    for key, took in seconds.items():
        earlier = history.get(key, ())
        if len(earlier) < MIN_HISTORY:
            continue
        usual = round(p75(earlier), 3)
        if took > usual + 1e-6:
            out.append(SlowStep(key=key, seconds=took, p75=usual, samples=len(earlier)))
    return sorted(out, key=lambda s: (-(s.seconds / s.p75 if s.p75 > 0 else math.inf), s.key))


def _value(rto: float | None) -> float:
    return math.inf if rto is None else rto


def baseline(earlier: Sequence[float | None]) -> float | None:
    """The median RTO of the newest :data:`TREND_WINDOW` of ``earlier`` (newest first);
    ``math.inf`` when most of them never came back, ``None`` with nothing to compare."""
    window = list(earlier)[:TREND_WINDOW]
    if not window:
        return None
    return statistics.median_low(sorted(_value(v) for v in window))


def trend(rto: float | None, earlier: Sequence[float | None]) -> str:
    """:data:`SLOWER`, :data:`FASTER` or :data:`STEADY_MARK` against the :func:`baseline`
    of ``earlier`` (newest first; ``None`` = never back); :data:`NEW` with nothing to
    compare."""
    base = baseline(earlier)
    if base is None:
        return NEW
    now = _value(rto)
    if now == base:
        return STEADY_MARK
    if math.isinf(now) or math.isinf(base):
        return SLOWER if math.isinf(now) else FASTER
    if abs(now - base) <= STEADY * base:
        return STEADY_MARK
    return SLOWER if now > base else FASTER


def trend_note(rto: float | None, earlier: Sequence[float | None]) -> str:
    """The trend mark with what it compares against, for a report: ``▲ (earlier 4:10)``."""
    base = baseline(earlier)
    if base is None:
        return f"{NEW} first drill to compare"
    said = "never back" if math.isinf(base) else fmt_clock(base)
    return f"{trend(rto, earlier)} (earlier {said}, {min(len(earlier), TREND_WINDOW)} drills)"


def sparkline(values: Sequence[float | None]) -> str:
    """One bar per value (oldest first), scaled between the smallest and largest;
    :data:`NEVER_BAR` where the tier never came back."""
    finite = [v for v in values if v is not None]
    if not finite:
        return NEVER_BAR * len(values)
    low, high = min(finite), max(finite)
    marks = []
    for v in values:
        if v is None:
            marks.append(NEVER_BAR)
        elif high - low <= 1e-9:
            marks.append(BARS[len(BARS) // 2])
        else:
            marks.append(BARS[round((v - low) / (high - low) * (len(BARS) - 1))])
    return "".join(marks)


def tier_keys(rtos: Iterable[Mapping[str, object]]) -> list[str]:
    """Every tier key (``tier0``, ``tier1``...) in any of ``rtos``, in tier order."""
    keys = {key for rto in rtos for key in rto}
    return sorted(keys, key=lambda k: (len(k), k))
