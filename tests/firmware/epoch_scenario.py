# The meter's clock, billing and events at dates long after it was built, written as plain asserts
# so the same code runs under CPython (test_epoch.py) and inside the real MicroPython binary. Each
# case starts at 23:50 the day before a date worth testing (a new month in 2034, the day a 32-bit
# Unix time_t overflows in 2038, the last new year before meter time leaves a board's small ints)
# and runs four hours: a daily freeze, a monthly ladder settlement, a price switch-over, a delayed
# trip, a broadcast correction, a time set and a power cut. Every expected date below is written
# out by hand (not computed by meter.clock), so the DL/T 645 encodings are checked, not echoed.
# MicroPython's unix port is 64-bit; a 32-bit board's small ints are 31 bits (-2**30 .. 2**30-1),
# and a time value past them is a long on the heap: each time value is checked against that range.
# Keep this module MicroPython-clean: no typing, no f-strings, no CPython-only imports.

from meter import codec, desktop, topup
from meter.core import Meter
from meter.desktop import RamFlash

ADDR = "000000002038"
SMALL = 1 << 30  # a 32-bit port's small ints: -SMALL .. SMALL - 1

# (start day, its weekday 0=Sunday, the next day, its weekday, a month begins on the next day)
CASES = (
    ((2034, 1, 31), 2, (2034, 2, 1), 3, True),
    ((2038, 1, 18), 1, (2038, 1, 19), 2, False),
    ((2057, 12, 31), 1, (2058, 1, 1), 2, True),
)


class Rand:
    def __init__(self):
        self.n = 0

    def __call__(self, k):
        self.n += 1
        return bytes((self.n + i) & 0xFF for i in range(k))


def _b(v):
    return (v // 10) << 4 | v % 10


def _fields(day, h, mi, s):
    # ss mm hh DD MM YY, BCD
    y, mo, d = day
    return bytes((_b(s), _b(mi), _b(h), _b(d), _b(mo), _b(y - 2000)))


def _le(v, n):
    return bytes((v >> (8 * i)) & 0xFF for i in range(n))


def _ask(m, ctrl, data, now):
    r = m.handle(desktop.build(ADDR, ctrl, data), now)
    if r is None:
        return None, None
    fr = codec.Frame()
    assert not codec.decode(r, fr)
    return fr.ctrl, bytes(fr.data[:fr.n])


def read(m, di, now):
    ctrl, data = _ask(m, 0x11, _le(di, 4), now)
    assert ctrl == 0x91, (hex(di), ctrl, data)
    return data[4:]


def write(m, di, value, now):
    # bench image: plain level 04, password 000000
    ctrl, data = _ask(m, 0x14, _le(di, 4) + bytes((4, 0, 0, 0, 0, 0, 0, 0)) + value, now)
    assert ctrl == 0x94, (hex(di), ctrl, data)


def control(m, n1, deadline, now):
    ctrl, data = _ask(m, 0x1C, bytes((2, 0, 0, 0, 0, 0, 0, 0, n1, 0)) + deadline, now)
    assert ctrl == 0x9C, (ctrl, data)


def time_values(m):
    """Every time the meter keeps (seconds, or day numbers), in RAM and so in its record."""
    v = [m.last_t, m.seen_t, m.offset, m.bc_day, m.frz_day, m.relay.until, m.sec.fail_t, m.sec.expiry,
         m._unsaved[1]]
    for s in m.tariff.switch:
        if s is not None:
            v.append(s)
    v.extend(m.tariff.holidays)
    if m.tok:
        v.append(m.tok[1][1])  # keypad tokens' bad-entry limit: since when
    for recs in desktop.event_records(m.events):
        for r in recs:
            v.append(r[0])
    return v


def small(m, *more):
    for v in time_values(m) + list(more):
        assert -SMALL <= v < SMALL, ("a time value is no small int on a 32-bit board", v)


def clock_reads(m, now, day, wd, h, mi, s):
    y, mo, d = day
    assert read(m, 0x0400010C, now) == bytes((_b(s), _b(mi), _b(h), _b(wd), _b(d), _b(mo), _b(y - 2000)))
    assert read(m, 0x04000101, now) == bytes((_b(wd), _b(d), _b(mo), _b(y - 2000)))
    assert read(m, 0x04000102, now) == bytes((_b(s), _b(mi), _b(h)))


def run_case(case, start_at):
    """One case; start_at: meter time of start day 23:50:00 (the HAL's `now`, from its RTC)."""
    day0, wd0, day1, wd1, month = case
    cfg = {"address": ADDR, "key": b"0123456789abcdef", "krn": 0, "mode": "local", "bench": True}
    flash = RamFlash(16384)
    s0 = start_at
    m = Meter(cfg, flash, s0, Rand())
    small(m, s0)
    clock_reads(m, s0, day0, wd0, 23, 50, 0)
    res, cmd = topup.open_account(m.wallet, 100000, 1, "000000000042")  # 1000 yuan
    m._local(cmd, m.time(s0))
    write(m, 0x04060401, bytes((0x00, 0x01, 0x99)), s0)  # ladder settles monthly: day 1, 00:00
    write(m, 0x040502FF, b"".join(_le(0x8000, 4) for _ in range(4)), s0)  # set 2: 0.8 yuan/kWh
    write(m, 0x04000108, _fields(day1, 1, 0, 0)[1:], s0)  # prices switch next day 01:00
    assert read(m, 0x04000108, s0) == _fields(day1, 1, 0, 0)[1:]
    write(m, 0x04001401, bytes((0x30, 0x00)), s0)  # trip delay 30 minutes
    m.add_energy(1000, s0 + 300)  # 23:55: 1 kWh at 0.5 yuan
    control(m, 0x1A, _fields(day1, 1, 0, 0), s0 + 360)  # 23:56: trip, due at 00:26:00
    m.tick(s0 + 600)  # 00:00:00 the next day: the daily freeze
    assert read(m, 0x05060001, s0 + 600) == _fields(day1, 0, 0, 0)[1:]
    assert m.ladder_wh == 1000
    m.tick(s0 + 2159)
    assert not m.relay_open
    m.tick(s0 + 2160)
    assert m.relay_open
    assert read(m, 0x1D000101, s0 + 2160) == _fields(day1, 0, 26, 0)
    m.add_energy(1000, s0 + 2400)  # 00:30: before the switch, after the settlement
    assert m.ladder_wh == (1000 if month else 2000)
    m.add_energy(1000, s0 + 4200)  # 01:00:00: the new prices
    assert read(m, 0x00900200, s0 + 4200) == _le(0x99820, 4)  # 1000.00 - 0.50 - 0.50 - 0.80 yuan
    # 08H broadcast at 02:00:00: +60 s
    assert _ask(m, 0x08, _fields(day1, 2, 1, 0), s0 + 7800) == (None, None)
    clock_reads(m, s0 + 7800, day1, wd1, 2, 1, 0)
    # 14H time set at (HAL) 02:03:20: the meter's clock to 03:14:07
    write(m, 0x0400010C, bytes((0x07, 0x14, 0x03, _b(wd1))) + _fields(day1, 0, 0, 0)[3:], s0 + 8000)
    clock_reads(m, s0 + 8000, day1, wd1, 3, 14, 7)
    clock_reads(m, s0 + 8001, day1, wd1, 3, 14, 8)
    small(m, s0 + 8001)
    # a power cut: the meter powers up from its flash ten seconds later
    m2 = Meter(cfg, flash, s0 + 8011, Rand())
    clock_reads(m2, s0 + 8011, day1, wd1, 3, 14, 18)
    assert read(m2, 0x00900200, s0 + 8011) == _le(0x99820, 4)
    assert read(m2, 0x1D000101, s0 + 8011) == _fields(day1, 0, 26, 0)
    assert read(m2, 0x05060001, s0 + 8011) == _fields(day1, 0, 0, 0)[1:]
    assert m2.relay_open and m2.energy[0] == 3000
    small(m2, s0 + 8011)
    return m2


def run_all(start_of):
    """start_of(y, mo, d, h, mi, s): the HAL's meter time for a civil time (meter.clock.from_fields)."""
    for case in CASES:
        y, mo, d = case[0]
        run_case(case, start_of(y, mo, d, 23, 50, 0))
        print("PASS", case[2][0])
