"""Chat is never on the critical path: a failover recovers while Slack errors, hangs or dies.

The flow builds its sink the way production does, from ``REVIVE_SLACK_*`` (``chat_from_env``),
pointed at the fake Slack Web API; the sink it built is caught on the way to check where the
progress went. Whatever Slack does, the run must recover, and what people should have seen
in Slack must be in the log (the sink's ``ConsoleSink`` fallback, logger ``revive.chat``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import flows.context
from flows.failover import FailoverParams, failover
from revive.chat.console import LOGGER_NAME
from revive.chat.sink import ChatSink, chat_from_env
from revive.chat.slack_sink import SlackSink
from revive.store import db, service
from revive.store.models import RunOutcome
from tests.chat.cards import TOKEN
from tests.chat.fake_slack import FakeSlack, running
from tests.flows.estates import small, write

pytestmark = pytest.mark.usefixtures("prefect_harness", "store_url")

CHANNEL = "C0RECOVERY"
POST, UPDATE = "chat.postMessage", "chat.update"
MANY = 10_000  # more failures than any run makes



@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    yield from running()


@pytest.fixture
def sinks(monkeypatch: pytest.MonkeyPatch, fake: FakeSlack) -> list[ChatSink]:
    """Slack configured through the environment, as in production; the sinks flows build."""
    monkeypatch.setenv("REVIVE_SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("REVIVE_SLACK_CHANNEL", CHANNEL)
    monkeypatch.setenv("REVIVE_SLACK_API_URL", fake.url)
    built: list[ChatSink] = []

    def spy() -> ChatSink:
        sink = chat_from_env()
        built.append(sink)
        return sink

    monkeypatch.setattr(flows.context, "chat_from_env", spy)
    return built


def recover(tmp_path, serve) -> dict:
    """A non-production failover of a lost dc1 into dc2 on the small estate."""
    topology, path = write(tmp_path, small(environment="drill"))
    sim, url = serve(topology)
    sim.estate.power_loss("dc1")
    result = asyncio.run(failover(FailoverParams(
        topology=path, target_dc="dc2", lost_dc="dc1", sim_url=url)))
    assert result["outcome"] == "recovered"
    assert sim.estate.weights["dc2"] == 1.0
    with db.session(db.get_engine()) as s:
        (run,) = service.get_all_runs(s)
    assert run.outcome == RunOutcome.SUCCEEDED
    return result


def the_sink(sinks: list[ChatSink]) -> SlackSink:
    (sink,) = sinks
    assert isinstance(sink, SlackSink)  # Slack was configured: this is the outage path
    return sink


def fallback_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]


def assert_the_log_has_the_final_card(caplog: pytest.LogCaptureFixture, run_id: str) -> None:
    finals = [line for line in fallback_lines(caplog)
              if f"run `{run_id}`" in line and "Outcome:* recovered" in line]
    assert finals, "the final card did not reach the log"


def down(fake: FakeSlack) -> None:
    """Stop the server: every later call is a refused connection."""
    fake.stop()


OUTAGES: dict[str, Callable[[FakeSlack], None]] = {
    "5xx": lambda fake: [fake.server_error(m, n=MANY, status=503) for m in (POST, UPDATE)],
    "ok-false": lambda fake: [fake.slack_error(m, "fatal_error") for m in (POST, UPDATE)],
    "hangs": lambda fake: [fake.hang(m, 10) for m in (POST, UPDATE)],
    "down": down,
}


@pytest.mark.parametrize("outage", OUTAGES.values(), ids=OUTAGES.keys())
def test_a_failover_recovers_while_slack_is_out(
    tmp_path, serve, fake: FakeSlack, sinks: list[ChatSink], outage: Callable[[FakeSlack], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    outage(fake)
    began = time.monotonic()
    result = recover(tmp_path, serve)
    took = time.monotonic() - began
    sink = the_sink(sinks)
    assert sink.sent == 0 and sink.failures >= 1
    assert fake.messages == {}
    assert sink.fallback.lines_written == sink.fallbacks >= 2  # at least the start and the end
    assert_the_log_has_the_final_card(caplog, result["run_id"])
    # A hanging Slack costs at most its timeout plus the bounded flush at close, never more:
    # the run itself does not wait for it.
    assert took < 60


def slack_errors_after_the_living_message(fake: FakeSlack) -> None:
    """The living message gets through; every later call fails with a 502."""
    fake.hang(POST, 0, n=1)  # a zero delay: the first post is answered normally
    fake.server_error(POST, n=MANY, status=502)
    fake.server_error(UPDATE, n=MANY, status=502)


def slack_stops_after_the_living_message(fake: FakeSlack) -> None:
    """The server goes away once the living message is posted."""

    def stop_when_posted() -> None:
        if fake.wait_for(lambda: bool(fake.ok_calls(POST)), timeout=60):
            fake.stop()

    threading.Thread(target=stop_when_posted, daemon=True, name="slack-dies").start()


MIDWAY: dict[str, Callable[[FakeSlack], None]] = {
    "starts-erroring": slack_errors_after_the_living_message,
    "goes-away": slack_stops_after_the_living_message,
}


@pytest.mark.parametrize("outage", MIDWAY.values(), ids=MIDWAY.keys())
def test_slack_failing_midway_does_not_stop_the_recovery(
    tmp_path, serve, fake: FakeSlack, sinks: list[ChatSink], outage: Callable[[FakeSlack], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    outage(fake)
    result = recover(tmp_path, serve)
    sink = the_sink(sinks)
    # The living message was posted and still shows the run in progress: the final card
    # never reached Slack ...
    (posted,) = [m for m in fake.messages.values() if "thread_ts" not in m]
    assert posted["channel"] == CHANNEL
    assert posted["text"].startswith("[RUNNING]")
    assert f"[run {result['run_id']}]" in posted["text"]
    assert sink.sent >= 1 and sink.failures >= 1 and sink.fallbacks >= 1
    # ... it went to the log instead, with everything else Slack did not take.
    assert_the_log_has_the_final_card(caplog, result["run_id"])
    assert sink.fallback.lines_written == sink.fallbacks
