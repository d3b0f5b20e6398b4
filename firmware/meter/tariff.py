# Energy pricing for local cost control (spec prepaid-meter.md section 7, money rules in
# headend/tariff/README.md). Sans-I/O: meter time in, integers out.
#
# Units: energy Wh, prices 0.0001 yuan/kWh, cost of w Wh at price p = w * p "sub-fen"
# (1e-5 fen). Set 0 is the current set, set 1 the backup set; a switch-over time makes
# set 1 the one in force from that instant (roll() then copies it into set 0).

from array import array

from meter import clock

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# Kinds of two-set switch-over time (DL/T 645 DI 04000106..04000109, in that order).
_SW_ZONES = const(0)
_SW_DAYS = const(1)
_SW_PRICES = const(2)
_SW_LADDER = const(3)

# Ladder mode, decided by the first settlement point (Wisdom Money.c).
_LADDER_NONE = const(0)
_LADDER_ANNUAL = const(1)
_LADDER_MONTHLY = const(2)

_MAX_TABLES = const(8)

_NO_LADDER = const((0,))


def _unpack_points(tab):
    return [(v >> 2, v & 3) for v in tab]


def _valid_dh(p):
    return 1 <= p[1] <= 28 and 0 <= p[2] <= 23


def ladder_mode(points):
    if not points or not _valid_dh(points[0]):
        return _LADDER_NONE
    return _LADDER_ANNUAL if 1 <= points[0][0] <= 12 else _LADDER_MONTHLY


class Tariff:
    def __init__(self):
        flat = [5000, 5000, 5000, 5000]
        self.prices = [flat, list(flat)]
        flat_day = array("H", (2,))  # 00:00 flat, packed (meter.tariffcheck); never changed in place
        self._days = [[flat_day] * _MAX_TABLES, [flat_day] * _MAX_TABLES]
        zone = array("H", (264,))  # 1 January, table 0, packed
        self._zones = [zone, zone]
        self.thresholds = [[2880000, 4800000], [2880000, 4800000]]
        self.increments = [[0, 500, 3000], [0, 500, 3000]]
        self.switch: list = [None, None, None, None]  # meter time or None, per SW_* kind
        self.settlement = [(1, 1, 0)]
        self.mode = _LADDER_ANNUAL
        # Weekend and public holidays override the year zones (one copy, not two sets):
        # weekend = bit mask of rest days (bit 0 Sunday .. bit 6 Saturday) and its day table;
        # holidays = sorted ints day_number * 8 + table (compact: up to 254 of them).
        self.weekend = 0
        self.weekend_table = 0
        self.holidays = []
        self.dirty = True  # changed since the meter's record last took its text (the core clears it)

    # Writes go through meter.tariffcheck's setters only (set_prices(t, ...) and the rest): they
    # validate, and a meter not being programmed holds neither their code nor their names.

    def _changed(self):
        self.dirty = True

    # --- readable views of the packed tables (DI reads; they allocate, so not for pricing) ---

    @property
    def days(self):
        """days[set][k] = [(minute, rate), ...]"""
        return [[_unpack_points(tab) for tab in s] for s in self._days]

    @property
    def zones(self):
        """zones[set] = [(month, day, table), ...]"""
        return [[(v >> 8, v >> 3 & 31, v & 7) for v in z] for z in self._zones]

    def day_table(self, set_no, k):
        """[(minute, rate), ...] of day table k of a set (cheaper than days[set_no][k])."""
        return _unpack_points(self._days[set_no][k])

    # --- which set is in force ---

    def set_at(self, kind, t):
        """0 or 1: the set of `kind` (SW_*) in force at meter time t."""
        sw = self.switch[kind]
        return 1 if sw is not None and t >= sw else 0

    def roll(self, t):
        """Make due backup sets current (copy set 1 into set 0, clear the switch time).
        Pricing is the same before and after; returns True when something changed so the
        caller can persist and log it."""
        changed = False
        for kind in range(4):
            if self.set_at(kind, t):
                if kind == _SW_ZONES:
                    self._zones[0] = self._zones[1]  # packed tables are replaced, never changed: share
                elif kind == _SW_DAYS:
                    self._days[0] = list(self._days[1])
                elif kind == _SW_PRICES:
                    self.prices[0] = list(self.prices[1])
                else:
                    self.thresholds[0] = list(self.thresholds[1])
                    self.increments[0] = list(self.increments[1])
                self.switch[kind] = None
                self._changed()
                changed = True
        return changed

    def current_prices(self, t):
        return self.prices[self.set_at(_SW_PRICES, t)]

    def current_ladder(self, t):
        """(thresholds, increments) in force at t; ((), (0,)) when there is no ladder."""
        if self.mode == _LADDER_NONE:
            return (), _NO_LADDER
        s = self.set_at(_SW_LADDER, t)
        return self.thresholds[s], self.increments[s]

    # --- pricing ---

    def table_at(self, t):
        """Index of the day table in force at t: a holiday's, else the weekend's, else the
        year time zone's."""
        days = t // clock.DAY
        hol = self.holidays
        if hol:
            lo, hi = 0, len(hol)
            while lo < hi:  # first entry of that day or later
                mid = (lo + hi) >> 1
                if hol[mid] >> 3 < days:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < len(hol) and hol[lo] >> 3 == days:
                return hol[lo] & 7
        if self.weekend >> ((days + 1) % 7) & 1:  # 0 = Sunday; 2024-01-01 was a Monday (meter.clock)
            return self.weekend_table
        mo, d = clock.civil_from_days(days)[1:]
        key = mo * 32 + d
        zones = self._zones[self.set_at(_SW_ZONES, t)]
        k = zones[-1] & 7  # before the first zone start: last zone of the previous year
        for z in zones:
            if z >> 3 <= key:
                k = z & 7
            else:
                break
        return k

    def rate_at(self, t):
        """TOU rate slot 0..3 (sharp, peak, flat, valley) in force at meter time t."""
        points = self._days[self.set_at(_SW_DAYS, t)][self.table_at(t)]
        minute = t % clock.DAY // 60
        r = points[-1] & 3  # before the first switch point: the segment that crossed midnight
        for p in points:
            if p >> 2 <= minute:
                r = p & 3
            else:
                break
        return r

    def charge(self, wh, t, ladder_wh):
        """Cost of `wh` Wh registered at t with `ladder_wh` already in this ladder period.
        Returns (subfen, new_ladder_wh, rate); the ladder tier is decided per Wh after adding
        it, so an interval crossing a threshold is split at the exact Wh."""
        if wh < 0:
            raise ValueError("negative energy")
        rate = self.rate_at(t)
        tou = self.current_prices(t)[rate]
        thr, inc = self.current_ladder(t)
        cost = 0
        e = ladder_wh
        left = wh
        n = len(thr)
        i = 0
        while left > 0:
            while i < n and e >= thr[i]:
                i += 1
            take = left if i == n else min(left, thr[i] - e)
            cost += take * (tou + inc[i])
            e += take
            left -= take
        return cost, e, rate

    # --- ladder settlement ---

    def last_settlement(self, t):
        """Latest settlement instant <= t, or None when there is no ladder. Annual mode uses
        the points with a valid month; monthly mode ignores every point's month."""
        if self.mode == _LADDER_NONE:
            return None
        y, mo = clock.civil_from_days(t // clock.DAY)[:2]
        best = None
        for p in self.settlement:
            if not _valid_dh(p):
                continue
            if self.mode == _LADDER_ANNUAL:
                if not 1 <= p[0] <= 12:
                    continue
                s = clock.from_fields(y, p[0], p[1], p[2])
                if s > t:
                    s = clock.from_fields(y - 1, p[0], p[1], p[2])
            else:
                s = clock.from_fields(y, mo, p[1], p[2])
                if s > t:
                    s = clock.from_fields(y, mo - 1, p[1], p[2]) if mo > 1 else \
                        clock.from_fields(y - 1, 12, p[1], p[2])
            if best is None or s > best:
                best = s
        return best

    def settle(self, t, last_t, ladder_wh):
        """Ladder energy to carry on at t: 0 when a settlement point lies in (last_t, t]."""
        s = self.last_settlement(t)
        if s is not None and s > last_t:
            return 0
        return ladder_wh

    # --- power-safe storage ---

    # The meter's record keeps the tariff as packed binary (meter.store): write(seq) stores a
    # sequence of ints, read() gives the next one back as a tuple. meter.powerup's unpack_tariff
    # builds the final packed tables straight from those small reads: no parse tree of the whole
    # record.

    def pack(self, write):
        for s in range(2):
            write(self.prices[s])
            for tab in self._days[s]:
                write(tab)
            write(self._zones[s])
            write(self.thresholds[s])
            write(self.increments[s])
        write([-1 if v is None else v for v in self.switch])
        h = self.holidays
        write((self.weekend, self.weekend_table, len(h)))
        write([x for p in self.settlement for x in p])
        for i in range(0, len(h), 16):  # pieces of 16: no long buffer
            write(h[i:i + 16])
