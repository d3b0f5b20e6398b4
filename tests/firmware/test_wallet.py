"""meter.wallet: balance states (spec section 3), sticky overdraft, top-up rules (section 5)."""

import json

import pytest
from hypothesis import given, settings, strategies as st

from meter import powerup, topup
from meter import wallet as W
from meter.wallet import (ALARM1, ALARM2, CLOSE, CUSTOMER_ERR, NORMAL, OK, OVERDRAFT, PRETRIP, RECHARGED,
                          REPEAT, SUBFEN, TRIP, ZERO, Wallet)
from meter.topup import _COUNT_ERR as COUNT_ERR, _HOARD_ERR as HOARD_ERR  # private (const) in the firmware
from tests.firmware import logic_scenarios as L

CUST = L.CUST


wallet = L.wallet_at


@pytest.mark.parametrize("balance, a1, a2, od, state", L.STATE_ROWS)
def test_state_table(balance, a1, a2, od, state):
    assert wallet(balance, a1, a2, od).evaluate() == state


def spec_state(r, a1, a2, od):
    """Spec section 3 conditions, checked in priority order as written."""
    if (od > 0 and r < 0 and -r >= od) or (od == 0 and r <= 0):
        return OVERDRAFT
    if od > 0 and r <= 0 and -r < od:
        return ZERO
    if a2 > 0 and 0 < r <= a2:
        return ALARM2
    if (a1 > a2 >= 0 and a2 < r <= a1) or (a2 == 0 and r <= a1):
        return ALARM1
    return NORMAL


money = st.integers(0, 5000)


@given(st.integers(-6000, 6000), money, money, money)
def test_state_matches_spec_conditions(r, a1, a2, od):
    assert wallet(r, a1, a2, od).evaluate() == spec_state(r, a1, a2, od)


@settings(max_examples=200)
@given(st.integers(0, 3000), money, money, money, money,
       st.lists(st.integers(0, 40 * SUBFEN), max_size=40))
def test_deduct_commands_only_on_state_change(start, a1, a2, od, cp, charges):
    w = wallet(start, a1, a2, od, cp)
    total = 0
    for c in charges:
        old = w.state
        cmd = w.deduct(c)
        total += c
        assert w.balance == start - total // SUBFEN and w.rem == total % SUBFEN
        if old == OVERDRAFT:  # sticky
            assert w.state == OVERDRAFT and cmd is None
        elif w.state == old:
            assert cmd is None
        else:
            assert w.state == spec_state(w.balance, a1, a2, od)
            assert cmd == W.relay_cmd(w.state, old) and w.last_cmd == cmd


def test_descent_emits_the_table_commands():
    w = wallet(2000, alarm1=1500, alarm2=1000, overdraft=200)
    seen = []
    for _ in range(23):
        cmd = w.deduct(100 * SUBFEN)
        if cmd is not None:
            seen.append((w.balance, w.state, cmd))
    assert seen == [(1500, ALARM1, CLOSE), (1000, ALARM2, PRETRIP), (0, ZERO, PRETRIP),
                    (-200, OVERDRAFT, TRIP)]


# --- top-ups ----------------------------------------------------------------------------

def test_recharge_count_rules():
    w = wallet(1000)
    assert w.count == 1
    assert topup.recharge(w, 500, 2, CUST) == (OK, RECHARGED)
    assert (w.balance, w.count, w.total_bought) == (1500, 2, 500)
    assert topup.recharge(w, 500, 2, CUST) == (REPEAT, None)      # a retry applies nothing
    assert topup.recharge(w, 500, 4, CUST) == (COUNT_ERR, None)   # skipped one
    assert topup.recharge(w, 500, 1, CUST) == (COUNT_ERR, None)   # old one
    assert topup.recharge(w, 500, 3, "000000000043") == (CUSTOMER_ERR, None)
    assert (w.balance, w.count, w.total_bought) == (1500, 2, 500)


def test_recharge_before_opening_is_refused():
    w = Wallet()
    assert topup.recharge(w, 500, 1, "") == (CUSTOMER_ERR, None)
    assert w.balance == 0 and w.count == 0


def test_hoarding_limit_is_inclusive():
    w = wallet(1000, hoard=5000)
    assert topup.recharge(w, 4001, 2, CUST) == (HOARD_ERR, None)
    assert topup.recharge(w, 4000, 2, CUST) == (OK, RECHARGED)
    assert w.balance == 5000
    topup.set_limits(w, hoard=0)  # 0 = no hoarding limit
    assert topup.recharge(w, 10 ** 8, 3, CUST)[0] == OK


def test_top_up_pays_overdraft_first_and_keeps_remainder():
    w = wallet(100, overdraft=1000)
    w.deduct(300 * SUBFEN + 7)
    assert (w.balance, w.rem, w.state) == (-200, 7, ZERO)
    assert topup.recharge(w, 1000, 2, CUST) == (OK, RECHARGED)
    assert (w.balance, w.rem, w.state) == (800, 7, ALARM1)


@pytest.mark.parametrize("top_up, state, cmd", [
    (10000, OVERDRAFT, TRIP),     # lands exactly on close-permitted: still locked
    (10001, NORMAL, RECHARGED),   # one fen above: unlocked
])
def test_sticky_overdraft_left_only_above_close_permitted(top_up, state, cmd):
    w = wallet(0, overdraft=0, close_ok=10000)
    assert w.state == OVERDRAFT
    assert topup.recharge(w, top_up, 2, CUST) == (OK, cmd)
    assert w.state == state


def test_alarm_change_respects_sticky_rule_overdraft_change_does_not():
    w = wallet(0, overdraft=0, close_ok=500)
    topup.recharge(w, 300, 2, CUST)
    assert w.state == OVERDRAFT
    assert topup.set_limits(w, alarm1=100, alarm2=50) is None and w.state == OVERDRAFT
    assert topup.set_limits(w, close_ok=0) is None and w.state == OVERDRAFT  # no evaluation
    # 300 > CP now: leaves OVERDRAFT; the table gives pre-trip (button-restorable)
    assert topup.set_limits(w, alarm2=60) == PRETRIP and w.state == NORMAL
    w2 = wallet(0, overdraft=0, close_ok=500)
    topup.recharge(w2, 300, 2, CUST)
    assert topup.set_limits(w2, overdraft=1000) == PRETRIP and w2.state == ALARM2


def test_bad_limits_change_nothing():
    w = wallet(700)
    before = w.dump()
    for bad in ({"alarm1": -1}, {"alarm2": 1.5}, {"overdraft": "5"}, {"hoard": -3},
                {"alarm1": 5, "close_ok": -1}):
        with pytest.raises(ValueError, match=list(bad)[-1] + " must be whole fen"):  # names the field
            topup.set_limits(w, **bad)
    assert w.dump() == before
    with pytest.raises(ValueError):
        w.deduct(-1)
    with pytest.raises(ValueError):
        topup.recharge(w, -100, 2, CUST)


def test_open_account_rules():
    w = Wallet()
    assert topup.open_account(w, 5000, 2, CUST) == (COUNT_ERR, None)
    assert not w.opened and w.customer == ""
    assert topup.open_account(w, 5000, 1, CUST) == (OK, RECHARGED)
    assert w.opened and w.customer == CUST and w.balance == 5000 and w.state == NORMAL
    assert topup.open_account(w, 5000, 1, CUST) == (REPEAT, None)
    assert topup.open_account(w, 100, 2, "999999999999") == (CUSTOMER_ERR, None)
    assert topup.open_account(w, 100, 2, CUST) == (OK, RECHARGED)  # already theirs: a top-up
    assert w.balance == 5100
    assert topup.init_wallet(w, 0) == TRIP
    assert (w.balance, w.count, w.opened, w.state) == (0, 0, False, OVERDRAFT)


@settings(max_examples=100)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 10000)), max_size=30))
def test_exactly_once_under_any_retry_sequence(attempts):
    w = wallet(0, hoard=0)
    applied = {}
    for count, amount in attempts:
        before = w.count
        res, _ = topup.recharge(w, amount, count, CUST)
        assert res == (OK if count == before + 1 else REPEAT if count == before else COUNT_ERR)
        if res == OK:
            assert count not in applied
            applied[count] = amount
    assert w.balance == sum(applied.values())
    assert w.count == 1 + len(applied) and sorted(applied) == list(range(2, w.count + 1))


@pytest.mark.parametrize("state, last, expected", [
    (OVERDRAFT, TRIP, TRIP), (ZERO, PRETRIP, PRETRIP), (ALARM2, PRETRIP, PRETRIP),
    (ALARM2, RECHARGED, None), (NORMAL, CLOSE, None), (ALARM1, CLOSE, None)])
def test_release_cmd(state, last, expected):
    w = Wallet()
    w.state, w.last_cmd = state, last
    assert topup.release_cmd(w) == expected


def test_dump_load_round_trip():
    w = wallet(1234, alarm1=2000, alarm2=700, overdraft=300, close_ok=50, hoard=90000)
    w.deduct(12345678)
    again = powerup.wallet_from(json.loads(json.dumps(w.dump())))
    assert again.dump() == w.dump()
    assert again.deduct(10 ** 6) == w.deduct(10 ** 6) and again.dump() == w.dump()
    bad = w.dump()
    bad[1] = SUBFEN
    with pytest.raises(ValueError):
        powerup.wallet_from(bad)
