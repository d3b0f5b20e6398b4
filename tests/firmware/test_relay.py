"""meter.relay: the combined remote + local relay machine (spec sections 4 and 6)."""

import json

import pytest
from hypothesis import given, settings, strategies as st

from meter import disrec, powerup, rarecmd
from meter import relay as R
from meter import relaycmd
from meter import topup
from meter import wallet as W
from tests.firmware import logic_scenarios as L

OP = L.RELAY_OP
DELAY = L.RELAY_DELAY
apply = L.relay_apply
build = L.relay_build


@pytest.mark.parametrize("start", list(L.RELAY_TABLE))
def test_start_states_are_what_they_claim(start):
    relay, _ = build(start)
    assert rarecmd.relay_state(relay) == L.RELAY_CODE[start]
    assert relay.commanded_open == (start in L.RELAY_OPEN)
    assert relay.hold == start.endswith("H")


@pytest.mark.parametrize("start, col", [(s, i) for s in L.RELAY_TABLE for i in range(len(L.RELAY_EVENTS))],
                         ids=lambda v: v if isinstance(v, str) else "%s-%s" % L.RELAY_EVENTS[v])
def test_transition_table(start, col):
    # the table and the checks live in logic_scenarios.py so MicroPython runs them too
    L.check_relay_transition(start, col)


def test_external_relay_closes_on_top_up():
    for start in ("LP", "LT"):
        relay, now = build(start, external=True)
        relay.local(W.RECHARGED, now)
        assert not relay.commanded_open and rarecmd.relay_state(relay) == 0


def test_trip_delay_and_operator_of_delayed_trip():
    relay = R.Relay(trip_delay=DELAY)
    assert relaycmd.command(relay, R.TRIP, 0, 100, OP) == 0
    assert rarecmd.relay_state(relay) == 2 and disrec.relay_bits(relay) == 0x80  # waiting to trip: the pre-trip alarm
    assert relaycmd.command(relay, R.TRIP, 0, 400, 0x99) == 0  # a repeat does not restart the delay
    relay.tick(100 + DELAY - 1)
    assert not relay.commanded_open and relay.pop_events() == []
    relay.tick(100 + DELAY)
    assert relay.commanded_open and not disrec.relay_bits(relay) & 0x80
    assert relay.pop_events() == [("trip", 100 + DELAY, OP)]
    assert disrec.relay_bits(relay) == 0x50


def test_zero_trip_delay_trips_at_once():
    relay = R.Relay()
    relaycmd.command(relay, R.TRIP, 0, 5, OP)
    assert relay.commanded_open and relay.pop_events() == [("trip", 5, OP)]


def test_pretrip_timers_count_5_minute_steps():
    relay = R.Relay()
    relaycmd.command(relay, R.PRETRIP1, 3, 0, OP)
    relay.tick(899)
    assert relay.commanded_open
    relay.tick(900)
    assert not relay.commanded_open
    assert relay.pop_events() == [("trip", 0, OP), ("close", 900, R.METER)]
    relaycmd.command(relay, R.PRETRIP2, 1, 1000, OP)
    relay.tick(1300)
    assert rarecmd.relay_state(relay) == L.S_PERMIT and relay.commanded_open
    assert relay.button(1301) and not relay.commanded_open


def test_bad_commands_change_nothing():
    relay = R.Relay()
    before = relay.dump()
    for n1, n2 in ((0x1F, 0), (0x00, 0), (R.PRETRIP1, 0), (R.PRETRIP2, 0)):
        assert relaycmd.command(relay, n1, n2, 0, OP) == relaycmd._ERR_OTHER
    assert relay.dump() == before and relay.pop_events() == []
    with pytest.raises(ValueError):
        relay.local(9, 0)
    relay.local(None, 0)  # "no command" from the wallet
    assert relay.dump() == before


def test_hold_and_alarm_bits():
    relay = R.Relay()
    relaycmd.command(relay, R.ALARM, 0, 0, OP)
    relaycmd.command(relay, R.HOLD, 0, 0, OP)
    assert relay.alarm and disrec.relay_bits(relay) == 0x1000
    relaycmd.command(relay, R.ALARM_OFF, 0, 0, OP)
    relaycmd.command(relay, R.HOLD_OFF, 0, 0, OP)
    assert not relay.alarm and disrec.relay_bits(relay) == 0


steps = st.one_of(
    st.tuples(st.just("cmd"), st.sampled_from([R.TRIP, R.CLOSE_PERMIT, R.DIRECT_CLOSE, R.PRETRIP1,
                                               R.PRETRIP2, R.ALARM, R.ALARM_OFF, R.HOLD, R.HOLD_OFF])),
    st.tuples(st.just("local"), st.sampled_from([W.CLOSE, W.PRETRIP, W.TRIP, W.RECHARGED])),
    st.tuples(st.just("button"), st.none()),
    st.tuples(st.just("wait"), st.integers(0, 900)),
    st.tuples(st.just("power_up"), st.none()),
    st.tuples(st.just("reload"), st.none()),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(steps, max_size=40), st.booleans())
def test_invariants_over_any_sequence(seq, external):
    relay = R.Relay(trip_delay=DELAY, external=external)
    now = 0
    for kind, arg in seq:
        was_open, held = relay.commanded_open, relay.hold
        if kind == "reload":  # a power-safe store round trip changes nothing
            relay = powerup.relay_from(json.loads(json.dumps(relay.dump())))
            relay.pop_events()
            continue
        if kind == "wait":
            now += arg
        apply(relay, (kind, arg), now)
        now += 1
        events = relay.pop_events()
        # exactly one event per change of the commanded state, of the matching kind
        if was_open == relay.commanded_open:
            assert events == []
        else:
            assert [e[0] for e in events] == ["trip" if relay.commanded_open else "close"]
        if held and relay.hold:
            assert not (relay.commanded_open and not was_open), "opened under power hold"
        if kind in ("button",) or (kind == "local" and arg in (W.CLOSE, W.RECHARGED)):
            assert not (relay.commanded_open and not was_open)
        assert bool(disrec.relay_bits(relay) & 0x10) == relay.commanded_open


# --- wallet and relay together, wired as the meter core wires them ---------------------------

actions = st.one_of(
    st.tuples(st.just("spend"), st.integers(0, 3000)),          # fen of energy
    st.tuples(st.just("recharge"), st.integers(0, 5000)),       # fen
    st.tuples(st.just("retry"), st.integers(0, 5000)),          # same purchase count again
    st.tuples(st.just("button"), st.none()),
    st.tuples(st.just("remote"), st.sampled_from([R.TRIP, R.CLOSE_PERMIT, R.DIRECT_CLOSE, R.HOLD, R.HOLD_OFF])),
    st.tuples(st.just("limits"), st.tuples(st.integers(0, 3000), st.integers(0, 2000), st.integers(0, 1500))),
    st.tuples(st.just("power_cycle"), st.none()),
)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 1000), st.lists(actions, max_size=40))
def test_wallet_and_relay_never_disagree(opening, close_ok, seq):
    m = L.Meter(W.Wallet(close_ok=close_ok), R.Relay())
    res, cmd = topup.open_account(m.w, opening, 1, L.CUST)
    assert res == W.OK
    m.local(cmd)
    paid, charged = opening, 0
    for kind, arg in seq:
        if kind == "spend":
            m.spend(arg)
            charged += arg
        elif kind == "recharge":
            if m.recharge(arg // 100) == W.OK:
                paid += arg // 100 * 100
        elif kind == "retry":
            before = m.w.balance
            assert m.recharge(arg // 100, count=m.w.count) == W.REPEAT and m.w.balance == before
        elif kind == "button":
            m.button()
        elif kind == "remote":
            if arg == R.HOLD_OFF:
                m.release_hold()
            else:
                m.remote(arg)
        elif kind == "limits":
            a1, a2, od = arg
            m.local(topup.set_limits(m.w, alarm1=a1, alarm2=a2, overdraft=od))
        else:
            m.power_cycle()
        w, r = m.w, m.r
        # no money appears or vanishes (spend() charges whole fen at the default price)
        assert (w.balance, w.rem) == (paid - charged, 0)
        # an exhausted wallet is off supply unless power hold protects it
        if w.state == W.OVERDRAFT and not r.hold:
            assert r.commanded_open and rarecmd.relay_state(r) == L.S_LOCAL_TRIP
        # only OVERDRAFT may lock the customer out of the button
        if w.state != W.OVERDRAFT:
            assert rarecmd.relay_state(r) != L.S_LOCAL_TRIP
        # every change of the commanded state was logged exactly once
        assert m.trips - m.closes == (1 if r.commanded_open else 0)
