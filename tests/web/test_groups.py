"""SlackUserGroups against a fake Slack Web API over real HTTP: cached, and outage-proof."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from revive.chat.client import DEFAULT_SLACK_API_URL
from revive.web.groups import SlackUserGroups, groups_from_env, no_groups
from tests.chat.cards import TOKEN
from tests.chat.fake_slack import FakeSlack, running

LIST = "usergroups.list"



@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    yield from running()


class Clock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def groups(fake: FakeSlack, clock: Clock) -> SlackUserGroups:
    fake.usergroups = {"SOPS": ["U1", "U2"], "SDBA": ["U2"]}
    return SlackUserGroups(TOKEN, base_url=fake.url, clock=clock, timeout_s=0.5,
                           retry_after_failure_s=10)


def fetches(fake: FakeSlack) -> int:
    return len(fake.requests(LIST))


def test_membership_comes_from_one_usergroups_list_call(
    fake: FakeSlack, groups: SlackUserGroups
) -> None:
    assert groups("U1") == ("SOPS",)
    assert groups("U2") == ("SDBA", "SOPS")
    assert groups("U9") == ()
    (call,) = fake.requests(LIST)
    assert str(call.params["include_users"]).lower() in ("1", "true")
    assert call.authorization == f"Bearer {TOKEN}"
    assert TOKEN not in repr(groups)


def test_cached_within_the_ttl(fake: FakeSlack, groups: SlackUserGroups, clock: Clock) -> None:
    assert groups("U1") == ("SOPS",)
    fake.usergroups = {"SOPS": ["U3"]}
    clock.now += 299
    assert [groups(u) for u in ("U1", "U2", "U3")] == [("SOPS",), ("SDBA", "SOPS"), ()]
    assert fetches(fake) == 1


def test_refreshed_after_the_ttl(fake: FakeSlack, groups: SlackUserGroups, clock: Clock) -> None:
    assert groups("U1") == ("SOPS",)
    fake.usergroups = {"SOPS": ["U3"]}
    clock.now += 301
    assert groups("U1") == ()
    assert groups("U3") == ("SOPS",)
    assert fetches(fake) == 2


FAULTS: dict[str, Callable[[FakeSlack], None]] = {
    "5xx": lambda fake: fake.server_error(LIST, n=10, status=502),
    "ok-false": lambda fake: fake.slack_error(LIST, "internal_error"),
    "429": lambda fake: fake.rate_limit(LIST, n=10, retry_after=1),
    "timeout": lambda fake: fake.hang(LIST, 2.0),
}


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_a_slack_failure_keeps_the_last_good_map(
    fake: FakeSlack,
    groups: SlackUserGroups,
    clock: Clock,
    fault: Callable[[FakeSlack], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert groups("U1") == ("SOPS",)
    fault(fake)
    clock.now += 301
    with caplog.at_level(logging.WARNING, logger="revive.web.groups"):
        assert groups("U1") == ("SOPS",)
        assert groups("U2") == ("SDBA", "SOPS")
    assert groups.failures == 1
    (warning,) = [r for r in caplog.records if r.name == "revive.web.groups"]
    assert "using the membership from 301 s ago" in warning.getMessage()
    assert TOKEN not in caplog.text


def test_after_a_failure_slack_is_left_alone_for_a_while_then_asked_again(
    fake: FakeSlack, groups: SlackUserGroups, clock: Clock
) -> None:
    assert groups("U1") == ("SOPS",)
    fake.slack_error(LIST, "internal_error")
    clock.now += 301
    assert groups("U1") == ("SOPS",)
    before = fetches(fake)
    clock.now += 9
    assert groups("U1") == ("SOPS",)
    assert fetches(fake) == before  # within retry_after_failure_s: not asked
    fake.normal()
    fake.usergroups = {"SOPS": ["U3"]}
    clock.now += 2
    assert groups("U1") == ()
    assert groups("U3") == ("SOPS",)


def test_a_long_retry_after_is_respected(fake: FakeSlack, groups: SlackUserGroups,
                                         clock: Clock) -> None:
    fake.rate_limit(LIST, n=1, retry_after=60)
    assert groups("U1") == ()
    clock.now += 30  # past retry_after_failure_s (10), not past Retry-After
    assert groups("U1") == ()
    assert fetches(fake) == 1
    clock.now += 31
    assert groups("U1") == ("SOPS",)


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_a_failure_without_a_map_gives_no_groups_and_does_not_raise(
    fake: FakeSlack,
    groups: SlackUserGroups,
    fault: Callable[[FakeSlack], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fault(fake)
    with caplog.at_level(logging.WARNING, logger="revive.web.groups"):
        assert groups("U1") == ()
    assert groups.failures == 1
    assert "roles granted to user groups do not apply" in caplog.text


def test_slack_unreachable_gives_no_groups(clock: Clock) -> None:
    with FakeSlack() as gone:
        url = gone.url  # nothing listens there once it stops
    groups = SlackUserGroups(TOKEN, base_url=url, clock=clock, timeout_s=0.5)
    assert groups("U1") == ()
    assert groups.failures == 1


def test_a_broken_client_or_answer_never_raises(clock: Clock) -> None:
    class Odd:
        def __init__(self, data: object) -> None:
            self.data = data

    class Client:
        def __init__(self) -> None:
            junk = [{"id": "SOPS", "users": ["U1", 7]}, "junk", {"id": 3}]
            self.answers = [RuntimeError("boom"), Odd({"ok": True}),
                            Odd({"ok": True, "usergroups": junk})]

        def usergroups_list(self, **kwargs: object) -> object:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

    groups = SlackUserGroups(TOKEN, clock=clock, client=Client(),  # type: ignore[arg-type]
                             retry_after_failure_s=1)
    assert groups("U1") == ()  # raised
    clock.now += 2
    assert groups("U1") == ()  # no usergroups list
    clock.now += 2
    assert groups("U1") == ("SOPS",)  # junk entries skipped
    assert groups.failures == 2


def test_concurrent_first_calls_share_one_fetch(fake: FakeSlack, clock: Clock) -> None:
    fake.usergroups = {"SOPS": ["U1"]}
    fake.hang(LIST, 0.3, n=1)  # the first fetch is slow, so the others arrive during it
    groups = SlackUserGroups(TOKEN, base_url=fake.url, clock=clock, timeout_s=2)
    start = threading.Barrier(8)
    answers: list[tuple[str, ...]] = []

    def call() -> None:
        start.wait()
        answers.append(groups("U1"))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == [("SOPS",)] * 8
    assert fetches(fake) == 1


def test_a_stale_map_serves_while_another_thread_refreshes(fake: FakeSlack, clock: Clock) -> None:
    fake.usergroups = {"SOPS": ["U1"]}
    groups = SlackUserGroups(TOKEN, base_url=fake.url, clock=clock, timeout_s=2)
    assert groups("U1") == ("SOPS",)
    fake.usergroups = {"SOPS": ["U2"]}
    fake.hang(LIST, 0.5, n=1)
    clock.now += 301
    refresher = threading.Thread(target=groups, args=("U1",))
    refresher.start()
    assert fake.wait_for(lambda: fetches(fake) == 2)
    assert groups("U1") == ("SOPS",)  # the old map, at once, while the refresh is in flight
    refresher.join(5)
    assert groups("U2") == ("SOPS",)
    assert fetches(fake) == 2


def test_from_env_without_a_token_gives_no_groups() -> None:
    for env in ({}, {"REVIVE_SLACK_BOT_TOKEN": "  "}):
        groups_of = groups_from_env(env)
        assert groups_of is no_groups
        assert tuple(groups_of("U1")) == ()


def test_from_env_with_a_token_asks_the_configured_api(fake: FakeSlack) -> None:
    fake.usergroups = {"SOPS": ["U1"]}
    groups_of = groups_from_env({
        "REVIVE_SLACK_BOT_TOKEN": TOKEN,
        "REVIVE_SLACK_API_URL": fake.url.rstrip("/"),  # the missing "/" is added
    })
    assert isinstance(groups_of, SlackUserGroups)
    assert groups_of.base_url == fake.url
    assert groups_of("U1") == ("SOPS",)


def test_from_env_defaults_and_refusals() -> None:
    groups_of = groups_from_env({"REVIVE_SLACK_BOT_TOKEN": TOKEN})
    assert isinstance(groups_of, SlackUserGroups)
    assert groups_of.base_url == DEFAULT_SLACK_API_URL
    assert groups_of.ttl_s == 300
    bad = {"REVIVE_SLACK_BOT_TOKEN": TOKEN, "REVIVE_SLACK_API_URL": "file:///etc/"}
    assert groups_from_env(bad) is no_groups
