"""What the runbook documents say, computed from the topology by the runbooks' own planners.

Nothing is ordered or sized here: restart orders are ``plan_restart``'s, the failover's
steps are ``recovery_graph``'s on the survey a fresh estate gives (what ran only in the lost
DC, the failover capacity plan's additions, callers that cache IPs), rehearsed by the one
scheduler, and capacity comes from ``plan_capacity``. This module only turns them into rows,
each step with its manual fallback.
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Mapping

from pydantic import BaseModel, Field

from revive.docs.manual import Action, Fallback, Verb, fallback
from revive.ops.models import RetryPolicy
from revive.planning import plan_capacity, plan_failover_capacity, plan_restart
from revive.planning.graph import Step, rehearse
from revive.planning.recovery import FEATURES_OFF, GATE, RETRY_POLICY, Survey, recovery_graph
from revive.planning.restart import DEFAULT_MAX_PARALLEL, restart_steps, service_of
from revive.planning.shares import default_weights, failover_weights
from revive.ramp.pacing import pacing
from revive.topology import Topology


class DocStep(BaseModel):
    """One step of a runbook, in the order revive would start it, and how to do it by hand."""

    n: int
    key: str
    title: str
    waits_for: list[str] = Field(default_factory=list)
    """Steps that must have succeeded first."""
    ends_before: list[str] = Field(default_factory=list)
    """Steps that must have ended (however) first."""
    start_s: float | None = None
    end_s: float | None = None
    services: list[str] = Field(default_factory=list)
    fallbacks: list[Fallback] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class Section(BaseModel):
    anchor: str
    title: str
    intro: str = ""
    steps: list[DocStep]


class RunbookDoc(BaseModel):
    name: str
    title: str
    page: str
    command: str
    summary: str
    details: list[str]
    sections: list[Section]


class RestartRow(BaseModel):
    n: int
    service: str
    tier: int
    effective_tier: int
    start_s: float
    end_s: float
    waits_for: list[str]


class RestartOrder(BaseModel):
    dc: str
    max_parallel: int
    rows: list[RestartRow]
    assumed_healthy: list[str]
    makespan_s: float


TITLES = {
    "failover": "Failover of a lost DC",
    "restart_service_groups": "Restart service groups",
    "provision": "Emergency capacity",
    "warm_up_ramp": "Warm-up ramp",
    "deploy_patch": "Emergency patch",
    "readiness_check": "Readiness check",
}


def docstring(module: str) -> str:
    """A runbook module's docstring, read from its source: the flows are never imported here
    (they import Prefect), and a missing module is an empty description."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return ""
    if spec is None or spec.origin is None:
        return ""
    try:
        with open(spec.origin, encoding="utf-8") as handle:
            return ast.get_docstring(ast.parse(handle.read())) or ""
    except (OSError, SyntaxError):
        return ""


# --- restart orders -----------------------------------------------------------------------


def restart_orders(topology: Topology, max_parallel: int = DEFAULT_MAX_PARALLEL
                   ) -> list[RestartOrder]:
    """Per DC with anything to restart, ``plan_restart``'s order and what each step waits for."""
    out = []
    for dc in topology.dc_names:
        if not any(s.runs_in(dc) for s in topology.services):
            continue
        plan = plan_restart(topology, dc, max_parallel=max_parallel)
        steps, _ = restart_steps(topology, dc, max_parallel=max_parallel)
        waits = {service_of(s): [k.removeprefix("restart:").rsplit("@", 1)[0] for k in s.after]
                 for s in steps}
        out.append(RestartOrder(
            dc=dc, max_parallel=max_parallel, assumed_healthy=plan.assumed_healthy,
            makespan_s=plan.makespan_s,
            rows=[RestartRow(n=i, service=s.service, tier=s.tier,
                             effective_tier=plan.effective_tier(s.service), start_s=s.start_s,
                             end_s=s.end_s, waits_for=waits.get(s.service, []))
                  for i, s in enumerate(plan.steps, start=1)]))
    return out


# --- the failover -------------------------------------------------------------------------


def planned_survey(topology: Topology, lost: str) -> Survey:
    """What a failover of ``lost`` finds on an estate as the topology describes it."""
    targets = [dc for dc in topology.dc_names if dc != lost]
    plan = {s.dc: s for s in plan_failover_capacity(topology, lost).survivors}
    weights = default_weights(topology)
    survey = Survey(lost=lost, targets=targets,
                    classes=[c for c in topology.traffic_classes if weights[c][lost] > 0])
    for dc in targets:
        need = {line.service: max(line.need, 1) for line in plan[dc].services}
        missing = [s.name for s in topology.services if s.runs_in(lost) and not s.runs_in(dc)]
        survey.deploys[dc] = {name: need.get(name, 1) for name in missing}
        sources = [d for d in targets if d != dc]
        if sources:  # the image may be missing here: copy it from another survivor first
            survey.copies[dc] = {name: sources[0] for name in missing}
        survey.provisions[dc] = {line.service: line.add for line in plan[dc].services
                                 if line.add > 0 and topology.service(line.service).runs_in(dc)}
        survey.restarts[dc] = [s.name for s in topology.services
                               if s.runs_in(dc) and s.caches_dependency_ips]
    return survey


def _target(step: Step) -> tuple[str, str]:
    name, _, dc = step.target.partition("@")
    return name, dc


def _graph_step(topology: Topology, survey: Survey, step: Step,
                weights: Mapping[str, Mapping[str, float]]) -> tuple[str, list[Action], list[str]]:
    """A recovery-graph step's title, its manual actions and the services it touches."""
    name, dc = _target(step)
    if step.key == FEATURES_OFF:
        return ("switch off every feature (they come back once traffic is in)",
                [Action(verb=Verb.flag_off, service=s.name, feature=f.name)
                 for s in topology.services for f in s.features], [])
    if step.key == RETRY_POLICY:
        return ("publish the client retry policy (clients must not retry the targets to death)",
                [Action(verb=Verb.retry_policy, policy=RetryPolicy().model_dump_json())], [])
    if step.key == GATE:
        gated = topology.environment == "production"
        return ((f"approval: get a yes from the incident commander before moving {survey.lost}'s "
                 "traffic" if gated else "approval (outside production it approves itself)"),
                [], [])
    if step.action == "copy":
        return (f"copy the image of {name} into {dc}'s registry",
                [Action(verb=Verb.has_image, service=name, dc=dc, version=survey.version),
                 Action(verb=Verb.copy_image, service=name, dc=dc, version=survey.version,
                        source_dc=survey.copies[dc][name])], [name])
    if step.action == "deploy":
        count = survey.deploys[dc][name]
        return (f"emergency deployment of {name} in {dc} ({count} instance(s)): it ran only in "
                f"{survey.lost}",
                [Action(verb=Verb.has_image, service=name, dc=dc, version=survey.version),
                 Action(verb=Verb.deploy, service=name, dc=dc, version=survey.version,
                        count=count), Action(verb=Verb.health, service=name, dc=dc)], [name])
    if step.action == "provision":
        count = survey.provisions[dc][name]
        return (f"add {count} instance(s) of {name} in {dc}",
                [Action(verb=Verb.provision, service=name, dc=dc, count=count),
                 Action(verb=Verb.health, service=name, dc=dc)], [name])
    if step.action == "restart":
        return (f"restart {name} in {dc}",
                [Action(verb=Verb.restart, service=name, dc=dc),
                 Action(verb=Verb.health, service=name, dc=dc)], [name])
    if step.action == "ramp":
        cls = topology.traffic_classes[step.target]
        final = dict(weights[step.target])
        return (f"move the users of class {step.target} ({', '.join(cls.services)}) out of "
                f"{survey.lost}, step by step",
                [Action(verb=Verb.set_weights, traffic_class=step.target, weights=final),
                 *[Action(verb=Verb.metrics, traffic_class=step.target, dc=t)
                   for t in survey.targets]], list(cls.services))
    return (f"{step.action} {step.target}", [], [])


def failover_sections(topology: Topology) -> list[Section]:
    """One section per DC that can be lost: the recovery graph in rehearsed start order."""
    if len(topology.dc_names) < 2:
        return []
    out = []
    max_step = pacing(topology.ramp).max_step
    for lost in topology.dc_names:
        survey = planned_survey(topology, lost)
        steps, pools = recovery_graph(topology, survey, max_parallel=DEFAULT_MAX_PARALLEL)
        timings = rehearse(steps, pools)
        weights = failover_weights(default_weights(topology), lost)
        ordered = sorted(steps, key=lambda s: (timings[s.key].start_s, s.priority, s.key))
        docs = []
        for i, step in enumerate(ordered, start=1):
            title, actions, services = _graph_step(topology, survey, step, weights)
            notes = []
            if step.action == "ramp":
                notes.append(f"raise the targets' share by at most {max_step:.0%} of the class "
                             "at a time; after each move, read the metrics and hold while the "
                             "database is near its limit, p99 latency or errors rise, or "
                             "caches are still cold")
            docs.append(DocStep(
                n=i, key=step.key, title=title, waits_for=list(step.after),
                ends_before=list(step.after_end), start_s=timings[step.key].start_s,
                end_s=timings[step.key].end_s, services=services, notes=notes,
                fallbacks=[fallback(topology, a) for a in actions]))
        back = [f"{s.name}/{f.name}" for s in sorted(topology.services, key=lambda s: s.tier)
                for f in sorted(s.features, key=lambda f: f.priority)]
        intro = (f"{survey.lost} is lost; {', '.join(survey.targets)} take its users. "
                 f"Times are the plan's estimates. Once every class has moved, features come "
                 f"back in (tier, priority) order: {', '.join(back) or 'none declared'}.")
        out.append(Section(anchor=f"lost-{lost}", title=f"{lost} lost", intro=intro,
                           steps=docs))
    return out


# --- the other runbooks ---------------------------------------------------------------------


def restart_sections(topology: Topology, orders: list[RestartOrder]) -> list[Section]:
    return [Section(
        anchor=f"dc-{o.dc}", title=f"Restart in {o.dc}",
        intro=(f"At most {o.max_parallel} restarts at once: the cap protects the boot-time "
               "tools. A step starts when every service it waits for is healthy again."
               + (f" Assumed healthy already: {', '.join(o.assumed_healthy)}."
                  if o.assumed_healthy else "")),
        steps=[DocStep(n=r.n, key=f"restart:{r.service}@{o.dc}",
                       title=f"restart {r.service} (tier {r.tier})",
                       waits_for=[f"restart:{w}@{o.dc}" for w in r.waits_for],
                       start_s=r.start_s, end_s=r.end_s, services=[r.service],
                       fallbacks=[fallback(topology, Action(verb=v, service=r.service, dc=o.dc))
                                  for v in (Verb.restart, Verb.health)])
               for r in o.rows]) for o in orders]


def provision_sections(topology: Topology) -> list[Section]:
    out = []
    for dc in topology.dc_names:
        plan = plan_capacity(topology, dc)
        lines = [line for line in plan.services if line.add > 0]
        out.append(Section(
            anchor=f"dc-{dc}", title=f"Capacity in {dc}",
            intro=(f"{dc} sized to carry the whole peak alone (tiers 0-1 with a 20% margin): "
                   f"{plan.total_add} instance(s) to add, in tier order."),
            steps=[DocStep(n=i, key=f"provision:{line.service}@{dc}",
                           title=f"add {line.add} instance(s) of {line.service} (tier "
                                 f"{line.tier}: has {line.have}, needs {line.need})",
                           services=[line.service],
                           fallbacks=[fallback(topology, Action(
                               verb=Verb.provision, service=line.service, dc=dc,
                               count=line.add))])
                   for i, line in enumerate(lines, start=1)]))
    return out


def ramp_sections(topology: Topology) -> list[Section]:
    out = []
    if len(topology.dc_names) < 2:
        return out
    before = default_weights(topology)
    for lost in topology.dc_names:
        after = failover_weights(before, lost)
        targets = [dc for dc in topology.dc_names if dc != lost]
        steps = [DocStep(n=1, key=RETRY_POLICY, title="publish the client retry policy",
                         fallbacks=[fallback(topology, Action(
                             verb=Verb.retry_policy, policy=RetryPolicy().model_dump_json()))])]
        for name in topology.traffic_classes:
            if before[name].get(lost, 0.0) <= 0:
                continue
            steps.append(DocStep(
                n=len(steps) + 1, key=f"ramp:{name}", waits_for=[RETRY_POLICY],
                title=f"move class {name} out of {lost}",
                services=list(topology.traffic_classes[name].services),
                fallbacks=[fallback(topology, Action(verb=Verb.set_weights, traffic_class=name,
                                                     weights=after[name])),
                           *[fallback(topology, Action(verb=Verb.metrics, traffic_class=name,
                                                       dc=t)) for t in targets]]))
        for svc in sorted(topology.services, key=lambda s: s.tier):
            for feature in sorted(svc.features, key=lambda f: f.priority):
                steps.append(DocStep(
                    n=len(steps) + 1, key=f"feature:{svc.name}/{feature.name}",
                    title=f"switch {feature.name} of {svc.name} back on (tier {svc.tier}, "
                          f"priority {feature.priority}) when there is headroom",
                    services=[svc.name], fallbacks=[fallback(topology, Action(
                        verb=Verb.flag_on, service=svc.name, feature=feature.name))]))
        out.append(Section(anchor=f"lost-{lost}", title=f"Out of {lost}",
                           intro=f"Classes in priority order, into {', '.join(targets)}.",
                           steps=steps))
    return out


def patch_sections(topology: Topology) -> list[Section]:
    """The patch's steps are the same for every service: the commands per service and DC are
    on the services page (deploy, roll back)."""
    steps = [
        ("find the image in the target DC's registry; copy it from another DC's if missing",
         Verb.has_image),
        ("production: get an approval before anything ships", None),
        ("deploy the canary (one service) and watch it for the gate time", Verb.deploy),
        ("gate: every patched service reports the new version with a healthy instance, and "
         "the DC's error rate has not risen", Verb.health),
        ("deploy the rest in small batches, a gate after each", Verb.deploy),
        ("a failed gate: roll that batch back and stop; earlier batches stay patched",
         Verb.rollback),
    ]
    return [Section(anchor="steps", title="Steps", intro=(
        "For each service, the deploy, roll-back and health commands of every DC are on "
        "its entry in the services page."), steps=[
            DocStep(n=i, key=f"patch-{i}", title=title,
                    notes=[f"by hand: see each service's '{verb}' commands"] if verb else [])
            for i, (title, verb) in enumerate(steps, start=1)])]


def runbook_docs(topology: Topology, catalog: Mapping[str, tuple[str, str, str]],
                 aliases: Mapping[str, str], orders: list[RestartOrder]) -> list[RunbookDoc]:
    """Every runbook of the catalog (name -> module, flow, parameters), with its sections."""
    short = {full: alias for alias, full in aliases.items()}
    makers = {
        "failover": lambda: failover_sections(topology),
        "restart_service_groups": lambda: restart_sections(topology, orders),
        "provision": lambda: provision_sections(topology),
        "warm_up_ramp": lambda: ramp_sections(topology),
        "deploy_patch": lambda: patch_sections(topology),
    }
    out = []
    for name, (module, _, _) in catalog.items():
        text = docstring(module)
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        summary = paragraphs[0].removeprefix("Runbook:").strip() if paragraphs else ""
        summary = summary[:1].upper() + summary[1:]
        run_name = short.get(name, name)
        out.append(RunbookDoc(
            name=name, title=TITLES.get(name, name.replace("_", " ").capitalize()),
            page=f"runbook-{name}.html", command=f"revive run {run_name} --dry-run",
            summary=summary, details=paragraphs[1:],
            sections=makers[name]() if name in makers else []))
    return out
