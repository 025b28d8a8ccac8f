"""A failover executed in-process on the simulator: the recovery graph, the one scheduler,
the ramp controllers, and no Prefect (bench/priority.py's machinery).

``flows.recovery.GraphRun`` executes a recovery graph against ops tools through Prefect
tasks; a benchmark of many seeds cannot afford a flow run per seed, and must not measure
Prefect. So ``execute`` is the same loop on the estate directly: start what the
``Scheduler`` says may start (``start_action`` maps a step to one estate call), wait on the
virtual clock until an action ends, a health re-check or the next ramp round is due, record
what ended, and repeat. The ramp is a ``Mover`` (``activate`` a class when its ramp step
starts, one ``step`` per round); bench/priority.py brings its policies' movers.

Where this differs from GraphRun, on purpose and the same for every policy:

* restart durations are drawn once per seed (``drawn``), as bench/restart.py does: the
  estate's formula ``restart_seconds * (1 +- restart_jitter)`` from ``random.Random(seed)``
  in service-name order, written into the topology, run with ``restart_jitter = 0``. The
  estate draws jitter in call order, so otherwise each policy's order would give its
  services other durations and no bound could hold for all;
* the approval gate is given at once (a drill approves itself, on the record);
* a restart's health gate (``flows.restart_service_groups.health_gate``: the checker's
  view, asked again every 10 s up to three times) is re-checked per restart without
  holding up the rest of the loop (GraphRun awaits it inline).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from revive.drill.recorder import Recorder
from revive.planning import plan_failover_capacity
from revive.planning.graph import Scheduler, Step
from revive.planning.quota import Quota
from revive.planning.recovery import Survey
from revive.planning.shares import dc_load_share, moved_weights
from revive.ramp import FeatureCandidate, RampPolicy
from revive.ramp.classes import ClassRamp, RampMemory, next_round
from revive.sim import RetryPolicy, Simulator
from revive.sim.estate import ActionState, SimError, Unavailable
from revive.sim.metrics import SAMPLE_METRICS, read_sample, render
from revive.topology import Topology, parse

SETTLE_S = 60.0  # as flows/drill.py: the estate runs this long before the fault
SCRAPE_S = 10.0  # GraphRun's scrape interval
MAX_RAMP_S = 7200.0  # GraphRun's max_ramp_s: the run holds the weights after this long
JUDGE_S = 3600.0  # as flows/drill.py: how long after the run the recorder may still judge
HEALTH_CHECKS, HEALTH_GRACE_S = 3, 10.0  # flows.restart_service_groups' health gate
NEVER = 30 * 86400.0
RESOLUTION = 1 / 4096  # the oracle's fraction


def drawn(topology: Topology, seed: int) -> Topology:
    """A copy whose restarts take the durations the estate would draw, jitter then off."""
    jitter = topology.simulation.restart_jitter
    rng = random.Random(seed)
    durations = {s.name: s.restart_seconds * (1 + rng.uniform(-jitter, jitter))
                 for s in sorted(topology.services, key=lambda s: s.name)}
    data = topology.model_dump(mode="json")
    for service in data["services"]:
        service["restart_seconds"] = durations[service["name"]]
    data["simulation"] = {**data["simulation"], "restart_jitter": 0.0}
    return parse(data, name="<drawn restarts>")


@dataclass
class Run:
    """One simulated DC loss and what the benchmark measures on it besides the RTOs."""

    sim: Simulator
    recorder: Recorder
    lost: str
    targets: list[str]
    first_move_at: float | None = None
    full_at: float | None = None
    peak_db_util: float = 0.0

    @classmethod
    def after_fault(cls, topology: Topology, lost: str, seed: int) -> Run:
        """As flows/drill.py: settle, mark the fault, the lost DC loses power, it lands."""
        sim = Simulator(topology, seed=seed)
        targets = [dc for dc in topology.dc_names if dc != lost]
        run = cls(sim, Recorder(sim, lost, targets), lost, targets)
        sim.clock.add_ticker(run._watch, every=1.0)
        sim.advance(SETTLE_S)
        run.recorder.mark_fault()
        sim.estate.power_loss(lost)
        sim.advance(1.0)
        return run

    def move(self, traffic_class: str, weights: dict[str, float]) -> None:
        """Every traffic move goes through here, so the first one starts the peak's window."""
        if self.first_move_at is None:
            self.first_move_at = self.sim.clock.now
        self.sim.estate.set_class_weights(traffic_class, weights)

    def _watch(self, now: float, dt: float) -> None:
        if self.first_move_at is None:
            return
        self.peak_db_util = max(self.peak_db_util, *(self.sim.metrics[dc].db_utilisation
                                                      for dc in self.targets))
        if self.full_at is None and all(w.get(self.lost, 0.0) <= 1e-9
                                        for w in self.sim.estate.class_weights.values()):
            self.full_at = now


def survey(sim: Simulator, lost: str, targets: list[str], version: str = "v1") -> Survey:
    """What flows/failover.py's ``_survey`` finds, read from the estate: deployments of what
    ran only in the lost DC (with image copies), the failover capacity plan's additions,
    restarts of IP-caching callers and of unhealthy services; classes with lost users."""
    topology, estate = sim.topology, sim.estate
    weights = estate.class_weights
    plan = plan_failover_capacity(topology, lost, weights=weights)
    found = Survey(lost=lost, targets=targets, version=version)
    for line_plan in plan.survivors:
        dc, lines = line_plan.dc, line_plan.services
        need = {line.service: max(line.need, 1) for line in lines}
        missing = [s.name for s in topology.services
                   if s.runs_in(lost) and not s.runs_in(dc) and not estate.state(s.name, dc).exists]
        found.deploys[dc] = {name: need.get(name, 1) for name in missing}
        found.copies[dc] = {name: src for name in missing
                            if (src := _image_source(sim, name, version, dc)) is not None}
        found.provisions[dc] = {line.service: line.add for line in lines
                                if line.add > 0 and topology.service(line.service).runs_in(dc)}
        found.restarts[dc] = [s.name for s in topology.services if s.runs_in(dc) and (
            s.caches_dependency_ips or _unhealthy(sim, s.name, dc))]
    found.classes = [c for c in topology.traffic_classes if weights[c].get(lost, 0.0) > 0]
    return found


def _image_source(sim: Simulator, name: str, version: str, dc: str) -> str | None:
    """Where to copy an image from (an up DC whose registry has it); None if not needed."""
    estate = sim.estate
    if (name, version) in estate.artifacts(dc):
        return None
    return next((src for src in sim.dcs if src != dc and estate.dc_up(src)
                 and (name, version) in estate.artifacts(src)), None)


def _unhealthy(sim: Simulator, name: str, dc: str) -> bool:
    view = sim.estate.state(name, dc)
    return view.healthy < view.instances and not view.busy


def start_action(sim: Simulator, found: Survey, step: Step) -> str:
    """Start a copy, deploy, provision or restart on the estate; its action id.

    A provision asks for what the DC's quota still grants, as GraphRun does; none left is
    a failed step (SimError), like every refusal of the estate."""
    estate = sim.estate
    name, dc = step.target.split("@")
    if step.action == "copy":
        return estate.copy_artifact(name, found.version, found.copies[dc][name], dc)
    if step.action == "deploy":
        return estate.deploy(name, dc, found.deploys[dc][name], found.version)
    if step.action == "restart":
        return estate.restart(name, dc)
    want = found.provisions[dc][name]
    count = Quota(estate.quota(dc)).grant(want)
    if count <= 0:
        raise SimError(f"quota exhausted: {name} needs {want} in {dc}")
    return estate.provision(name, dc, count)


def features_off(sim: Simulator) -> None:
    """Emergency mode: every feature off until every class is in."""
    for (service, feature), on in sim.estate.flags.items():
        if on:
            sim.estate.set_flag(service, feature, False)


def features_to_restore(sim: Simulator) -> list[FeatureCandidate]:
    """Features switched off, priced as their share of the estate's load (as the ramp
    runbook's ``_features_off``)."""
    topology, flags = sim.topology, sim.estate.flags
    total = sum(s.peak_load for s in topology.services) or 1.0
    return [FeatureCandidate(service=s.name, name=f.name, priority=f.priority,
                             cost=f.cost * s.peak_load / total, tier=s.tier)
            for s in topology.services for f in s.features if not flags[s.name, f.name]]


def scrape(sim: Simulator, lanes: Sequence[tuple[str | None, str]]) -> dict:
    """One scrape of /metrics read back as the controller's Samples, per (class, dc);
    class None is the DC-level sample. Each lane parses only its own series (the time, its
    DC's, its class's there; no HELP or TYPE lines), as a query by label would: parsing the
    whole exposition once per lane cost more than the simulation. Same Samples either way."""
    lines = render(sim, SAMPLE_METRICS).splitlines()
    out = {}
    for c, dc in lanes:
        where, of = f'dc="{dc}"', f'class="{c}"'
        mine = [line for line in lines if not line.startswith("#") and (
            "{" not in line or (where in line and ('class="' not in line or of in line)))]
        out[c, dc] = read_sample("\n".join(mine) + "\n", dc, c)
    return out


class Mover(Protocol):
    """A ramp policy, driven by ``execute``."""

    stalled: bool

    def activate(self, name: str, now: float) -> bool:
        """The ramp step of ``name`` starts; False if there is nothing to move."""

    def step(self, now: float) -> None:
        """One round: read the metrics, move traffic (and bring features back)."""

    def complete(self, name: str) -> bool: ...

    @property
    def done(self) -> bool:
        """Everything moved and every feature back: the run may end."""


def execute(run: Run, steps: list[Step], pools: dict[str, int], found: Survey, mover: Mover,
            *, every_s: float = SCRAPE_S, health_gate: bool = True,
            stop: Callable[[], bool] = lambda: False) -> None:
    """Run the graph to its end on the one scheduler, then the ramp until ``mover.done``."""
    sim, scheduler = run.sim, Scheduler(steps, pools)
    clock, estate = sim.clock, sim.estate
    in_flight: dict[str, str] = {}  # step key -> action id
    gating: dict[str, tuple[float, int]] = {}  # restart step -> (next health check, checks)
    ramping: set[str] = set()
    t0, next_round = clock.now, None

    def start(step: Step) -> None:
        scheduler.start(step.key)
        if step.action == "ramp":
            if mover.activate(step.target, clock.now):
                ramping.add(step.key)
            else:
                scheduler.finish(step.key, ok=True)
            return
        try:
            if step.action == "features":
                features_off(sim)
            elif step.action == "retry_policy":
                estate.set_retry_policy(RetryPolicy())
            elif step.action != "approval":  # a drill approves itself at once
                in_flight[step.key] = start_action(sim, found, step)
                return
        except SimError as exc:
            scheduler.finish(step.key, ok=False, why=str(exc))
            return
        scheduler.finish(step.key, ok=True)

    def collect() -> None:
        for key, action_id in list(in_flight.items()):
            view = estate.action(action_id)
            if view.state == ActionState.running:
                continue
            del in_flight[key]
            if view.state == ActionState.done and health_gate and key.startswith("restart:"):
                gating[key] = (clock.now, 0)
            else:
                scheduler.finish(key, ok=view.state == ActionState.done, why=view.error or "")
        for key, (due, checks) in list(gating.items()):
            if clock.now < due - 1e-9:
                continue
            name, dc = key.removeprefix("restart:").split("@")
            if _healthy_seen(sim, name, dc) > 0 or checks + 1 >= HEALTH_CHECKS:
                del gating[key]
                scheduler.finish(key, ok=_healthy_seen(sim, name, dc) > 0, why="unhealthy")
            else:
                gating[key] = (clock.now + HEALTH_GRACE_S, checks + 1)

    while not stop():
        while ready := scheduler.ready():
            for step in ready:
                start(step)
        if ramping and next_round is None:
            next_round = clock.now + every_s
        if not in_flight and not gating and not ramping:
            break
        limit = min([clock.now + NEVER, *([] if next_round is None else [next_round]),
                     *(due for due, _ in gating.values())])
        clock.advance_until(lambda: any(estate.action(a).state != ActionState.running
                                        for a in in_flight.values()), limit=limit)
        clock.advance_to(clock.now)  # other actions ending at this same instant
        collect()
        if next_round is not None and clock.now >= next_round - 1e-9:
            next_round = clock.now + every_s
            mover.step(clock.now)
            for key in [k for k in ramping if mover.complete(scheduler.steps[k].target)]:
                ramping.discard(key)
                scheduler.finish(key, ok=True)
        if mover.stalled or clock.now - t0 > MAX_RAMP_S:
            break
    # Every class is in: features come back, one at a time, while there is room.
    while not mover.done and not mover.stalled and clock.now - t0 <= MAX_RAMP_S and not stop():
        sim.advance(every_s)
        mover.step(clock.now)


class ClassMover:
    """``flows.warm_up_ramp.TrafficMover`` on the estate: each class's ramp starts when its
    step does (baselines from one scrape then), and every round scrapes each active lane
    and lets ``next_round`` decide in priority order; features come back at the end."""

    def __init__(self, run: Run, policy: RampPolicy) -> None:
        self.run, self.policy = run, policy
        self.known = run.sim.topology.traffic_classes
        self.before = run.sim.estate.class_weights
        self.to_move = [c for c in self.known if self.before[c].get(run.lost, 0.0) > 0]
        self.ramps: dict[str, ClassRamp] = {}
        self.features: list[FeatureCandidate] | None = None  # read once features are off
        self.memory = RampMemory(list(run.targets))
        self.stalled = False

    def activate(self, name: str, now: float) -> bool:
        run = self.run
        if self.features is None:
            self.features = features_to_restore(run.sim)
        if name not in self.to_move:
            return False
        samples = scrape(run.sim, [(name, dc) for dc in [*run.targets, run.lost]])
        cls = self.known[name]
        ramp = ClassRamp.start(name, cls.priority, run.lost, run.targets, self.before[name],
                               cls.load_share)
        for lane in ramp.lanes:  # nobody to protect where the class had no users
            had_users = self.before[name].get(lane.dc, 0.0) > 0
            lane.baseline_error = max(samples[name, lane.dc].error_rate,
                                      0.0 if had_users else samples[name, run.lost].error_rate)
        self.ramps[name] = ramp
        self.memory.started(now)
        return True

    def step(self, now: float) -> None:
        active = list(self.ramps.values())
        samples = scrape(self.run.sim, [(r.name, lane.dc) for r in active for lane in r.lanes])
        for ramp in active:
            for lane in ramp.lanes:
                lane.samples.append(samples[ramp.name, lane.dc])
        all_started = all(c in self.ramps for c in self.to_move)
        decided = next_round(
            active, policy=self.policy, now=now, last_change=self.memory.last_change,
            last_progress=self.memory.last_progress, dc_load=self.dc_load(),
            dc_changes=self.memory.dc_changes,
            features_off=(self.features or []) if all_started else (),
            not_started=[self.known[c].priority for c in self.to_move if c not in self.ramps])
        if decided.stalled is not None:
            self.stalled = True
            return
        for name, moved in decided.moves.items():
            self.run.move(name, self.ramps[name].weights(moved))
        self.memory.record(self.ramps, decided.moves, now, self.dc_load)
        if decided.feature is not None:
            f = decided.feature
            self.run.sim.estate.set_flag(f.service, f.name, True)
            self.features = [x for x in self.features or [] if x != f]
            self.memory.feature_switched_on(now)

    def dc_load(self) -> dict[str, float]:
        """Each target's share of the estate's load now (what its database carries)."""
        weights = {c: (self.ramps[c].weights() if c in self.ramps else w)
                   for c, w in self.before.items()}
        return {dc: dc_load_share(self.run.sim.topology, weights, dc) for dc in self.run.targets}

    def complete(self, name: str) -> bool:
        return name in self.ramps and self.ramps[name].complete

    @property
    def done(self) -> bool:
        return all(self.complete(c) for c in self.to_move) and not self.features


class Oracle:
    """The bound's ramp: every second, each moving class (priority order) at the largest
    fraction whose predicted DB utilisation stays under the limit in every target."""

    def __init__(self, run: Run, limit: float, classes: set[str]) -> None:
        self.run, self.aim, self.stalled = run, limit - 1e-3, False
        self.known = run.sim.topology.traffic_classes
        self.before = run.sim.estate.class_weights
        self.moving = [c for c in self.known if c in classes
                       and self.before[c].get(run.lost, 0.0) > 0]
        self.moved: dict[str, float] = {}

    def activate(self, name: str, now: float) -> bool:
        if name not in self.moving:
            return False
        self.moved[name] = 0.0
        return True

    def fits(self, name: str, fraction: float) -> bool:
        run = self.run
        util = run.sim.predicted_db_utilisation_for(
            name, moved_weights(self.before[name], run.lost, run.targets, fraction))
        return max(util[dc] for dc in run.targets) <= self.aim

    def largest(self, name: str) -> float:
        """The largest fraction that fits, to 1/4096: galloping up from the current one (the
        answer moves little from one second to the next), then halving the bracket."""
        current = self.moved[name]
        if self.fits(name, 1.0):
            return 1.0
        if self.fits(name, current):
            lo, step = current, RESOLUTION
            while lo + step < 1.0 and self.fits(name, lo + step):
                lo, step = lo + step, step * 2
            hi = min(1.0, lo + step)
        else:
            lo, hi = 0.0, current
        while hi - lo > RESOLUTION:
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.fits(name, mid) else (lo, mid)
        return lo

    def step(self, now: float) -> None:
        for name in [c for c in self.moving if c in self.moved and self.moved[c] < 1.0]:
            fraction = self.largest(name)
            if fraction != self.moved[name]:
                self.run.move(name, moved_weights(self.before[name], self.run.lost,
                                                  self.run.targets, fraction))
                self.moved[name] = fraction

    def complete(self, name: str) -> bool:
        return self.moved.get(name, 0.0) >= 1.0

    @property
    def done(self) -> bool:
        return all(self.complete(c) for c in self.moving)


def _healthy_seen(sim: Simulator, name: str, dc: str) -> int:
    """Healthy instances per the health checker, or the service tool if none answers."""
    try:
        return sim.estate.health_view(dc).get(name, 0)
    except Unavailable:
        return sim.estate.state(name, dc).healthy


def judge(run: Run, done: Callable[[], bool]) -> None:
    """After the run, as flows/drill.py: wait until ``done`` (the tiers judged) or JUDGE_S."""
    limit = run.sim.clock.now + JUDGE_S
    while not done() and run.sim.clock.now < limit:
        run.sim.advance(min(SCRAPE_S, limit - run.sim.clock.now))


def summary(run: Run, tiers: Sequence[int]) -> dict:
    """What one run measured: RTO per tier, time to full traffic, peak DB util, breaches."""
    rec = run.recorder
    return {
        "rto_s": {f"tier{t}": rec.rto(t) for t in tiers},
        "time_to_full_s": None if run.full_at is None else run.full_at - (rec.fault_at or 0.0),
        "peak_db_util": round(run.peak_db_util, 4),
        "breach_s": rec.breach_seconds,
    }

