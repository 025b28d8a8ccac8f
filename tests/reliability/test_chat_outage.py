"""Campaign: Slack answering 429, 500 or hanging for a whole run changes nothing but time.

Chat is never on the critical path (docs/architecture.md): the sink talks to Slack on its
own thread, merges updates and falls back to the log. The claim worth a figure is the
end-to-end one: for the same seed, a failover with Slack out the whole run ends with the
same outcome, the same RTO per tier, the same steps and the same final estate as the
failover with a healthy Slack, and costs only bounded added wall time. So every outage run
is paired with a baseline of the same seed, run just before it with the fake Slack
healthy, and compared with it.

The sink is built the way production builds it, from ``REVIVE_SLACK_*``, pointed at the
fake Slack Web API (tests/chat/fake_slack.py), which speaks the wire protocol, so
slack_sdk's own retry handlers and timeouts are part of what is measured. The estate is the
small flow-test estate with its DCs renamed, so nothing here leans on the example's names.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import flows.context
from flows.failover import FailoverParams, failover
from revive.chat.console import LOGGER_NAME
from revive.chat.sink import ChatSink, chat_from_env
from revive.chat.slack_sink import SlackSink
from revive.sim import Simulator
from revive.topology import Topology, parse
from tests.chat.cards import TOKEN
from tests.chat.fake_slack import FakeSlack
from tests.flows.estates import small
from tests.reliability.figures import nothing_or, record, trials

pytestmark = pytest.mark.usefixtures("prefect_harness", "store_url")

LOST, TARGET = "lis", "osl"
"""The estate's DCs, renamed from the flow-test estate's dc1 and dc2."""
CHANNEL = "C0OUTAGE"
POST, UPDATE = "chat.postMessage", "chat.update"
MANY = 10_000
"""More faulty answers than any run asks for: the outage lasts the whole run."""
RETRY_AFTER_S = 1
HANG_S = 10.0
"""How long each answer hangs: the fake's own ceiling, longer than the sink's timeout."""
ADDED_LIMIT_S = 120.0
"""Generous bound on the wall time an outage may add to a run: a hung Slack must cost a
timeout and a bounded flush, never a wait proportional to the run; the figure recorded is
the measured time, this only catches a run that waited on Slack."""
SEEDS = [11, 12, 13]


def renamed_estate(tmp_path: Path) -> tuple[Topology, str]:
    """The small estate (database, cache, two app tiers, a single-DC loner) in DCs named
    ``LOST`` and ``TARGET``, written as YAML the way a user's topology is."""
    text = json.dumps(small(environment="drill"))
    data = json.loads(text.replace("dc1", LOST).replace("dc2", TARGET))
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "topology.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return parse(data), str(path)


def final_estate(sim: Simulator, topology: Topology) -> dict[str, Any]:
    """What the failover left behind in the simulator, without the ids that differ per run
    (action ids name the run): traffic per class and DC, features, retry policy, images,
    and every service's instances, health, version and cached IP target per DC; plus the
    ordered log of applied changes with their virtual times."""
    estate = sim.estate
    services = {
        f"{svc.name}@{dc}": (view.exists, view.instances, view.healthy, view.version,
                             view.ip_target)
        for svc in topology.services for dc in topology.dc_names
        for view in [estate.state(svc.name, dc)]
    }
    return {
        "class_weights": estate.class_weights,
        "weights": estate.weights,
        "flags": sorted(estate.flags.items()),
        "retry_policy": repr(estate.retry_policy),
        "artifacts": {dc: sorted(estate.artifacts(dc)) for dc in topology.dc_names},
        "services": services,
        "log": [(e.time, e.kind, e.target, e.detail) for e in estate.log],
    }


def outcome_of(result: dict[str, Any]) -> dict[str, Any]:
    """The parts of the failover's summary that must not depend on Slack."""
    return {key: result[key] for key in ("outcome", "lost_dc", "target_dcs", "rto_s",
                                         "deployed", "provisioned", "restarted", "failed",
                                         "final_weights")} | {
        "graph": [(row["key"], row["start_s"], row["end_s"]) for row in result["graph"]]}


@dataclass
class Run:
    """One failover and what it showed."""

    took_s: float
    outcome: dict[str, Any]
    estate: dict[str, Any]
    run_id: str
    sink: SlackSink
    final_card: str
    """Where the final card went: "slack", "log" or "" (lost)."""


def rate_limited(fake: FakeSlack) -> None:
    for method in (POST, UPDATE):
        fake.rate_limit(method, n=MANY, retry_after=RETRY_AFTER_S)


def erroring(fake: FakeSlack) -> None:
    for method in (POST, UPDATE):
        fake.server_error(method, n=MANY, status=500)


def hanging(fake: FakeSlack) -> None:
    for method in (POST, UPDATE):
        fake.hang(method, HANG_S)  # every call, for the whole run


@dataclass(frozen=True)
class Mode:
    fault: str
    """The row's fault column."""
    apply: Callable[[FakeSlack], None]
    status: int | None
    """The HTTP status every faulty answer must have had (None: no answer came in time)."""


MODES = {
    "429": Mode(f"Slack answers 429 (Retry-After {RETRY_AFTER_S} s) for a whole failover",
                rate_limited, 429),
    "500": Mode("Slack answers 500 for a whole failover", erroring, 500),
    "hang": Mode(f"Slack hangs ({HANG_S:.0f} s per call) for a whole failover", hanging, None),
}


def run_once(tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch,
             caplog: pytest.LogCaptureFixture, seed: int, outage: Mode | None) -> Run:
    """A failover of ``LOST`` into ``TARGET`` on a fresh simulator of ``seed``, with Slack
    configured through the environment and ``outage`` applied to it before the run starts
    (healthy when None). Wall time is measured from the flow call to its return."""
    topology, path = renamed_estate(tmp_path)
    sim, url = serve(topology, seed=seed)
    sim.estate.power_loss(LOST)
    built: list[ChatSink] = []

    def spy() -> ChatSink:
        sink = chat_from_env()
        built.append(sink)
        return sink

    caplog.clear()
    with FakeSlack() as fake:
        monkeypatch.setenv("REVIVE_SLACK_BOT_TOKEN", TOKEN)
        monkeypatch.setenv("REVIVE_SLACK_CHANNEL", CHANNEL)
        monkeypatch.setenv("REVIVE_SLACK_API_URL", fake.url)
        monkeypatch.setattr(flows.context, "chat_from_env", spy)
        if outage is not None:
            outage.apply(fake)
        began = time.monotonic()
        result = asyncio.run(failover(FailoverParams(
            topology=path, target_dc=TARGET, lost_dc=LOST, sim_url=url)))
        took = time.monotonic() - began
        faulty = [c for m in (POST, UPDATE) for c in fake.requests(m)]
        if outage is not None:  # the outage really was what Slack did, every time
            assert faulty, "the run never called Slack: nothing was measured"
            assert all(c.status == outage.status or (outage.status is None and c.status != 200)
                       for c in faulty if c.status is not None), \
                [(c.method, c.status) for c in faulty]
        posted = [m for m in fake.messages.values() if f"[run {result['run_id']}]" in m["text"]]
    (sink,) = built
    assert isinstance(sink, SlackSink)  # Slack was configured: the outage path is exercised
    final = f"run `{result['run_id']}`"
    logged = [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    if any(not m["text"].startswith("[RUNNING]") for m in posted):
        where = "slack"
    elif any(final in line and "Outcome:*" in line for line in logged):
        where = "log"
    else:
        where = ""
    return Run(took, outcome_of(result), final_estate(sim, topology), result["run_id"], sink,
               where)


_WARM: list[bool] = []


def warm_up(tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch,
            caplog: pytest.LogCaptureFixture) -> None:
    """One unmeasured failover per session: the first flow run in a process pays for
    imports and Prefect's first registrations, which no Slack outage should be charged or
    credited with."""
    if not _WARM:
        run_once(tmp_path / "warm-up", serve, monkeypatch, caplog, SEEDS[0], None)
        _WARM.append(True)


def baseline(tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch,
             caplog: pytest.LogCaptureFixture, seed: int) -> Run:
    """The healthy-Slack run of ``seed``, run right before the outage run it is compared
    with, so both see the same load on a shared machine (the added time is paired)."""
    run = run_once(tmp_path / f"baseline-{seed}", serve, monkeypatch, caplog, seed, None)
    assert run.outcome["outcome"] == "recovered", run.outcome
    assert run.sink.failures == 0 and run.sink.fallbacks == 0  # Slack really was healthy
    assert run.final_card == "slack"
    return run


def differences(run: Run, reference: Run) -> list[str]:
    """What differs between two runs of the same seed, by name."""
    found = [f"outcome.{k}" for k in run.outcome if run.outcome[k] != reference.outcome[k]]
    found += [f"estate.{k}" for k in run.estate if run.estate[k] != reference.estate[k]]
    return found


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
def test_a_slack_outage_for_a_whole_run_changes_nothing_but_time(
        tmp_path: Path, serve: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, record_test: str, mode: Mode) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    seeds = SEEDS[:trials(1, len(SEEDS))]
    differed: list[tuple[int, list[str]]] = []
    cards_lost = 0
    added: list[float] = []
    healthy: list[float] = []
    warm_up(tmp_path, serve, monkeypatch, caplog)
    for seed in seeds:
        reference = baseline(tmp_path, serve, monkeypatch, caplog, seed)
        run = run_once(tmp_path / f"{mode.status}-{seed}", serve, monkeypatch, caplog, seed,
                       mode)
        assert run.sink.sent == 0 and run.sink.failures >= 1  # Slack took nothing
        if diff := differences(run, reference):
            differed.append((seed, diff))
        cards_lost += run.final_card == ""
        added.append(run.took_s - reference.took_s)
        healthy.append(reference.took_s)
    held = sum(1 for seed in seeds if all(s != seed for s, _ in differed))
    record("chat", mode.fault, trials=len(seeds),
           held=f"{held}/{len(seeds)} failovers ended as with a healthy Slack (outcome, RTO "
                f"per tier, steps, final estate); final card in the log in "
                f"{len(seeds) - cards_lost}/{len(seeds)}",
           lost="; ".join(p for p in (nothing_or(len(differed), "runs that ended differently"),
                                      nothing_or(cards_lost, "final cards lost"))
                          if p != "nothing") or "nothing",
           test=record_test,
           added=f"{statistics.median(added):+.1f} s per run (median; the healthy-Slack run "
                 f"took {statistics.median(healthy):.1f} s), max {max(added):+.1f} s")
    assert differed == [], differed
    assert cards_lost == 0
    assert max(added) < ADDED_LIMIT_S, added
