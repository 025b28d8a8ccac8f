"""Per-class moves: the database's headroom goes to traffic classes in priority order."""

from __future__ import annotations

from revive.ramp import Change, DecisionKind, RampPolicy, Sample, decide
from revive.ramp.classes import ClassRamp, next_round

POLICY = RampPolicy()
LIMIT = RampPolicy().db_util_limit


def ramp(name: str, priority: int, *, moved: float = 0.0, load_share: float = 0.5,
         util: float = 0.4, errors: float = 0.0, t: float = 100.0) -> ClassRamp:
    r = ClassRamp.start(name, priority, "dc1", ["dc2"], {"dc1": 0.5, "dc2": 0.5}, load_share)
    r.moved = moved
    for lane in r.lanes:
        lane.samples = [Sample(t=t - 10 * i, share=0.5, db_util=util, p99_ms=100,
                               error_rate=errors, cache_hit_ratio=0.7) for i in (2, 1, 0)]
    return r


def round_of(*ramps: ClassRamp, not_started: tuple[int, ...] = ()):
    return next_round(list(ramps), policy=POLICY, now=100.0, last_change={"dc2": None},
                      last_progress=0.0, dc_load={"dc2": 0.5}, dc_changes={"dc2": []},
                      not_started=not_started)


def test_a_less_important_class_waits_until_the_more_important_one_is_in() -> None:
    first, second = ramp("tier0", 0), ramp("tier1", 1)
    moves = round_of(first, second).moves
    assert set(moves) == {"tier0"} and moves["tier0"] > 0
    first.moved = 1.0  # once tier 0 is fully moved, tier 1 goes
    assert set(round_of(first, second).moves) == {"tier1"}


def test_classes_whose_services_are_not_ready_keep_their_headroom() -> None:
    assert round_of(ramp("tier1", 1), not_started=(0,)).moves == {}
    assert set(round_of(ramp("tier1", 1), not_started=(2,)).moves) == {"tier1"}


def test_equal_priorities_share_one_rounds_headroom_without_overshooting() -> None:
    a, b = ramp("shop", 0, util=0.7), ramp("accounts", 0, util=0.7)
    moves = round_of(a, b).moves  # same priority: judged by name, accounts first
    alone = round_of(ramp("accounts", 0, util=0.7)).moves["accounts"]
    assert moves["accounts"] == alone  # the first gets what it would get alone
    assert moves.get("shop", 0.0) < alone  # the second only what is left


def test_a_database_over_its_limit_backs_off_the_least_important_class_that_moved() -> None:
    first = ramp("tier0", 0, moved=1.0, util=0.97)
    second = ramp("tier1", 1, moved=0.4, util=0.97)
    moves = round_of(first, second).moves
    assert set(moves) == {"tier1"} and moves["tier1"] < 0.4  # tier 0 keeps its users


def test_a_class_whose_own_errors_breach_backs_off_itself() -> None:
    only = ramp("tier0", 0, moved=0.5, errors=0.2)
    assert round_of(only).moves["tier0"] < 0.5


def test_tiny_or_masked_moves_never_make_traffic_look_cheap() -> None:
    """A move too small to rise above the noise, or one made while an earlier surge was
    ending (utilisation fell), says nothing about what the next one costs."""
    samples = [Sample(t=t, share=0.5, db_util=u, p99_ms=100, error_rate=0.0,
                      cache_hit_ratio=0.6) for t, u in ((0, 0.6), (30, 0.55), (60, 0.5))]
    falling = [Change(t=10, share_from=0.5, share_to=0.52)]
    cold = decide(samples, share=0.52, policy=POLICY, now=60)
    masked = decide(samples, share=0.52, policy=POLICY, now=60, changes=falling)
    assert cold.kind == masked.kind == DecisionKind.advance
    assert masked.share == cold.share  # priced cold, not as free


def test_a_move_never_goes_further_than_cold_traffic_could_below_the_limit() -> None:
    """Whatever past moves seemed to cost, near the limit the step is what all-cold
    traffic could take without passing it."""
    cheap = ramp("tier0", 0, moved=0.2, util=0.85)
    lane = cheap.lanes[0]
    # earlier moves looked nearly free (an earlier surge was ending meanwhile)
    lane.changes = [Change(t=50.0, share_from=0.5, share_to=0.6)]
    lane.samples = [Sample(t=t, share=0.6, db_util=u, p99_ms=100, error_rate=0.0,
                           cache_hit_ratio=0.7) for t, u in ((40, 0.849), (60, 0.85),
                                                             (80, 0.85), (90, 0.85))]
    moved = round_of(cheap).moves.get("tier0", cheap.moved)
    cold_per_share = 0.85 / 0.5 / 0.3 * (1 + POLICY.surge_allowance) * cheap.load_share * 0.5
    grown = (cheap.share(lane, moved) - cheap.share(lane)) * cold_per_share
    assert 0.85 + grown <= LIMIT + 1e-9
