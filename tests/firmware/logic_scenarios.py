# Scenarios for the meter's cost-control logic (tariff, wallet, relay), written as plain
# functions with asserts so that the very same code runs under CPython (pytest, via
# test_logic_micropython.py) and inside the real MicroPython binary.
# Keep this module MicroPython-clean: no typing, no f-strings, no CPython-only imports.

from meter import clock, desktop, disrec, powerup, rarecmd, tariffcheck
from meter import relay as R
from meter import relaycmd
from meter import topup
from meter import wallet as W
from meter.tariff import Tariff

S_REMOTE_TRIP = 3  # meter.rarecmd.relay_state's codes the scenarios name
S_PERMIT = 6
S_LOCAL_TRIP = 9

YUAN = 100  # fen
SUBFEN = W.SUBFEN
CUST = "000012345678"


class Meter:
    """The wiring the meter core does between wallet and relay, reduced to what the
    scenarios need (the real core lives in firmware/meter/ and is tested on its own)."""

    def __init__(self, wallet, relay, tariff=None):
        self.w, self.r, self.t = wallet, relay, tariff or Tariff()
        self.now = clock.from_fields(2025, 3, 1, 12, 0, 0)
        self.ladder = 0
        self.last = self.now
        self.trips = 0
        self.closes = 0
        self.log = []

    def _events(self):
        for ev in self.r.pop_events():
            self.log.append(ev)
            if ev[0] == "trip":
                self.trips += 1
            else:
                self.closes += 1

    def local(self, cmd):
        self.r.local(cmd, self.now)
        self._events()

    def load(self, wh, seconds=60):
        """`wh` Wh registered `seconds` from now, charged (local mode)."""
        self.now += seconds
        self.ladder = self.t.settle(self.now, self.last, self.ladder)
        cost, self.ladder, _ = self.t.charge(wh, self.now, self.ladder)
        self.last = self.now
        self.local(self.w.deduct(cost))
        self.r.tick(self.now)
        self._events()

    def spend(self, fen):
        # at the default 0.5000 yuan/kWh one Wh costs 0.05 fen: 20 Wh per fen
        self.load(fen * 20)

    def recharge(self, yuan, count=None, customer=CUST):
        res, cmd = topup.recharge(self.w, yuan * YUAN, self.w.count + 1 if count is None else count,
                                   customer)
        self.local(cmd)
        return res

    def button(self):
        self.now += 3
        closed = self.r.button(self.now)
        self._events()
        return closed

    def remote(self, n1, n2=0, operator=0x12345678):
        res = relaycmd.command(self.r, n1, n2, self.now, operator)
        self._events()
        return res

    def wait(self, seconds):
        self.now += seconds
        self.r.tick(self.now)
        self._events()

    def power_cycle(self, off_seconds=600):
        # what survives a cut is what dump() gave; the clock runs on the backup battery
        w, r, t = powerup.wallet_from(self.w.dump()), powerup.relay_from(self.r.dump()), powerup.tariff_from(desktop.tariff_dump(self.t))
        self.w, self.r, self.t = w, r, t
        self.now += off_seconds
        powerup.relay_up(self.r, self.now)
        self._events()

    def release_hold(self):
        self.remote(R.HOLD_OFF)
        self.local(topup.release_cmd(self.w))


def opened_meter(amount_yuan=100, **limits):
    m = Meter(W.Wallet(**limits), R.Relay())
    res, cmd = topup.open_account(m.w, amount_yuan * YUAN, 1, CUST)
    assert res == W.OK
    m.local(cmd)
    assert not m.r.commanded_open
    return m


def scenario_full_life():
    """Open, consume through alarm 1, alarm 2, zero, overdraft, trip, recharge, button,
    power cycle."""
    m = opened_meter(100, alarm1=2000, alarm2=1000, overdraft=500, close_ok=0)
    assert m.w.state == W.NORMAL and m.w.balance == 10000
    m.spend(8000)  # 20.00 left: alarm 1 is at 20.00 inclusive
    assert m.w.state == W.ALARM1 and m.w.balance == 2000
    assert not m.r.commanded_open and m.trips == 0
    m.spend(1000)  # 10.00: alarm 2 -> local pre-trip
    assert m.w.state == W.ALARM2 and m.r.commanded_open and m.trips == 1
    assert m.log[-1][2] == R.METER
    assert m.button() and not m.r.commanded_open and m.closes == 1
    m.spend(500)  # still ALARM2: no new command, so the customer keeps power
    assert m.w.state == W.ALARM2 and not m.r.commanded_open
    m.spend(500)  # balance 0: ZERO (overdraft allowed) -> pre-trip again
    assert m.w.balance == 0 and m.w.state == W.ZERO and m.r.commanded_open and m.trips == 2
    assert m.button() and m.closes == 2
    m.spend(499)
    assert m.w.state == W.ZERO and not m.r.commanded_open
    m.spend(1)  # -5.00 = -overdraft limit: hard trip
    assert m.w.balance == -500 and m.w.state == W.OVERDRAFT and m.r.commanded_open
    assert m.trips == 3
    assert not m.button() and m.r.commanded_open
    # a remote direct close does not lift the overdraft trip
    assert m.remote(R.DIRECT_CLOSE) == 0 and m.r.commanded_open
    m.spend(100)  # sticky: still OVERDRAFT, no new command
    assert m.w.balance == -600 and m.w.state == W.OVERDRAFT and m.trips == 3
    # top-up pays the overdraft first, then the customer must press the button
    assert m.recharge(50) == W.OK
    assert m.w.balance == 4400 and m.w.state == W.NORMAL and m.w.count == 2
    assert m.r.commanded_open and m.closes == 2
    m.power_cycle()
    assert m.r.commanded_open and m.w.balance == 4400 and m.w.count == 2
    assert m.button() and not m.r.commanded_open and m.closes == 3
    m.power_cycle()
    assert not m.r.commanded_open
    assert m.w.total_bought == 15000


def scenario_clou_overdraw_nz():
    """CLOU Overdraw_NZ: close-permitted 100 yuan; top up 30 -> close count unchanged;
    top up 110 -> the operator presses the button -> close count +1."""
    m = opened_meter(10, overdraft=0, close_ok=100 * YUAN)
    m.spend(1000)
    assert m.w.state == W.OVERDRAFT and m.r.commanded_open
    closes = m.closes
    assert m.recharge(30) == W.OK
    assert m.w.balance == 3000 and m.w.state == W.OVERDRAFT  # not above close-permitted
    assert m.r.commanded_open and not m.button() and m.closes == closes
    assert m.recharge(110) == W.OK
    assert m.w.balance == 14000 and m.w.state == W.NORMAL
    assert m.r.commanded_open and m.closes == closes  # internal relay: waits for the button
    assert m.button() and m.closes == closes + 1 and not m.r.commanded_open


def scenario_clou_keep_power():
    """CLOU keep-power steps 1/2: hold + OD = 0 + 3 min of load -> trip count unchanged;
    release + 3 min of load -> trip count +1."""
    m = opened_meter(1, overdraft=0)
    assert m.remote(R.HOLD) == 0 and m.r.hold
    assert disrec.relay_bits(m.r) & 0x1000
    trips = m.trips
    for _ in range(3):
        m.load(1000, 60)  # 50 fen a minute
    assert m.w.state == W.OVERDRAFT and m.w.balance < 0
    assert m.trips == trips and not m.r.commanded_open
    assert m.remote(R.TRIP) == R.ERR_REFUSED and not m.r.commanded_open
    balance = m.w.balance
    m.release_hold()
    for _ in range(3):
        m.load(1000, 60)
    assert m.w.balance < balance  # deduction kept running
    assert m.trips == trips + 1 and m.r.commanded_open
    assert m.log[-1][0] == "trip" and m.log[-1][2] == R.METER


def scenario_hold_release_pretrip():
    """Release of power hold in ALARM2 after a refused pre-trip pre-trips at once."""
    m = opened_meter(20, alarm1=1500, alarm2=1000)
    m.remote(R.HOLD)
    m.spend(1500)
    assert m.w.state == W.ALARM2 and not m.r.commanded_open
    m.release_hold()
    assert m.r.commanded_open and m.button() and not m.r.commanded_open


def scenario_remote_commands():
    """Remote trip with a trip delay, close permitted + button, pre-trips 1/2, alarm,
    power-up resolution; operator codes on the events."""
    m = Meter(W.Wallet(), R.Relay(trip_delay=600))
    op = 0x11223344
    assert m.remote(R.TRIP, operator=op) == 0
    assert not m.r.commanded_open and rarecmd.relay_state(m.r) == 2 and disrec.relay_bits(m.r) & 0x80  # waiting to trip
    m.wait(599)
    assert not m.r.commanded_open
    m.wait(1)
    assert m.r.commanded_open and m.log[-1] == ("trip", m.now, op)
    assert disrec.relay_bits(m.r) & 0x50 == 0x50
    assert not m.button()  # a remote trip is not button-restorable
    assert m.remote(R.CLOSE_PERMIT, operator=op) == 0 and m.r.commanded_open
    assert m.button() and m.log[-1] == ("close", m.now, R.METER)
    # pre-trip 1: open now, direct close after N2 x 5 min
    assert m.remote(R.PRETRIP1, 2, operator=op) == 0 and m.r.commanded_open
    assert m.log[-1] == ("trip", m.now, op)
    m.wait(599)
    assert m.r.commanded_open
    m.wait(1)
    assert not m.r.commanded_open
    # pre-trip 2: open now, close permitted after N2 x 5 min
    m.remote(R.PRETRIP2, 1)
    m.wait(300)
    assert m.r.commanded_open and rarecmd.relay_state(m.r) == S_PERMIT
    assert m.button() and not m.r.commanded_open
    # alarm is display only
    m.remote(R.ALARM)
    assert m.r.alarm and not m.r.commanded_open
    m.remote(R.ALARM_OFF)
    assert not m.r.alarm
    # power-up resolution of the transient states
    m.remote(R.TRIP)
    m.power_cycle(60)  # delay still running when power went: tripped at power-up
    assert m.r.commanded_open and rarecmd.relay_state(m.r) == S_REMOTE_TRIP
    m.remote(R.DIRECT_CLOSE)
    m.remote(R.PRETRIP1, 10)
    m.power_cycle(60)
    assert not m.r.commanded_open
    m.remote(R.PRETRIP2, 10)
    m.power_cycle(60)
    assert m.r.commanded_open and rarecmd.relay_state(m.r) == S_PERMIT
    assert m.button()


def scenario_hold_refuses_trips():
    m = Meter(W.Wallet(), R.Relay())
    m.remote(R.HOLD)
    for n1 in (R.TRIP, R.PRETRIP1, R.PRETRIP2):
        assert m.remote(n1, 1) == R.ERR_REFUSED
    m.local(W.PRETRIP)
    m.local(W.TRIP)
    assert not m.r.commanded_open and m.trips == 0
    m.remote(R.HOLD_OFF)
    assert m.remote(R.TRIP) == 0 and m.r.commanded_open


def _ref_rate(hour):
    # the day table used by scenario_year_no_drift, read the slow way
    if hour < 8:
        return 3
    if hour < 11:
        return 1
    if hour < 18:
        return 2
    return (1, 0, 1, 2, 2, 2)[hour - 18]


def _ref_ladder(e, thresholds, increments):
    # sum over Wh 1..e of the increment of its tier, in closed form
    total, lo = 0, 0
    for i in range(len(thresholds)):
        hi = thresholds[i]
        if e > lo:
            total += (min(e, hi) - lo) * increments[i]
        lo = hi
    if e > lo:
        total += (e - lo) * increments[-1]
    return total


def scenario_year_no_drift(step=900):
    """A year and a day of readings (every `step` s) through tariff + wallet: the fen
    debited equal floor(exact cost / SUBFEN), the carried remainder is exact, and the
    ladder resets at the annual settlement."""
    t = Tariff()
    prices = [8680, 8680, 5380, 2880]  # Zhejiang-like: sharp, peak, flat, valley
    tariffcheck.set_prices(t, 0, prices)
    tariffcheck.set_day_table(t, 0, 0, [(0, 3), (480, 1), (660, 2), (1080, 1), (1140, 0), (1200, 1), (1260, 2)])
    thr, inc = [2760000, 4800000], [0, 500, 3000]
    tariffcheck.set_ladder(t, 0, thr, inc)
    tariffcheck.set_settlement(t, [(1, 1, 0)])
    w = W.Wallet(hoard=0)
    w.balance = start = 10 ** 9
    t0 = clock.from_fields(2025, 1, 1, 0, 0, 0)
    newyear = clock.from_fields(2026, 1, 1, 0, 0, 0)
    end = clock.from_fields(2026, 1, 2, 0, 0, 0)
    seed = 12345
    ladder, last = 0, t0 - step
    tou_total = 0
    e_before, e_after = 0, 0
    now = t0
    while now < end:
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        wh = seed % 400
        ladder = t.settle(now, last, ladder)
        cost, ladder, rate = t.charge(wh, now, ladder)
        w.deduct(cost)
        h = now % 86400 // 3600
        assert rate == _ref_rate(h)
        tou_total += wh * prices[_ref_rate(h)]
        if now < newyear:
            e_before += wh
        else:
            e_after += wh
        last = now
        now += step
    assert e_before > thr[1]  # the year crossed both thresholds
    assert ladder == e_after  # and the ladder restarted on 1 January
    exact = tou_total + _ref_ladder(e_before, thr, inc) + _ref_ladder(e_after, thr, inc)
    assert start - w.balance == exact // SUBFEN
    assert w.rem == exact % SUBFEN


def scenario_tier_split():
    """An interval crossing two thresholds is split at the exact Wh (vs a per-Wh loop)."""
    t = Tariff()
    tariffcheck.set_ladder(t, 0, [100, 250], [0, 500, 3000])
    for start in (0, 95, 99, 100, 101, 249, 250, 251):
        for wh in (0, 1, 5, 150, 300):
            cost, e, _ = t.charge(wh, 0, start)
            ref = 0
            for k in range(start + 1, start + wh + 1):  # k = ladder energy including this Wh
                ref += 5000 + (0 if k <= 100 else 500 if k <= 250 else 3000)
            assert cost == ref and e == start + wh


def scenario_weekend_holiday():
    """Holiday day table first, then the weekend's, then the year zone's; survives dump/load."""
    t = Tariff()
    tariffcheck.set_day_table(t, 0, 1, [(0, 3)])
    tariffcheck.set_day_table(t, 0, 2, [(0, 0), (720, 1)])
    tariffcheck.set_weekend(t, 0x41, 1)  # Saturday and Sunday rest
    tariffcheck.set_holidays(t, [(2025, 10, 1, 2), (2025, 10, 4, 2)])
    t = powerup.tariff_from(desktop.tariff_dump(t))
    cases = (((2025, 10, 1, 9), 0), ((2025, 10, 1, 13), 1), ((2025, 10, 2, 9), 2),
             ((2025, 10, 4, 9), 0), ((2025, 10, 5, 9), 3), ((2025, 10, 6, 9), 2))
    for fields, rate in cases:
        assert t.rate_at(clock.from_fields(*fields)) == rate, fields
    assert tariffcheck.holiday_list(t) == [(2025, 10, 1, 2), (2025, 10, 4, 2)]


def scenario_local_table():
    """Spec section 3: relay command for every (new, old) state change."""
    c, p, tr = W.CLOSE, W.PRETRIP, W.TRIP
    expected = ((c, c, p, p, p), (c, c, p, p, p), (p, p, p, p, p), (p, p, p, p, p),
                (tr, tr, tr, tr, tr))
    for new in range(5):
        for old in range(5):
            assert W.relay_cmd(new, old) == expected[new][old]


# --- tables shared with test_wallet.py / test_relay.py, so MicroPython runs them too ---

# balance, A1, A2, OD -> state; one row per clause of the spec section 3 table
STATE_ROWS = (
    (-300, 1000, 500, 300, W.OVERDRAFT),   # OD > 0, R < 0, -R >= OD
    (-301, 1000, 500, 300, W.OVERDRAFT),
    (-299, 1000, 500, 300, W.ZERO),        # OD > 0, R <= 0, -R < OD
    (0, 1000, 500, 300, W.ZERO),
    (0, 1000, 500, 0, W.OVERDRAFT),        # OD == 0 and R <= 0
    (-5, 1000, 500, 0, W.OVERDRAFT),
    (1, 1000, 500, 0, W.ALARM2),           # 0 < R <= A2
    (500, 1000, 500, 0, W.ALARM2),
    (501, 1000, 500, 0, W.ALARM1),         # A2 < R <= A1
    (1000, 1000, 500, 0, W.ALARM1),
    (1001, 1000, 500, 0, W.NORMAL),
    (1, 1000, 0, 0, W.ALARM1),             # A2 == 0: R <= A1 is alarm 1
    (1001, 1000, 0, 0, W.NORMAL),
    (400, 0, 500, 0, W.ALARM2),            # A1 == 0: normal above A2
    (501, 0, 500, 0, W.NORMAL),
    (300, 200, 500, 0, W.ALARM2),          # A1 <= A2: alarm 1 never shows
    (501, 200, 500, 0, W.NORMAL),
    (1, 0, 0, 0, W.NORMAL),                # both 0: normal above 0
)


def wallet_at(balance, alarm1=1000, alarm2=500, overdraft=0, close_ok=0, hoard=99999999):
    """An opened wallet holding `balance` fen, its state evaluated."""
    w = W.Wallet(alarm1, alarm2, overdraft, hoard, close_ok)
    assert topup.open_account(w, 0, 1, CUST)[0] == W.OK
    w.balance = balance
    w.state = w.evaluate()
    return w


def scenario_state_table():
    for balance, a1, a2, od, state in STATE_ROWS:
        assert wallet_at(balance, a1, a2, od).evaluate() == state, (balance, a1, a2, od)


RELAY_OP = 0x0A0B0C0D
RELAY_DELAY = 600

# How to reach each combined start state through the public API only.
RELAY_STARTS = {
    "CL": (),
    "WT": (("cmd", R.TRIP),),
    "RT": (("cmd", R.TRIP), ("wait", RELAY_DELAY)),
    "P1": (("cmd", R.PRETRIP1),),
    "P2": (("cmd", R.PRETRIP2),),
    "PM": (("cmd", R.TRIP), ("wait", RELAY_DELAY), ("cmd", R.CLOSE_PERMIT)),
    "LP": (("local", W.PRETRIP),),
    "LT": (("local", W.TRIP),),
    "CLH": (("cmd", R.HOLD),),
    "PMH": (("cmd", R.TRIP), ("wait", RELAY_DELAY), ("cmd", R.CLOSE_PERMIT), ("cmd", R.HOLD)),
}
# the combined state codes (meter.rarecmd.relay_state), Wisdom-style
RELAY_CODE = {"CL": 0, "CLH": 1, "WT": 2, "RT": S_REMOTE_TRIP, "P1": 4, "P2": 5, "PM": S_PERMIT, "PMH": 7,
              "LP": 8, "LT": S_LOCAL_TRIP}
RELAY_OPEN = ("RT", "P1", "P2", "PM", "PMH", "LP", "LT")

RELAY_EVENTS = (("cmd", R.TRIP), ("cmd", R.CLOSE_PERMIT), ("cmd", R.DIRECT_CLOSE), ("cmd", R.PRETRIP1),
                ("cmd", R.PRETRIP2), ("cmd", R.HOLD), ("cmd", R.HOLD_OFF), ("local", W.PRETRIP),
                ("local", W.TRIP), ("local", W.CLOSE), ("local", W.RECHARGED), ("button", None),
                ("power_up", None))

# start -> state after each event, in the order of RELAY_EVENTS (spec sections 3, 4 and 6):
#          TRIP   PERMIT DIRECT PRE1   PRE2   HOLD   H_OFF  lPRE   lTRIP  lCLOSE lRECH  button pwr_up
RELAY_TABLE = {
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


def relay_apply(relay, step, now):
    kind, arg = step
    if kind == "cmd":
        return relaycmd.command(relay, arg, 2, now, RELAY_OP)
    if kind == "local":
        return relay.local(arg, now)
    if kind == "button":
        return relay.button(now)
    if kind == "wait":
        return relay.tick(now + arg)
    return powerup.relay_up(relay, now)


def relay_build(start, trip_delay=RELAY_DELAY, external=False):
    relay = R.Relay(trip_delay, external)
    now = 1000
    for step in RELAY_STARTS[start]:
        relay_apply(relay, step, now)
        if step[0] == "wait":
            now += step[1]
    relay.pop_events()
    return relay, now


def check_relay_transition(start, col):
    """One cell of RELAY_TABLE: end state, commanded state, reply, the one event and its operator."""
    relay, now = relay_build(start)
    assert rarecmd.relay_state(relay) == RELAY_CODE[start], start
    was_open = relay.commanded_open
    step = RELAY_EVENTS[col]
    result = relay_apply(relay, step, now)
    end = RELAY_TABLE[start][col]
    where = (start, step, end, rarecmd.relay_state(relay))
    assert rarecmd.relay_state(relay) == RELAY_CODE[end], where
    assert relay.commanded_open == (end in RELAY_OPEN), where
    if step[0] == "cmd":
        refused = relay.hold and step[1] in (R.TRIP, R.PRETRIP1, R.PRETRIP2)
        assert result == (R.ERR_REFUSED if refused else 0), where
    events = relay.pop_events()
    if was_open == relay.commanded_open:
        assert events == [], where
    else:
        kind = "trip" if relay.commanded_open else "close"
        remote = step[0] == "cmd" or (step[0] == "power_up" and start == "WT")
        assert events == [(kind, now, RELAY_OP if remote else R.METER)], where


def scenario_relay_table():
    for start in RELAY_TABLE:
        for col in range(len(RELAY_EVENTS)):
            check_relay_transition(start, col)


SCENARIOS = (scenario_full_life, scenario_clou_overdraw_nz, scenario_clou_keep_power,
             scenario_hold_release_pretrip, scenario_remote_commands, scenario_hold_refuses_trips,
             scenario_year_no_drift, scenario_tier_split, scenario_weekend_holiday, scenario_local_table,
             scenario_state_table, scenario_relay_table)


def run_all():
    for s in SCENARIOS:
        s()
        print("PASS", s.__name__)
