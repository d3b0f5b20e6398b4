# The local cost-control wallet: balance state machine of spec prepaid-meter.md section 3
# and the top-up rules of section 5. Sans-I/O. Money in fen (signed), with a carried
# sub-fen remainder (1 fen = SUBFEN sub-fen, headend/tariff/README.md).
#
# Nothing here assumes local cost control: a meter in remote mode simply never calls
# deduct(), and top-ups, limits and dump/load work the same. Top-ups, account opening and limit
# changes are meter.topup's: loaded for them and let go after, as a running meter needs only the
# deduction.

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

SUBFEN = const(100000)

# Balance states, in the priority order of spec section 3 (highest last).
NORMAL = const(0)
ALARM1 = const(1)
ALARM2 = const(2)
ZERO = const(3)
OVERDRAFT = const(4)

# Local relay commands for meter.relay.Relay.local().
CLOSE = const(1)
PRETRIP = const(2)
TRIP = const(3)
# After a top-up: close if the relay is closed; if it is open, an internal relay becomes a
# button-restorable local pre-trip and an external relay closes (Wisdom eChargeMoneyMode).
# Only the relay knows which case applies, so the wallet passes this on as its own command.
RECHARGED = const(4)

# Recharge results: the SERR bit numbers of the 645 security error word.
OK = const(0)
REPEAT = const(1)
CUSTOMER_ERR = const(4)

# TAB_RelayLocalCmd[new][old] (Wisdom Money.c), commands on a state change.
_C = const(1)  # CLOSE, PRETRIP, TRIP: short names for the table
_P = const(2)
_T = const(3)
_TABLE = const((
    (_C, _C, _P, _P, _P),  # -> NORMAL
    (_C, _C, _P, _P, _P),  # -> ALARM1
    (_P, _P, _P, _P, _P),  # -> ALARM2
    (_P, _P, _P, _P, _P),  # -> ZERO
    (_T, _T, _T, _T, _T),  # -> OVERDRAFT
))

_MAX_FEN = const(9999999999)  # 645 carries money as 8 BCD digits of fen; leave headroom


def relay_cmd(new, old):
    """Local relay command for a balance state change (spec section 3 table)."""
    return _TABLE[new][old]


def _fen(v, what):
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > _MAX_FEN:
        raise ValueError("%s must be whole fen from 0 to %d" % (what, _MAX_FEN))
    return v


class Wallet:
    def __init__(self, alarm1=1000, alarm2=500, overdraft=0, hoard=99999999, close_ok=0):
        # Vendor defaults: alarm 1 = 10.00 yuan, alarm 2 = 5.00, no overdraft,
        # hoarding 999999.99, close-permitted 0.
        self.balance = 0
        self.rem = 0
        self.count = 0
        self.customer = ""
        self.opened = False
        self.total_bought = 0
        self.alarm1 = _fen(alarm1, "alarm1")
        self.alarm2 = _fen(alarm2, "alarm2")
        self.overdraft = _fen(overdraft, "overdraft")
        self.hoard = _fen(hoard, "hoard")
        self.close_ok = _fen(close_ok, "close_ok")
        self.state = self.evaluate()
        self.last_cmd = None

    def evaluate(self):
        """Balance state from the balance and limits alone (no sticky rule)."""
        r = self.balance
        od = self.overdraft
        if (od > 0 and r < 0 and -r >= od) or (od == 0 and r <= 0):
            return OVERDRAFT
        if r <= 0:  # here od > 0 and -r < od
            return ZERO
        if self.alarm2 > 0 and r <= self.alarm2:
            return ALARM2
        if r <= self.alarm1:  # r > alarm2 here, so this also covers alarm1 > alarm2 >= 0
            return ALARM1
        return NORMAL

    def _change(self, new):
        old = self.state
        if new == old:
            return None
        self.state = new
        self.last_cmd = relay_cmd(new, old)
        return self.last_cmd

    def deduct(self, subfen):
        """Take `subfen` (1e-5 fen) off the balance. Returns the local relay command when
        the balance state changes, else None."""
        if subfen < 0:
            raise ValueError("negative charge")
        total = self.rem + subfen
        self.balance -= total // SUBFEN
        self.rem = total % SUBFEN
        if self.state == OVERDRAFT:
            return None  # sticky: deductions never leave OVERDRAFT
        return self._change(self.evaluate())

    def dump(self):
        return [self.balance, self.rem, self.count, self.customer, 1 if self.opened else 0,
                self.total_bought, self.alarm1, self.alarm2, self.overdraft, self.hoard,
                self.close_ok, self.state, self.last_cmd or 0]
