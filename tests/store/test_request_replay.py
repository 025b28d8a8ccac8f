"""Remembered Slack requests: claimed once by any of their keys, answered from the record,
and purged once their signature window has passed; on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from revive.store import db as store_db
from revive.store import service
from revive.store.models import SlackRequest

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=5)


def _remember(session: Session, keys: list[str], now: datetime = T0) -> SlackRequest | None:
    return service.remember_request(session, keys=keys, actor="U1", kind="command",
                                    summary="/revive run failover", now=now,
                                    expires_at=now + WINDOW)


def test_the_first_copy_claims_and_later_ones_get_its_answer(db: Session) -> None:
    assert _remember(db, ["signed:1:v0=a", "command:T1"]) is None
    pending = _remember(db, ["signed:1:v0=a"])
    assert pending is not None and pending.answer is None  # still being handled
    service.answer_request(db, keys=["signed:1:v0=a", "command:T1"], answer={"text": "ok"})
    by_trigger = _remember(db, ["signed:2:v0=b", "command:T1"])  # re-signed redelivery
    assert by_trigger is not None and by_trigger.answer == {"text": "ok"}
    assert by_trigger.received_at == T0 and by_trigger.actor == "U1"


def test_keys_are_stored_hashed(db: Session) -> None:
    _remember(db, ["signed:1700000000:v0=secretish"])
    (row,) = db.exec(select(SlackRequest)).all()
    assert "secretish" not in row.request_key and len(row.request_key) == 64


def test_records_past_their_window_are_purged(db: Session) -> None:
    _remember(db, ["signed:1:v0=a"])
    later = T0 + WINDOW + timedelta(seconds=1)
    assert _remember(db, ["signed:9:v0=z"], now=later) is None
    rows = db.exec(select(SlackRequest)).all()
    assert [r.received_at for r in rows] == [later]
    assert _remember(db, ["signed:1:v0=a"], now=later) is None  # forgotten: claimable again


def test_two_sessions_racing_claim_once(engine: Engine, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    """The unique key decides between two servers that both looked before either wrote:
    the second's look is made to miss the first's claim, and its insert is refused."""
    looks = {"n": 0}
    real = service._request_by_keys

    def late_look(session: Session, hashes: list[str]) -> SlackRequest | None:
        looks["n"] += 1
        return None if looks["n"] == 1 else real(session, hashes)

    with store_db.session(engine) as first, store_db.session(engine) as second:
        assert _remember(first, ["signed:1:v0=a"]) is None
        monkeypatch.setattr(service, "_request_by_keys", late_look)
        earlier = _remember(second, ["signed:1:v0=a", "command:T1"])
        assert earlier is not None and earlier.summary == "/revive run failover"
        assert looks["n"] == 2  # missed the claim, inserted (refused), looked again
    with store_db.session(engine) as check:
        assert len(check.exec(select(SlackRequest)).all()) == 1  # nothing half-claimed


def test_a_request_needs_a_key(db: Session) -> None:
    with pytest.raises(ValueError, match="at least one key"):
        _remember(db, [])
