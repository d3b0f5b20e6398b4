# The meter-side data-identifier table: how each DI the meter holds is read (value bytes
# written into a buffer, BCD low byte first; meter.diwrite writes them). DIs are ints DI3..DI0
# as people write them.
# Record DIs not named by DL/T 645's public tables are the project's own:
#   033E0000 MAC-failure count, 033E00nn n-th last MAC failure: time(6) op(4) C(1) DI(4).
#   033D0000 keypad-token count, 033D00nn n-th last accepted token: time(6) kind(1) TID(4, LE)
#   value(4, BCD fen or key revision) balance before(4) after(4) (signed BCD fen).
# Freezes (DL/T 645 class 05): 050600nn n-th last daily freeze time YYMMDDhhmm (5), 050601nn its
# forward active energy, total and T1..T4, XXXXXX.XX kWh each (20); nn = 01..0A.

from meter import clock
from meter.codec import get_le, put_bcd, put_sbcd
from meter.core import ERR_NODATA, ERR_OTHER

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_READ_MAX = const(196)    # 200-byte read reply limit minus the DI
_FOLLOW_MAX = const(195)  # a follow-up also echoes SEQ

# DI3 DI2 of the records and tables read through meter.disrec: the parameters (04000xxx: clock,
# switch-over times, table sizes, addresses, status words, alarms), day tables and zones, the
# ladder, purchase, programming, token, MAC-failure and fault records, freezes, trips and closes
_RECORDS = const((0x0400, 0x0401, 0x0402, 0x0406, 0x0333, 0x0330, 0x033D, 0x033E, 0x033F, 0x0506, 0x1D00, 0x1E00))


def put_dt(b, o, t, seconds):
    # ss mm hh DD MM YY (or without ss), BCD, low field first
    y, mo, d, h, mi, s, _ = clock.to_fields(t)
    if seconds:
        b[o] = bcd1(s)
        o += 1
    b[o] = bcd1(mi)
    b[o + 1] = bcd1(h)
    b[o + 2] = bcd1(d)
    b[o + 3] = bcd1(mo)
    b[o + 4] = bcd1(y - 2000)
    return 6 if seconds else 5


def bcd1(v):
    return (v // 10) << 4 | v % 10


def zeros(b, o, n):
    for i in range(n):
        b[o + i] = 0
    return n


def _price_now(m, t, with_ladder):
    tf = m.tariff
    p = tf.current_prices(t)[tf.rate_at(t)]
    if with_ladder:
        thr, inc = tf.current_ladder(t)
        i = 0
        e = m.ladder_wh + 1  # the tier the next Wh is priced at
        while i < len(thr) and e > thr[i]:
            i += 1
        p += inc[i]
    return p


def read_item(m, di, b, o, t):
    """Value bytes of one DI of meter m into b[o:] at meter time t; length, or -1 if none."""
    c = di >> 16
    lo = di & 0xFFFF
    if c <= 2:
        k = lo >> 8
        if lo & 0xFF or k > 4:
            return -1
        put_bcd(b, o, 0 if c == 2 else m.energy[k] // 10, 4)
        return 4
    if c == 0x0090:
        bal = m.wallet.balance
        if lo == 0x0200:
            put_bcd(b, o, bal if bal > 0 else 0, 4)
        elif lo == 0x0201:
            put_bcd(b, o, -bal if bal < 0 else 0, 4)
        else:
            return -1
        return 4
    if c == 0x0201 and lo == 0x0100:
        put_bcd(b, o, m.voltage_dv, 2)
        return 2
    if c == 0x0202 and lo == 0x0100:
        put_sbcd(b, o, m.power_w * 10000 // m.voltage_dv if m.voltage_dv else 0, 3)
        return 3
    if c == 0x0203 and (lo == 0 or lo == 0x0100):
        put_sbcd(b, o, m.power_w * 10, 3)  # XX.XXXX kW: 0.0001 kW = 0.1 W
        return 3
    if c == 0x0206 and (lo == 0 or lo == 0x0100):
        put_sbcd(b, o, 1000, 2)
        return 2
    if c == 0x0280:
        if lo == 0x0002:
            put_bcd(b, o, 5000, 2)
            return 2
        if lo == 0x0020 or lo == 0x0021:
            put_bcd(b, o, _price_now(m, t, lo == 0x0020), 4)
            return 4
        return -1
    if c == 0x0405:
        s = (lo >> 8) - 1
        i = (lo & 0xFF) - 1
        if not (0 <= s <= 1 and 0 <= i < 4):
            return -1
        put_bcd(b, o, m.tariff.prices[s][i], 4)
        return 4
    if c in _RECORDS:
        # the records and tables (meter.disrec): loaded for the read, let go by the core after it
        from meter import disrec
        return disrec.read_item(m, c, lo, b, o, t)
    return -1


def read(m, t):
    """Meter m's reply to the 11H read in m.fr at meter time t (a view of m's transmit buffer)."""
    fr = m.fr
    if fr.n < 4:
        return m._err(0x11, ERR_OTHER)
    d = fr.data
    di = get_le(d, 0, 4)
    out = m.out
    if di & 0xFF != 0xFF and di & 0xFF00 != 0xFF00:
        k = read_item(m, di, out, 4, t)  # one item: straight into the reply
        if k < 0:
            return m._err(0x11, ERR_NODATA)
        for i in range(4):
            out[i] = d[i]
        m.blk_di = -1
        return m._reply(0x91, out, 4 + k)
    blk = m.blk
    if blk is None:
        blk = m.blk = bytearray(512)  # the longest block: 10 programming records, 503 bytes
    k = _value(m, di, blk, t)
    if k < 0:
        return m._err(0x11, ERR_NODATA)
    for i in range(4):
        out[i] = d[i]
    if k <= _READ_MAX:
        m.blk_di = -1
        for i in range(k):
            out[4 + i] = blk[i]
        return m._reply(0x91, out, 4 + k)
    m.blk_di = di  # keep the snapshot: follow-ups must not mix two instants
    m.blk_n = k
    for i in range(_READ_MAX):
        out[4 + i] = blk[i]
    return m._reply(0xB1, out, 4 + _READ_MAX)


def follow(m, t):
    """Meter m's reply to the 12H follow-up in m.fr: the next piece of the block read's snapshot."""
    fr = m.fr
    d = fr.data
    if fr.n != 5:
        return m._err(0x12, ERR_OTHER)
    di = get_le(d, 0, 4)
    seq = d[4]
    off = _READ_MAX + (seq - 1) * _FOLLOW_MAX
    blk = m.blk
    if blk is None or di != m.blk_di or seq < 1 or off >= m.blk_n:
        return m._err(0x12, ERR_NODATA)
    k = min(_FOLLOW_MAX, m.blk_n - off)
    out = m.out
    for i in range(4):
        out[i] = d[i]
    for i in range(k):
        out[4 + i] = blk[off + i]
    out[4 + k] = seq
    return m._reply(0xB2 if off + k < m.blk_n else 0x92, out, 5 + k)


def _value(m, di, b, t):
    """The value of di (or of its block when DI0 or DI1 is FF) into b; length or -1."""
    if di & 0xFF == 0xFF or di & 0xFF00 == 0xFF00:
        if di & 0xFFFF == 0xFFFF:
            return -1
        lo = di & 0xFF == 0xFF
        first = 0
        if not lo and (di >> 24 in (0x03, 0x1D, 0x1E)):
            first = 1  # event classes: DI1=00 holds the counts, not record fields
        n = 0
        found = False
        for i in range(first, 0x40):
            sub = (di & ~0xFF) | i if lo else (di & ~0xFF00) | i << 8
            if n + 50 > len(b):
                break  # no item is longer than 50 bytes: never write past the buffer
            k = read_item(m, sub, b, n, t)
            if k >= 0:
                n += k
                found = True
        return n if found else -1
    return read_item(m, di, b, 0, t)
