"""The quota rule every provisioning step shares."""

from revive.planning.quota import Quota, shortfall_note


def test_unlimited_grants_everything() -> None:
    quota = Quota(None)
    assert quota.grant(500) == 500
    quota.spend(500)
    assert quota.left is None and quota.grant(7) == 7


def test_grants_what_is_left_and_never_twice() -> None:
    quota = Quota(10)
    assert quota.grant(4) == 4
    quota.spend(4)
    assert quota.grant(8) == 6
    quota.spend(6)
    assert quota.grant(1) == 0
    quota.spend(3)  # an over-spend (a tool granting more than asked) never goes negative
    assert quota.left == 0


def test_notes_say_what_was_short() -> None:
    assert shortfall_note("api", "east", 5, 0) == "ESCALATE quota: api needs 5 in east"
    assert shortfall_note("api", "east", 5, 2) == "ESCALATE quota: api got 2 of 5 in east"
