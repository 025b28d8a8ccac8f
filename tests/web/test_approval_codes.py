"""One-time approval codes: who gets one, and that each names its holder and works once."""

from __future__ import annotations

import json

import pytest

from revive.approval_codes import (
    CodeBook,
    Holder,
    approvers,
    approvers_from_env,
    code_message,
    normalize,
)
from revive.web.settings import Role, WebSettings
from tests.chat.fake_slack import FakeSlack


def test_a_code_names_its_holder_and_works_once() -> None:
    book = CodeBook()
    alice, bob = Holder("UALICE", Role.APPROVER), Holder("UBOB", Role.ADMIN)
    code_a, code_b = book.issue(alice), book.issue(bob)
    assert code_a != code_b and len(book) == 2
    assert len(normalize(code_a)) == 12 and code_a.count("-") == 2
    assert book.redeem(None) is None and book.redeem("") is None and book.redeem("- -") is None
    assert book.redeem("AAAA-BBBB-CCCC") is None  # a guess
    assert book.redeem(f" {code_a.lower().replace('-', ' ')} ") == alice  # as people type it
    assert book.redeem(code_a) is None  # used up
    assert book.redeem(code_b) == bob


def test_approvers_are_named_users_and_members_of_approver_groups() -> None:
    settings = WebSettings(roles={
        "production": {"UANA": "approver", "S0SRE": "approver", "UOPS": "operator",
                       "os:alice": "approver", "SOPS": "operator"},
        "staging": {"USTAGE": "approver"},
        "*": {"*": "viewer", "WBOSS": "admin"}})
    members = {"UKIM": ("S0SRE",), "UOPS": ("SOPS",), "ULEE": ("SOPS", "S0SRE")}
    assert approvers(settings, "production", members) == {
        "UANA": Role.APPROVER, "UKIM": Role.APPROVER, "ULEE": Role.APPROVER,
        "WBOSS": Role.ADMIN}  # never os: users (they use the CLI), operators or staging's
    assert approvers(settings, "staging", {}) == {"USTAGE": Role.APPROVER,
                                                  "WBOSS": Role.ADMIN}


def test_approvers_from_env_asks_slack_for_approver_groups(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeSlack() as fake:
        fake.usergroups = {"S0SRE": ["UKIM", "ULEE"], "SOTHER": ["UNOPE"]}
        monkeypatch.setenv("REVIVE_SLACK_BOT_TOKEN", "xoxb-test")
        monkeypatch.setenv("REVIVE_SLACK_API_URL", fake.url)
        monkeypatch.setenv("REVIVE_ROLES", json.dumps(
            {"production": {"S0SRE": "approver", "UANA": "approver"}}))
        assert set(approvers_from_env("production")) == {"UANA", "UKIM", "ULEE"}
        monkeypatch.setenv("REVIVE_ROLES", "{not json")
        assert approvers_from_env("production") == {}  # unreadable: nobody, with a warning


def test_the_message_says_what_the_code_is_for_and_warns_the_starter() -> None:
    text = code_message(run_id="r1", runbook="failover", target_dc="dc2", gate="traffic",
                        question="move dc1's traffic into dc2?", code="K7QM-3XPD-T9VA",
                        started=False)
    assert "`K7QM-3XPD-T9VA`" in text and "`traffic`" in text and "run `r1`" in text
    assert "two-person" not in text
    assert "will be refused" in code_message(
        run_id="r1", runbook="failover", target_dc="dc2", gate="traffic", question="?",
        code="K7QM-3XPD-T9VA", started=True)
