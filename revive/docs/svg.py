"""The restart order as a picture: per DC and tier, who waits for whom, left to right.

Inline SVG built with the drill report's helpers, for the same reasons: the documents are
read offline, printed, or from a copy in a DC with no network, so a picture must live inside
the page and depend on nothing.
"""

from __future__ import annotations

from html import escape

from revive.docs.content import RestartOrder
from revive.drill.charts import MARKER_COLOUR, PALETTE, _num, _svg_open, _text, _truncate

NODE_W = 190.0
NODE_H = 20.0
COL_GAP = 60.0
ROW_GAP = 8.0
TOP = 40.0
LEFT = 12.0


def _depths(order: RestartOrder) -> dict[str, int]:
    """How many restarts must end, one after the other, before each can start."""
    waits = {r.service: r.waits_for for r in order.rows}
    depth: dict[str, int] = {}
    for row in order.rows:  # plan order: every dependency comes before its dependents
        depth[row.service] = 1 + max((depth.get(w, 0) for w in waits[row.service]), default=-1)
    return depth


def restart_graph(order: RestartOrder, tier: int) -> str:
    """The services of ``tier`` in ``order``'s DC, with the restarts each waits for (grey
    when of another tier), laid out in waves of dependency depth; numbers are plan order."""
    rows = {r.service: r for r in order.rows}
    mine = [r for r in order.rows if r.tier == tier]
    shown = {r.service for r in mine} | {w for r in mine for w in r.waits_for}
    depth = _depths(order)
    columns = sorted({depth[s] for s in shown})
    col_of = {d: i for i, d in enumerate(columns)}
    by_col: dict[int, list[str]] = {}
    for name in sorted(shown, key=lambda s: rows[s].n):
        by_col.setdefault(col_of[depth[name]], []).append(name)
    pos = {name: (LEFT + c * (NODE_W + COL_GAP), TOP + i * (NODE_H + ROW_GAP))
           for c, names in by_col.items() for i, name in enumerate(names)}
    width = int(LEFT * 2 + len(columns) * NODE_W + max(0, len(columns) - 1) * COL_GAP)
    height = int(TOP + max((len(v) for v in by_col.values()), default=0) * (NODE_H + ROW_GAP)
                 + 10)
    title = f"Restart order of tier {tier} in {order.dc}"
    desc = (f"{len(mine)} tier-{tier} service(s) in {order.dc}, in {len(columns)} wave(s); "
            f"grey boxes are restarts of other tiers they wait for")
    parts = _svg_open(max(width, 320), height, title, desc)
    parts.append(_text(LEFT, 20, title, size=13, weight="600"))
    for r in mine:
        x1, y1 = pos[r.service]
        for dep in r.waits_for:
            x0, y0 = pos[dep]
            parts.append(f'<line x1="{_num(x0 + NODE_W)}" y1="{_num(y0 + NODE_H / 2)}" '
                         f'x2="{_num(x1)}" y2="{_num(y1 + NODE_H / 2)}" '
                         f'stroke="{MARKER_COLOUR}" stroke-width="1"/>')
    for name, (x, y) in pos.items():
        row = rows[name]
        own = row.tier == tier
        colour = PALETTE[row.tier % len(PALETTE)] if own else "#8C959F"
        tip = (f"#{row.n} {name} (tier {row.tier}, ordered as tier {row.effective_tier}); "
               f"waits for: {', '.join(row.waits_for) or 'nothing'}")
        parts.append(f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(NODE_W)}" '
                     f'height="{_num(NODE_H)}" rx="3" fill="{colour}" fill-opacity="'
                     f'{"0.18" if own else "0.12"}" stroke="{colour}">'
                     f"<title>{escape(tip)}</title></rect>")
        parts.append(_text(x + 6, y + 14, _truncate(f"{row.n}. {name}", 30),
                           fill=None if own else MARKER_COLOUR))
    parts.append("</svg>")
    return "\n".join(parts)
