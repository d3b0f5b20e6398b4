# The combined remote + local relay state machine (spec prepaid-meter.md sections 4 and 6,
# after the Wisdom Relay_Remote.c 15-state table). Sans-I/O: commands and meter time in,
# `commanded_open` and trip/close events out; the HAL drives and senses the contacts.
#
# Wisdom keeps one combined state; here it is kept as three parts that combine the same
# way: the remote side (head-end 1CH commands), the local side (the wallet) and power hold.
# The relay is commanded open while either side holds it open. The large-current-delayed
# variants are not modelled (the meter core has no current threshold). The head-end's commands
# (1CH) are meter.relaycmd's, loaded for one and let go after it: a running meter holds only the
# timers, the wallet's commands and the button. Its record read back and its power-up are
# meter.powerup's (relay_from, relay_up), let go after the power-up; its status bits and combined
# state code, read by DIs and the host's status view, are meter.disrec's and meter.rarecmd's.

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# N1 codes of the 645 control command (1CH).
TRIP = const(0x1A)
CLOSE_PERMIT = const(0x1B)
DIRECT_CLOSE = const(0x1C)
PRETRIP1 = const(0x1D)
PRETRIP2 = const(0x1E)
ALARM = const(0x2A)
ALARM_OFF = const(0x2B)
HOLD = const(0x3A)
HOLD_OFF = const(0x3B)

# Local commands: the same numbers as meter.wallet CLOSE, PRETRIP, TRIP, RECHARGED
# (private names: mpy-cross folds them, so they cost no RAM).
_L_CLOSE = const(1)
_L_PRETRIP = const(2)
_L_TRIP = const(3)
_L_RECHARGED = const(4)

# ERR byte bit of the 645 error reply to a 1CH trip refused under power hold (meter.relaycmd)
ERR_REFUSED = const(4)  # "R_ERR_OFF_PROTECT"

METER = const(0xFFFFFFFF)  # operator code of actions the meter takes by itself

# Remote side.
_R_CLOSED = const(0)
_R_WAIT_TRIP = const(1)  # trip delay running; still closed
_R_TRIP = const(2)
_R_PRE1 = const(3)       # timed, then direct close
_R_PRE2 = const(4)       # timed, then close permitted
_R_PERMIT = const(5)     # open until the button

# Local side.
_LOC_CLOSED = const(0)
_LOC_PRETRIP = const(1)  # open, the button restores
_LOC_TRIP = const(2)     # open, only a top-up above close-permitted (via the wallet) helps


class Relay:
    def __init__(self, trip_delay=0, external=False):
        self.trip_delay = trip_delay  # seconds (DI 04001401 carries minutes)
        self.external = external      # external (three-phase) relay: top-ups close directly
        self.remote = _R_CLOSED
        self.local_state = _LOC_CLOSED
        self.hold = False
        self.alarm = False
        self.until = 0                # deadline of the trip delay or the pre-trip timer
        self.pending_op = METER       # operator of the command whose timer is running
        self._events = []

    # --- derived state ---

    @property
    def commanded_open(self):
        return self.remote >= _R_TRIP or self.local_state != _LOC_CLOSED

    def pop_events(self):
        """Trip/close events since the last call: list of ('trip'|'close', time, operator)."""
        ev = self._events
        self._events = []
        return ev

    def _record(self, was_open, now, operator):
        is_open = self.commanded_open
        if is_open != was_open:
            self._events.append(("trip" if is_open else "close", now, operator))

    # --- inputs ---

    def local(self, cmd, now):
        """A local command from the wallet: meter.wallet CLOSE, PRETRIP, TRIP or RECHARGED.
        Pre-trip and trip are ignored under power hold; None (no command) is ignored."""
        if cmd is None:
            return
        was = self.commanded_open
        if cmd == _L_TRIP or cmd == _L_PRETRIP:
            if self.hold:
                return
            self.local_state = _LOC_TRIP if cmd == _L_TRIP else _LOC_PRETRIP
        elif cmd == _L_CLOSE:
            self.local_state = _LOC_CLOSED
        elif cmd == _L_RECHARGED:
            if self.local_state != _LOC_CLOSED:
                self.local_state = _LOC_CLOSED if self.external else _LOC_PRETRIP
            if self.remote == _R_PRE1 or self.remote == _R_PRE2:
                # a top-up during a remote timed pre-trip closes directly (Wisdom)
                self.remote = _R_CLOSED
        else:
            raise ValueError("bad local command")
        self._record(was, now, METER)

    def button(self, now):
        """Customer pressed the button >= 3 s. Closes the relay only when every reason it is
        open is button-restorable (close permitted, local pre-trip). Returns True if closed."""
        if not self.commanded_open:
            return False
        if self.local_state == _LOC_TRIP or _R_TRIP <= self.remote <= _R_PRE2:
            return False
        if self.remote == _R_PERMIT:
            self.remote = _R_CLOSED
        self.local_state = _LOC_CLOSED
        self._record(True, now, METER)
        return True

    def tick(self, now):
        """Run the trip-delay and pre-trip timers."""
        r = self.remote
        if r != _R_WAIT_TRIP and r != _R_PRE1 and r != _R_PRE2:
            return
        if now < self.until:
            return
        was = self.commanded_open
        if r == _R_WAIT_TRIP:
            self.remote = _R_TRIP
            self._record(was, now, self.pending_op)
        else:
            self.remote = _R_CLOSED if r == _R_PRE1 else _R_PERMIT
            self._record(was, now, METER)

    # --- power-safe storage ---

    def dump(self):
        return [self.remote, self.local_state, 1 if self.hold else 0, 1 if self.alarm else 0,
                self.until, self.trip_delay, self.pending_op, 1 if self.external else 0]
