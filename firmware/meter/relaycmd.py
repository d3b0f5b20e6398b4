# The head-end's relay control commands (1CH, spec prepaid-meter.md section 4) on the relay
# state machine (meter.relay.Relay). Loaded for a 1CH command and let go after it: a running
# meter holds only the relay's timers, the wallet's commands and the button.

from meter import clock
from meter.codec import get_bcd
from meter.relay import (ALARM, ALARM_OFF, CLOSE_PERMIT, DIRECT_CLOSE, ERR_REFUSED, HOLD, HOLD_OFF, PRETRIP1,
                         PRETRIP2, TRIP)

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_ERR_OTHER = const(1)  # ERR byte bit of the 645 error reply: a bad command
_PRETRIP_UNIT = const(300)  # N2 counts 5-minute steps

# meter.relay's states (private names: mpy-cross folds them, so they cost no RAM)
_R_CLOSED = const(0)
_R_WAIT_TRIP = const(1)
_R_TRIP = const(2)
_R_PRE1 = const(3)
_R_PRE2 = const(4)
_R_PERMIT = const(5)
_LOC_CLOSED = const(0)
_LOC_PRETRIP = const(1)
_LOC_TRIP = const(2)


def command(rl, n1, n2, now, operator):
    """A 1CH control command (already authenticated and within its expiry) on relay rl.
    Returns 0, or the ERR bit: 4 for a trip refused under power hold, 1 for a bad command."""
    was = rl.commanded_open
    r = rl.remote
    if n1 == TRIP or n1 == PRETRIP1 or n1 == PRETRIP2:
        if rl.hold:
            return ERR_REFUSED
        if n1 == TRIP:
            if r == _R_TRIP:
                return 0
            if rl.trip_delay > 0 and not was:
                if r != _R_WAIT_TRIP:  # a repeated trip does not restart the delay
                    rl.remote = _R_WAIT_TRIP
                    rl.until = now + rl.trip_delay
                    rl.pending_op = operator
            else:
                rl.remote = _R_TRIP
        else:
            if n2 <= 0:
                return _ERR_OTHER  # a pre-trip needs a duration
            rl.remote = _R_PRE1 if n1 == PRETRIP1 else _R_PRE2
            rl.until = now + n2 * _PRETRIP_UNIT
            rl.pending_op = operator
    elif n1 == CLOSE_PERMIT:
        # closed stays closed; open waits for the button
        rl.remote = _R_PERMIT if r >= _R_TRIP else _R_CLOSED
    elif n1 == DIRECT_CLOSE:
        rl.remote = _R_CLOSED
        if rl.local_state == _LOC_PRETRIP:
            rl.local_state = _LOC_CLOSED
        # a local trip (wallet OVERDRAFT) stays: direct close has no effect on it
    elif n1 == ALARM:
        rl.alarm = True
    elif n1 == ALARM_OFF:
        rl.alarm = False
    elif n1 == HOLD:
        rl.hold = True
        # power hold never leaves a trip pending, and turns any open state into
        # "close permitted + hold": power comes back when someone is there to press
        if r == _R_WAIT_TRIP:
            rl.remote = _R_CLOSED
        elif r >= _R_TRIP:
            rl.remote = _R_PERMIT
        if rl.local_state == _LOC_TRIP:
            rl.local_state = _LOC_PRETRIP
    elif n1 == HOLD_OFF:
        # the meter core re-sends the wallet's command (meter.topup.release_cmd) next
        rl.hold = False
    else:
        return _ERR_OTHER
    rl._record(was, now, operator)
    return 0


def dt6(b, o):
    """ss mm hh DD MM YY (BCD) at b[o:] as meter time, or -1 if it is not a real instant (the 1CH
    command's deadline; meter.rarecmd's 08H time borrows it: here it is on the heap only while a
    command that needs it is)."""
    s = get_bcd(b, o, 1)
    mi = get_bcd(b, o + 1, 1)
    h = get_bcd(b, o + 2, 1)
    d = get_bcd(b, o + 3, 1)
    mo = get_bcd(b, o + 4, 1)
    y = get_bcd(b, o + 5, 1)
    if s < 0 or mi < 0 or h < 0 or d < 0 or mo < 0 or y < 0 or s > 59 or mi > 59 or h > 23:
        return -1
    if not clock.valid_date(2000 + y, mo, d):
        return -1
    return clock.from_fields(2000 + y, mo, d, h, mi, s)
