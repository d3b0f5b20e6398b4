# DI writes (14H): the bytes of a write parsed and applied through the wallet, relay and tariff
# setters (meter.dis reads the same DIs). Loaded when a write comes and let go after it
# (meter.core), so a meter that is not being programmed keeps neither its code nor its names.

from meter import clock
from meter.codec import get_bcd

# The tariff's setters and their checks (meter.tariffcheck): loaded here with the parser,
# before the write's own allocations fragment the heap (loaded between them, it needed a hole
# the size of its largest function in a heap that no longer had one)
from meter import tariffcheck

# ERR bits
try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_OTHER = const(1)
_NODATA = const(2)
_ZONES = const(0x10)
_SLOTS = const(0x20)
_RATES = const(0x40)


def _num(v, o, n):
    x = get_bcd(v, o, n)
    if x < 0:
        raise ValueError("bcd")
    return x


def _t5(v, o):
    # mm hh DD MM YY; all zero = "no switch-over"
    if all(v[o + i] == 0 for i in range(5)):
        return None
    mi, h, d, mo, y = (_num(v, o + i, 1) for i in range(5))
    if mi > 59 or h > 23 or not clock.valid_date(2000 + y, mo, d):
        raise ValueError("time")
    return clock.from_fields(2000 + y, mo, d, h, mi)


def _set_clock(m, t, new):
    m.offset += new - t
    m.sec.expiry += new - t  # the session window is real time: setting the clock keeps it


def _write_param(m, lo, v, t):
    n = len(v)
    if 0x1001 <= lo <= 0x1005 and n == 4:
        x = _num(v, 0, 4)
        kw = ("alarm1", "alarm2", "overdraft", "hoard", "close_ok")[lo - 0x1001]
        from meter import topup
        m._local(topup.set_limits(m.wallet, **{kw: x}), t)
        return 0
    if lo == 0x1401 and n == 2:
        m.relay.trip_delay = _num(v, 0, 2) * 60
        return 0
    y, mo, d, h, mi, s, _ = clock.to_fields(t)
    if lo == 0x0101 and n == 4:
        d, mo, y = _num(v, 1, 1), _num(v, 2, 1), 2000 + _num(v, 3, 1)
    elif lo == 0x0102 and n == 3:
        s, mi, h = _num(v, 0, 1), _num(v, 1, 1), _num(v, 2, 1)
    elif lo == 0x010C and n == 7:
        s, mi, h = _num(v, 0, 1), _num(v, 1, 1), _num(v, 2, 1)
        d, mo, y = _num(v, 4, 1), _num(v, 5, 1), 2000 + _num(v, 6, 1)
    elif 0x0106 <= lo <= 0x0109 and n == 5:
        tariffcheck.set_switch(m.tariff, lo - 0x0106, _t5(v, 0))
        return 0
    elif lo == 0x0402 and n == 6:
        _num(v, 0, 6)
        for i in range(6):
            m.number[i] = v[i]
        return 0
    else:
        return _NODATA
    if s > 59 or mi > 59 or h > 23 or not clock.valid_date(y, mo, d):
        return _OTHER
    _set_clock(m, t, clock.from_fields(y, mo, d, h, mi, s))
    return 0


def _write_table(m, s, k, v):
    n = len(v)
    if n % 3 or n == 0:
        return _OTHER
    rows = [(_num(v, i, 1), _num(v, i + 1, 1), _num(v, i + 2, 1)) for i in range(0, n, 3)]
    if k == 0:
        if n > 42:
            return _ZONES
        for r in rows:
            if not 1 <= r[0] <= 8:
                return _OTHER
        tariffcheck.set_zones(m.tariff, s, [(r[2], r[1], r[0] - 1) for r in rows])
    else:
        if n > 42:
            return _SLOTS
        for r in rows:
            if not 1 <= r[0] <= 4:
                return _RATES
            if r[1] > 59 or r[2] > 23:
                return _OTHER
        tariffcheck.set_day_table(m.tariff, s, k - 1, [(r[2] * 60 + r[1], r[0] - 1) for r in rows])
    return 0


def _write_ladder(m, lo, v):
    tf = m.tariff
    kind = lo >> 8
    i = lo & 0xFF
    n = len(v)
    if kind == 4:
        pts = list(tf.settlement) + [(99, 99, 99)] * (4 - len(tf.settlement))
        if i == 0xFF and n == 12:
            pts = [(_num(v, j + 2, 1), _num(v, j + 1, 1), _num(v, j, 1)) for j in range(0, 12, 3)]
        elif 1 <= i <= 4 and n == 3:
            pts[i - 1] = (_num(v, 2, 1), _num(v, 1, 1), _num(v, 0, 1))
        else:
            return _NODATA
        tariffcheck.set_settlement(tf, pts)
        return 0
    if kind > 3:
        return _NODATA
    s = kind >> 1
    thr = list(tf.thresholds[s]) + [0] * (6 - len(tf.thresholds[s]))
    inc = list(tf.increments[s]) + [0] * (7 - len(tf.increments[s]))
    vals, scale = (thr, 10) if kind & 1 == 0 else (inc, 1)
    if i == 0xFF and n == 4 * len(vals):
        for j in range(len(vals)):
            vals[j] = _num(v, 4 * j, 4) * scale
    elif 1 <= i <= len(vals) and n == 4:
        vals[i - 1] = _num(v, 0, 4) * scale
    else:
        return _NODATA
    tariffcheck.set_ladder(tf, s, thr, inc)
    return 0


def write_item(m, di, v, t):
    """Apply a write of value bytes v to DI di; 0 or the ERR bits. May raise ValueError."""
    c = di >> 16
    lo = di & 0xFFFF
    if c == 0x0400:
        return _write_param(m, lo, v, t)
    if c == 0x0401 or c == 0x0402:
        if lo > 8:
            return _NODATA
        return _write_table(m, c - 0x0401, lo, v)
    if c == 0x0405:
        s = (lo >> 8) - 1
        i = lo & 0xFF
        if not 0 <= s <= 1:
            return _NODATA
        prices = list(m.tariff.prices[s])
        if i == 0xFF and len(v) == 16:
            prices = [_num(v, 4 * j, 4) for j in range(4)]
        elif 1 <= i <= 4 and len(v) == 4:
            prices[i - 1] = _num(v, 0, 4)
        elif i > 4:
            return _RATES
        else:
            return _OTHER
        tariffcheck.set_prices(m.tariff, s, prices)
        return 0
    if c == 0x0406:
        return _write_ladder(m, lo, v)
    return _NODATA
