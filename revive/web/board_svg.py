"""The board's one picture: a tier's RTO over the last drills against its target, inline SVG.

Inline so the board needs no front-end build, no script and no second request, and works
under a Content-Security-Policy that allows no script at all. Every piece of text is
escaped here, so the result is safe to mark as markup in the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from revive.drill.charts import MET_COLOUR, MISSED_COLOUR, THRESHOLD_COLOUR, fmt_clock

__all__ = ["rto_trend"]

GREY = "#8C959F"
LINE = "#57606A"


def _label(points: Sequence[float | None], target_s: float | None) -> str:
    shown = ", ".join("never" if p is None else fmt_clock(p) for p in points) or "no drills"
    against = f" against a target of {fmt_clock(target_s)}" if target_s else ""
    return f"RTO of the last {len(points)} drill(s), oldest first: {shown}{against}"


def rto_trend(
    name: str,
    points: Sequence[float | None],
    target_s: float | None,
    *,
    width: int = 180,
    height: int = 40,
) -> Markup:
    """A sparkline of ``points`` (seconds, oldest first; None = never back) with the target
    as a dashed line; each point green when within the target, red when not."""
    pad = 5.0
    label = escape(f"{name}: {_label(points, target_s)}")
    head = (f'<svg class="trend" role="img" aria-label="{label}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}"><title>{label}</title>')
    if not points:
        return Markup(f'{head}<text x="{pad}" y="{height / 2 + 4:.1f}" font-size="11" '
                      f'fill="{GREY}">no drills yet</text></svg>')
    known = [p for p in points if p is not None]
    top = max([*known, target_s or 0.0, 1.0]) * 1.15

    def y(value: float) -> float:
        return height - pad - (height - 2 * pad) * min(value, top) / top

    step = (width - 2 * pad) / max(len(points) - 1, 1)
    xs = [pad + i * step if len(points) > 1 else width / 2 for i in range(len(points))]
    parts = [head]
    if target_s:
        parts.append(f'<line x1="0" x2="{width}" y1="{y(target_s):.1f}" y2="{y(target_s):.1f}" '
                     f'stroke="{THRESHOLD_COLOUR}" stroke-width="1" stroke-dasharray="4 3"/>')
    line = " ".join(f"{x:.1f},{y(p):.1f}" for x, p in zip(xs, points, strict=True)
                    if p is not None)
    if len(known) > 1:
        parts.append(f'<polyline points="{line}" fill="none" stroke="{LINE}" '
                     'stroke-width="1.5"/>')
    for x, p in zip(xs, points, strict=True):
        if p is None:  # never back: a cross at the top edge
            parts.append(f'<path d="M{x - 3:.1f},{pad - 2:.1f}l6,6m0,-6l-6,6" '
                         f'stroke="{MISSED_COLOUR}" stroke-width="2"/>')
            continue
        met = target_s is None or p <= target_s
        colour = MET_COLOUR if met else MISSED_COLOUR
        parts.append(f'<circle cx="{x:.1f}" cy="{y(p):.1f}" r="3" fill="{colour}">'
                     f"<title>{escape(fmt_clock(p))}</title></circle>")
    parts.append("</svg>")
    return Markup("".join(parts))
