# The tariff's setters and the checks a write must pass (DI writes, records written before the
# binary head): loaded when a write comes and let go after it (meter.core drops it with the DI
# writes), so a meter that is not being programmed keeps neither their code nor their names.

from meter import clock

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

_MAX_POINTS = const(14)
_MAX_TABLES = const(8)
_MAX_ZONES = const(14)
_MAX_THRESHOLDS = const(6)
_MAX_SETTLEMENTS = const(4)
_MAX_HOLIDAYS = const(254)
_RATES = const(4)


def num(v, lo, hi, what):
    # bool is an int subclass on CPython; a wire decoder never produces one, so refuse it
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or v > hi:
        raise ValueError(what)
    return v


def set_no(s):
    return num(s, 0, 1, "set_no must be 0 or 1")


def table_no(k):
    return num(k, 0, _MAX_TABLES - 1, "bad day table")


def check_prices(prices):
    if len(prices) != _RATES:
        raise ValueError("need 4 prices")
    return [num(p, 0, 99999999, "bad price") for p in prices]


# Day tables and zones are kept packed, one 16-bit int per entry in an array('H'): a full set of
# 16 tables x 14 points as (minute, rate) tuples took ~10 KB of a 64-bit heap, as tuples of packed
# ints ~2.5 KB with the zones, as arrays ~1.4 KB.
# point = minute * 4 + rate; zone = (month * 32 + day) * 8 + table (ordered like the dates).

def check_day_table(points):
    """(minute, rate) pairs -> packed array. Wire writes pad unused points by repeating
    the last one: exact repeats are dropped."""
    out = []
    for pt in points:
        if len(pt) != 2:
            raise ValueError("point is (minute, rate)")
        v = num(pt[0], 0, 1439, "bad minute") * 4 + num(pt[1], 0, _RATES - 1, "bad rate index")
        if out and out[-1] == v:
            continue
        if out and v >> 2 <= out[-1] >> 2:
            raise ValueError("unsorted points")
        out.append(v)
    if not out:
        raise ValueError("empty day table")
    if len(out) > _MAX_POINTS:
        raise ValueError("over 14 points")
    from array import array  # here, not a module global: this module's globals fill a 464-byte table
    return array("H", out)


def check_zones(zones):
    """(month, day, table) triples -> packed array; exact repeats (wire padding) dropped."""
    out = []
    for z in zones:
        if len(z) != 3:
            raise ValueError("zone is (month, day, table)")
        mo = num(z[0], 1, 12, "bad zone month")
        d = num(z[1], 1, 31, "bad zone day")
        v = (mo * 32 + d) * 8 + table_no(z[2])
        if out and out[-1] == v:
            continue
        if out and v >> 3 <= out[-1] >> 3:
            raise ValueError("unsorted zones")
        out.append(v)
    if not out:
        raise ValueError("no zones")
    if len(out) > _MAX_ZONES:
        raise ValueError("over 14 zones")
    from array import array
    return array("H", out)


def check_ladder(thresholds, increments):
    thr = [num(v, 0, 99999999999, "bad threshold") for v in thresholds]
    inc = [num(v, 0, 99999999, "bad increment") for v in increments]
    if len(thr) > _MAX_THRESHOLDS:
        raise ValueError("over 6 thresholds")
    if not len(thr) + 1 <= len(inc) <= _MAX_THRESHOLDS + 1:
        raise ValueError("need thresholds+1 increments")
    # DL/T 645 writes all 6 thresholds; trailing zeros mean "unused". The increments are kept
    # as written (only the first len(thr) + 1 are used), so writing the increments before
    # the thresholds loses nothing.
    while thr and thr[-1] == 0:
        thr.pop()
    for i in range(1, len(thr)):
        if thr[i] <= thr[i - 1]:
            raise ValueError("unsorted thresholds")
    return thr, inc


def check_settlement(points):
    # 99 (or any out-of-range value) marks a point unused, so only the wire range is checked.
    if len(points) > _MAX_SETTLEMENTS:
        raise ValueError("over 4 settlement points")
    out = []
    for p in points:
        if len(p) != 3:
            raise ValueError("settlement is (month, day, hour)")
        out.append((num(p[0], 0, 99, "bad month"), num(p[1], 0, 99, "bad day"), num(p[2], 0, 99, "bad hour")))
    return out


def check_holidays(days):
    """(year, month, day, table) items -> sorted ints day_number * 8 + table."""
    if len(days) > _MAX_HOLIDAYS:
        raise ValueError("over 254 holidays")
    out = []
    for h in days:
        if len(h) != 4:
            raise ValueError("holiday is (year, month, day, table)")
        y = num(h[0], 2000, 2099, "bad holiday date")
        if not clock.valid_date(y, num(h[1], 1, 12, "bad holiday date"), num(h[2], 1, 31, "bad holiday date")):
            raise ValueError("bad holiday date")
        out.append(clock.days_from_civil(h[0], h[1], h[2]) * 8 + table_no(h[3]))
    out.sort()
    for i in range(1, len(out)):
        if out[i] >> 3 == out[i - 1] >> 3:
            raise ValueError("holiday listed twice")
    return out


# The setters of a meter.tariff.Tariff tf: each validates everything before it changes anything,
# and marks tf changed so its dump() cache and the meter's record follow.

def set_prices(tf, s, prices):
    tf.prices[set_no(s)] = check_prices(prices)
    tf._changed()


def set_day_table(tf, s, k, points):
    tf._days[set_no(s)][table_no(k)] = check_day_table(points)
    tf._changed()


def set_zones(tf, s, zones):
    tf._zones[set_no(s)] = check_zones(zones)
    tf._changed()


def set_ladder(tf, s, thresholds, increments):
    s = set_no(s)
    tf.thresholds[s], tf.increments[s] = check_ladder(thresholds, increments)
    tf._changed()


def set_switch(tf, kind, t):
    num(kind, 0, 3, "bad switch kind")
    tf.switch[kind] = None if t is None else num(t, 0, 0x7FFFFFFF, "bad switch time")
    tf._changed()


def set_weekend(tf, rest_days, table):
    """rest_days: bit mask, bit 0 = Sunday .. bit 6 = Saturday (0 = no weekend rule)."""
    m = num(rest_days, 0, 0x7F, "bad weekend mask")
    tf.weekend_table = table_no(table)
    tf.weekend = m
    tf._changed()


def set_holidays(tf, days):
    """days: list of (year, month, day, table); replaces the whole list."""
    tf.holidays = check_holidays(days)
    tf._changed()


def set_settlement(tf, points):
    from meter.tariff import ladder_mode  # here, not at the top: meter.tariff loads this module
    tf.settlement = check_settlement(points)
    tf.mode = ladder_mode(tf.settlement)
    tf._changed()


def holiday_list(tf):
    """tf's holidays as (year, month, day, table), in date order."""
    return [clock.civil_from_days(h >> 3) + (h & 7,) for h in tf.holidays]


def load(t, obj):
    """Fill the new Tariff t from a record written before the binary head (dump()'s form),
    through the setters' checks; its day tables and zones as packed ints or, older still, as
    (minute, rate) and (month, day, table) lists."""
    for s in range(2):
        set_prices(t, s, obj["p"][s])
        for k in range(_MAX_TABLES):
            tab = obj["d"][s][k]
            set_day_table(t, s, k, [(v >> 2, v & 3) for v in tab] if tab and isinstance(tab[0], int) else tab)
        zs = obj["z"][s]
        set_zones(t, s, [(v >> 8, v >> 3 & 31, v & 7) for v in zs] if zs and isinstance(zs[0], int) else zs)
        set_ladder(t, s, obj["lt"][s], obj["li"][s])
    for kind in range(4):
        set_switch(t, kind, obj["sw"][kind])
    set_settlement(t, obj["st"])
    we = obj.get("we")  # absent in records written before weekends existed
    if we:
        set_weekend(t, we[0], we[1])
    set_holidays(t, [clock.civil_from_days(h >> 3) + (h & 7,) for h in obj.get("ho", ())])
    return t
