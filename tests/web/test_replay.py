"""A signed request sent again is answered from the store, never acted on twice: after a
restart of the server, by a second server on the same store, and without a ``trigger_id``.

A "restart" is a second app on the same store (nothing of the first process's memory
survives); its clock is later than the first's, as it would be 58 s on.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
from sqlmodel import select

from revive.store import db
from revive.store.models import SlackRequest
from revive.web.settings import WebSettings
from tests.web.slack import (
    APPROVER,
    NOW,
    OPERATOR,
    RESPONSE_URL,
    App,
    FixedClock,
    button_payload,
    signed_headers,
    text_of,
)

RUN = "run failover target_dc=dc2"


def _command(text: str, *, trigger: str = "") -> tuple[str, dict[str, str]]:
    """A signed command as captured on the wire; no ``trigger_id`` unless given."""
    form = {"command": "/revive", "text": text, "user_id": OPERATOR,
            "user_name": OPERATOR.lower(), "channel_id": "C1", "response_url": RESPONSE_URL}
    if trigger:
        form["trigger_id"] = trigger
    body = urlencode(form)
    return body, signed_headers(body, str(NOW))


def _send(app: App, body: str, headers: dict[str, str], path: str = "/slack/commands"
          ) -> httpx.Response:
    return app.client.post(path, content=body, headers=headers)


def _remembered(store: str) -> list[SlackRequest]:
    engine = db.get_engine(store)
    try:
        with db.session(engine) as s:
            rows = list(s.exec(select(SlackRequest)).all())
            for row in rows:
                s.expunge(row)
            return rows
    finally:
        engine.dispose()


def test_a_signed_run_replayed_after_a_restart_gets_the_first_answer_and_starts_nothing(
    settings: WebSettings, store: str
) -> None:
    body, headers = _command(RUN)  # no trigger_id: the signature is the only key
    first_app = App(settings, FixedClock(NOW), store)
    first = _send(first_app, body, headers)
    assert "Accepted" in text_of(first)
    assert len(first_app.started) == 1

    restarted = App(settings, FixedClock(NOW + 58), store)  # same store, fresh memory
    again = _send(restarted, body, headers)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert restarted.started == []  # no second run
    events = restarted.audit()
    assert [(e.action, e.outcome) for e in events] == [("run", "accepted"),
                                                       ("command", "replayed")]
    replay = events[1]
    assert (replay.actor, replay.target, str(replay.source)) == (
        OPERATOR, f"/revive {RUN}", "slack")
    assert replay.detail is not None and replay.detail["signed"] is True
    assert replay.detail["first_seen"] == datetime.fromtimestamp(NOW, UTC).isoformat()


def test_after_the_window_the_replay_is_refused_by_the_signature_and_the_record_goes(
    settings: WebSettings, store: str
) -> None:
    body, headers = _command(RUN)
    first_app = App(settings, FixedClock(NOW), store)
    assert "Accepted" in text_of(_send(first_app, body, headers))
    assert len(_remembered(store)) == 1

    later = App(settings, FixedClock(NOW + 301), store)
    assert _send(later, body, headers).status_code == 401
    assert later.started == []
    # the next request purges what the signature check now refuses anyway
    fresh_body = urlencode({"text": "help", "user_id": OPERATOR})
    response = _send(later, fresh_body, signed_headers(fresh_body, str(NOW + 301)))
    assert response.status_code == 200
    (row,) = _remembered(store)
    assert row.summary == "/revive help"


def test_a_replayed_click_after_a_restart_decides_nothing(settings: WebSettings, store: str
                                                          ) -> None:
    first_app = App(settings, FixedClock(NOW), store)
    run_id = first_app.create_run(triggered_by=f"ana ({OPERATOR})")
    body = urlencode({"payload": json.dumps(
        button_payload(APPROVER, run_id, "traffic", trigger="T-click"))})
    headers = signed_headers(body, str(NOW))
    assert _send(first_app, body, headers, "/slack/interactions").status_code == 200
    assert len(first_app.wait_posts(1)) == 1
    assert len(first_app.resumed) == 1

    restarted = App(settings, FixedClock(NOW + 30), store)
    assert _send(restarted, body, headers, "/slack/interactions").status_code == 200
    assert restarted.resumed == []
    assert [e.outcome for e in restarted.audit()] == ["approved", "replayed"]


def test_two_copies_at_once_on_two_servers_start_one_run(settings: WebSettings, store: str
                                                         ) -> None:
    body, headers = _command(RUN)
    apps = [App(settings, FixedClock(NOW), store), App(settings, FixedClock(NOW + 1), store)]
    barrier = threading.Barrier(2)
    answers: list[str] = []

    def send(app: App) -> None:
        barrier.wait()
        answers.append(text_of(_send(app, body, headers)))

    threads = [threading.Thread(target=send, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(app.started) for app in apps) == 1
    # the other copy got the first's answer, or was told it is being handled
    assert all("Accepted" in answer or "already being handled" in answer
               for answer in answers)
    events = App(settings, FixedClock(NOW), store).audit()
    assert sorted(e.outcome for e in events) == ["accepted", "replayed"]


def test_a_redelivery_with_a_new_signature_is_known_by_its_trigger_id(
    settings: WebSettings, store: str
) -> None:
    """Slack signs a redelivery afresh; its trigger_id is the same."""
    body, headers = _command(RUN, trigger="T-redeliver")
    first_app = App(settings, FixedClock(NOW), store)
    assert "Accepted" in text_of(_send(first_app, body, headers))
    restarted = App(settings, FixedClock(NOW + 20), store)
    resigned = signed_headers(body, str(NOW + 20), **{"X-Slack-Retry-Num": "1"})
    assert "Accepted" in text_of(_send(restarted, body, resigned))
    assert restarted.started == []
    assert [e.outcome for e in restarted.audit()] == ["accepted", "replayed"]


def test_socket_mode_requests_are_remembered_by_trigger_id_in_the_store(
    settings: WebSettings, store: str
) -> None:
    """Socket Mode has no signature: two runners on one store know a redelivery by its
    trigger_id."""
    form = {"text": RUN, "user_id": OPERATOR, "trigger_id": "T-socket"}
    runners = [App(settings, FixedClock(NOW), store), App(settings, FixedClock(NOW), store)]
    first = runners[0].slack.command(form)
    again = runners[1].slack.command(form, retry=1)
    assert again == first
    assert len(runners[0].started) + len(runners[1].started) == 1


def test_different_commands_in_the_same_second_are_each_handled(app: App) -> None:
    assert "Accepted" in text_of(app.command(RUN, user=OPERATOR, trigger=""))
    assert "Accepted" in text_of(app.command(f"{RUN} --dry-run", user=OPERATOR, trigger=""))
    assert len(app.started) == 2
