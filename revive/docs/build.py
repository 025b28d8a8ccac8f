"""Write the runbook documents: one static HTML site, rendered with Jinja2, that needs nothing.

Every page is self-contained (inline CSS, inline SVG, no script, font or external URL) and
links only to its sibling pages, so the directory can be copied to every DC, opened from a
file share or a laptop, and still read when revive, the wiki and the network are gone.
The templates live in ``runbooks/templates/docs/`` (an estate's own copy in the working
directory wins, as for every template) and are rendered with autoescaping on: names, owners
and ``manual:`` texts are the topology's, printed as written, never as markup.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from jinja2 import Environment, StrictUndefined
from markupsafe import Markup, escape
from pydantic import BaseModel, Field

from revive.docs.content import RestartOrder, restart_orders, runbook_docs
from revive.docs.manual import Action, Fallback, Verb, fallback
from revive.docs.svg import restart_graph
from revive.drill.charts import fmt_clock
from revive.readiness import run_check
from revive.readiness.rules import RULES
from revive.render import environment
from revive.topology import Topology

PAGES = ("index.html", "services.html", "restart.html", "tools.html")
_LITERAL = re.compile(r"``(.+?)``")


class ServiceDoc(BaseModel):
    name: str
    tier: int
    effective_tier: int
    group: str
    role: str
    redundancy: str
    owner: str | None
    traffic_class: str | None
    depends_on: list[tuple[str, bool]]
    """(name, soft)."""
    dependents: list[str]
    boot_requires: list[str]
    instances: dict[str, int]
    features: list[str]
    manual: str | None
    restart_position: dict[str, int]
    fallbacks: dict[str, list[Fallback]] = Field(default_factory=dict)
    """DC -> restart, health, deploy, roll back, provision by hand."""


def literal(text: str) -> Markup:
    """Docstring text as HTML: escaped, ``code`` as <code>."""
    return Markup(_LITERAL.sub(r"<code>\1</code>", str(escape(text))))


@cache
def docs_environment() -> Environment:
    """revive's template loader, with autoescaping: these pages show people's text."""
    env = Environment(loader=environment().loader, undefined=StrictUndefined, autoescape=True,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["literal"] = literal
    env.filters["clock"] = fmt_clock
    return env


def service_docs(topology: Topology, orders: list[RestartOrder]) -> list[ServiceDoc]:
    position = {o.dc: {r.service: r.n for r in o.rows} for o in orders}
    tiers = {r.service: r.effective_tier for o in orders for r in o.rows}
    users: dict[str, list[str]] = {}
    for svc in topology.services:
        for dep in svc.depends_on:
            users.setdefault(dep.name, []).append(svc.name)
    out = []
    for svc in sorted(topology.services, key=lambda s: (s.tier, s.group, s.name)):
        fallbacks = {}
        for dc in topology.dc_names:
            verbs = [Verb.restart, Verb.health, Verb.deploy, Verb.rollback, Verb.provision] \
                if svc.runs_in(dc) else [Verb.deploy, Verb.health]
            fallbacks[dc] = [fallback(topology, Action(
                verb=v, service=svc.name, dc=dc, count=1 if v == Verb.provision else 0))
                for v in verbs]
        out.append(ServiceDoc(
            name=svc.name, tier=svc.tier, effective_tier=tiers.get(svc.name, svc.tier),
            group=svc.group, role=str(svc.role), redundancy=str(svc.redundancy),
            owner=svc.owner, traffic_class=svc.traffic_class_name,
            depends_on=[(d.name, d.soft) for d in svc.depends_on],
            dependents=sorted(users.get(svc.name, [])), boot_requires=list(svc.boot_requires),
            instances=dict(svc.instances),
            features=[f"{f.name} (priority {f.priority})" for f in svc.features],
            manual=svc.manual,
            restart_position={dc: p[svc.name] for dc, p in position.items() if svc.name in p},
            fallbacks=fallbacks))
    return out


def _rules() -> list[tuple[str, str]]:
    return [(rule.__name__, (rule.__doc__ or "").strip().split("\n\n")[0]) for rule in RULES]


def build_site(topology: Topology, out: Path, *, source: str,
               catalog: Mapping[str, tuple[str, str, str]],
               aliases: Mapping[str, str] | None = None,
               built_at: datetime | None = None) -> list[Path]:
    """Render every page of ``topology``'s documents into ``out`` (created if needed, other
    files left alone); the paths written. ``catalog`` is the runbooks (name -> module,
    flow, parameters model), as ``revive run`` knows them."""
    orders = restart_orders(topology)
    runbooks = runbook_docs(topology, catalog, aliases or {}, orders)
    services = service_docs(topology, orders)
    report = run_check(topology)
    graphs = {o.dc: {t: Markup(restart_graph(o, t)) for t in sorted({r.tier for r in o.rows})}
              for o in orders}
    probes = {name: fallback(topology, Action(verb=Verb.probe, tool=name))
              for name in topology.ops_tools}
    context = {
        "topology": topology, "source": source, "runbooks": runbooks, "services": services,
        "orders": orders, "graphs": graphs, "findings": report.findings, "rules": _rules(),
        "probes": probes, "tools": topology.ops_tools,
        "boot_users": {name: sum(1 for s in topology.services if name in s.boot_requires)
                       for name in topology.ops_tools},
        "manuals": {s.name: s.manual for s in topology.services},
        "running": {dc: sum(1 for s in topology.services if s.runs_in(dc))
                    for dc in topology.dc_names},
        "built_at": (built_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC"),
        "pages": [("index.html", "Overview"), ("services.html", "Services"),
                  ("restart.html", "Restart order"), ("tools.html", "Ops tools"),
                  *[(r.page, r.title) for r in runbooks]],
    }
    env = docs_environment()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for page in PAGES:
        written.append(_write(out / page, env.get_template(f"docs/{page}.j2").render(
            page=page, **context)))
    template = env.get_template("docs/runbook.html.j2")
    for runbook in runbooks:
        written.append(_write(out / runbook.page, template.render(
            page=runbook.page, runbook=runbook, **context)))
    return written


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    tmp.replace(path)
    return path
