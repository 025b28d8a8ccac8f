"""Inline SVG charts for the drill report, built as plain strings.

The report is read the morning after a drill, often offline, attached to a ticket or printed,
so its charts must live inside the HTML page: no JavaScript, no web fonts, no URLs (not even
the SVG namespace, which inline SVG in HTML does not need), and no plotting dependency. Every
piece of caller text is escaped, every chart carries a ``<title>``/``aria-label`` and a
``<desc>`` summary for screen readers, and the output is a pure function of the input so two
renders of the same report are byte-identical.

Times are simulated seconds and are shown as ``m:ss`` (or ``h:mm:ss``) clock ticks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape

from revive.drill.models import StepResult, TierResult

# Okabe-Ito: distinguishable with the common colour-vision deficiencies and in greyscale print.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
STATE_COLOURS = {
    "done": "#2DA44E",
    "failed": "#CF222E",
    "skipped": "#8C959F",
}
OTHER_STATE_COLOUR = "#BF8700"
MET_COLOUR = "#2DA44E"
MISSED_COLOUR = "#CF222E"
THRESHOLD_COLOUR = "#A40E26"
MARKER_COLOUR = "#57606A"
INK = "#24292F"
HALO = 'paint-order="stroke" stroke="#FFFFFF" stroke-width="3" stroke-linejoin="round"'
"""Attributes that give a label a white outline so it stays legible over lines and bars."""
GRID = "#D0D7DE"

MAX_POINTS = 600
"""Most vertices a polyline gets: enough for a 720 px chart, small enough to keep pages light."""

GROUP_STEPS_ABOVE = 60
"""With more steps than this the timeline shows one lane per action kind instead of per step."""

FONT = 11
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800)


# ---------------------------------------------------------------------------- formatting


def fmt_clock(seconds: float) -> str:
    """``754.2`` -> ``12:34``; an hour or more -> ``1:02:03``."""
    sign = "-" if seconds < 0 else ""
    total = round(abs(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{sign}{hours}:{minutes:02d}:{secs:02d}"
    return f"{sign}{minutes}:{secs:02d}"


def _decimals(step: float) -> int:
    """Decimals needed to tell ticks ``step`` apart (``0.25`` -> 2, ``5`` -> 0)."""
    for decimals in range(7):
        if abs(round(step, decimals) - step) < 1e-9 * max(1.0, abs(step)):
            return decimals
    return 6


def _fmt_number(value: float, step: float) -> str:
    return f"{value:.{_decimals(step)}f}"


def _fmt_percent(value: float, step: float) -> str:
    return f"{value * 100:.{_decimals(step * 100)}f}%"


def _num(value: float) -> str:
    """Coordinates with one decimal: sub-pixel precision is noise in the page size."""
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def _text_width(text: str, size: float = FONT) -> float:
    """Rough rendered width of ``text``; without fonts to measure, 0.6 em a glyph is close."""
    return len(text) * size * 0.6


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


# ---------------------------------------------------------------------------- scales


def _nice_step(span: float, ticks: int) -> float:
    raw = span / max(ticks, 1)
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    for mult in (1.0, 2.0, 2.5, 5.0, 10.0):
        if raw <= mult * magnitude * (1 + 1e-9):
            return mult * magnitude
    return 10 * magnitude


def _time_step(span: float, ticks: int) -> float:
    raw = span / max(ticks, 1)
    for step in _TIME_STEPS:
        if raw <= step:
            return float(step)
    return _nice_step(span / 3600, ticks) * 3600


def _ticks(lo: float, hi: float, step: float) -> list[float]:
    first = math.ceil(lo / step - 1e-9)
    out: list[float] = []
    k = first
    while k * step <= hi + step * 1e-9 and len(out) < 1000:
        out.append(round(k * step, 10) + 0.0)
        k += 1
    return out


def nice_ceiling(value: float) -> float:
    """Smallest "round" number at or above ``value`` (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for mult in (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0):
        if value <= mult * magnitude * (1 + 1e-9):
            return mult * magnitude
    return 10 * magnitude


class _Scale:
    """Linear map from a data interval onto a pixel interval, clamped to its ends."""

    def __init__(self, lo: float, hi: float, px_lo: float, px_hi: float) -> None:
        self.lo, self.hi, self.px_lo, self.px_hi = lo, hi, px_lo, px_hi

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo
        frac = 0.0 if span == 0 else (value - self.lo) / span
        frac = min(1.0, max(0.0, frac))
        return self.px_lo + frac * (self.px_hi - self.px_lo)


# ---------------------------------------------------------------------------- downsampling


def downsample(
    points: Sequence[tuple[float, float]], max_points: int = MAX_POINTS
) -> list[tuple[float, float]]:
    """At most ``max_points`` of ``points``, keeping the first, the last and every extreme.

    Each bucket of consecutive points contributes its minimum and its maximum (in order), so
    a one-sample spike, the thing a reader is looking for in a breach, survives the cut where
    plain decimation would drop it.
    """
    pts = list(points)
    if len(pts) <= max_points:
        return pts
    inner = pts[1:-1]
    buckets = max(1, (max_points - 2) // 2)
    out = [pts[0]]
    for b in range(buckets):
        chunk = inner[b * len(inner) // buckets : (b + 1) * len(inner) // buckets]
        if not chunk:
            continue
        lo = min(range(len(chunk)), key=lambda i: chunk[i][1])
        hi = max(range(len(chunk)), key=lambda i: chunk[i][1])
        out.extend(chunk[i] for i in sorted({lo, hi}))
    out.append(pts[-1])
    return out


# ---------------------------------------------------------------------------- svg pieces


def _svg_open(width: int, height: int, title: str, desc: str) -> list[str]:
    label = escape(title)
    return [
        f'<svg class="chart" role="img" aria-label="{label}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" font-family="system-ui, sans-serif" '
        f'font-size="{FONT}" fill="{INK}">',
        f"<title>{label}</title>",
        f"<desc>{escape(desc)}</desc>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#FFFFFF"/>',
    ]


def _text(
    x: float,
    y: float,
    text: str,
    *,
    anchor: str = "start",
    size: float | None = None,
    weight: str | None = None,
    fill: str | None = None,
    extra: str = "",
) -> str:
    attrs = [f'x="{_num(x)}"', f'y="{_num(y)}"']
    if anchor != "start":
        attrs.append(f'text-anchor="{anchor}"')
    if size is not None:
        attrs.append(f'font-size="{size:g}"')
    if weight is not None:
        attrs.append(f'font-weight="{weight}"')
    if fill is not None:
        attrs.append(f'fill="{fill}"')
    if extra:
        attrs.append(extra)
    return f"<text {' '.join(attrs)}>{escape(text)}</text>"


def _legend(
    items: Sequence[tuple[str, str, str]], x0: float, y0: float, right: float
) -> tuple[list[str], float]:
    """Swatches and labels ``(label, colour, kind)``, wrapped to fit; returns height used."""
    parts: list[str] = []
    x, y = x0, y0
    for label, colour, kind in items:
        need = 22 + _text_width(label) + 14
        if x > x0 and x + need > right:
            x, y = x0, y + 16
        if kind == "line":
            parts.append(
                f'<line x1="{_num(x)}" y1="{_num(y - 4)}" x2="{_num(x + 16)}" y2="{_num(y - 4)}" '
                f'stroke="{colour}" stroke-width="2.5"/>'
            )
        elif kind == "dash":
            parts.append(
                f'<line x1="{_num(x)}" y1="{_num(y - 4)}" x2="{_num(x + 16)}" y2="{_num(y - 4)}" '
                f'stroke="{colour}" stroke-width="1.5" stroke-dasharray="4 3"/>'
            )
        else:
            parts.append(
                f'<rect x="{_num(x)}" y="{_num(y - 9)}" width="16" height="10" rx="2" '
                f'fill="{colour}"/>'
            )
        parts.append(_text(x + 22, y, label))
        x += need
    return parts, y - y0 + 16


def _time_axis(scale: _Scale, y: float, top: float, *, grid: bool, ticks: int = 8) -> list[str]:
    """Bottom axis line, ``m:ss`` tick labels and optional vertical grid lines."""
    parts = [
        f'<line x1="{_num(scale.px_lo)}" y1="{_num(y)}" x2="{_num(scale.px_hi)}" '
        f'y2="{_num(y)}" stroke="{INK}"/>'
    ]
    span_px = scale.px_hi - scale.px_lo
    fit = max(2, min(ticks, int(span_px // 60)))
    step = _time_step(scale.hi - scale.lo, fit)
    for value in _ticks(scale.lo, scale.hi, step):
        px = scale(value)
        if grid:
            parts.append(
                f'<line x1="{_num(px)}" y1="{_num(top)}" x2="{_num(px)}" y2="{_num(y)}" '
                f'stroke="{GRID}" stroke-width="0.6"/>'
            )
        parts.append(
            f'<line x1="{_num(px)}" y1="{_num(y)}" x2="{_num(px)}" y2="{_num(y + 4)}" '
            f'stroke="{INK}"/>'
        )
        parts.append(_text(px, y + 15, fmt_clock(value), anchor="middle"))
    return parts


def _vertical_markers(
    markers: Mapping[str, float],
    scale: _Scale,
    top: float,
    bottom: float,
    *,
    label_y: float | None = None,
) -> list[str]:
    parts: list[str] = []
    for label, value in markers.items():
        if not math.isfinite(value) or not scale.lo <= value <= scale.hi:
            continue
        px = scale(value)
        parts.append(
            f'<line x1="{_num(px)}" y1="{_num(top)}" x2="{_num(px)}" y2="{_num(bottom)}" '
            f'stroke="{MARKER_COLOUR}" stroke-width="1.2" stroke-dasharray="2 3"/>'
        )
        near_right = px > scale.px_lo + 0.8 * (scale.px_hi - scale.px_lo)
        parts.append(
            _text(
                px - 3 if near_right else px + 3,
                top + 10 if label_y is None else label_y,
                f"{label} {fmt_clock(value)}",
                anchor="end" if near_right else "start",
                size=FONT - 1,
                fill=MARKER_COLOUR,
                extra=HALO,
            )
        )
    return parts


def _placeholder(title: str, message: str, width: int, height: int = 80) -> str:
    parts = _svg_open(width, height, title, message)
    parts.append(_text(12, 22, title, size=14, weight="600"))
    parts.append(_text(width / 2, height / 2 + 12, message, anchor="middle", fill=MARKER_COLOUR))
    parts.append("</svg>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------- line chart


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    y_max: float | None = None,
    thresholds: Mapping[str, float] | None = None,
    markers: Mapping[str, float] | None = None,
    percent: bool = False,
    width: int = 720,
    height: int = 260,
    max_points: int = MAX_POINTS,
) -> str:
    """One polyline per series over a time axis in seconds (ticks shown as ``m:ss``).

    ``thresholds`` are dashed horizontal lines labelled with their key (``{"DB limit 0.9":
    0.9}``); ``markers`` are dotted vertical lines (``{"fault": 120.0}``). Values above
    ``y_max`` are clipped to the top edge. ``percent`` formats the y ticks as percentages.
    """
    thresholds = dict(thresholds or {})
    markers = dict(markers or {})
    clean = {
        name: sorted((float(x), float(y)) for x, y in pts if math.isfinite(x) and math.isfinite(y))
        for name, pts in series.items()
    }
    all_pts = [p for pts in clean.values() for p in pts]
    if not all_pts:
        return _placeholder(title, "no data", width)

    xs = [x for x, _ in all_pts]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    ys = [y for _, y in all_pts] + [v for v in thresholds.values() if math.isfinite(v)]
    y_lo = min(0.0, min(ys))
    y_hi = y_max if y_max is not None else nice_ceiling(max(ys) * 1.05 if max(ys) > 0 else 1)
    if y_hi <= y_lo:
        y_hi = y_lo + 1

    left, right = 62.0, width - 16.0
    parts = _svg_open(width, height, title, _series_summary(clean, percent))
    parts.append(_text(12, 20, title, size=14, weight="600"))
    legend_items = [(name, PALETTE[i % len(PALETTE)], "line") for i, name in enumerate(clean)] + [
        (name, THRESHOLD_COLOUR, "dash") for name in thresholds
    ]
    legend, legend_h = _legend(legend_items, left, 40, right)
    parts.extend(legend)
    top = 40 + legend_h
    bottom = height - 44.0
    if bottom - top < 40:
        bottom = top + 40
    xs_scale = _Scale(x_lo, x_hi, left, right)
    ys_scale = _Scale(y_lo, y_hi, bottom, top)

    # y grid, ticks and labels
    y_step = _nice_step(y_hi - y_lo, max(2, min(6, int((bottom - top) // 28))))
    fmt: Callable[[float, float], str] = _fmt_percent if percent else _fmt_number
    for value in _ticks(y_lo, y_hi, y_step):
        py = ys_scale(value)
        parts.append(
            f'<line x1="{_num(left)}" y1="{_num(py)}" x2="{_num(right)}" y2="{_num(py)}" '
            f'stroke="{GRID}" stroke-width="0.6"/>'
        )
        parts.append(_text(left - 6, py + 4, fmt(value, y_step), anchor="end"))
    parts.append(
        f'<line x1="{_num(left)}" y1="{_num(top)}" x2="{_num(left)}" y2="{_num(bottom)}" '
        f'stroke="{INK}"/>'
    )
    mid = (top + bottom) / 2
    parts.append(
        _text(14, mid, y_label, anchor="middle", extra=f'transform="rotate(-90 14 {_num(mid)})"')
    )
    parts.extend(_time_axis(xs_scale, bottom, top, grid=True))
    parts.append(_text((left + right) / 2, height - 8, x_label, anchor="middle"))
    parts.extend(_vertical_markers(markers, xs_scale, top, bottom))

    for label, value in thresholds.items():
        if not math.isfinite(value) or not y_lo <= value <= y_hi:
            continue
        py = ys_scale(value)
        parts.append(
            f'<line x1="{_num(left)}" y1="{_num(py)}" x2="{_num(right)}" y2="{_num(py)}" '
            f'stroke="{THRESHOLD_COLOUR}" stroke-width="1.5" stroke-dasharray="6 4"/>'
        )
        parts.append(
            _text(
                right - 4,
                py - 4,
                label,
                anchor="end",
                size=FONT - 1,
                fill=THRESHOLD_COLOUR,
                extra=HALO,
            )
        )

    for i, (name, pts) in enumerate(clean.items()):
        colour = PALETTE[i % len(PALETTE)]
        kept = downsample(pts, max_points)
        if len(kept) == 1:
            ((x, y),) = kept
            parts.append(
                f'<circle cx="{_num(xs_scale(x))}" cy="{_num(ys_scale(y))}" r="3" '
                f'fill="{colour}"><title>{escape(name)}</title></circle>'
            )
        elif kept:
            coords = " ".join(f"{_num(xs_scale(x))},{_num(ys_scale(y))}" for x, y in kept)
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" '
                f'stroke-linejoin="round" stroke-linecap="round" points="{coords}">'
                f"<title>{escape(name)}</title></polyline>"
            )
    parts.append("</svg>")
    return "\n".join(parts)


def _series_summary(series: Mapping[str, Sequence[tuple[float, float]]], percent: bool) -> str:
    def show(v: float) -> str:
        return f"{v * 100:.1f}%" if percent else f"{v:.3g}"

    lines = []
    for name, pts in series.items():
        if not pts:
            lines.append(f"{name}: no data.")
            continue
        peak_x, peak_y = max(pts, key=lambda p: p[1])
        lines.append(
            f"{name}: {show(pts[0][1])} at {fmt_clock(pts[0][0])}, peak {show(peak_y)} at "
            f"{fmt_clock(peak_x)}, {show(pts[-1][1])} at {fmt_clock(pts[-1][0])}."
        )
    return " ".join(lines)


# ---------------------------------------------------------------------------- RTO bars


def rto_bars(tiers: Sequence[TierResult], *, width: int = 720) -> str:
    """One horizontal bar per tier: the achieved RTO against a target marker.

    Green when the tier met its target, red when it missed; a tier that never recovered
    shows "never" over a dashed red outline spanning the whole axis. Targets differ by orders
    of magnitude between tiers (minutes for tier 0, hours for tier 3), so the axis is sized to
    the recovery times and to the missed targets; a generous target further out is drawn as an
    arrow at the axis end and spelled out beside the bar.
    """
    title = "Recovery time per tier"
    rows = sorted(tiers, key=lambda t: t.tier)
    if not rows:
        return _placeholder(title, "no tiers", width)

    row_h, top = 34.0, 58.0
    height = int(top + row_h * len(rows) + 34)
    left, right = 118.0, width - 150.0
    rtos = [t.rto_s for t in rows if t.rto_s is not None]
    largest_target = max(t.target_s for t in rows)
    focus = max([*rtos, *(t.target_s for t in rows if not t.met)], default=0.0)
    if focus <= 0:
        focus = largest_target
    scale = _Scale(
        0.0, nice_ceiling(max(focus * 1.1, min(largest_target, focus * 2), 1.0)), left, right
    )

    desc = " ".join(
        f"Tier {t.tier}: "
        + ("never recovered" if t.rto_s is None else f"recovered in {fmt_clock(t.rto_s)}")
        + f", target {fmt_clock(t.target_s)}, {'met' if t.met else 'missed'}."
        for t in rows
    )
    parts = _svg_open(width, height, title, desc)
    parts.append(_text(12, 20, title, size=14, weight="600"))
    legend, _ = _legend(
        [("met", MET_COLOUR, "box"), ("missed", MISSED_COLOUR, "box")], left, 42, right
    )
    parts.extend(legend)
    lx = left + 140
    parts.append(
        f'<line x1="{_num(lx)}" y1="{_num(31)}" x2="{_num(lx)}" y2="{_num(45)}" '
        f'stroke="{INK}" stroke-width="2.5"/>'
    )
    parts.append(_text(lx + 6, 42, "target"))
    bottom = top + row_h * len(rows)
    parts.extend(_time_axis(scale, bottom + 4, top, grid=True, ticks=8))

    for i, tier in enumerate(rows):
        y = top + i * row_h
        colour = MET_COLOUR if tier.met else MISSED_COLOUR
        noun = "service" if tier.services == 1 else "services"
        parts.append(_text(12, y + 15, f"Tier {tier.tier}", weight="600"))
        parts.append(
            _text(12, y + 28, f"{tier.services} {noun}", size=FONT - 1, fill=MARKER_COLOUR)
        )
        bar_y, bar_h = y + 7, 18.0
        verdict = "met" if tier.met else "missed"
        if tier.rto_s is None:
            parts.append(
                f'<rect x="{_num(left)}" y="{_num(bar_y)}" width="{_num(right - left)}" '
                f'height="{_num(bar_h)}" fill="#FFEBE9" stroke="{MISSED_COLOUR}" '
                f'stroke-dasharray="5 3"><title>Tier {tier.tier}: never recovered</title></rect>'
            )
            parts.append(_text(left + 8, bar_y + 13, "never", weight="700", fill=MISSED_COLOUR))
            parts.append(_text(right + 10, y + 15, f"never, {verdict}", weight="600", fill=colour))
        else:
            end = scale(tier.rto_s)
            parts.append(
                f'<rect x="{_num(left)}" y="{_num(bar_y)}" width="{_num(max(end - left, 1.5))}" '
                f'height="{_num(bar_h)}" rx="2" fill="{colour}"><title>Tier {tier.tier}: '
                f"{fmt_clock(tier.rto_s)} against {fmt_clock(tier.target_s)}</title></rect>"
            )
            parts.append(
                _text(
                    right + 10,
                    y + 15,
                    f"{fmt_clock(tier.rto_s)}, {verdict}",
                    weight="600",
                    fill=colour,
                )
            )
        parts.append(
            _text(
                right + 10,
                y + 28,
                f"target {fmt_clock(tier.target_s)}",
                size=FONT - 1,
                fill=MARKER_COLOUR,
            )
        )
        target_title = f"<title>target {fmt_clock(tier.target_s)}</title>"
        if tier.target_s <= scale.hi:
            tx = scale(tier.target_s)
            parts.append(
                f'<line x1="{_num(tx)}" y1="{_num(y + 3)}" x2="{_num(tx)}" '
                f'y2="{_num(y + row_h - 5)}" stroke="{INK}" stroke-width="2.5">{target_title}'
                "</line>"
            )
        else:
            mid = bar_y + bar_h / 2
            parts.append(
                f'<polygon points="{_num(right - 2)},{_num(mid - 6)} {_num(right + 6)},{_num(mid)} '
                f'{_num(right - 2)},{_num(mid + 6)}" fill="{INK}">{target_title}</polygon>'
            )
    parts.append(_text((left + right) / 2, height - 4, "time since fault (m:ss)", anchor="middle"))
    parts.append("</svg>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------- timeline


def _state_colour(state: str) -> str:
    return STATE_COLOURS.get(state, OTHER_STATE_COLOUR)


def _step_tooltip(step: StepResult) -> str:
    start = "-" if step.started_s is None else fmt_clock(step.started_s)
    end = "-" if step.ended_s is None else fmt_clock(step.ended_s)
    text = f"{step.key}: {step.action} {step.target} [{step.state}] {start} to {end}"
    return f"{text}. {step.detail}" if step.detail else text


def timeline(
    steps: Sequence[StepResult],
    *,
    t_max: float,
    t_min: float = 0.0,
    markers: Mapping[str, float] | None = None,
    title: str = "Recovery steps",
    width: int = 720,
    group_above: int = GROUP_STEPS_ABOVE,
) -> str:
    """A lane chart of the steps between ``t_min`` and ``t_max``, coloured by state.

    Up to ``group_above`` steps get a lane each; beyond that one lane per action kind holds
    all of its steps, so a 300-step drill still fits on a page. A step that started but never
    ended runs to ``t_max``; a step that never started (skipped) has no bar. Every bar has a
    hover title with the step's key, target, times and detail.
    """
    if not steps:
        return _placeholder(title, "no steps", width)
    ends = [s.ended_s for s in steps if s.ended_s is not None]
    starts = [s.started_s for s in steps if s.started_s is not None]
    hi = max([t_max, *ends])
    lo = min([t_min, *starts])
    if hi <= lo:
        hi = lo + 1

    grouped = len(steps) > group_above
    lanes: list[tuple[str, str, list[StepResult]]]  # label, tooltip, steps
    if grouped:
        lanes = _lanes_by_action(steps)
    else:
        lanes = [
            (
                f"{s.action} {s.target}".strip() if s.action or s.target else s.key,
                _step_tooltip(s),
                [s],
            )
            for s in steps
        ]

    row_h = 20.0 if grouped else 15.0
    left, right = 236.0, width - 16.0
    top = 74.0
    bottom = top + row_h * len(lanes)
    height = int(bottom + 40)
    scale = _Scale(lo, hi, left, right)

    counts: dict[str, int] = {}
    for s in steps:
        counts[s.state] = counts.get(s.state, 0) + 1
    desc = f"{len(steps)} steps: " + ", ".join(f"{n} {state}" for state, n in counts.items())
    parts = _svg_open(width, height, title, desc)
    heading = f"{title} (by action, {len(steps)} steps)" if grouped else title
    parts.append(_text(12, 20, heading, size=14, weight="600"))
    states = list(dict.fromkeys([*STATE_COLOURS, *counts]))
    legend, _ = _legend(
        [(f"{st} ({counts.get(st, 0)})", _state_colour(st), "box") for st in states],
        left,
        42,
        right,
    )
    parts.extend(legend)

    for i, (label, tooltip, lane_steps) in enumerate(lanes):
        y = top + i * row_h
        if i % 2 == 0:
            parts.append(
                f'<rect x="0" y="{_num(y)}" width="{width}" height="{_num(row_h)}" fill="#F6F8FA"/>'
            )
        parts.append(
            f'<text x="12" y="{_num(y + row_h - 5)}" font-size="{FONT - 1}">'
            f"<title>{escape(tooltip)}</title>{escape(_truncate(label, 40))}</text>"
        )
        # failed bars last so that they sit on top of overlapping done bars
        order = sorted(lane_steps, key=lambda s: s.state == "failed")
        for step in order:
            if step.started_s is None:
                continue
            end = step.ended_s if step.ended_s is not None else hi
            x0 = scale(step.started_s)
            x1 = max(scale(end), x0 + 2.0)
            # overlapping bars of one lane show through each other; a failure stays solid
            opacity = ' fill-opacity="0.75"' if grouped and step.state != "failed" else ""
            parts.append(
                f'<rect x="{_num(x0)}" y="{_num(y + 3)}" width="{_num(x1 - x0)}" '
                f'height="{_num(row_h - 6)}" rx="1.5" fill="{_state_colour(step.state)}"{opacity}>'
                f"<title>{escape(_step_tooltip(step))}</title></rect>"
            )
        if len(lane_steps) == 1 and lane_steps[0].started_s is None:
            parts.append(
                _text(
                    left + 4,
                    y + row_h - 5,
                    lane_steps[0].state,
                    size=FONT - 1,
                    fill=_state_colour(lane_steps[0].state),
                )
            )
    parts.extend(_time_axis(scale, bottom + 2, top, grid=False))
    parts.extend(_vertical_markers(dict(markers or {}), scale, top - 6, bottom, label_y=top - 9))
    parts.append(_text((left + right) / 2, height - 4, "simulated time (m:ss)", anchor="middle"))
    parts.append("</svg>")
    return "\n".join(parts)


def _lanes_by_action(steps: Iterable[StepResult]) -> list[tuple[str, str, list[StepResult]]]:
    by_action: dict[str, list[StepResult]] = {}
    for step in steps:
        by_action.setdefault(step.action or "(none)", []).append(step)

    def first_start(item: tuple[str, list[StepResult]]) -> tuple[float, str]:
        started = [s.started_s for s in item[1] if s.started_s is not None]
        return (min(started) if started else math.inf, item[0])

    lanes = []
    for action, members in sorted(by_action.items(), key=first_start):
        failed = sum(1 for s in members if s.state == "failed")
        skipped = sum(1 for s in members if s.started_s is None)
        extra = "".join(
            [f", {failed} failed" if failed else "", f", {skipped} not run" if skipped else ""]
        )
        label = f"{action} ({len(members)}{extra})"
        targets = ", ".join(s.target for s in members[:12])
        more = f" and {len(members) - 12} more" if len(members) > 12 else ""
        lanes.append((label, f"{action}: {targets}{more}", members))
    return lanes
