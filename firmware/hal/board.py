# What ESP32 and RP2040 boards share: RS-485 through a MAX485 (DE and /RE tied to one pin), a
# latching relay driven by set/reset pulses with a sense contact, the customer button, a status
# LED and the energy pulse input counted in an interrupt. hal/esp32.py and hal/rp2.py only say
# how their UART differs.

import time

import machine

from meter import clock, drop

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_RTC_RESYNC_MS = const(60000)
PARITY = {"E": 0, "O": 1, "N": None}  # machine.UART parity argument
_BUF = const(64)
_RETRY_MS = const(10000)   # a failed start is tried again after this long (LED blinking fast)


class Pulses:
    """Falling edges counted in an interrupt; the main loop takes the count. The energy pulse
    input, and the supply-loss input (README: a comparator on the unregulated supply pulls it low
    while the hold-up capacitor still feeds the board; an edge makes the loop save at once, as an
    interrupt must not touch the heap or the filesystem)."""

    def __init__(self, pin):
        self._count = 0
        self._pin = pin
        pin.irq(handler=self._isr, trigger=machine.Pin.IRQ_FALLING)

    def _isr(self, _pin):
        self._count += 1  # small int: nothing taken from the heap

    def take(self):
        irq = machine.disable_irq()
        n = self._count
        self._count = 0
        machine.enable_irq(irq)
        return n


class LatchingRelay:
    """Set coil closes the contact, reset coil opens it; each takes one pulse."""

    def __init__(self, set_pin, reset_pin, sense_pin, pulse_ms, sense_open_level):
        self._set = set_pin
        self._reset = reset_pin
        self._sense = sense_pin
        self._ms = pulse_ms
        self._open_level = sense_open_level
        set_pin.value(0)
        reset_pin.value(0)
        self.commanded = None  # unknown until the first drive
        self.pulses = 0

    def drive(self, open_):
        pin = self._reset if open_ else self._set
        pin.value(1)
        time.sleep_ms(self._ms)
        pin.value(0)
        self.commanded = open_
        self.pulses += 1

    def sensed_open(self):
        return self._sense.value() == self._open_level


class Board:
    """The meter on a board. make_uart() and tx_done() come from the board module; the
    hardware is wired by hal.start.wire (boot-only code, let go once the meter runs). Board(meter_cfg,
    hw) empties hw once the board is wired (the caller's config dicts are heap it does not keep)."""

    # set by hal.start.wire (annotations only: no heap on a board); the config itself is not
    # kept: its dicts are heap a running meter has no use for
    uart: "machine.UART"
    de: "machine.Pin"
    led: "machine.Pin"
    button_pin: "machine.Pin"
    pulses: Pulses
    relay: LatchingRelay
    keypad: "object | None"
    supply: "Pulses | None"
    rtc: "machine.RTC"
    _char_us: int
    _delay_ms: int
    _hold_ms: int

    def __init__(self, meter_cfg, hw, make_meter=None):
        from hal import start
        start.wire(self, hw)  # pins, UART, relay, RTC; then the state files, the clock, the core
        self._press_t0 = None
        self._pressed = False
        self.flash = start.power_up(self, hw, make_meter is None)
        # the config is not kept (its dicts are heap a running meter has no use for), and is let
        # go before the power-up, whose peak it was part of: the caller's hw is emptied here
        imp, wdt_ms = hw["imp_per_kwh"], hw["wdt_ms"]
        hw.clear()
        start = None
        drop("hal.start")  # the start's code is heap the meter's power-up needs
        import gc
        gc.collect()
        if make_meter is None:
            from meter.core import Meter as make_meter
        import os
        self.meter = make_meter(meter_cfg, self.flash, self.now(), os.urandom)
        # the read path and the main loop's glue load only now (hal.start.load_core leaves them
        # out): the power-up's peak, the record's tables read in, then holds less code, and
        # its garbage is collected before they load. Smallest fully programmed boot 85 -> 84 KB
        gc.collect()
        import meter.dis  # noqa: F401
        from meter.app import MeterApp
        self.app = MeterApp(self.meter, self.pulses, imp, self.relay, self.supply, self.keypad,
                            flash=self.flash)
        self.app.step(self.now(), time.ticks_ms())  # the relay driven to the state the meter powered up in
        # last: loading the core and creating a first state file may take longer than a period
        self.wdt = machine.WDT(timeout=wdt_ms) if wdt_ms else None

    @staticmethod
    def read_key():
        """The meter key as 32 hex digits from where `meter flash` wrote it (here: the file
        meter.key, which anyone with the board's USB can read: README), or None."""
        try:
            f = open("meter.key")
        except OSError:
            return None
        try:
            return f.read()
        finally:
            f.close()

    # what differs between ports; hal/esp32.py and hal/rp2.py override where theirs differs
    def make_uart(self, uart_id, baud, parity, tx, rx):
        return machine.UART(uart_id, baudrate=baud, bits=8, parity=PARITY[parity], stop=1, tx=tx, rx=rx,
                            timeout=0)

    def tx_done(self):
        self.uart.flush()  # returns once the last byte has left the FIFO

    def _sync_rtc(self):
        y, mo, d, _wd, h, mi, s, _sub = self.rtc.datetime()
        self._base = clock.from_fields(y, mo, d, h, mi, s)
        self._base_ms = time.ticks_ms()

    def now(self):
        el = time.ticks_diff(time.ticks_ms(), self._base_ms)
        if el >= _RTC_RESYNC_MS:
            self._sync_rtc()
            el = 0
        return self._base + el // 1000

    def send(self, frame):
        if self._delay_ms:
            time.sleep_ms(self._delay_ms)  # DL/T 645 Td >= 20 ms: the master needs time to turn round
        self.de.value(1)
        self.uart.write(frame)
        self.tx_done()
        time.sleep_us(self._char_us)
        self.de.value(0)

    def _button(self, now):
        if self.button_pin.value():  # pulled up: 1 = released
            self._press_t0 = None
            self._pressed = False
            return
        t = time.ticks_ms()
        if self._press_t0 is None:
            self._press_t0 = t
        elif not self._pressed and time.ticks_diff(t, self._press_t0) >= self._hold_ms and not self.app.due():
            self._pressed = True  # one press per hold, however long it lasts (the pass after a commit)
            self.meter.button(now)

    def step(self):
        """One pass of the main loop: line and MeterApp (pulses, timers, relay, supply) through
        MeterApp.poll (at most one flash erase a pass: a pass that commits the last record does
        nothing else, the line's bytes wait in the UART buffer), button, LED, watchdog."""
        now = self.now()
        app = self.app
        chunk = None
        if not app.due():
            n = self.uart.any()
            if n:
                chunk = self.uart.read(min(n, _BUF))
        for reply in app.poll(chunk, now, time.ticks_ms()):
            self.send(reply)
        self._button(now)
        if app.second:
            # steady on: contact closed; blinking: contact open (supply cut)
            self.led.value(1 if not self.relay.commanded else now & 1)
        if self.wdt is not None:
            self.wdt.feed()

    def run(self):
        """The main loop. An exception (a bug, a MemoryError in a fragmented heap) is kept in
        the fault log and as a FAULT event, then the board restarts: a meter must not sit in the
        REPL until the watchdog bites. KeyboardInterrupt (mpremote, Ctrl-C) is no Exception and
        stops the loop."""
        try:
            while True:
                self.step()
                time.sleep_ms(5)
        except KeyboardInterrupt:
            self.flash.commit()  # stopped from the REPL: the last record stays
            raise
        except Exception as e:
            import gc
            gc.collect()  # what the failed pass held: the save below needs the heap
            now = self.now()
            from hal.faults import log
            info = log(now, "loop", e)
            try:
                self.meter.fault(now, info)
                self.flash.commit()  # the restart must not take the record with it
            except Exception:  # noqa: S110 - the log above holds it; the restart must happen
                pass
            machine.reset()


def main(board_class, config_path="config.json", retry_ms=_RETRY_MS):
    from hal import start
    b = start.board(board_class, config_path, retry_ms)
    start = None
    drop("hal.start")
    if b is not None:
        b.run()
