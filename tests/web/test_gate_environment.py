"""Whether an approval gate applies is the configured estate's decision, never a run's.

Every runbook's gate is ``flows.approval.approval_gate``, whoever started the run (Slack, the
CLI, a deployment run from the Prefect UI or API), so the rule is tested there: a run whose
``topology`` parameter names a staging copy of production still waits for an approver when
the server's or worker's own topology (``REVIVE_TOPOLOGY``, else ``runbooks/topology.yaml``
in its working directory) is production. The run context is a stand-in with a real store;
the wait for a person is replaced by a recorder that rejects.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import Engine

import flows.approval
from flows.approval import ApprovalRefused, approval_gate, gate_environment, rehearsal
from revive.runs.origin import Origin
from revive.store import db, service
from revive.store.models import GateDecision, TriggerSource
from revive.topology import Environment
from tests.web.slack import TOPOLOGY


def _topology(tmp_path: Path, environment: str, name: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = Path(TOPOLOGY).read_text()
    path.write_text(text.replace("environment: production", f"environment: {environment}", 1))
    return path


@dataclass
class FakeRun:
    run_id: str
    engine: Engine
    begun: list[tuple[str, Any]] = field(default_factory=list)

    def begin(self, key: str, action: str, detail: Any = None) -> None:
        self.begun.append((key, detail))


@dataclass
class FakeContext:
    """What ``approval_gate`` uses of a ``RunContext``."""

    run: FakeRun
    environment: Environment
    simulated: bool = False
    runbook: str = "failover"
    target_dc: str = "dc2"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tools = SimpleNamespace(simulated=self.simulated)
        self.params = SimpleNamespace(topology="staging")
        self.origin = Origin(trigger=TriggerSource.SLACK, by="mallory (UOPERATOR)")

    def is_done(self, key: str) -> bool:
        return False

    def highlight(self, line: str) -> None:
        self.notes.append(line)

    async def settle(self, key: str, **kwargs: Any) -> None:
        pass

    async def push(self, **kwargs: Any) -> None:
        pass


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    url = f"sqlite:///{tmp_path / 'revive.db'}"
    db.upgrade(url)
    eng = db.get_engine(url)
    yield eng
    eng.dispose()


@pytest.fixture
def waited(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The environments a gate waited for a person in (each wait is rejected)."""
    calls: list[str] = []

    async def wait_for_person(ctx: Any, gate: str, question: str, timeout_s: float,
                              environment: str) -> GateDecision:
        calls.append(environment)
        return GateDecision(run_id=ctx.run.run_id, gate=gate, decision="rejected",
                            decided_by="test", source="system", reason="test")

    monkeypatch.setattr(flows.approval, "_wait_for_person", wait_for_person)
    return calls


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from a directory of the test's own, with no REVIVE_TOPOLOGY of the shell's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REVIVE_TOPOLOGY", raising=False)


def _context(engine: Engine, environment: Environment, *, simulated: bool = False
             ) -> FakeContext:
    with db.session(engine) as s:
        run = service.create_run(s, runbook="failover", parameters={},
                                 trigger=TriggerSource.SLACK, triggered_by="mallory",
                                 target_dc="dc1")
        run_id = run.id
    return FakeContext(FakeRun(run_id, engine), environment, simulated)


def test_a_staging_copy_still_waits_for_an_approver_when_the_server_serves_production(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, waited: list[str]
) -> None:
    production = _topology(tmp_path, "production", "served.yaml")
    monkeypatch.setenv("REVIVE_TOPOLOGY", str(production))
    ctx = _context(engine, Environment.staging)  # the run's own topology: a staging copy
    with pytest.raises(ApprovalRefused):
        asyncio.run(approval_gate(ctx, "traffic", "move traffic?", 60))  # type: ignore[arg-type]
    assert waited == ["production"]  # roles are looked up in production too
    with db.session(engine) as s:
        assert service.get_gate_decision(s, run_id=ctx.run.run_id, gate="traffic") is None


def test_without_revive_topology_the_working_directorys_topology_decides(
    engine: Engine, tmp_path: Path, waited: list[str]
) -> None:
    _topology(tmp_path, "production", "runbooks/topology.yaml")  # a worker's REVIVE_HOME
    ctx = _context(engine, Environment.staging)
    with pytest.raises(ApprovalRefused):
        asyncio.run(approval_gate(ctx, "traffic", "move traffic?", 60))  # type: ignore[arg-type]
    assert waited == ["production"]


def test_a_staging_server_auto_approves_on_the_record(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, waited: list[str]
) -> None:
    monkeypatch.setenv("REVIVE_TOPOLOGY", str(_topology(tmp_path, "staging", "served.yaml")))
    ctx = _context(engine, Environment.staging)
    asyncio.run(approval_gate(ctx, "traffic", "move traffic?", 60))  # type: ignore[arg-type]
    assert waited == []
    with db.session(engine) as s:
        decision = service.get_gate_decision(s, run_id=ctx.run.run_id, gate="traffic")
        assert decision is not None
        assert (decision.decision, decision.reason) == ("approved", "auto-approved (staging)")


@pytest.mark.parametrize(("configured", "run", "simulated", "expected"), [
    ("production", Environment.staging, False, Environment.production),
    ("production", Environment.drill, False, Environment.production),
    ("staging", Environment.production, False, Environment.production),
    ("staging", Environment.drill, False, Environment.staging),
    ("missing", Environment.staging, False, Environment.production),
    ("broken", Environment.staging, False, Environment.production),
    ("production", Environment.drill, True, Environment.drill),
    (None, Environment.staging, False, Environment.staging),
], ids=["staging-copy", "drill-copy", "run-stricter", "both-relaxed", "missing-file",
        "broken-file", "all-simulator", "nothing-configured"])
def test_the_rule(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  configured: str | None, run: Environment, simulated: bool,
                  expected: Environment) -> None:
    if configured == "missing":
        monkeypatch.setenv("REVIVE_TOPOLOGY", str(tmp_path / "nope.yaml"))
    elif configured == "broken":
        (tmp_path / "broken.yaml").write_text("environment: [broken")
        monkeypatch.setenv("REVIVE_TOPOLOGY", str(tmp_path / "broken.yaml"))
    elif configured is not None:
        monkeypatch.setenv("REVIVE_TOPOLOGY", str(_topology(tmp_path, configured, "s.yaml")))
    ctx = _context(engine, run, simulated=simulated)
    assert gate_environment(ctx) == expected  # type: ignore[arg-type]


def test_a_rehearsal_set_up_by_revives_own_code_follows_its_own_topology(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REVIVE_TOPOLOGY", str(_topology(tmp_path, "production", "s.yaml")))
    ctx = _context(engine, Environment.drill)
    with rehearsal():
        assert gate_environment(ctx) == Environment.drill  # type: ignore[arg-type]
    assert gate_environment(ctx) == Environment.production  # type: ignore[arg-type]
