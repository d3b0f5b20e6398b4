"""meter.relay: the combined remote + local relay machine (spec sections 4 and 6)."""

import json

import pytest
from hypothesis import given, settings, strategies as st

from meter import relay as R
from meter import wallet as W

OP = 0x0A0B0C0D
DELAY = 600

# How to reach each start state through the public API only.
STARTS = {
    "CL": [],
    "WT": [("cmd", R.TRIP)],
    "RT": [("cmd", R.TRIP), ("wait", DELAY)],
    "P1": [("cmd", R.PRETRIP1)],
    "P2": [("cmd", R.PRETRIP2)],
    "PM": [("cmd", R.TRIP), ("wait", DELAY), ("cmd", R.CLOSE_PERMIT)],
    "LP": [("local", W.PRETRIP)],
    "LT": [("local", W.TRIP)],
    "CLH": [("cmd", R.HOLD)],
    "PMH": [("cmd", R.TRIP), ("wait", DELAY), ("cmd", R.CLOSE_PERMIT), ("cmd", R.HOLD)],
}
CODE = {"CL": R.S_CLOSED, "CLH": R.S_CLOSED_HOLD, "WT": R.S_WAIT_TRIP, "RT": R.S_REMOTE_TRIP,
        "P1": R.S_PRETRIP1, "P2": R.S_PRETRIP2, "PM": R.S_PERMIT, "PMH": R.S_PERMIT_HOLD,
        "LP": R.S_LOCAL_PRETRIP, "LT": R.S_LOCAL_TRIP}
OPEN = {"RT", "P1", "P2", "PM", "PMH", "LP", "LT"}

EVENTS = [("cmd", R.TRIP), ("cmd", R.CLOSE_PERMIT), ("cmd", R.DIRECT_CLOSE), ("cmd", R.PRETRIP1),
          ("cmd", R.PRETRIP2), ("cmd", R.HOLD), ("cmd", R.HOLD_OFF), ("local", W.PRETRIP),
          ("local", W.TRIP), ("local", W.CLOSE), ("local", W.RECHARGED), ("button", None),
          ("power_up", None)]

# start -> state after each event, in the order of EVENTS:
#          TRIP   PERMIT DIRECT PRE1   PRE2   HOLD   H_OFF  lPRE   lTRIP  lCLOSE lRECH  button pwr_up
TABLE = {
    "CL":  ("WT",  "CL",  "CL",  "P1",  "P2",  "CLH", "CL",  "LP",  "LT",  "CL",  "CL",  "CL",  "CL"),
    "WT":  ("WT",  "CL",  "CL",  "P1",  "P2",  "CLH", "WT",  "LP",  "LT",  "WT",  "WT",  "WT",  "RT"),
    "RT":  ("RT",  "PM",  "CL",  "P1",  "P2",  "PMH", "RT",  "RT",  "LT",  "RT",  "RT",  "RT",  "RT"),
    "P1":  ("RT",  "PM",  "CL",  "P1",  "P2",  "PMH", "P1",  "P1",  "LT",  "P1",  "CL",  "P1",  "CL"),
    "P2":  ("RT",  "PM",  "CL",  "P1",  "P2",  "PMH", "P2",  "P2",  "LT",  "P2",  "CL",  "P2",  "PM"),
    "PM":  ("RT",  "PM",  "CL",  "P1",  "P2",  "PMH", "PM",  "PM",  "LT",  "PM",  "PM",  "CL",  "PM"),
    "LP":  ("RT",  "LP",  "CL",  "P1",  "P2",  "PMH", "LP",  "LP",  "LT",  "CL",  "LP",  "CL",  "LP"),
    "LT":  ("LT",  "LT",  "LT",  "LT",  "LT",  "PMH", "LT",  "LP",  "LT",  "CL",  "LP",  "LT",  "LT"),
    "CLH": ("CLH", "CLH", "CLH", "CLH", "CLH", "CLH", "CL",  "CLH", "CLH", "CLH", "CLH", "CLH", "CLH"),
    "PMH": ("PMH", "PMH", "CLH", "PMH", "PMH", "PMH", "PM",  "PMH", "PMH", "PMH", "PMH", "CLH", "PMH"),
}


def apply(relay, step, now):
    kind, arg = step
    if kind == "cmd":
        return relay.command(arg, 2, now, OP)
    if kind == "local":
        return relay.local(arg, now)
    if kind == "button":
        return relay.button(now)
    if kind == "wait":
        return relay.tick(now + arg)
    return relay.power_up(now)


def build(start, **kw):
    relay = R.Relay(trip_delay=DELAY, **kw)
    now = 1000
    for step in STARTS[start]:
        apply(relay, step, now)
        if step[0] == "wait":
            now += step[1]
    relay.pop_events()
    return relay, now


@pytest.mark.parametrize("start", list(TABLE))
def test_start_states_are_what_they_claim(start):
    relay, _ = build(start)
    assert relay.state == CODE[start]
    assert relay.commanded_open == (start in OPEN)
    assert relay.hold == start.endswith("H")


@pytest.mark.parametrize("start, col", [(s, i) for s in TABLE for i in range(len(EVENTS))],
                         ids=lambda v: v if isinstance(v, str) else str(EVENTS[v][1] or EVENTS[v][0]))
def test_transition_table(start, col):
    relay, now = build(start)
    was_open = relay.commanded_open
    result = apply(relay, EVENTS[col], now)
    end = TABLE[start][col]
    assert relay.state == CODE[end], "%s --%r--> %d" % (start, EVENTS[col], relay.state)
    assert relay.commanded_open == (end in OPEN)
    if EVENTS[col][0] == "cmd":
        refused = relay.hold and EVENTS[col][1] in (R.TRIP, R.PRETRIP1, R.PRETRIP2)
        assert result == (R.ERR_REFUSED if refused else 0)
    events = relay.pop_events()
    if was_open == relay.commanded_open:
        assert events == []
    else:
        kind = "trip" if relay.commanded_open else "close"
        remote = EVENTS[col][0] == "cmd" or (EVENTS[col][0] == "power_up" and start == "WT")
        assert events == [(kind, now, OP if remote else R.METER)]


def test_external_relay_closes_on_top_up():
    for start in ("LP", "LT"):
        relay, now = build(start, external=True)
        relay.local(W.RECHARGED, now)
        assert not relay.commanded_open and relay.state == R.S_CLOSED


def test_trip_delay_and_operator_of_delayed_trip():
    relay = R.Relay(trip_delay=DELAY)
    assert relay.command(R.TRIP, 0, 100, OP) == 0
    assert relay.pre_alarm and relay.status3_bits() == 0x80
    assert relay.command(R.TRIP, 0, 400, 0x99) == 0  # a repeat does not restart the delay
    relay.tick(100 + DELAY - 1)
    assert not relay.commanded_open and relay.pop_events() == []
    relay.tick(100 + DELAY)
    assert relay.commanded_open and not relay.pre_alarm
    assert relay.pop_events() == [("trip", 100 + DELAY, OP)]
    assert relay.status3_bits() == 0x50


def test_zero_trip_delay_trips_at_once():
    relay = R.Relay()
    relay.command(R.TRIP, 0, 5, OP)
    assert relay.commanded_open and relay.pop_events() == [("trip", 5, OP)]


def test_pretrip_timers_count_5_minute_steps():
    relay = R.Relay()
    relay.command(R.PRETRIP1, 3, 0, OP)
    relay.tick(899)
    assert relay.commanded_open
    relay.tick(900)
    assert not relay.commanded_open
    assert relay.pop_events() == [("trip", 0, OP), ("close", 900, R.METER)]
    relay.command(R.PRETRIP2, 1, 1000, OP)
    relay.tick(1300)
    assert relay.state == R.S_PERMIT and relay.commanded_open
    assert relay.button(1301) and not relay.commanded_open


def test_bad_commands_change_nothing():
    relay = R.Relay()
    before = relay.dump()
    for n1, n2 in ((0x1F, 0), (0x00, 0), (R.PRETRIP1, 0), (R.PRETRIP2, 0)):
        assert relay.command(n1, n2, 0, OP) == R.ERR_OTHER
    assert relay.dump() == before and relay.pop_events() == []
    with pytest.raises(ValueError):
        relay.local(9, 0)
    relay.local(None, 0)  # "no command" from the wallet
    assert relay.dump() == before


def test_hold_and_alarm_bits():
    relay = R.Relay()
    relay.command(R.ALARM, 0, 0, OP)
    relay.command(R.HOLD, 0, 0, OP)
    assert relay.alarm and relay.status3_bits() == 0x1000
    relay.command(R.ALARM_OFF, 0, 0, OP)
    relay.command(R.HOLD_OFF, 0, 0, OP)
    assert not relay.alarm and relay.status3_bits() == 0


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
            relay = R.Relay.load(json.loads(json.dumps(relay.dump())))
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
        assert bool(relay.status3_bits() & 0x10) == relay.commanded_open
