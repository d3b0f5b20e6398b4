import numpy as np
import pytest

from headend.costctl.decide import (ACTIONS, CLOSE_PERMIT, CLOSE_PERMITTED, CUT, CUT_NOTICE, DIRECT_CLOSE, HOLD,
                                    NONE, NOTICE1, NOTICE2, ON, REASONS, TRIP, Rules, decide, describe)

NOON_WEDNESDAY = (12 * 60, 3, (2025, 6, 4))
NOW = 10_000_000


def one(balance, *, a1=1000, a2=500, od=0, cp=0, protected=False, direct=False, level=0, at=-1, supply=ON,
        local=NOON_WEDNESDAY, rules=Rules()):
    d = decide(np.array([balance]), a1, a2, od, cp, protected, direct, np.array([level]), np.array([at]),
               np.array([supply]), NOW, local, rules)
    return int(d.action[0]), describe(d, 0), int(d.notice_level[0]), int(d.notice_at[0]), int(d.supply[0])


def test_notices_follow_the_falling_balance_once_per_band():
    assert one(5000)[0] == NONE
    action, text, level, at, _ = one(900)
    assert (action, level, at) == (NOTICE1, 1, NOW) and "alarm amount 1" in text
    assert one(800, level=1)[0] == NONE                  # already told
    assert one(400, level=1)[:1] + one(400, level=1)[2:3] == (NOTICE2, 2)
    assert one(400)[0] == NOTICE2                        # straight past alarm 1: the stronger notice only
    action, text, level, _, supply = one(0, level=2)
    assert (action, level, supply) == (CUT_NOTICE, 3, ON) and "cut notice" in text


def test_trip_only_after_the_notice_period():
    long_ago = NOW - 86400
    assert one(-1, level=3, at=NOW - 3600)[0] == HOLD
    assert "notice period" in one(-1, level=3, at=NOW - 3600)[1]
    action, text, _, _, supply = one(-1, level=3, at=long_ago)
    assert (action, supply) == (TRIP, CUT) and "trip" in text
    # overdraft limit: -999 with 1000 overdraft is still fine, -1000 is the trip level
    assert one(-999, od=1000, level=2, at=long_ago)[0] == NONE
    assert one(-1000, od=1000, level=3, at=long_ago)[0] == TRIP


@pytest.mark.parametrize("kw, words", [
    (dict(protected=True), "protected"),
    (dict(local=(23 * 60, 3, (2025, 6, 4))), "night"),
    (dict(local=(6 * 60, 3, (2025, 6, 4))), "night"),
    (dict(local=(12 * 60, 3, (2025, 10, 1)), rules=Rules(holidays=((2025, 10, 1),))), "holiday"),
    (dict(local=(12 * 60, 0, (2025, 6, 8)), rules=Rules(no_trip_weekdays=(0, 6))), "no-trip day"),
    (dict(rules=Rules(trips=False)), "disabled"),
])
def test_a_due_trip_is_held_with_its_reason(kw, words):
    action, text, _, _, supply = one(-50, level=3, at=NOW - 2 * 86400, **kw)
    assert (action, supply) == (HOLD, ON) and words in text


def test_night_rule_is_configurable():
    rules = Rules(night_start_min=0, night_end_min=0)        # no night rule
    assert one(-50, level=3, at=0, local=(23 * 60, 3, (2025, 6, 4)), rules=rules)[0] == TRIP
    day_window = Rules(night_start_min=1 * 60, night_end_min=5 * 60)
    assert one(-50, level=3, at=0, local=(3 * 60, 3, (2025, 6, 4)), rules=day_window)[0] == HOLD
    assert one(-50, level=3, at=0, local=(23 * 60, 3, (2025, 6, 4)), rules=day_window)[0] == TRIP


def test_restore_after_payment_by_policy():
    action, text, _, _, supply = one(2000, cp=1500, level=3, supply=CUT)
    assert (action, supply) == (CLOSE_PERMIT, CLOSE_PERMITTED) and "close-permitted amount" in text
    action, _, _, _, supply = one(2000, cp=1500, level=3, supply=CUT, direct=True)
    assert (action, supply) == (DIRECT_CLOSE, ON)
    action, text, _, _, supply = one(1500, cp=1500, level=3, supply=CUT)   # must be *above* close_ok
    assert (action, supply) == (NONE, CUT) and "not above" in text


def test_recovery_lowers_the_notice_level_so_the_next_fall_notifies_again():
    action, text, level, _, _ = one(5000, level=2, at=NOW - 10)
    assert (action, level) == (NONE, 0) and "recovered" in text
    assert one(900, level=0)[0] == NOTICE1


def test_close_permitted_supply_can_be_tripped_again():
    assert one(-1, level=3, at=0, supply=CLOSE_PERMITTED)[0] == TRIP


def test_many_accounts_in_one_call_match_one_by_one():
    rng = np.random.default_rng(4)
    n = 2000
    bal = rng.integers(-3000, 3000, n)
    a1 = rng.integers(0, 1500, n)
    a2 = a1 // 2
    od = rng.integers(0, 1000, n)
    cp = rng.integers(0, 1000, n)
    prot = rng.random(n) < 0.1
    direct = rng.random(n) < 0.5
    level = rng.integers(0, 4, n)
    at = np.where(level > 0, NOW - rng.integers(0, 3 * 86400, n), -1)
    sup = rng.integers(0, 3, n)
    d = decide(bal, a1, a2, od, cp, prot, direct, level, at, sup, NOW, NOON_WEDNESDAY)
    for i in range(0, n, 37):
        single = decide(bal[i:i + 1], a1[i], a2[i], od[i], cp[i], prot[i], direct[i], level[i:i + 1], at[i:i + 1],
                        sup[i:i + 1], NOW, NOON_WEDNESDAY)
        assert tuple(int(x[0]) for x in single) == tuple(int(x[i]) for x in d)
    assert not np.any((d.action == TRIP) & prot)             # never a protected customer
    assert len(ACTIONS) == 8 and len(REASONS) == 13


def test_bad_rules_and_limits_are_refused():
    with pytest.raises(ValueError, match="minute of the day"):
        Rules(night_start_min=1440)
    with pytest.raises(ValueError, match="limits"):
        one(0, od=-1)
