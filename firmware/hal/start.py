# The board's start: the config and the meter key read and checked, the boot escape, the state
# files opened and checked, the clock resumed, the core's modules loaded. Loaded once, by
# hal.board, and let go before the meter powers up (meter.drop): a board's heap holds its code
# only while it starts.

import os
import sys

from hal.slots import SlotFiles
from meter import clock, drop
from meter.store import Store


class StateError(Exception):
    """The state on flash cannot be trusted (damaged, truncated, erased where state must be)."""


def refuse_damaged(flash, path, blank):
    """Raise StateError unless flash holds an intact record, or is blank (True: a new meter)."""
    if blank:
        return
    try:
        ok = Store(flash).load() is not None
    except ValueError:
        ok = False
    if not ok:
        flash.close()
        raise StateError("state file %s is corrupt: neither of its two records is intact, so the balance "
                         "cannot be trusted; refusing to start rather than reset it to zero. Restore the "
                         "file from a backup, or move it away to start a new meter" % path)


def saved_time(flash):
    """The HAL time (the `now` meter.core.Meter takes) of the newest record's save, or -1 (a blank
    or an unreadable flash), read before the core powers up: a board whose RTC restarted earlier
    than this resumes from it. "ts", "lt" and "o" are the core's record fields (meter.core)."""
    st = Store(flash)
    try:
        s = st.load()
    except ValueError:
        return -1
    return -1 if s is None else s.get("ts", s["lt"]) - s["o"] - st.shift  # shift: a 2000-based record


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _split(path, half):
    # a state file of the one-file layout (earlier images): its halves become the slot files
    src = open(path, "rb")
    try:
        for slot in (0, 1):
            f = open("%s.%d" % (path, slot), "wb")
            src.seek(slot * half)
            left = half
            while left > 0:
                f.write(src.read(256))
                left -= 256
            f.close()
    finally:
        src.close()
    os.remove(path)


def open_slots(path, size, in_service=False):
    """The board's state as a flash object for meter.store. No slot file: a new meter, unless
    in_service (config.json says the meter has state), when a missing or erased state is refused
    as damaged state is: never a start from a zero balance."""
    if _exists(path):
        _split(path, size // 2)
    flash = SlotFiles(path, size)
    blank = True
    for off in range(0, size, 256):
        b = flash.read(off, 256)
        if b.count(b"\xff") != 256:
            blank = False
            break
    if blank and in_service:
        flash.close()
        raise StateError("state %s.0/.1 is missing or erased but config.json says this meter is in service; "
                         "refusing to start with a zero balance. Restore the state from a backup" % path)
    refuse_damaged(flash, path, blank)
    return flash


def load_config(path, board_class=None):
    """Read the config (and the meter key from the board's key store when config.json holds
    none), then let the loader go: its bytecode is heap the meter needs more (~11 KB here)."""
    from hal import config
    try:
        meter_cfg, hw = config.load(path, getattr(sys.implementation, "_machine", None))
        for w in hw["warnings"]:
            print("meter config warning:", w)
        if meter_cfg["key"] is None:
            text = None if board_class is None else board_class.read_key()
            if text is None:
                raise config.ConfigError("no meter key on this board: `meter flash` writes it once (%s)" %
                                         ("NVS namespace prepaid645" if hw["board"] == "esp32" else "file meter.key"))
            meter_cfg["key"] = config.key_from_hex(text, "the board's meter key")
        return meter_cfg, hw
    finally:
        config = None
        drop("hal.config")


def maintenance(hw):
    # the boot escape: the flag file (`meter flash` writes it with mpremote) or the button held
    # while the image starts. Nothing runs then: no watchdog, no loop, the REPL stays free
    try:
        open("maintenance").close()  # beside main.py: tools/meter_image.py MAINTENANCE
        return True
    except OSError:
        pass
    if hw is None:
        return False
    import machine
    return not machine.Pin(hw["pins"]["button"], machine.Pin.IN, machine.Pin.PULL_UP).value()


def board(board_class, config_path, retry_ms):
    """The board_class started from config_path, or None in maintenance (the boot escape); a
    start that fails is said on the REPL and in the fault log, and the board restarts after
    retry_ms."""
    import time

    import machine
    led = None
    try:
        stop = maintenance(None)
        if not stop:
            meter_cfg, hw = load_config(config_path, board_class)
            led = hw["pins"]["led"]  # the board empties hw once it is wired (hal.board.Board)
            stop = maintenance(hw)
        if stop:
            print("meter not started (maintenance: file :maintenance or the button held at start): no "
                  "watchdog, no main loop; `mpremote fs rm :maintenance` and reset to start it")
            return None
        return board_class(meter_cfg, hw)
    except Exception as e:
        # no line to report on: say it on the REPL and in the fault log, blink the LED fast once
        # the config named it, then start again: a fault that passes (a brown-out, a busy flash)
        # must not leave the meter dead, and one that stays is retried without harm
        print("meter cannot start:", e)
        from hal.faults import log
        log(0, "start", e)
        if led is not None:
            led = machine.Pin(led, machine.Pin.OUT)
        t0 = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t0) < retry_ms:
            if led is not None:
                led.value(not led.value())
            time.sleep_ms(100)
        machine.reset()
        return None


def load_core():
    # Leaves first, the core last. Loading the core's modules one at a time with a collection between
    # them keeps the heap from fragmenting while bytecode loads: booting then fits ~92 KB where one
    # import chain needs ~112 KB (measured on the 64-bit unix port). A name missing here only costs memory.
    # The power-up's modules only: meter.dis (reads) and meter.app load after it (hal.board.Board).
    import gc
    for name in ("clock", "codec", "events", "wallet", "relay", "tariff", "store", "core"):
        try:
            __import__("meter." + name)
        except ImportError:
            pass
        gc.collect()


def resume(b, saved):
    # The RP2040's RTC restarts at 2021-01-01 after every reset (a watchdog reset too), the
    # ESP32's at 2000-01-01 after a power cut, and a chip with a flat battery reads as lost:
    # whenever the RTC reads earlier than the last time the meter saved, resume from that,
    # so tariffs, deadlines and records stay in order. The head-end's next time set (14H;
    # an 08H broadcast only moves +-5 minutes) brings back the minutes the outage took.
    saved = max(saved, 0)  # a new meter whose RTC reads before 2024 starts at the meter epoch
    if b._base >= saved:
        return
    y, mo, d, h, mi, s, wd = clock.to_fields(saved)
    b.rtc.datetime((y, mo, d, (wd + 6) % 7, h, mi, s, 0))  # machine.RTC weekday: 0 = Monday
    b._sync_rtc()


def wire(b, hw):
    """Board b's pins, UART, relay, keypad, supply-loss input and RTC from hw (hal.board.Board)."""
    import machine

    from hal.board import LatchingRelay, Pulses
    Pin = machine.Pin
    pins = hw["pins"]
    b.uart = b.make_uart(hw["uart"], hw["baud"], hw["parity"], pins["tx"], pins["rx"])
    b.de = Pin(pins["de"], Pin.OUT, value=0)
    b.led = Pin(pins["led"], Pin.OUT, value=0)
    b.button_pin = Pin(pins["button"], Pin.IN, Pin.PULL_UP)
    b.pulses = Pulses(Pin(pins["pulse"], Pin.IN, Pin.PULL_UP))
    b.relay = LatchingRelay(Pin(pins["relay_set"], Pin.OUT, value=0), Pin(pins["relay_reset"], Pin.OUT, value=0),
                            Pin(pins["relay_sense"], Pin.IN, Pin.PULL_UP), hw["relay_pulse_ms"],
                            hw["sense_open_level"])
    rows = pins.get("keypad_rows")  # optional: the token keypad (hal/keypad.py)
    b.keypad = None
    if rows:
        from hal.keypad import Keypad
        b.keypad = Keypad([Pin(p, Pin.OUT, value=1) for p in rows],
                          [Pin(p, Pin.IN, Pin.PULL_UP) for p in pins["keypad_cols"]])
    fail = pins.get("power_fail")
    b.supply = None if fail is None else Pulses(Pin(fail, Pin.IN))
    chip = hw["rtc"]
    if chip == "internal":
        b.rtc = machine.RTC()
    else:  # a battery-backed chip on I2C keeps the time through resets and power cuts
        from hal.rtc import CHIPS
        b.rtc = CHIPS[chip](machine.I2C(hw["i2c"], scl=Pin(pins["scl"]), sda=Pin(pins["sda"])))
    # one character time (11 bits), so DE drops only after the stop bit has left
    b._char_us = 11000000 // hw["baud"]
    b._delay_ms = hw["reply_delay_ms"]
    b._hold_ms = hw["button_ms"]
    b._sync_rtc()


def power_up(b, hw, load):
    """The board's state files opened and checked (StateError when they cannot be trusted), its
    clock resumed from the newest record's time, and (load) the core's modules loaded."""
    flash = open_slots(hw["state"], hw["state_size"], hw["in_service"])
    resume(b, saved_time(flash))
    if load:
        load_core()
    return flash
