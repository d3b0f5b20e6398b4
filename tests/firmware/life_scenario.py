# A whole prepaid life of one meter, driven through DL/T 645 frames as the head-end would:
# open account, recharge, consume through alarm 1, alarm 2 (pre-trip, button), zero
# (pre-trip, button), overdraft (trip the button cannot undo), recharge, button, power
# cycle. MicroPython-clean: tests/firmware/test_life.py runs it under CPython and under the
# real micropython binary with every module loaded from .mpy in a 96 KB heap, and compares
# the two checkpoint logs.

from meter import clock, codec
from meter.core import Meter
from meter.desktop import RamFlash

try:
    from tools.bench.hes import HeadEnd, parse, bcd
    from tools.sim.seeded_rand import Rand
except ImportError:  # under micropython, beside the .mpy files
    from hes import HeadEnd, parse, bcd
    from seeded_rand import Rand

ADDR = "123456789012"
KEY = b"0123456789abcdef"
CUSTOMER = "000000000042"
T0 = clock.from_fields(2025, 6, 5, 10, 22, 51)


def _value(m, he, di, now):
    ctrl, data = parse(m.handle(he.read(di), now))
    if ctrl != 0x91:
        raise AssertionError("read %08x refused: %02x" % (di, ctrl))
    return data[4:]


def _money(m, he, now):
    v = codec.get_bcd(_value(m, he, 0x00900200, now), 0, 4)
    o = codec.get_bcd(_value(m, he, 0x00900201, now), 0, 4)
    return v - o


CONFIG = {"address": ADDR, "key": KEY, "krn": 1, "mode": "local"}
FLASH_SIZE = 4096


def run(hmac_fn, meter_cls=Meter):
    """Play the scenario; return the checkpoint log (list of lists of ints/strings)."""
    flash = RamFlash(FLASH_SIZE)
    rand = Rand(7)
    cfg = CONFIG
    m = meter_cls(cfg, flash, T0, rand)
    he = HeadEnd(ADDR, KEY, hmac_fn)
    now = T0
    log = []

    def check(label):
        st = m.status()
        money = _money(m, he, now)
        if money != st["balance_fen"]:
            raise AssertionError("read-back money %d != balance %d" % (money, st["balance_fen"]))
        sw3 = codec.get_le(_value(m, he, 0x04000503, now), 0, 2)
        if bool(sw3 & 0x40) != m.relay_open:
            raise AssertionError("status word 3 disagrees with the relay")
        log.append([label, st["balance_fen"], st["state"], 1 if m.relay_open else 0, st["count"],
                    st["energy_wh"]])

    def ok(reply, want):
        ctrl, data = parse(reply)
        if ctrl != want:
            raise AssertionError("reply %02x, wanted %02x: %s" % (ctrl, want, data))
        return data

    he.login(lambda f: m.handle(f, now), b"\x10\x20\x30\x40\x50\x60\x70\x80")
    ok(m.handle(he.purchase(3000, 1, CUSTOMER, open_account=True), now), 0x83)
    # limits: alarm 1 20.00, alarm 2 10.00, overdraft 5.00, close-permitted 0
    ok(m.handle(he.write(0x04001001, bcd(2000, 4)), now), 0x94)
    ok(m.handle(he.write(0x04001002, bcd(1000, 4)), now), 0x94)
    ok(m.handle(he.write(0x04001003, bcd(500, 4)), now), 0x94)
    check("opened")
    if m.relay_open or m.status()["state"] != 0:
        raise AssertionError("a new account starts NORMAL and closed")

    def consume_until(state, step=100):
        nonlocal now
        n = 0
        while m.status()["state"] != state:
            now += 60
            m.add_energy(step, now)  # 100 Wh at 0.50 yuan/kWh = 5 fen
            n += 1
            if n > 10000:
                raise AssertionError("never reached state %d" % state)

    consume_until(1)
    check("alarm1")
    if m.relay_open:
        raise AssertionError("alarm 1 only warns")
    consume_until(2)
    check("alarm2")
    if not m.relay_open:
        raise AssertionError("alarm 2 pre-trips")
    m.button(now)
    check("alarm2-button")
    if m.relay_open:
        raise AssertionError("the button restores an alarm-2 pre-trip")
    consume_until(3)
    check("zero")
    if not m.relay_open:
        raise AssertionError("zero pre-trips again")
    m.button(now)
    if m.relay_open:
        raise AssertionError("the button restores at zero while overdraft is allowed")
    consume_until(4)
    check("overdraft")
    if not m.relay_open or m.button(now) or not m.relay_open:
        raise AssertionError("overdraft trips and the button cannot close")
    if m.status()["balance_fen"] > -500:
        raise AssertionError("overdraft before the limit")
    # a recharge pays the overdraft first, then the customer presses the button
    now += 60
    he.login(lambda f: m.handle(f, now), b"\x11\x21\x31\x41\x51\x61\x71\x81")
    req = he.purchase(5000, 2, CUSTOMER)
    first = m.handle(req, now)
    ok(first, 0x83)
    if m.handle(req, now) != first:
        raise AssertionError("a retried recharge must get the same reply")
    check("recharged")
    if not m.relay_open:
        raise AssertionError("an internal relay waits for the button after a top-up")
    m.button(now)
    check("recharged-button")
    if m.relay_open:
        raise AssertionError("the button closes after a top-up")
    trips = codec.get_bcd(_value(m, he, 0x1D000001, now), 0, 3)
    closes = codec.get_bcd(_value(m, he, 0x1E000001, now), 0, 3)
    log.append(["events", trips, closes, codec.get_bcd(_value(m, he, 0x03330201, now), 0, 2)])
    # power cycle: a new Meter on the same flash is the same meter
    before = m.status()
    now += 3600
    m = meter_cls(cfg, flash, now, rand)
    after = m.status()
    for k in ("balance_fen", "count", "state", "relay_open", "energy_wh", "customer", "rem"):
        if before[k] != after[k]:
            raise AssertionError("power cycle changed " + k)
    check("power-cycled")
    # and it keeps serving: a repeat of the last top-up is recognised as such
    he.login(lambda f: m.handle(f, now), b"\x12\x22\x32\x42\x52\x62\x72\x82")
    ctrl, data = parse(m.handle(he.purchase(5000, 2, CUSTOMER), now))
    if ctrl != 0xC3 or data[0] != 2:
        raise AssertionError("repeat recharge after a power cycle")
    bal, cnt, cust = he.query_check(m.handle(he.query(), now))
    log.append(["query", bal, cnt, cust])
    check("end")
    return log


def main():
    from meter.security import hmac_sha256
    import gc
    log = run(hmac_sha256)
    gc.collect()
    for row in log:
        print(" ".join(str(x) for x in row))
