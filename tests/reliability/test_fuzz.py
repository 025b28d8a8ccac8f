"""Fuzz campaign over every input surface: topology YAML, CLI arguments, ``/revive`` text and
interaction payloads (hypothesis, fixed seed).

The goal, from the issue: whatever a person or a file sends, revive answers with exit 2 (or
a 4xx) and a clear, located message, or with a real answer; never a traceback, a 5xx, or a
half-done action. Unlike the property tests next to each surface (tests/cli/
test_invalid_input.py, tests/cli/test_hostile_topology.py, tests/web/test_hostile_http.py),
which assert one known-bad input class each, this campaign *counts* cases per surface for
the reliability table: each ``@given`` body tallies what happened (exit codes, located
messages, tracebacks, actions that should not have happened) without asserting, then the
test records one row from the tally and only then asserts the goal, so the table shows what
the run measured even when it fails.

Estates here use DC names of their own (``ams``, ``fra``), never the example's.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import logging
import math
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlmodel import select
from typer.testing import CliRunner

from revive.chat.blocks import APPROVE_ACTION, REJECT_ACTION
from revive.cli import app as cli_app
from revive.store import db, service
from revive.store.models import GateDecision, RunOutcome, RunRecord, TriggerSource, utcnow
from revive.web.app import create_app
from revive.web.parse import CommandInputError, parse
from revive.web.replies import Job
from revive.web.settings import WebSettings
from tests.reliability.figures import nothing_or, record, trials
from tests.web.slack import SLACK_SECRET, FixedClock

runner = CliRunner()

#: Where a fuzzed run would find its simulator: the discard port, refused at once, so a run
#: that got through by mistake fails loudly instead of acting on anything.
NOWHERE = "http://127.0.0.1:9"
DCS = ("ams", "fra")

ESTATE: dict[str, Any] = {
    "environment": "drill",
    "datacenters": [{"name": "ams", "spare_instances": 50}, {"name": "fra", "spare_instances": 50}],
    "ops_tools": {
        "vault": {"kind": "secret_store", "adapter": "sim",
                  "replicas": {"ams": "https://vault.ams.test", "fra": "https://vault.fra.test"}},
        "health": {"kind": "health_checker", "adapter": "sim",
                   "replicas": {"ams": "https://hc.ams.test", "fra": "https://hc.fra.test"}},
    },
    "services": [
        {"name": "ledger-db", "role": "database", "tier": 0, "group": "storage",
         "redundancy": "active-active", "instances": {"ams": 3, "fra": 3},
         "capacity_per_instance": 500, "peak_load": 1200, "restart_seconds": 90,
         "boot_requires": ["vault"]},
        {"name": "sessions", "role": "cache", "tier": 1, "group": "storage",
         "redundancy": "active-active", "instances": {"ams": 2, "fra": 2},
         "capacity_per_instance": 800, "peak_load": 1000, "restart_seconds": 30},
        {"name": "checkout", "tier": 0, "group": "web", "redundancy": "active-active",
         "traffic_class": "shop", "instances": {"ams": 4, "fra": 4},
         "capacity_per_instance": 100, "peak_load": 300, "restart_seconds": 60,
         "depends_on": ["ledger-db", {"name": "sessions", "soft": True}],
         "features": [{"name": "reviews", "priority": 2, "cost": 0.2}]},
        {"name": "mailer", "tier": 2, "group": "jobs", "redundancy": "active-standby",
         "instances": {"ams": 1, "fra": 1}, "capacity_per_instance": 50, "peak_load": 40,
         "restart_seconds": 20, "depends_on": ["checkout"]},
    ],
}
ESTATE_TEXT = yaml.safe_dump(ESTATE, sort_keys=False)

SETTINGS = settings(
    deadline=None,  # a case's time is the machine's load, not a property of the input
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def fuzz(cases: int) -> settings:
    """The campaign's settings with ``cases`` examples: a fixed seed (derandomize), so one
    commit always runs the same cases and a failure reproduces."""
    return settings(SETTINGS, max_examples=cases)


@dataclass
class Tally:
    """What one surface's cases did, counted; ``problems`` keeps the first offending inputs."""

    cases: int = 0
    invalid: int = 0
    located: int = 0
    tracebacks: int = 0
    partial: int = 0
    answered: int = 0
    problems: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def problem(self, what: str, case: object) -> None:
        """Keep the first three cases of each kind of problem (the kind: its first word)."""
        kind = what.split()[0]
        if sum(p.startswith(kind) for p in self.problems) < 3:
            self.problems.append(f"{what}: {case!r}"[:1500])


def _held(tally: Tally, what: str) -> str:
    return (f"{tally.cases} cases: {what} for {tally.located}/{tally.invalid} invalid, "
            f"{tally.tracebacks} tracebacks")


# --- shared checks --------------------------------------------------------------------------


def _traceback_in(result: Any) -> bool:
    """A CLI result that escaped as an exception, or printed a Python traceback."""
    escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
    return escaped or "Traceback (most recent call last)" in result.output


def _traceback_tail(result: Any) -> str:
    """Where the traceback came from: the output from its first line, shortened."""
    output = result.output
    at = output.find("Traceback (most recent call last)")
    return output[at:][-1200:] if at >= 0 else output[-600:]


def _located_lines(stderr: str, path: Path) -> bool:
    """Every line of ``stderr`` names where the problem is: ``FILE:LINE key: message`` (or
    ``FILE key: message`` for the file as a whole) for the topology, ``--option:`` or
    ``key:`` for a parameter."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if not lines:
        return False
    file_line = re.compile(re.escape(str(path)) + r"(:\d+)? \S")
    option = re.compile(r"^--?[A-Za-z][\w-]*: \S")
    return all(file_line.match(line) or option.match(line) for line in lines)


# --- 1. topology YAML -----------------------------------------------------------------------

HOSTILE_VALUES = st.sampled_from([
    None, True, False, 0, -1, 1.5, 2**63, 10**40, math.inf, -math.inf, math.nan, -0.0, 1e308,
    5e-324, "", " ", "x" * 300, "\u202eedoc", "a\u200bb", "\x1b[31mred", "tab\there",
    "line\nbreak", "[/]", "{{ 7*7 }}", "<script>", "ams", "fra", "dc1", "../../etc/passwd",
    "caf\u00e9", "\U0001f525", [], {}, [1, [2, [3]]], {"a": {"b": None}}, ["ams", "ams"],
    {"ams": -5}, {"nowhere": 1}, "!!int abc", "!!float x", "!!bool maybe",
    "!!timestamp 2020-13-45", "*nope", "&a x",
]) | st.text(max_size=12) | st.integers() | st.floats()


def _untag(text: str) -> str:
    """``safe_dump`` quotes a string such as ``"!!int abc"``; unquote those, so the file has
    the explicit tag (or alias) itself."""
    return re.sub(r"""(['"])((?:!!|\*|&)[a-z]+ ?[\w.-]*)\1""", r"\2", text)


def _paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key path into ``node``, the root excluded, down to 8 levels (the estate's own
    depth is 5; deeper is what an earlier ``nest`` mutation built, not worth walking)."""
    if len(prefix) >= 8:
        return
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*prefix, key)
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield (*prefix, i)
            yield from _paths(value, (*prefix, i))


def _get(node: Any, path: tuple) -> Any:
    for step in path:
        node = node[step]
    return node


def _nest(depth: int, leaf: Any, as_list: bool) -> Any:
    for _ in range(depth):
        leaf = [leaf] if as_list else {"k": leaf}
    return leaf


@st.composite
def mutated_estates(draw: st.DrawFn) -> str:
    """A valid estate with one to three mistakes: a value replaced (wrong type, huge, inf,
    nan, bad name, bidi/control characters), a key dropped or renamed, a subtree shared
    (YAML anchors and aliases), deep nesting, a dependency cycle or a duplicate."""
    data = copy.deepcopy(ESTATE)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(data))
        path = draw(st.sampled_from(paths))
        parent, key = _get(data, path[:-1]), path[-1]
        kind = draw(st.sampled_from(["value", "value", "value", "drop", "rename", "alias",
                                     "nest", "cycle", "duplicate"]))
        if kind == "value":
            parent[key] = draw(HOSTILE_VALUES)
        elif kind == "drop":
            if isinstance(parent, dict):
                del parent[key]
            else:
                parent.pop(key)
        elif kind == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["", "x", "teir", "name ", "Name", "\u00e9",
                                         "services"]))] = parent.pop(key)
        elif kind == "alias":
            # the same object twice: safe_dump writes an anchor and an alias to it
            other = draw(st.sampled_from(paths))
            parent[key] = _get(data, other) if other[:len(path)] != path else None
        elif kind == "nest":
            parent[key] = _nest(draw(st.integers(1, 90)), parent[key], draw(st.booleans()))
        elif kind == "cycle" and isinstance(data.get("services"), list):
            services = [s for s in data["services"] if isinstance(s, dict)]
            if services:
                first = services[0]
                deps = first.get("depends_on")
                first["depends_on"] = [*(deps if isinstance(deps, list) else []), "mailer"]
        elif kind == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    try:
        return _untag(yaml.safe_dump(data, sort_keys=False, allow_unicode=draw(st.booleans())))
    except yaml.YAMLError:
        return ESTATE_TEXT + "bad: [\n"


SYNTAX = ["\t", ":", ": ", "- ", "&a ", "*a", "*nope", "!!python/object:os.system ", "!!binary ",
          "{", "}", "[", "]", '"', "'", "\n", "  ", "|", ">", "%YAML 1.1\n", "---\n", "...\n",
          "@", "`", "#", "\ufeff", "\u202e", "\x00", "\x07", "? ", "<<: *a\n", "\\u0000",
          "9" * 5000, "!!int ", "!!float .nan ", "&a [*a]"]


@st.composite
def edited_text(draw: st.DrawFn) -> str:
    """The valid estate's text with YAML syntax inserted or deleted at random places."""
    text = ESTATE_TEXT
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        if draw(st.booleans()):
            text = text[:at] + draw(st.sampled_from(SYNTAX) | st.text(max_size=3)) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(1, 40)):]
    return text


RAW_TEXT = st.one_of(
    st.text(max_size=200),
    st.sampled_from(["", "---", "null", "[]", "5", "services: 5", "{a: *b}",
                     "a: &x [*x]", "- - - -", "environment: drill\n" * 3,
                     "!!python/object/apply:os.system ['true']"]),
    st.lists(st.sampled_from(SYNTAX), max_size=30).map("".join),
)
TOPOLOGY_TEXT = st.one_of(mutated_estates(), mutated_estates(), edited_text(), RAW_TEXT)
TOPOLOGY_COMMANDS = st.sampled_from([
    ["check"], ["check", "--json"], ["plan", "restart", "--dc", "ams"],
    ["plan", "restart", "--dc", "fra", "--json"], ["plan", "provision", "--dc", "fra"],
    ["plan", "provision", "--lost-dc", "ams"], ["plan", "provision", "--dc", "ams", "--all"],
])


def test_fuzzed_topology_files_are_exit_2_with_a_located_message_or_an_answer(
    tmp_path: Path, record_test: str
) -> None:
    """``check`` and ``plan`` on near-valid and raw YAML: exit 0, 1 or 2; on 2 every line
    on stderr is located (``file:line key: message``) and nothing is printed on stdout as
    if half a plan had been made."""
    tally = Tally()
    path = tmp_path / "estate.yaml"

    @fuzz(trials(150, 1500))
    @given(text=TOPOLOGY_TEXT, command=TOPOLOGY_COMMANDS)
    def case(text: str, command: list[str]) -> None:
        tally.cases += 1
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        result = runner.invoke(cli_app, [*command, "--topology", str(path)])
        tally.count(str(result.exit_code))
        if _traceback_in(result):
            tally.tracebacks += 1
            tally.problem(f"traceback {result.exception!r}",
                          (command, text[:400], _traceback_tail(result)))
        if result.exit_code not in (0, 1, 2):
            tally.problem(f"exit {result.exit_code}", (command, text[:400], result.output[-400:]))
        if result.exit_code == 2:
            tally.invalid += 1
            if _located_lines(result.stderr, path):
                tally.located += 1
            else:
                tally.problem("not located", (command, text[:400], result.stderr[-400:]))
            if result.stdout.strip():
                tally.partial += 1
                tally.problem("exit 2 after printing an answer", (command, result.stdout[:300]))

    case()
    record("input", "fuzzed topology YAML (check, plan)", trials=tally.cases,
           held=_held(tally, "exit 2 with a located message"),
           lost=nothing_or(tally.partial, "partial answers"), test=record_test)
    assert tally.problems == [], tally.problems
    assert tally.invalid > tally.cases // 3, tally.outcomes  # the fuzz did reach the errors
    assert tally.cases - tally.invalid > 0, tally.outcomes  # and some valid files


# --- 2. CLI arguments -----------------------------------------------------------------------

RUN_ID = "0f0f0f0f0f0f4a4a8b8b0c0c0d0d0e0e"


@pytest.fixture
def template_store(tmp_path: Path) -> Path:
    """A migrated store holding one running failover (something to abort or approve by
    mistake); each fuzz case gets a copy (migrating per case would cost seconds)."""
    path = tmp_path / "template.db"
    engine = db.get_engine(f"sqlite:///{path}")
    try:
        db.upgrade(engine)
        with db.session(engine) as s:
            s.add(RunRecord(id=RUN_ID, runbook="failover", trigger=TriggerSource.CLI,
                            triggered_by="someone-else", target_dc="ams",
                            prefect_flow_run_id="flow-run-fuzz", heartbeat_at=utcnow()))
            s.commit()
    finally:
        engine.dispose()
    return path


@dataclass(frozen=True)
class StoreState:
    runs: int
    gates: int
    seeded: tuple[str, bool]


def _store_state(url: str, seeded_id: str = RUN_ID) -> StoreState:
    engine = db.get_engine(url)
    try:
        with db.session(engine) as s:
            runs = list(s.exec(select(RunRecord)))
            gates = len(list(s.exec(select(GateDecision))))
            seeded = next((r for r in runs if r.id == seeded_id), None)
            state = ((str(seeded.outcome), seeded.abort_requested_at is not None)
                     if seeded else ("", False))
            return StoreState(runs=len(runs), gates=gates, seeded=state)
    finally:
        engine.dispose()


WORD = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)
VALUE = st.one_of(
    st.sampled_from(["ams", "fra", "dc1", "", " ", "null", "true", "-1", "0", "1", "65",
                     "1e999", "NaN", "Infinity", "[]", "{}", '{"a": 1}', '["ams"]',
                     "ams,fra", "ams,ams", ",,", "x" * 200, "\u202e", "\x00", "[/]",
                     "../../etc/passwd", "/dev/null", "http://127.0.0.1:9", RUN_ID[:12]]),
    WORD, st.integers().map(str), st.floats().map(str),
)
KEYS = st.sampled_from([
    "target_dc", "lost_dc", "target_dcs", "share", "max_parallel", "groups", "services",
    "version", "canary", "batch_size", "run_from_dc", "sim_url", "topology", "resume",
    "policy", "retry_policy", "scrape_interval_s", "max_ramp_s", "triggered_by", "trigger",
    "dry_run", "approval_timeout_s", "gate_s", "source_dc", "target-dc", " target_dc",
]) | WORD
ASSIGNMENT = st.one_of(st.tuples(KEYS, VALUE).map(lambda kv: f"{kv[0]}={kv[1]}"), WORD)
RUNBOOKS = st.sampled_from([
    "failover", "provision", "restart", "restart_service_groups", "ramp", "warm_up_ramp",
    "patch", "deploy_patch", "check", "readiness_check", "drill", "",
]) | WORD


@st.composite
def run_argv(draw: st.DrawFn, topology: str) -> list[str]:
    """``run RUNBOOK key=value ...``: with ``--dry-run``, or invalid by construction (an
    unknown parameter), never a real run."""
    argv = ["run", draw(RUNBOOKS)]
    pairs = draw(st.lists(ASSIGNMENT, max_size=5))
    if draw(st.booleans()):
        pairs.insert(0, f"topology={topology}")
    dry = draw(st.booleans())
    if not dry:  # an unknown parameter after the others: refused before anything starts
        pairs.append("no_such_parameter=1")
    argv += pairs
    argv += draw(st.lists(st.sampled_from(["--json", "--resume", RUN_ID, "--resume=" + RUN_ID,
                                           "--dry", "-x", "--", "--dry-run=1"]), max_size=2))
    if dry:
        argv.insert(draw(st.integers(2, len(argv))), "--dry-run")
    return argv


@st.composite
def other_argv(draw: st.DrawFn) -> list[str]:
    """``status``, ``abort``, ``approve`` and ``plan`` with random options and values."""
    verb = draw(st.sampled_from(["status", "abort", "approve", "plan"]))
    ids = st.sampled_from([RUN_ID, RUN_ID[:12], RUN_ID[:1], RUN_ID.upper(), "", "%", "_",
                           "' OR 1=1 --"]) | WORD
    if verb == "status":
        argv = ["status", *draw(st.lists(st.sampled_from(
            ["--json", "--limit", "0", "501", "-1", "abc", "--topology", "/nonexistent"]) | WORD,
            max_size=4))]
    elif verb == "abort":
        argv = ["abort", *draw(st.lists(ids, max_size=2))]
    elif verb == "approve":
        argv = ["approve", *draw(st.lists(ids, max_size=2)),
                *draw(st.lists(st.sampled_from(["--reject", "--reason", "because"]) | WORD,
                               max_size=3))]
    else:
        argv = ["plan", draw(st.sampled_from(["restart", "provision", "failover", ""]) | WORD)]
        options = st.sampled_from(["--dc", "--lost-dc", "--groups", "--max-parallel", "--share",
                                   "--all", "--json", "--topology"])
        for _ in range(draw(st.integers(0, 4))):
            argv.append(draw(options))
            if draw(st.booleans()):
                argv.append(draw(VALUE))
    return argv


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in values.items():
            patch.setenv(key, value)
        for key in ("REVIVE_ROLES", "REVIVE_SLACK_BOT_TOKEN", "REVIVE_SLACK_WEBHOOK_URL"):
            patch.delenv(key, raising=False)
        yield


def _rebind_closed_log_streams() -> None:
    """Point log handlers whose stream was closed at this test's own ``sys.stderr``.

    CliRunner swaps ``sys.stderr`` for each invocation and closes it afterwards; ``revive
    run`` configures Prefect's logging, whose console handler keeps the stream of that
    invocation, so the next command in this process would log into a closed file and print
    "--- Logging error ---" with a traceback. A real process runs one command and never
    sees this, so the campaign rebinds such handlers after each case rather than count it."""
    loggers = [logging.getLogger(), *(logger for logger in logging.root.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and getattr(stream, "closed", False):
                handler.stream = sys.stderr  # not setStream: it flushes the closed one
                console = getattr(handler, "console", None)  # Prefect's handler prints via Rich
                if console is not None:
                    console.file = sys.stderr


@pytest.mark.usefixtures("prefect_harness")
def test_fuzzed_cli_arguments_are_exit_2_or_an_answer_and_record_nothing_otherwise(
    tmp_path: Path, template_store: Path, record_test: str
) -> None:
    """``run`` (dry or invalid), ``status``, ``abort``, ``approve`` and ``plan`` with random
    argv: exit 0-3, no traceback, and unless the exit is 0 the store is as it was: no run
    recorded, no abort requested, no gate decided."""
    tally = Tally()
    topology = tmp_path / "estate.yaml"
    topology.write_text(ESTATE_TEXT)
    before = _store_state(f"sqlite:///{template_store}")

    @fuzz(trials(100, 600))
    @given(argv=st.one_of(run_argv(str(topology)), other_argv(), other_argv(),
                          st.lists(WORD, max_size=4)))
    def case(argv: list[str]) -> None:
        tally.cases += 1
        with tempfile.TemporaryDirectory() as tmp:
            store = Path(tmp) / "revive.db"
            shutil.copy(template_store, store)
            url = f"sqlite:///{store}"
            with _environment(REVIVE_DATABASE_URL=url, REVIVE_SIM_URL=NOWHERE,
                              REVIVE_TOPOLOGY=str(topology)):
                result = runner.invoke(cli_app, argv)
            _rebind_closed_log_streams()
            after = _store_state(url)
        tally.count(f"{(argv or ['(none)'])[0][:12]} exit {result.exit_code}")
        if _traceback_in(result):
            tally.tracebacks += 1
            tally.problem(f"traceback {result.exception!r}", (argv, _traceback_tail(result)))
        if result.exit_code not in (0, 1, 2, 3):
            tally.problem(f"exit {result.exit_code}", (argv, result.output[-400:]))
        if result.exit_code == 2:
            tally.invalid += 1
            if result.stderr.strip() or result.stdout.strip():  # no argv at all: the help
                tally.located += 1
            else:
                tally.problem("exit 2 without a message", (argv, result.output[-400:]))
        if result.exit_code != 0 and after != before:
            tally.partial += 1
            tally.problem(f"exit {result.exit_code} yet the store changed: {after}", argv)

    case()
    record("input", "fuzzed CLI arguments (run --dry-run, status, abort, approve, plan)",
           trials=tally.cases, held=_held(tally, "exit 2 with a message"),
           lost=nothing_or(tally.partial, "partial actions"), test=record_test)
    assert tally.problems == [], (tally.problems, tally.outcomes)
    assert tally.invalid > 0 and any(k.endswith(" 0") for k in tally.outcomes), tally.outcomes


# --- 3 and 4. Slack: slash-command text and interaction payloads ----------------------------

NOW = 1_700_000_000
OPERATOR, APPROVER, VIEWER = "UFUZZOP", "UFUZZAPPR", "UFUZZVIEW"


class SlackUnderTest:
    """The real ASGI app with a recording ``start`` and ``resume``: what it would run or
    resume is counted, never done."""

    def __init__(self, topology: Path, store: str) -> None:
        self.started: list[Job] = []
        self.resumed: list[tuple[str, dict[str, Any]]] = []
        self.store = store
        settings_ = WebSettings(
            slack_signing_secret=SecretStr(SLACK_SECRET), topology=str(topology),
            roles={"*": {OPERATOR: "operator", APPROVER: "approver", "*": "viewer"}})
        self.app = create_app(
            settings_, clock=FixedClock(NOW), start=self.started.append,
            groups_of=lambda user: [],
            http_client=httpx.Client(transport=httpx.MockTransport(
                lambda request: httpx.Response(200))),
            resume=lambda run, answer: self.resumed.append((run, answer)))

    def post(self, path: str, body: str | bytes) -> httpx.Response:
        raw = body if isinstance(body, bytes) else body.encode()
        digest = hmac.new(SLACK_SECRET.encode(), b"v0:%d:" % NOW + raw, hashlib.sha256)
        headers = {"X-Slack-Request-Timestamp": str(NOW), "X-Slack-Signature":
                   "v0=" + digest.hexdigest(),  # over the bytes: a body need not be UTF-8
                   "Content-Type": "application/x-www-form-urlencoded"}

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://revive") as c:
                return await c.post(path, content=body, headers=headers)

        return asyncio.run(go())

    def close(self) -> None:
        self.app.state.engine.dispose()


@pytest.fixture
def slack_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackUnderTest]:
    topology = tmp_path / "estate.yaml"
    topology.write_text(ESTATE_TEXT)
    url = f"sqlite:///{tmp_path / 'revive.db'}"
    monkeypatch.setenv("REVIVE_DATABASE_URL", url)
    monkeypatch.setenv("REVIVE_SIM_URL", NOWHERE)
    app = SlackUnderTest(topology, url)
    yield app
    app.close()


def _runs_and_gates(url: str) -> tuple[int, int]:
    state = _store_state(url)
    return state.runs, state.gates


def _a_valid_start(text: str) -> bool:
    """Whether ``text`` parses as a command that starts work (``run`` or ``drill``): the
    only texts allowed to start anything."""
    try:
        return parse(text).verb in ("run", "drill")
    except CommandInputError:
        return False


COMMAND_WORDS = st.sampled_from([
    "help", "status", "check", "plan", "run", "drill", "abort", "restart", "provision",
    "failover", "ramp", "patch", "--dry-run", "dry-run", "dc=ams", "ams", "fra", "dc9",
    "target_dc=ams", "target_dc=fra", "lost_dc=ams", "lost_dc=", "max_parallel=0",
    "max_parallel=3", "share=-1", "share=1e999", "groups=web", "topology=/etc/passwd",
    "sim_url=http://127.0.0.1:9", "triggered_by=mallory", "dc-fire", "meteor", '"', "'",
    "\u201cquoted\u201d", "\\", "`", "*bold*", "<!channel>", "<@U1>", "&amp;", "\u202e",
    "\x00", "\n", "\t", "HELP", "Run", "=x", "a=b=c", "services=checkout", "version=v2",
])

VALID_COMMANDS = [
    "run provision target_dc=ams --dry-run", "run restart target_dc=fra max_parallel=2",
    "run failover lost_dc=ams", "run failover lost_dc=fra --dry-run", "drill dc-fire",
    "drill health-checker-down lost_dc=fra", "plan restart ams", "plan provision dc=fra share=1.5",
    "run patch target_dc=ams services=checkout version=v9 --dry-run", "status", "check",
    "abort 0123456789abcdef0123456789abcdef", "run ramp target_dc=fra lost_dc=ams --dry-run",
]


@st.composite
def near_commands(draw: st.DrawFn) -> str:
    """A valid command, as is or with words added, dropped or swapped: the campaign also
    reaches what a valid command does (hands a run or drill to the runner)."""
    words = draw(st.sampled_from(VALID_COMMANDS)).split()
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(words)))
        change = draw(st.sampled_from(["add", "drop", "swap"]))
        extra = draw(st.sampled_from(["--dry-run", "target_dc=ams", "lost_dc=nowhere",
                                      "share=0", "max_parallel=65", "topology=/etc/passwd",
                                      "sim_url=http://127.0.0.1:9", "triggered_by=x"])
                     | st.tuples(KEYS, VALUE).map("=".join) | WORD)
        if change == "add":
            words.insert(at, extra)
        elif words and at < len(words):
            if change == "drop":
                del words[at]
            else:
                words[at] = extra
    return " ".join(words)


SLASH_TEXT = st.one_of(
    near_commands(),
    st.lists(COMMAND_WORDS | WORD, max_size=7).map(" ".join),
    st.text(max_size=120),
)


def test_fuzzed_slash_command_text_is_answered_and_starts_nothing_unless_valid(
    slack_app: SlackUnderTest, record_test: str
) -> None:
    """Signed ``/revive`` commands from an operator with arbitrary text: HTTP 200 with a text
    answer (or a 4xx for a body Slack would not send), never a 5xx or an internal error,
    and work is handed to the runner only for a text that parses as ``run`` or ``drill``;
    the store never gets a run (the runner here records instead of running)."""
    tally = Tally()

    @fuzz(trials(200, 1500))
    @given(text=SLASH_TEXT, user=st.sampled_from([OPERATOR, OPERATOR, VIEWER, "", "U\u202e"]))
    def case(text: str, user: str) -> None:
        tally.cases += 1
        started = len(slack_app.started)
        form = {"command": "/revive", "text": text, "user_id": user, "user_name": "fuzz",
                "channel_id": "C1", "response_url": "https://hooks.slack.test/r",
                "trigger_id": f"fuzz-{tally.cases}"}
        response = slack_app.post("/slack/commands", urlencode(form))
        tally.count(str(response.status_code))
        if response.status_code >= 500:
            tally.tracebacks += 1
            tally.problem(f"HTTP {response.status_code}", text)
            return
        if 400 <= response.status_code < 500:
            tally.invalid += 1
            if response.headers.get("content-type", "").startswith("application/json") \
                    and response.json().get("error"):
                tally.located += 1
            else:
                tally.problem(f"HTTP {response.status_code} without a reason", text)
        else:
            answer = " ".join(b.get("text", {}).get("text", "")
                              for b in response.json().get("blocks", []))
            answer = answer or response.json().get("text", "")
            if not answer.strip():
                tally.problem("an empty answer", text)
            if "internal error" in answer or answer.startswith(":x:"):
                tally.tracebacks += 1
                tally.problem(f"an internal error: {answer[:200]}", text)
            if answer.startswith((":warning:", ":no_entry:")):
                tally.invalid += 1
                tally.located += 1  # the answer says what is wrong (the parse or the rule)
            else:
                tally.answered += 1
        now_started = len(slack_app.started) - started
        tally.count("started" if now_started else "nothing started")
        if now_started and not _a_valid_start(text):
            tally.partial += 1
            tally.problem("started work for a text that is no valid command", text)
        runs, gates = _runs_and_gates(slack_app.store)
        if runs or gates:
            tally.partial += 1
            tally.problem(f"the store has {runs} runs and {gates} gate decisions", text)

    case()
    record("input", "fuzzed /revive command text (signed)", trials=tally.cases,
           held=_held(tally, "a 4xx or an answer saying why")
           + f"; {tally.outcomes.get('started', 0)} valid run/drill commands handed to the runner",
           lost=nothing_or(tally.partial, "partial actions"), test=record_test)
    assert tally.problems == [], (tally.problems, tally.outcomes)
    assert tally.outcomes.get("started", 0) > 0, tally.outcomes  # valid commands were reached


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _button(user: Any, value: Any, action_id: Any) -> dict[str, Any]:
    return {"type": "block_actions",
            "user": {"id": user, "username": "fuzz", "team_id": "T1"},
            "channel": {"id": "C1", "name": "incident"}, "trigger_id": "T1",
            "response_url": "https://hooks.slack.test/r",
            "container": {"type": "message", "message_ts": "1700000000.000100"},
            "actions": [{"type": "button", "action_id": action_id, "block_id": "approval:x",
                         "value": value, "action_ts": "1700000001.000200"}]}


@st.composite
def near_clicks(draw: st.DrawFn, run_id: Callable[[], str]) -> dict[str, Any]:
    """A click on the run's gate that must decide nothing: from a viewer (any button), or
    from an approver on a button that is not one of revive's or names no real gate."""
    gate_value = json.dumps({"run": run_id(), "gate": "traffic"})
    if draw(st.booleans()):
        user = draw(st.sampled_from([VIEWER, "", "U\u202e", "someone-else"]) | WORD)
        payload = _button(user, draw(st.sampled_from([gate_value]) | JSON.map(json.dumps)),
                          draw(st.sampled_from([APPROVE_ACTION, REJECT_ACTION]) | WORD))
    else:
        action = draw(st.sampled_from([APPROVE_ACTION, REJECT_ACTION, "approve", ""]) | WORD)
        value = draw(JSON.map(json.dumps) | st.sampled_from([
            json.dumps({"run": run_id()[:12], "gate": "traffic"}),
            json.dumps({"run": "nope", "gate": "traffic"}), json.dumps({"run": run_id()}),
            json.dumps([run_id(), "traffic"]), run_id(), ""]))
        if action in (APPROVE_ACTION, REJECT_ACTION) and value == gate_value:
            value = ""
        payload = _button(APPROVER, value, action)
    # then break its shape, sometimes: a field dropped, retyped or replaced by random JSON
    for _ in range(draw(st.integers(0, 2))):
        where = draw(st.sampled_from(["top", "user", "action"]))
        node = payload if where == "top" else (
            payload.get("user") if where == "user" else
            (payload.get("actions") or [{}])[0] if isinstance(payload.get("actions"), list)
            else None)
        if not isinstance(node, dict) or not node:
            continue
        key = draw(st.sampled_from(sorted(node)))
        if draw(st.booleans()):
            del node[key]
        else:
            node[key] = draw(JSON)
    return payload


PAYLOAD_BODIES = st.sampled_from(["", "payload=", "payload=null", "payload=%7B", "nothing=1",
                                  "payload=" + "[" * 200, "payload=1&payload=2", "%%%", "=&=&"])


def _not_utf8(body: str | bytes) -> bool:
    try:
        (body if isinstance(body, bytes) else body.encode()).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def test_fuzzed_interaction_payloads_are_2xx_or_4xx_and_decide_no_gate(
    slack_app: SlackUnderTest, record_test: str
) -> None:
    """Signed ``/slack/interactions`` posts whose ``payload=`` is arbitrary JSON, no JSON,
    or a near-valid click that must decide nothing, against a run waiting at its gate: a
    2xx or a 4xx, never a 5xx, and no gate decided, no flow resumed."""
    engine = db.get_engine(slack_app.store)
    try:
        db.upgrade(engine)
        with db.session(engine) as s:
            run = service.create_run(s, runbook="failover", parameters={},
                                     trigger=TriggerSource.CLI, triggered_by=OPERATOR,
                                     target_dc="ams")
            service.set_prefect_flow_run_id(s, run.id, prefect_flow_run_id="flow-run-fuzz")
            run_id = run.id
    finally:
        engine.dispose()
    tally = Tally()

    @fuzz(trials(200, 1500))
    @given(body=st.one_of(
        near_clicks(lambda: run_id).map(lambda p: urlencode({"payload": json.dumps(p)})),
        JSON.map(lambda p: urlencode({"payload": json.dumps(p)})),
        st.text(max_size=80).map(lambda t: urlencode({"payload": t})),
        st.binary(max_size=60).map(lambda b: b"payload=" + b),
        PAYLOAD_BODIES,
    ))
    def case(body: str | bytes) -> None:
        tally.cases += 1
        response = slack_app.post("/slack/interactions", body)
        tally.count(str(response.status_code))
        if response.status_code >= 500:
            tally.tracebacks += 1
            tally.problem(f"HTTP {response.status_code}", body)
        elif response.status_code == 401:
            # Slack's bodies are UTF-8, so revive takes any other body as not Slack's,
            # whatever its signature; a 401 for anything else is a problem
            tally.count("401 not UTF-8")
            if not _not_utf8(body):
                tally.problem("HTTP 401 for a UTF-8 body", body)
        elif response.status_code >= 400:
            tally.invalid += 1
            try:
                reason = response.json().get("error")
            except ValueError:
                reason = None
            if reason:
                tally.located += 1
            else:
                tally.problem(f"HTTP {response.status_code} without a reason", body)
        else:
            tally.answered += 1
            text = response.text
            tally.count(" ".join(text.split()[:1])[:24] or "(empty 200)")
            if "internal error" in text:
                tally.tracebacks += 1
                tally.problem(f"an internal error: {text[:200]}", body)
        _, gates = _runs_and_gates(slack_app.store)
        if gates or slack_app.resumed:
            tally.partial += 1
            tally.problem(f"{gates} gate decisions, {len(slack_app.resumed)} resumes", body)
            slack_app.resumed.clear()

    case()
    state = _store_state(slack_app.store, run_id)
    record("input", "fuzzed Slack interaction payloads (signed)", trials=tally.cases,
           held=(f"{tally.cases} cases: {tally.answered} answered, a 4xx with a reason for "
                 f"{tally.located}/{tally.invalid} malformed, "
                 f"{tally.outcomes.get('401 not UTF-8', 0)} non-UTF-8 bodies refused as "
                 f"unsigned (401), {tally.tracebacks} 5xx"),
           lost=nothing_or(tally.partial, "gates decided or runs resumed"), test=record_test)
    assert tally.problems == [], (tally.problems, tally.outcomes)
    assert state.seeded == (str(RunOutcome.RUNNING), False)
    assert tally.invalid > 0 and tally.answered > 0, tally.outcomes
