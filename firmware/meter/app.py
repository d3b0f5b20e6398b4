# The glue between the meter core and whatever stands for its hardware: energy pulses in, one
# tick a second, the relay's sense contact, the relay driven to what the core commands, a save
# when the supply fails. Boards (hal/board.py), the desktop simulator (hal/sim.py) and the fleet
# (tools/fleet.py) all drive their meters through it, so the core is driven the same way
# everywhere. Sans-I/O: time comes in as an argument and hardware as objects passed in.

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_WINDOW_MS = const(10000)  # power is estimated from pulses over this window
_TICKS_MASK = const(0x3FFFFFFF)  # MicroPython's ticks_ms() wraps at 2**30 on every port


class MeterApp:
    """MeterApp(meter, pulses, imp_per_kwh, relay=None, supply=None, keypad=None, flash=None)

    meter    the core (meter.core.Meter)
    pulses   .take() -> energy pulses counted since the last call
    relay    .commanded (None until first driven), .drive(open_), .sensed_open() -> bool or
             None when the relay has no sense contact
    supply   .take() -> supply-loss edges since the last call (a latched interrupt), or None
    keypad   .take() -> keys pressed since the last call, as text (hal/keypad.py), or None;
             keys also come in through key() (the simulator's terminal and control socket)
    flash    the meter's flash when its records may be committed a pass later (.defer, .due,
             .commit(): hal.slots.SlotFiles), or None: the main loop then runs through poll()
    The power shown is estimated from the pulses of each 10 s.
    """

    def __init__(self, meter, pulses, imp_per_kwh, relay=None, supply=None, keypad=None, flash=None):
        self.meter = meter
        self.flash = flash
        if flash is not None:
            flash.defer = True
        self._held = []  # replies waiting for their record's commit
        self._rx = None  # bytes from the line given to a committing pass
        self.second = False
        self.keypad = keypad
        self.entry = ""  # the digits typed so far
        self.shown = None  # the last token's result (meter.token.OK ... PART) for the display
        self.pulses = pulses
        self.relay = relay
        self.supply = supply
        self._imp = imp_per_kwh
        self._acc = 0  # pulses * 1000 not yet a whole Wh
        self._win_pulses = 0
        self._win_t0 = None
        self._last_s = None
        self._sensed = None

    def feed(self, chunk, now):
        """Bytes from the line at meter time now; the replies to send."""
        out = self.meter.feed(chunk, now)
        self.drive()
        return out

    def due(self):
        """True when a record waits for its commit: the next poll() only commits (a board leaves
        the line's bytes in its UART buffer until then)."""
        f = self.flash
        return f is not None and f.due

    def poll(self, chunk, now, ms):
        """One main-loop pass with at most one flash write or commit (and so at most one block
        erase): a pass that finds a record written and not committed commits it and releases
        what waited for it (the replies returned, the relay driven); any other handles the bytes
        from the line (chunk, or None) and then step(). Replies that follow a record written in
        this pass are held for the next. .second: a new second began (the LED follows it)."""
        f = self.flash
        self.second = False
        if f is not None and f.due:
            f.commit()
            if chunk:
                self._rx = chunk  # a caller that did not ask due(): handled in the next pass
            out = self._held
            self._held = []
            self.drive()
            return out
        if self._rx is not None:
            chunk = self._rx + chunk if chunk else self._rx
            self._rx = None
        out = self.meter.feed(chunk, now) if chunk else []
        if f is None or not f.due:
            self.second = self.step(now, ms)
        if f is not None and f.due:
            self._held.extend(out)
            return []
        self.drive()
        return out

    def step(self, now, ms):
        """One pass at meter time now (seconds) and ms (a millisecond counter such as
        time.ticks_ms(); only differences are used, so it may wrap at 2**30): supply check,
        energy, the once-a-second tick and relay sense, relay drive. True when a new second
        began (the HAL's LED follows the seconds). Time is two small ints, never a long: meter
        time in ms would pass a 32-bit board's small-int range."""
        m = self.meter
        sup = self.supply
        if sup is not None and sup.take():
            m.persist()  # the hold-up capacitor's time goes to the energy not yet saved
            if self.flash is not None:
                self.flash.commit()  # at once: the supply is going, a long pass no longer matters
        self._energy(now, ms)
        if self.due():
            return False  # a record was written: the rest of the pass waits for its commit
        kp = self.keypad
        if kp is not None:
            for c in kp.take():
                self.key(c, now)
            if self.due():
                return False
        second = now != self._last_s
        if second:
            self._last_s = now
            m.tick(now)
            self._sense()  # a contact that moved by itself (welded, tripped by hand) shows in a second
        self.drive()
        return second

    def key(self, c, now):
        """One keypad key: a digit types (a 21st makes the entry invalid), * clears, # enters
        the entry as a token; the result stays in .shown until the next key."""
        e = self.entry
        self.shown = None
        if c == "*":
            e = ""
        elif c == "#":
            # INVALID (meter.token) for anything but 20 digits: such an entry is no guess
            self.shown = self.meter.token(e, now) if len(e) == 20 else 2
            e = ""
            self.drive()
        elif "0" <= c <= "9" and len(e) <= 20:
            e += c
        self.entry = e

    def _sense(self):
        r = self.relay
        if r is not None:
            s = r.sensed_open()
            if s is not None and s != self._sensed:
                self._sensed = s
                self.meter.relay_sense(s)

    def _energy(self, now, ms):
        n = self.pulses.take()
        if n:
            self._win_pulses += n
            self._acc += n * 1000
            wh = self._acc // self._imp
            if wh:
                self._acc -= wh * self._imp
                self.meter.add_energy(wh, now)
        t0 = self._win_t0
        if t0 is None:
            self._win_t0 = ms
        else:
            el = (ms - t0) & _TICKS_MASK
            if el >= _WINDOW_MS:
                self.meter.set_power(self._win_pulses * 3600000 // self._imp * 1000 // el)
                self._win_pulses = 0
                self._win_t0 = ms

    def drive(self):
        """Drive the relay to what the core commands (after a frame or a button press), once the
        record that commands it is committed."""
        r = self.relay
        if r is not None and not self.due():
            want = self.meter.relay_open
            if want != r.commanded:
                r.drive(want)
                self._sense()  # the drive pulse is over: the sense contact has moved (status word 3)
