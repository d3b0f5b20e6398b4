# The DIs of the meter's parameters, records and tables (meter.dis reads the rest): the 04000xxx
# parameters (a head-end reads them when it programs or checks a meter, not when it reads it for
# energy and balance), day tables and zones, the ladder, the last-10 event records and freezes.
# Loaded for such a read and let go after it (meter.core), so a meter that is only read for its
# energy and balance keeps neither code nor names.

import struct

from meter import clock, codec, events
from meter.codec import put_bcd, put_sbcd, put_le
from meter.dis import bcd1, put_dt, zeros

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_R_WAIT_TRIP = const(1)  # meter.relay's remote side: trip delay running


def last(e, kind, n):
    """Event log e's (meter.events.Events) n-th last record of kind (1 = newest) as a list, or
    None."""
    f = e._fmt(kind)
    w = struct.calcsize(f)
    b = e.logs[kind]
    return list(struct.unpack_from(f, b, (n - 1) * w)) if 1 <= n <= len(b) // w else None


def relay_bits(r):
    """Status word 3's bits relay r (meter.relay.Relay) owns: 4 relay actual (= commanded here;
    the HAL may override from sensing), 6 relay commanded, 7 pre-trip alarm (the trip delay
    running), 12 power hold."""
    b = 0x50 if r.commanded_open else 0
    if r.remote == _R_WAIT_TRIP:
        b |= 0x80
    if r.hold:
        b |= 0x1000
    return b


def _table(m, s, k, b, o):
    # 14 entries of 3 bytes, NN first; unused entries repeat the last (as writes pad them)
    tf = m.tariff
    if k == 0:
        rows = [(z[2] + 1, z[1], z[0]) for z in tf.zones[s]]
    elif k <= 8:
        rows = [(p[1] + 1, p[0] % 60, p[0] // 60) for p in tf.day_table(s, k - 1)]
    else:
        return -1
    for i in range(14):
        r = rows[i] if i < len(rows) else rows[-1]
        b[o + 3 * i] = bcd1(r[0])
        b[o + 3 * i + 1] = bcd1(r[1])
        b[o + 3 * i + 2] = bcd1(r[2])
    return 42


def _ladder(m, lo, b, o):
    tf = m.tariff
    kind = lo >> 8
    i = (lo & 0xFF) - 1
    if kind == 4:
        if not 0 <= i < 4:
            return -1
        p = tf.settlement[i] if i < len(tf.settlement) else (99, 99, 99)
        b[o] = bcd1(p[2] % 100)
        b[o + 1] = bcd1(p[1] % 100)
        b[o + 2] = bcd1(p[0] % 100)
        return 3
    if kind > 3:
        return -1
    s = kind >> 1
    vals = tf.thresholds[s] if kind & 1 == 0 else tf.increments[s]
    if not 0 <= i < (6 if kind & 1 == 0 else 7):
        return -1
    v = vals[i] if i < len(vals) else 0
    put_bcd(b, o, v // 10 if kind & 1 == 0 else v, 4)
    return 4


def _event(m, kind, field, n, b, o):
    e = m.events
    if field == 0 and n == 0 and kind != events.PURCHASE:
        put_bcd(b, o, e.counts[kind], 3)
        return 3
    if not 1 <= n <= 10:
        return -1
    r = last(e, kind, n)
    if kind == events.PURCHASE:
        if not 1 <= field <= 6:
            return -1
        size = (5, 2, 4, 4, 4, 4)[field - 1]
        if r is None:
            return zeros(b, o, size)
        if field == 1:
            return put_dt(b, o, r[0], False)
        if field == 2:
            put_bcd(b, o, r[1], 2)
        else:
            put_sbcd(b, o, r[field - 1], 4)
        return size
    if kind >= events.PROGRAM:  # the meter's own logs (no FREEZE comes here)
        if field != 0:
            return -1
        size = (50, 15, 0, 11, 23)[kind - events.PROGRAM]
        if r is None:
            return zeros(b, o, size)
        put_dt(b, o, r[0], True)
        if kind >= events.FAULT:  # time, code (1 byte), info (4 bytes); a TOKEN: kind, TID, then
            b[o + 6] = r[1]       # value, balance before and after (4 BCD bytes each)
            put_le(b, o + 7, r[2], 4)
            for i in range(3, len(r)):
                put_sbcd(b, o + 4 * i - 1, r[i], 4)
            return size
        put_le(b, o + 6, r[1], 4)
        if kind == events.MACFAIL:
            b[o + 10] = r[2]
            put_le(b, o + 11, r[3], 4)
        else:
            put_le(b, o + 10, r[2], 4)
            for i in range(14, 50):
                b[o + i] = 0xFF  # the other nine DI slots of a programming record: unused
        return size
    # trip / close
    if not 1 <= field <= 4:
        return -1
    size = 6 if field == 1 else 4
    if r is None:
        return zeros(b, o, size)
    if field == 1:
        return put_dt(b, o, r[0], True)
    if field == 2:
        put_le(b, o, r[1], 4)
    else:
        put_bcd(b, o, r[field - 1] // 10, 4)
    return 4


def _status3(m, t):
    tf = m.tariff
    w = relay_bits(m.relay)
    if m.actual_open is not None:
        w = (w & ~0x10) | (0x10 if m.actual_open else 0)
    w |= tf.set_at(1, t) | tf.set_at(0, t) << 5 | tf.set_at(2, t) << 10 | tf.set_at(3, t) << 11
    if m.bench:
        w |= 0x08
    if not m.remote:
        w |= 0x200  # money-prepaid meter
    if m.sec.s is not None and t < m.sec.expiry:
        w |= 0x2000
    if not m.wallet.opened:
        w |= 0x4000
    return w


def _status(m, k, t):
    if k == 1:
        w = 0x4000 if m.wallet.balance < 0 else 0
        for r in m.events.records(events.FAULT):  # a fault among the kept records: memory / program
            w |= 0x2000 if r[1] == events.FALLBACK else 0x1000
        return w
    if k == 3:
        return _status3(m, t)
    return 0


def _param(m, lo, b, o, t):
    if lo == 0x0101:
        y, mo, d, _, _, _, wd = clock.to_fields(t)
        b[o] = bcd1(wd)
        b[o + 1] = bcd1(d)
        b[o + 2] = bcd1(mo)
        b[o + 3] = bcd1(y - 2000)
        return 4
    if lo == 0x0102:
        _, _, _, h, mi, s, _ = clock.to_fields(t)
        b[o] = bcd1(s)
        b[o + 1] = bcd1(mi)
        b[o + 2] = bcd1(h)
        return 3
    if lo == 0x010C:
        y, mo, d, h, mi, s, wd = clock.to_fields(t)
        for i, v in enumerate((s, mi, h, wd, d, mo, y - 2000)):
            b[o + i] = bcd1(v)
        return 7
    if 0x0106 <= lo <= 0x0109:
        sw = m.tariff.switch[lo - 0x0106]
        return zeros(b, o, 5) if sw is None else put_dt(b, o, sw, False)
    if 0x0201 <= lo <= 0x0207 and lo != 0x0206:
        tf = m.tariff
        v = (len(tf.zones[0]), 8, max(len(tf.day_table(0, k)) for k in range(8)), 4, 0, 0,
             len(tf.current_ladder(t)[0]))[lo - 0x0201]
        b[o] = bcd1(v)
        return 1
    if lo == 0x0401 or lo == 0x0402:
        a = m.addr if lo == 0x0401 else m.number
        for i in range(6):
            b[o + i] = a[i]
        return 6
    if lo == 0x040E:
        c = m.wallet.customer
        if len(c) != 12:
            return zeros(b, o, 6)
        a = codec.addr_bytes(c)
        for i in range(6):
            b[o + i] = a[i]
        return 6
    if 0x0501 <= lo <= 0x0507:
        put_le(b, o, _status(m, lo - 0x0500, t), 2)
        return 2
    if 0x1001 <= lo <= 0x1005:
        w = m.wallet
        put_bcd(b, o, (w.alarm1, w.alarm2, w.overdraft, w.hoard, w.close_ok)[lo - 0x1001], 4)
        return 4
    if lo == 0x1401:
        put_bcd(b, o, m.relay.trip_delay // 60, 2)
        return 2
    return -1


def read_item(m, c, lo, b, o, t):
    """Value bytes of the parameter, record or table DI c << 16 | lo of meter m into b[o:] at meter
    time t; length or -1."""
    if c == 0x0400:
        return _param(m, lo, b, o, t)
    if c == 0x0401 or c == 0x0402:
        if lo > 8:
            return -1
        return _table(m, c - 0x0401, lo, b, o)
    if c == 0x0406:
        return _ladder(m, lo, b, o)
    if c == 0x0333:
        return _event(m, events.PURCHASE, lo >> 8, lo & 0xFF, b, o)
    if c == 0x0330 and lo >> 8 == 0:
        return _event(m, events.PROGRAM, 0, lo & 0xFF, b, o)
    if 0x033D <= c <= 0x033F and lo >> 8 == 0:  # tokens, MAC failures, faults
        return _event(m, (events.TOKEN, events.MACFAIL, events.FAULT)[c - 0x033D], 0, lo & 0xFF, b, o)
    if c == 0x0506:  # n-th last daily freeze: 00nn its time, 01nn forward active total, T1..T4
        k = lo >> 8
        n = lo & 0xFF
        if k > 1 or not 1 <= n <= 10:
            return -1
        r = last(m.events, events.FREEZE, n)
        if r is None:
            return zeros(b, o, 20 if k else 5)
        if k == 0:
            return put_dt(b, o, r[0], False)
        for i in range(5):
            put_bcd(b, o + 4 * i, r[1 + i] // 10, 4)
        return 20
    if c == 0x1D00 or c == 0x1E00:
        if lo == 0x0001:
            lo = 0
        elif lo >> 8 == 0:
            return -1
        return _event(m, events.TRIP if c == 0x1D00 else events.CLOSE, lo >> 8, lo & 0xFF, b, o)
    return -1
