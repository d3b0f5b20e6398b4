# The image's config: one JSON file (config.json beside main.py on a board) holding the meter's
# identity, its key and, for boards, the pins. Pins come from here, never from code, so one image
# serves every wiring. Loading checks everything once at boot and names the file and the field
# that is wrong, because a meter that starts with a bad key or pin fails much later and silently.

import json

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_CONFIG_FILE = const("config.json")
_MODES = const(("local", "remote"))
_BOARDS = const(("esp32", "rp2", "sim"))
_RTCS = const(("internal", "ds3231", "pcf8563"))  # the board's own RTC, or a battery-backed chip on I2C (hal/rtc.py)
# Pins a board image must name. "de" drives the MAX485 DE and /RE pins together.
_BOARD_PINS = const(("tx", "rx", "de", "relay_set", "relay_reset", "relay_sense", "button", "led", "pulse"))
_OUTPUTS = const(("tx", "de", "relay_set", "relay_reset", "led"))
# The one table of board defaults: `meter build` writes it into config.json (README "Wiring").
DEFAULTS = {
    # ESP32 DevKitC (WROOM): UART2 on GPIO17/16; GPIO2 is the on-board LED; GPIO0 is the BOOT button
    "esp32": {"uart": 2, "pins": {"tx": 17, "rx": 16, "de": 4, "relay_set": 25, "relay_reset": 26,
                                  "relay_sense": 27, "button": 0, "led": 2, "pulse": 32}},
    # Raspberry Pi Pico: UART0 on GP0/GP1; GP25 is the on-board LED (use "LED" on a Pico W)
    "rp2": {"uart": 0, "pins": {"tx": 0, "rx": 1, "de": 2, "relay_set": 6, "relay_reset": 7, "relay_sense": 8,
                                "button": 9, "led": 25, "pulse": 10}},
}
# What each chip has, found by its name in sys.implementation._machine (os.uname().machine), e.g.
# "ESP32C3 module with ESP32C3", "Generic ESP32 module with SPIRAM with ESP32", "Raspberry Pi Pico
# with RP2040": (name, UARTs, highest GPIO, input-only GPIOs, strapping GPIOs). Variants first.
CHIPS = (
    ("ESP32C3", 2, 21, (), (2, 8, 9)),
    ("ESP32C6", 2, 30, (), (8, 9, 15)),
    ("ESP32S2", 2, 46, (46,), (0, 45, 46)),
    ("ESP32S3", 3, 48, (), (0, 3, 45, 46)),
    ("ESP32", 3, 39, (34, 35, 36, 37, 38, 39), (0, 2, 5, 12, 15)),
    ("RP2040", 2, 29, (), ()),
    ("RP2350", 2, 47, (), ()),
)


def _each_pin(pins):
    # (name, GPIO) of every pin, a keypad's rows and columns one by one (keypad_rows[0], ...)
    out = []
    for k in pins:
        p = pins[k]
        if isinstance(p, list):
            for i in range(len(p)):
                out.append(("%s[%d]" % (k, i), p[i]))
        elif isinstance(p, int) and not isinstance(p, bool):
            out.append((k, p))
    return out


def _keypad(pins, path):
    # optional: a 4x4 matrix keypad for recharge tokens (hal/keypad.py), rows driven, columns read
    rows = pins.get("keypad_rows")
    cols = pins.get("keypad_cols")
    if rows is None and cols is None:
        return
    for name, v in (("keypad_rows", rows), ("keypad_cols", cols)):
        if not isinstance(v, list) or len(v) != 4 or any(isinstance(p, bool) or not isinstance(p, int) or
                                                          not 0 <= p <= 63 for p in v):
            raise _err(path, "pins.%s must be a list of 4 GPIO numbers (a 4x4 keypad needs both keypad_rows "
                             "and keypad_cols), got %r" % (name, v))
    used = {}
    for k, p in _each_pin(pins):
        if p in used:
            raise _err(path, "pins.%s and pins.%s are both GPIO%d: each keypad line needs a pin of its own" %
                       (used[p], k, p))
        used[p] = k


def chip_of(machine, board):
    """The CHIPS row of the chip `machine` names; for a board built on a host (machine None) or a
    name not known here, the board's usual chip (the classic ESP32, the RP2040)."""
    if machine is not None:
        m = machine.upper().replace("-", "")
        for c in CHIPS:
            if c[0] in m:
                return c
    return CHIPS[4] if board == "esp32" else CHIPS[5] if board == "rp2" else None


def _chip_checks(board, pins, uart, chip, machine, path):
    # errors for what the chip lacks, warnings for pins that work but bite (returned)
    name, uarts, top, inputs, straps = chip
    if uart >= uarts:
        raise _err(path, "uart %d does not exist on the %s (UART0..UART%d); build with --uart %d" %
                   (uart, name, uarts - 1, uarts - 1))
    warn = []
    for k, p in _each_pin(pins):
        if p > top:
            raise _err(path, "pins.%s = GPIO%d does not exist on the %s (GPIO0..GPIO%d)" % (k, p, name, top))
        if p in inputs and (k in _OUTPUTS or k.startswith("keypad_rows")):
            raise _err(path, "pins.%s = GPIO%d is input-only on the %s; it must drive an output" % (k, p, name))
        if p in straps:
            warn.append("pins.%s = GPIO%d is a strapping pin of the %s: %s" % (
                k, p, name, "held low while the board resets it starts the ROM downloader, not the meter; "
                "press the button only after reset" if k == "button" else "a level forced on it at reset can "
                "stop the boot"))
        if name == "ESP32" and p in (16, 17) and (machine is None or "SPIRAM" in machine.upper()):
            warn.append("pins.%s = GPIO%d is wired to the PSRAM on WROVER modules%s; use another pin there" % (
                k, p, "" if machine else " (fine on a WROOM)"))
    return warn


class ConfigError(Exception):
    pass


def _err(path, what):
    # path None: the settings came from a command line, whose options carry the same names
    return ConfigError(what if path is None else "config file %s: %s" % (path, what))


def _digits(s, n):
    if not isinstance(s, str) or len(s) != n:
        return False
    for c in s:
        if c < "0" or c > "9":
            return False
    return True


def _int(cfg, name, lo, hi, path, default=None):
    v = cfg.get(name, default)
    if v is None or isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _err(path, "%s must be an integer %d..%d, got %r" % (name, lo, hi, v))
    return v


def _flag(cfg, name, path):
    v = cfg.get(name, False)
    if v is not True and v is not False:
        raise _err(path, "%s must be true or false, got %r" % (name, v))
    return v


def key_from_hex(text, where):
    """16-byte meter key from 32 hex digits; refuses a blank (all-zero) key."""
    try:
        t = text.strip()
        if len(t) != 32:
            raise ValueError
        key = bytes(int(t[i:i + 2], 16) for i in range(0, 32, 2))
    except (ValueError, AttributeError, TypeError):
        raise ConfigError("%s: the meter key must be 32 hex digits (16 bytes)" % where)
    if key == bytes(16):
        raise ConfigError("%s: the meter key is all zeros; give the key from the head-end's key store" % where)
    return key


def check(cfg, path=None, machine=None):
    """Validate a config dict (as read from JSON, or built from a command line when path is None);
    returns (meter_cfg, hw) or raises ConfigError naming the field.

    meter_cfg is what meter.core.Meter takes; hw holds the rest (board, pins, link, state file,
    and "warnings": pins that work but bite). machine: the board's sys.implementation._machine,
    whose chip the UART and pins are checked against (None: the board's usual chip, on a host).
    """
    if not isinstance(cfg, dict):
        raise _err(path, "must hold a JSON object")
    addr = cfg.get("address")
    if not _digits(addr, 12):
        raise _err(path, "address must be 12 decimal digits as people write it, e.g. \"000000000001\", got %r" % (addr,))
    if addr == "999999999999":
        raise _err(path, "address 999999999999 is the broadcast address; give the meter its own")
    board = cfg.get("board", "sim")
    if "key" in cfg:
        key = key_from_hex(cfg["key"], "key" if path is None else "config file %s" % path)
    elif board in ("esp32", "rp2"):
        key = None  # kept apart from config.json (NVS on an ESP32, meter.key on rp2): the board reads it
    else:
        raise _err(path, "no meter key (\"key\": 32 hex digits); build the image with the key from the head-end")
    krn = _int(cfg, "krn", 0, 255, path, 0)
    mode = cfg.get("mode", "local")
    if mode not in _MODES:
        raise _err(path, "mode must be \"local\" or \"remote\", got %r" % (mode,))
    bench = _flag(cfg, "bench", path)
    number = cfg.get("meter_number", addr)
    if not _digits(number, 12):
        raise _err(path, "meter_number must be 12 decimal digits, got %r" % (number,))
    meter_cfg = {"address": addr, "key": key, "krn": krn, "mode": mode, "bench": bench, "meter_number": number,
                 # energy save policy (meter.core): at most save_wh Wh are lost to a cut without a save
                 "save_wh": _int(cfg, "save_wh", 1, 1000, path, 100),
                 "save_s": _int(cfg, "save_s", 10, 86400, path, 900)}

    if board not in _BOARDS:
        raise _err(path, "board must be one of %s, got %r" % (", ".join(_BOARDS), board))
    state = cfg.get("state", "state.bin")
    if not isinstance(state, str) or not state:
        raise _err(path, "state must name the state file, got %r" % (state,))
    hw = {
        "board": board,
        "state": state,
        "state_size": _int(cfg, "state_size", 1024, 65536, path, 16384),
        "baud": _int(cfg, "baud", 300, 115200, path, 2400),
        "imp_per_kwh": _int(cfg, "imp_per_kwh", 1, 100000, path, 1000),
        "relay_pulse_ms": _int(cfg, "relay_pulse_ms", 10, 2000, path, 100),
        "reply_delay_ms": _int(cfg, "reply_delay_ms", 0, 500, path, 20),
        "wdt_ms": _int(cfg, "wdt_ms", 0, 60000, path, 8000),
        # the spec asks the customer to hold >= 3 s; a bench rig may shorten it
        "button_ms": _int(cfg, "button_ms", 50, 10000, path, 3000),
    }
    parity = cfg.get("parity", "E")
    if parity not in ("E", "O", "N"):
        raise _err(path, "parity must be \"E\", \"O\" or \"N\", got %r" % (parity,))
    hw["parity"] = parity
    if board != "sim":
        pins = cfg.get("pins")
        if not isinstance(pins, dict):
            raise _err(path, "a %s image needs \"pins\": {%s}" % (board, ", ".join(_BOARD_PINS)))
        for name in _BOARD_PINS:
            p = pins.get(name)
            if isinstance(p, bool) or not (isinstance(p, int) and 0 <= p <= 63 or p == "LED"):
                raise _err(path, "pins.%s must be a GPIO number, got %r" % (name, p))
        _keypad(pins, path)
        p = pins.get("power_fail")  # optional: the supply-loss input (README)
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 63):
            raise _err(path, "pins.power_fail must be a GPIO number, got %r" % (p,))
        rtc = cfg.get("rtc", "internal")
        if rtc not in _RTCS:
            raise _err(path, "rtc must be one of %s, got %r" % (", ".join(_RTCS), rtc))
        hw["rtc"] = rtc
        if rtc != "internal":
            for name in ("sda", "scl"):
                p = pins.get(name)
                if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 63:
                    raise _err(path, "rtc %s needs pins.%s (its I2C bus), got %r" % (rtc, name, p))
            hw["i2c"] = _int(cfg, "i2c", 0, 1, path, 0)
        hw["pins"] = pins
        chip = chip_of(machine, board)
        uart = DEFAULTS[board]["uart"]
        if chip is not None and uart >= chip[1]:
            uart = chip[1] - 1  # no UART2 on this chip: UART1 (UART0 carries the REPL)
        hw["uart"] = _int(cfg, "uart", 0, 2, path, uart)
        hw["warnings"] = [] if chip is None else _chip_checks(board, pins, hw["uart"], chip, machine, path)
        if board == "rp2" and hw["wdt_ms"] > 8388:
            raise _err(path, "wdt_ms must be at most 8388 on an RP2040 (its watchdog's limit), got %d" % hw["wdt_ms"])
        # a meter in service must find its state: missing or erased state is refused, not a new meter
        hw["in_service"] = _flag(cfg, "in_service", path)
        # latching relays ship in both polarities; the sense contact can read either way
        hw["sense_open_level"] = _int(cfg, "sense_open_level", 0, 1, path, 1)
    return meter_cfg, hw


def load(path=_CONFIG_FILE, machine=None):
    """Read and check the config file (against the chip `machine` names); raises ConfigError
    naming the file and the fault."""
    try:
        f = open(path)
    except OSError:
        raise ConfigError("config file %s is missing: build the image with `meter build` and deploy it" % path)
    try:
        text = f.read()
    finally:
        f.close()
    try:
        cfg = json.loads(text)
    except ValueError:
        raise ConfigError("config file %s is corrupt: not valid JSON; rebuild it with `meter build`" % path)
    return check(cfg, path, machine)
