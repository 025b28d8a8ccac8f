"""Runs started from Slack really run, and Slack is still answered at once while they do.

Slack gives a request 3 seconds: that is its protocol's limit, not a speed goal, so these
tests check every answer against it while a real failover runs in the same app
(bench/slack_ack.py measures how fast the answers are).
"""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from revive.store import db, service
from revive.web.settings import WebSettings
from tests.flows.estates import small, write
from tests.web.slack import NOW, OPERATOR, SLACK_SECRET, App, FixedClock, text_of

pytestmark = pytest.mark.usefixtures("prefect_harness")

SLACK_LIMIT_S = 3.0


def _running(store_url: str) -> list:
    engine = db.get_engine(store_url)
    try:
        with db.session(engine) as s:
            return [r for r in service.get_all_runs(s) if str(r.outcome) == "running"]
    finally:
        engine.dispose()


def _timed(app: App, text: str) -> tuple[float, str]:
    began = time.monotonic()
    response = app.command(text, user=OPERATOR)
    elapsed = time.monotonic() - began
    assert response.status_code == 200
    return elapsed, text_of(response)


def test_commands_are_answered_within_slacks_limit_while_a_recovery_runs(
        tmp_path, serve, store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    topology, path = write(tmp_path, small(environment="staging"))
    sim, url = serve(topology)
    monkeypatch.setenv("REVIVE_SIM_URL", url)  # the estate is the server's configuration
    sim.estate.power_loss("dc1")
    app = App(WebSettings(slack_signing_secret=SecretStr(SLACK_SECRET), topology=path,
                          roles={"*": {OPERATOR: "operator"}}),
              FixedClock(NOW), store_url, run_jobs=True)
    elapsed, answer = _timed(app, "run failover target_dc=dc2")
    assert elapsed < SLACK_LIMIT_S and "Accepted: *failover* → dc2" in answer
    deadline = time.monotonic() + 60
    while not _running(store_url) and time.monotonic() < deadline:
        time.sleep(0.05)
    (run,) = _running(store_url)
    answers = []
    while _running(store_url):  # the recovery is under way: ask again and again
        answers.append(_timed(app, "status"))
        answers.append(_timed(app, "run failover target_dc=dc2"))
        time.sleep(0.2)
    assert len(answers) >= 4
    assert max(elapsed for elapsed, _ in answers) < SLACK_LIMIT_S
    duplicates = [text for _, text in answers if "already running" in text]
    assert duplicates and all(f"run `{run.id}`" in text for text in duplicates)
    posts = app.wait_posts(1, timeout=30)
    assert f"*failover*: recovered (run `{run.id}`)" in text_of(posts[-1])
    assert ":white_check_mark:" in text_of(posts[-1])
    assert sim.estate.weights["dc2"] == 1.0
